"""``sonieval study``: create, serve, invite, export, open/close a listening study."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "listening study: create it, serve the rating app, invite raters, export ratings"
DESCRIPTION = (
    "Listening study over the sonifications (or any folders of audio). "
    "`sonieval study serve PROTOCOL` creates the study if needed, starts the Streamlit app on localhost and "
    "prints the rater links and the admin link. Storage: SQLite in the results folder by default, "
    "or PostgreSQL with --storage postgresql+psycopg://user:password@host/db."
)


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("protocol", nargs="?", help="protocol YAML (the study section and the results folder)")
    p.add_argument("--study-dir", type=Path, help="a study folder made by `study create --originals ...` (instead of a protocol)")
    p.add_argument("--storage", help="database URL (overrides the protocol's study.storage); e.g. postgresql+psycopg://user:pw@host/db")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser("create", help="prepare the stimuli and store the study (tables, study.audio_dir or folders)")
    _target(c)
    c.add_argument("--originals", type=Path, help="folder of original clips (file stem = clip id)")
    c.add_argument("--system", action="append", default=[], metavar="NAME=DIR", help="a system's folder of audio (repeat)")
    c.add_argument("--study-id", help="study id (folders mode; default: the study folder's name)")
    c.add_argument("--mode", choices=["joint", "split"], default="joint")
    c.add_argument("--raters", type=int, default=1, help="raters to invite now (folders mode)")
    c.add_argument("--attention-checks", type=int, default=2)
    c.add_argument("--anchor", choices=["lowpass", "noise", "none"], default="lowpass")
    c.add_argument("--no-familiarisation", action="store_true")
    c.add_argument("--min-listen-fraction", type=float, default=1.0)
    c.add_argument("--seed", type=int, default=42)

    s = sub.add_parser("serve", help="start the rating app on localhost and print the links (creates the study if needed)")
    _target(s)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default localhost only)")
    s.add_argument("--port", type=int, default=8501)
    s.add_argument("--free-port", action="store_true", help="pick a free port")
    s.add_argument("--public-url", help="the address raters open, for the printed links (e.g. https://study.example.org "
                   "behind a reverse proxy); default http://HOST:PORT")

    i = sub.add_parser("invite", help="mint N new rater links")
    i.add_argument("n", type=int)
    _target(i)
    i.add_argument("--base-url", default="http://127.0.0.1:8501", help="the address raters will open")

    e = sub.add_parser("export", help="write ratings.csv and ratings.parquet (full design columns)")
    _target(e)
    e.add_argument("--out", type=Path, help="output folder (default: the study folder)")

    for name, what in (("open", "accept marks again"), ("close", "stop accepting marks")):
        o = sub.add_parser(name, help=f"{what}")
        _target(o)
    a = sub.add_parser("admin-link", help="replace the admin token and print the new admin link")
    _target(a)
    a.add_argument("--base-url", default="http://127.0.0.1:8501")


def _locate(args: argparse.Namespace):
    """(protocol or None, study folder, storage URL, study id)."""
    from sonieval.errors import SonievalError

    if args.protocol:
        from sonieval.protocol import load_protocol
        from sonieval.study.create import study_paths_for_protocol

        proto = load_protocol(args.protocol)
        study_dir, url = study_paths_for_protocol(proto)
        return proto, study_dir, args.storage or url, proto.study_id
    if args.study_dir:
        from sonieval.study.create import read_study_json

        study_id, url = read_study_json(args.study_dir)
        if "***" in url and not args.storage:
            raise SonievalError("the stored storage URL has its password removed", path=args.study_dir / "study.json",
                                hint="give the full URL with --storage")
        return None, args.study_dir, args.storage or url, study_id
    raise SonievalError("no study given", hint="pass a PROTOCOL or --study-dir DIR")


def run(args: argparse.Namespace) -> int:
    return {
        "create": _create, "serve": _serve, "invite": _invite, "export": _export,
        "open": lambda a: _set_status(a, "open"), "close": lambda a: _set_status(a, "closed"), "admin-link": _admin_link,
    }[args.action](args)


def _print_created(created, base_url: str) -> None:
    from sonieval.study.create import read_tokens, record_tokens
    from sonieval.study.server import link_lines

    record_tokens(created.study_dir, created)
    state = "created" if created.admin_token else "already existed (unchanged)"
    print(f"study {created.study_id} {state}: {created.n_trials} trials in {created.study_dir}")
    for note in created.notes:
        print(f"note: {note}")
    for warning in created.warnings:
        print(f"warning: {warning}")
    admin, raters = read_tokens(created.study_dir)
    for line in link_lines(base_url, admin, raters):
        print(line)


def _create(args: argparse.Namespace) -> int:
    from sonieval.errors import SonievalError
    from sonieval.study.create import StudySettings, create_from_folders, create_from_protocol

    if args.originals:
        if not args.system:
            raise SonievalError("--originals needs at least one --system NAME=DIR")
        systems = {}
        for spec in args.system:
            name, sep, folder = spec.partition("=")
            if not sep or not name or not folder:
                raise SonievalError(f"--system {spec!r} is not NAME=DIR")
            systems[name] = Path(folder)
        study_dir = args.study_dir or Path("results") / "study"
        settings = StudySettings(
            study_id=args.study_id or study_dir.resolve().name, mode=args.mode, n_raters=args.raters,
            attention_checks=args.attention_checks, anchor_kind=None if args.anchor == "none" else args.anchor,
            familiarisation=not args.no_familiarisation, min_listen_fraction=args.min_listen_fraction, seed=args.seed,
        )
        created = create_from_folders(settings, args.originals, systems, study_dir=study_dir, storage=args.storage)
    else:
        if not args.protocol:
            raise SonievalError("give a PROTOCOL, or --originals DIR with --system NAME=DIR")
        from sonieval.protocol import load_protocol

        created = create_from_protocol(load_protocol(args.protocol), storage=args.storage)
    _print_created(created, "http://127.0.0.1:8501")
    print(f"serve it with: sonieval study serve {args.protocol or '--study-dir ' + str(created.study_dir)}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import subprocess

    from sonieval.study.create import create_from_protocol, read_tokens
    from sonieval.study.server import free_port, launch, link_lines, wait_until_up
    from sonieval.study.store import StudyError, StudyStore, redact_url

    proto, study_dir, url, study_id = _locate(args)
    with StudyStore(url) as store:
        exists = store.has_study(study_id)
    port = free_port(args.host) if args.free_port else args.port
    base = f"http://{args.host}:{port}"
    if not exists:
        if proto is None:
            from sonieval.errors import SonievalError

            raise SonievalError(f"study {study_id!r} not in {redact_url(url)}", hint="create it with sonieval study create")
        from sonieval.study.create import record_tokens

        created = create_from_protocol(proto, storage=url)
        record_tokens(created.study_dir, created)
        print(f"study {created.study_id} created: {created.n_trials} trials in {created.study_dir}")
        for note in created.notes:
            print(f"note: {note}")
    study_dir = Path(study_dir)
    log = study_dir / "server.log"
    proc, base = launch(url, study_id, host=args.host, port=port, log_path=log)
    try:
        try:
            wait_until_up(base, proc)
        except StudyError as exc:
            raise StudyError(exc.problem, hint=f"see {log}; if port {port} is taken, use --free-port or --port") from None
        admin, raters = read_tokens(study_dir)
        print(f"study {study_id} is served at {base} (storage {redact_url(url)}; log {log})")
        lines = link_lines(args.public_url or base, admin, raters)
        if lines:
            print("\n".join(lines))
        else:
            print("no links recorded here: mint some with `sonieval study invite N` / `sonieval study admin-link`")
        print("press Ctrl-C to stop; every submitted mark is already saved", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _invite(args: argparse.Namespace) -> int:
    from sonieval.study.create import append_links
    from sonieval.study.server import rater_link
    from sonieval.study.store import StudyStore

    _, study_dir, url, study_id = _locate(args)
    with StudyStore(url) as store:
        minted = store.invite(study_id, args.n)
    append_links(Path(study_dir), [f"rater {rid} {tok}" for rid, tok in minted])
    for rid, tok in minted:
        print(f"rater {rid}: {rater_link(args.base_url, tok)}")
    print(f"(tokens also appended to {Path(study_dir) / 'links.txt'}, readable by you only; the database keeps hashes)")
    return 0


def _export(args: argparse.Namespace) -> int:
    from sonieval.study.export import write_ratings
    from sonieval.study.store import StudyStore, redact_url

    _, study_dir, url, study_id = _locate(args)
    with StudyStore(url) as store:
        store.study(study_id)
        csv, parquet, n = write_ratings(store, study_id, args.out or study_dir)
    print(f"{n} marks of study {study_id} (storage {redact_url(url)}) -> {csv}, {parquet}")
    return 0


def _set_status(args: argparse.Namespace, status: str) -> int:
    from sonieval.study.store import StudyStore

    _, _, url, study_id = _locate(args)
    with StudyStore(url) as store:
        store.study(study_id)
        store.set_status(study_id, status)
    print(f"study {study_id} is {status}")
    return 0


def _admin_link(args: argparse.Namespace) -> int:
    from sonieval.study.create import append_links
    from sonieval.study.server import admin_link
    from sonieval.study.store import StudyStore

    _, study_dir, url, study_id = _locate(args)
    with StudyStore(url) as store:
        token = store.rotate_admin_token(study_id)
    append_links(Path(study_dir), [f"admin {token}"])
    print(f"admin: {admin_link(args.base_url, token)} (the previous admin link no longer works)")
    return 0
