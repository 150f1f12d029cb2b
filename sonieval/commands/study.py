"""``sonieval study``: create, serve, invite, export, open/close a listening study."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sonieval.results_layout import ResultsLayout

HELP = "listening study: create it, serve the rating app, invite raters, export ratings"
DESCRIPTION = (
    "Listening study over the sonifications (or any folders of audio). "
    "`sonieval study serve PROTOCOL` creates the study if needed, starts the Streamlit app on localhost and "
    "prints the rater links and the admin link. Storage: SQLite in the results folder by default, "
    "or PostgreSQL with --storage postgresql+psycopg://user:password@host/db."
)


def _target(p: argparse.ArgumentParser) -> None:
    p.add_argument("protocol", nargs="?", help="protocol YAML (the study section and the results folder)")
    p.add_argument(
        "--study-dir", type=Path, help="a study folder made by `study create --originals ...` (instead of a protocol)"
    )
    p.add_argument(
        "--storage",
        help="database URL (overrides the protocol's study.storage); e.g. postgresql+psycopg://user:pw@host/db",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser("create", help="prepare the stimuli and store the study (tables, study.audio_dir or folders)")
    _target(c)
    c.add_argument("--originals", type=Path, help="folder of original clips (file stem = clip id)")
    c.add_argument(
        "--system", action="append", default=[], metavar="NAME=DIR", help="a system's folder of audio (repeat)"
    )
    c.add_argument("--study-id", help="study id (folders mode; default: the study folder's name)")
    c.add_argument(
        "--mode",
        choices=["joint", "split", "multi"],
        default="joint",
        help="multi: every condition of a clip on one page (MUSHRA-style)",
    )
    c.add_argument(
        "--rating-scale",
        choices=["categories", "mushra"],
        default="categories",
        help="mushra: a 0-100 slider per mark instead of the labelled 1-5 marks",
    )
    c.add_argument("--raters", type=int, default=1, help="raters to invite now (folders mode)")
    c.add_argument("--attention-checks", type=int, default=2)
    c.add_argument("--anchor", choices=["lowpass", "noise", "none"], default="lowpass")
    c.add_argument("--no-familiarisation", action="store_true")
    c.add_argument("--min-listen-fraction", type=float, default=1.0)
    c.add_argument("--seed", type=int, default=42)
    c.add_argument(
        "--loudness",
        type=float,
        metavar="LUFS",
        help="programme loudness every stimulus is aligned to (ITU-R BS.1770; default -26 LUFS)",
    )
    c.add_argument("--true-peak", type=float, metavar="DBTP", help="true-peak ceiling (default -1 dBTP)")

    s = sub.add_parser(
        "serve", help="start the rating app on localhost and print the links (creates the study if needed)"
    )
    _target(s)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default localhost only)")
    s.add_argument("--port", type=int, default=8501)
    s.add_argument("--free-port", action="store_true", help="pick a free port")
    s.add_argument(
        "--public-url",
        help="the address raters open, for the printed links (e.g. https://study.example.org "
        "behind a reverse proxy); default http://HOST:PORT",
    )

    i = sub.add_parser("invite", help="mint N new rater links")
    i.add_argument("n", type=int)
    _target(i)
    _public_url(i)

    e = sub.add_parser("export", help="write ratings.csv and ratings.parquet (full design columns)")
    _target(e)
    e.add_argument("--out", type=Path, help="output folder (default: the study folder)")

    for name, what in (("open", "accept marks again"), ("close", "stop accepting marks")):
        o = sub.add_parser(name, help=f"{what}")
        _target(o)
    a = sub.add_parser("admin-link", help="replace the admin token and print the new admin link")
    _target(a)
    _public_url(a)


def _public_url(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--public-url",
        "--base-url",
        dest="public_url",
        help="the address raters open (default: that of the running `study serve`, recorded in the study folder)",
    )


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
            raise SonievalError(
                "the stored storage URL has its password removed",
                path=args.study_dir / "study.json",
                hint="give the full URL with --storage",
            )
        return None, args.study_dir, args.storage or url, study_id
    raise SonievalError("no study given", hint="pass a PROTOCOL or --study-dir DIR")


def _open_existing(args: argparse.Namespace, url: str, study_id: str):
    """The study's store, refusing (before any file is made) a SQLite database that does not exist
    yet and a study the database does not hold, with the command that creates it."""
    from sqlalchemy.engine import make_url

    from sonieval.errors import SonievalError
    from sonieval.study.store import StudyStore, normalise_url, redact_url

    create = f"sonieval study create {args.protocol}" if args.protocol else "sonieval study create PROTOCOL"
    try:
        parsed = make_url(normalise_url(url))
    except Exception:
        parsed = None
    if (
        parsed is not None
        and parsed.get_backend_name() == "sqlite"
        and parsed.database
        and not Path(parsed.database).is_file()
    ):
        raise SonievalError(
            f"study {study_id!r} has not been created yet: no database at {parsed.database}",
            hint=f"create it with `{create}`, or create and serve it with `{create.replace('create', 'serve', 1)}`",
        )
    store = StudyStore(url)
    if not store.has_study(study_id):
        store.close()
        raise SonievalError(f"study {study_id!r} not found in {redact_url(url)}", hint=f"create it with `{create}`")
    return store


def run(args: argparse.Namespace) -> int:
    from sonieval.extras import require

    require("sonieval study", "sqlalchemy")
    return {
        "create": _create,
        "serve": _serve,
        "invite": _invite,
        "export": _export,
        "open": lambda a: _set_status(a, "open"),
        "close": lambda a: _set_status(a, "closed"),
        "admin-link": _admin_link,
    }[args.action](args)


def _print_links(study_dir: Path, base_url: str, note: str | None = None) -> None:
    from sonieval.study.create import read_enrol_key, read_tokens
    from sonieval.study.server import link_lines

    admin, raters = read_tokens(study_dir)
    lines = link_lines(base_url, admin, raters, read_enrol_key(study_dir))
    if lines:
        print("\n".join(lines))
    else:
        print("no links recorded here: mint some with `sonieval study invite N` / `sonieval study admin-link`")
    if note and lines:
        print(f"note: {note}")


def _print_created(created) -> None:
    from sonieval.study.create import record_tokens

    record_tokens(created.study_dir, created)
    state = "created" if created.admin_token else "already existed (unchanged)"
    print(f"study {created.study_id} {state}: {created.n_trials} trials in {created.study_dir}")
    for note in created.notes:
        print(f"note: {note}")
    for warning in created.warnings:
        print(f"warning: {warning}")


def _with_failures_listed(make):
    """Run a study creation; if nothing could be prepared, list every failed file on stderr first."""
    import sys

    from sonieval.study.create import StudyNotCreated

    try:
        return make()
    except StudyNotCreated as exc:
        for line in exc.failures:
            print(f"failed:{line}", file=sys.stderr)
        raise


def _create(args: argparse.Namespace) -> int:
    from sonieval.errors import SonievalError
    from sonieval.loudness import CEILING_DBTP, TARGET_LUFS
    from sonieval.study.create import StudySettings, create_from_folders, create_from_protocol
    from sonieval.study.server import link_base

    if args.originals:
        if not args.system:
            raise SonievalError("--originals needs at least one --system NAME=DIR")
        systems = {}
        for spec in args.system:
            name, sep, folder = spec.partition("=")
            if not sep or not name or not folder:
                raise SonievalError(f"--system {spec!r} is not NAME=DIR")
            systems[name] = _from_cwd(folder)
        study_dir = _from_cwd(args.study_dir or ResultsLayout(Path("results")).study)
        settings = StudySettings(
            study_id=args.study_id or study_dir.name,
            mode=args.mode,
            n_raters=args.raters,
            rating_scale=args.rating_scale,
            **({"scale_min": 0, "scale_max": 100} if args.rating_scale == "mushra" else {}),
            attention_checks=args.attention_checks,
            anchor_kind=None if args.anchor == "none" else args.anchor,
            familiarisation=not args.no_familiarisation,
            min_listen_fraction=args.min_listen_fraction,
            seed=args.seed,
            loudness_lufs=TARGET_LUFS if args.loudness is None else args.loudness,
            true_peak_dbtp=CEILING_DBTP if args.true_peak is None else args.true_peak,
        )
        created = _with_failures_listed(
            lambda: create_from_folders(
                settings, _from_cwd(args.originals), systems, study_dir=study_dir, storage=args.storage
            )
        )
    else:
        if not args.protocol:
            raise SonievalError("give a PROTOCOL, or --originals DIR with --system NAME=DIR")
        from sonieval.protocol import load_protocol

        proto = load_protocol(args.protocol)
        created = _with_failures_listed(
            lambda: create_from_protocol(
                proto, storage=args.storage, loudness_lufs=args.loudness, true_peak_dbtp=args.true_peak
            )
        )
    _print_created(created)
    _print_links(created.study_dir, *link_base(created.study_dir))
    print(f"serve it with: sonieval study serve {args.protocol or '--study-dir ' + str(created.study_dir)}")
    return 0


def _from_cwd(path: str | Path) -> Path:
    """A path as given on the command line, made absolute against the working directory.

    Not resolved: a symlinked folder keeps its name (the files inside are resolved when read).
    """
    return Path(os.path.abspath(os.path.expanduser(str(path))))


def _serve(args: argparse.Namespace) -> int:
    from sonieval.errors import SonievalError
    from sonieval.study.create import create_from_protocol
    from sonieval.study.server import StopServing, StudyServer, check_port_free, free_port
    from sonieval.study.store import StudyStore, redact_url

    proto, study_dir, url, study_id = _locate(args)
    port = free_port(args.host) if args.free_port else args.port
    check_port_free(args.host, port)  # before a study is made or a link printed
    with StudyStore(url) as store:
        exists = store.has_study(study_id)
    if not exists:
        if proto is None:
            raise SonievalError(
                f"study {study_id!r} not in {redact_url(url)}", hint="create it with sonieval study create"
            )
        _print_created(_with_failures_listed(lambda: create_from_protocol(proto, storage=url)))
    server = StudyServer(
        url, study_id, host=args.host, port=port, study_dir=Path(study_dir), public_url=args.public_url
    )
    try:
        with server:
            server.start()
            print(f"study {study_id} is served at {server.base_url} (storage {redact_url(url)}; log {server.log_path})")
            _print_links(server.study_dir, server.link_base.rstrip("/"))
            print("press Ctrl-C to stop; every submitted mark is already saved", flush=True)
            return server.serve_forever()
    except StopServing:  # a signal while starting
        return 0


def _invite(args: argparse.Namespace) -> int:
    import sys

    from sonieval.study.create import append_links
    from sonieval.study.server import link_base, rater_link

    _, study_dir, url, study_id = _locate(args)
    with _open_existing(args, url, study_id) as store:
        minted = store.invite(study_id, args.n)
    append_links(Path(study_dir), [f"rater {rid} {tok}" for rid, tok in minted])
    base, note = link_base(Path(study_dir), args.public_url)
    for rid, tok in minted:
        print(f"rater {rid}: {rater_link(base, tok)}")
    print(f"(tokens also appended to {Path(study_dir) / 'links.txt'}, readable by you only; the database keeps hashes)")
    if note:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace) -> int:
    from sonieval.study.export import write_ratings
    from sonieval.study.store import redact_url

    _, study_dir, url, study_id = _locate(args)
    with _open_existing(args, url, study_id) as store:
        store.study(study_id)
        csv, parquet, n = write_ratings(store, study_id, args.out or study_dir)
    print(f"{n} marks of study {study_id} (storage {redact_url(url)}) -> {csv}, {parquet}")
    return 0


def _set_status(args: argparse.Namespace, status: str) -> int:

    _, _, url, study_id = _locate(args)
    with _open_existing(args, url, study_id) as store:
        store.study(study_id)
        store.set_status(study_id, status)
    print(f"study {study_id} is {status}")
    return 0


def _admin_link(args: argparse.Namespace) -> int:
    import sys

    from sonieval.study.create import append_links
    from sonieval.study.server import admin_link, link_base

    _, study_dir, url, study_id = _locate(args)
    with _open_existing(args, url, study_id) as store:
        token = store.rotate_admin_token(study_id)
    append_links(Path(study_dir), [f"admin {token}"])
    base, note = link_base(Path(study_dir), args.public_url)
    print(f"admin: {admin_link(base, token)} (the previous admin link no longer works)")
    if note:
        print(f"note: {note}", file=sys.stderr)
    return 0
