"""`sonieval data`: get and verify ESC-50, write the splits and the listening set."""

from __future__ import annotations

import argparse
import sys

HELP = "download or verify ESC-50; write the splits and listening set of a protocol; clean stale sonifications"
DESCRIPTION = (
    "esc50: download the official ESC-50 archive (--root DIR) or verify an existing copy (--esc50 DIR or "
    "$SONIEVAL_ESC50; a partial copy such as fold 4 only is fine). Every missing, unreadable or "
    "non-conforming clip is printed on its own line and the exit status is 1. "
    "splits: read a protocol's clips and write train/validation/test.txt and listening_set.txt. "
    "synthetic: write the built-in SYNTHETIC clip set (not ESC-50) to a folder. "
    "stale: list or delete sonification WAVs that a results folder's table no longer lists."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    esc = sub.add_parser(
        "esc50",
        help="download (--root) or verify (--esc50 / $SONIEVAL_ESC50) an ESC-50 copy",
        description="Download the official archive into --root DIR (then verify it), or verify the copy at "
        "--esc50 DIR (default $SONIEVAL_ESC50): meta/esc50.csv columns, every clip present, readable, WAV "
        "mono 44.1 kHz PCM_16 of 220500 frames, no unlisted files, checksums.sha256 when present.",
    )
    where = esc.add_mutually_exclusive_group()
    where.add_argument("--root", metavar="DIR", help="download the official archive into DIR/ESC-50 and verify it")
    where.add_argument("--esc50", metavar="DIR", help="verify an existing copy (default: $SONIEVAL_ESC50)")
    esc.add_argument("--sha256", metavar="HEX", help="with --root: refuse an archive whose SHA-256 differs")
    esc.add_argument("--url", default=None, help="with --root: archive URL (default: the official GitHub archive)")
    esc.add_argument(
        "--write-checksums",
        action="store_true",
        help="record checksums.sha256 for the copy when it verifies cleanly (done automatically after --root)",
    )
    esc.add_argument("--no-checksums", action="store_true", help="do not check checksums.sha256 (faster)")
    esc.add_argument("--no-progress", action="store_true", help="no progress bars")

    splits = sub.add_parser(
        "splits",
        help="read a protocol's clips; write the split files and the listening set",
        description="Runs the 'clips' stage of PROTOCOL: reads every clip, records problems in the run ledger, "
        "writes <results>/splits/{train,validation,test,listening_set}.txt and <results>/tables/clips.parquet. "
        "The first run pins the data source data.esc50 resolved to (auto: $SONIEVAL_ESC50, else the SYNTHETIC set) in "
        "<results>/data_source.json; a later run that resolves to another source is refused.",
    )
    splits.add_argument("protocol", metavar="PROTOCOL", help="protocol YAML file (e.g. protocols/demo.yaml)")
    splits.add_argument("--no-progress", action="store_true", help="no progress bars")

    synth = sub.add_parser("synthetic", help="write the built-in SYNTHETIC clip set (not ESC-50) to a folder")
    synth.add_argument("folder", metavar="DIR")

    stale = sub.add_parser(
        "stale",
        help="list (--delete: remove) sonification WAVs that a results folder's table does not list",
        description="A results folder's sonifications/ can keep WAVs of an earlier data source, listening set or "
        "system grid that tables/sonifications.parquet no longer lists; `score` and `study create` refuse folders "
        "holding them. This lists them (and table rows of clips not in tables/clips.parquet); --delete removes the "
        "WAVs and the folders they leave empty.",
    )
    stale.add_argument("target", metavar="PROTOCOL|RESULTS_DIR", help="a protocol YAML or a results folder")
    stale.add_argument("--delete", action="store_true", help="delete the stale WAVs")


def _run_esc50(args: argparse.Namespace) -> int:
    from sonieval.data.esc50 import (
        ESC50_ENV,
        ESC50_URL,
        download_esc50,
        resolve_esc50_root,
        verify_esc50,
        write_checksums,
    )
    from sonieval.errors import DataError

    progress = not args.no_progress
    if args.root:
        root = download_esc50(args.root, url=args.url or ESC50_URL, expected_sha256=args.sha256, progress=progress)
        write_sums = True
    else:
        if args.url or args.sha256:
            raise DataError("--url and --sha256 only apply to a download (--root DIR)")
        root = resolve_esc50_root(args.esc50)
        if root is None:
            raise DataError(
                "no ESC-50 copy given",
                hint=f"use --root DIR to download the official archive, or --esc50 DIR / {ESC50_ENV} for an existing copy",
            )
        write_sums = args.write_checksums
    report = verify_esc50(root, checksums=not args.no_checksums, progress=progress)
    for line in report.problem_lines():
        print(line)
    if write_sums and report.ok:
        # Only a copy that verified cleanly gets a checksum manifest: it then protects a known-good state.
        sums = write_checksums(report.root, progress=progress)
        report.checksums = f"recorded for the meta CSV and {report.n_listed} clips in {sums}"
    print(report.summary())
    if not report.ok:
        print(f"sonieval data esc50: {report.n_problem_files} file(s) with problems in {report.root}", file=sys.stderr)
        return 1
    if args.root:
        print(f"use it with: export {ESC50_ENV}={report.root}")
    return 0


def _run_splits(args: argparse.Namespace) -> int:
    from sonieval.data.esc50 import describe_clips_stage, prepare_clips
    from sonieval.ledger import open_ledger
    from sonieval.protocol import load_protocol

    proto = load_protocol(args.protocol)
    with open_ledger(proto.results_path) as ledger:
        table = prepare_clips(proto, ledger, progress=not args.no_progress)
    for line in describe_clips_stage(table, proto):
        print(line)
    n_failed = int((table["status"] != "ok").sum())
    if n_failed:
        from sonieval.data.results_folder import read_pin

        pinned = read_pin(proto.results_path)
        copy = pinned.root if pinned is not None and not pinned.synthetic else "DIR"
        print(
            f"sonieval data splits: {n_failed} clip(s) could not be read (listed above; also in "
            f"{proto.layout.ledger}); `sonieval data esc50 --esc50 {copy}` checks every clip "
            f"of the copy; fix them, then rerun `sonieval data splits {args.protocol}`",
            file=sys.stderr,
        )
        return 1
    return 0


def _run_synthetic(args: argparse.Namespace) -> int:
    from sonieval.data.esc50 import open_esc50
    from sonieval.data.synthetic import make_synthetic_esc50

    ds = open_esc50(make_synthetic_esc50(args.folder))
    print(f"wrote {ds.label}")
    return 0


def _run_stale(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sonieval.data.results_folder import find_stale, making_command
    from sonieval.errors import DataError
    from sonieval.results_layout import ResultsLayout

    target = Path(args.target)
    protocol = None
    if target.is_file():
        from sonieval.protocol import load_protocol

        protocol, results = args.target, load_protocol(target).results_path
    elif target.is_dir():
        results = target
    else:
        raise DataError("neither a protocol file nor a results folder", path=target)
    stale = find_stale(results)
    for path in stale.stale_wavs:
        print(f"{'deleted' if args.delete else 'stale'}: {path}")
        if args.delete:
            path.unlink()
    if args.delete:
        _remove_empty_folders(ResultsLayout(stale.results).sonifications)
    verb = (
        "deleted" if args.delete else "not listed in tables/sonifications.parquet (rerun with --delete to remove them)"
    )
    print(f"{len(stale.stale_wavs)} stale WAV file(s) under {ResultsLayout(stale.results).sonifications}: {verb}")
    if not stale.stale_rows.empty:
        print(
            f"{len(stale.stale_rows)} row(s) of tables/sonifications.parquet are of clips not in tables/clips.parquet: "
            f"rebuild the table with `{making_command('sonifications', protocol)}`"
        )
    return 0


def _remove_empty_folders(top) -> None:
    import os

    for folder, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
        if folder != str(top) and not os.listdir(folder):
            os.rmdir(folder)


def run(args: argparse.Namespace) -> int:
    actions = {"esc50": _run_esc50, "splits": _run_splits, "synthetic": _run_synthetic, "stale": _run_stale}
    return actions[args.data_command](args)
