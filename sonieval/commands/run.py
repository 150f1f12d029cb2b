"""sonieval run PROTOCOL: all stages of a protocol, in order."""

from __future__ import annotations

import argparse
import sys

from sonieval.commands.engine_args import add_engine_arguments, open_engine

HELP = "run every stage of a protocol (clips, prepare, train, sonify, score)"
DESCRIPTION = (
    "Run a protocol end to end. Each stage reads the protocol and the previous stages' tables; "
    "finished items are skipped, so an interrupted run resumes where it stopped. Items that fail (a clip "
    "that cannot be read, a run that cannot train) do not stop the others: they are listed at the end "
    "(stage, item, error; all of them in <results>/run_failures.csv) and the exit status is 1. "
    "With --engine ray the stages' tasks run on Ray workers (a killed worker's task is retried); a run "
    "stopped under one engine resumes under the other."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("protocol", help="protocol YAML file (see protocols/)")
    p.add_argument("--only", nargs="+", metavar="STAGE", help="run only these stages")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage")
    add_engine_arguments(p)


def run(args: argparse.Namespace) -> int:
    from sonieval.extras import require

    require("sonieval run", "transformers", "tensorboard")
    from sonieval.pipeline.run import run_protocol
    from sonieval.protocol import load_protocol

    proto = load_protocol(args.protocol)
    with open_engine(args) as engine:
        result = run_protocol(proto, only=args.only, until=args.until, engine=engine)
    print(f"results: {proto.results_path}")
    from sonieval.gallery import gallery_page

    if gallery_page(proto.results_path).is_file():
        print(f"gallery (open in a browser): {gallery_page(proto.results_path).resolve().as_uri()}")
    if len(result.failures):
        print(f"sonieval run: {len(result.failures)} item(s) failed; the others finished:", file=sys.stderr)
        for line in result.failure_lines():
            print(line, file=sys.stderr)
        for line in _next_steps(result, proto, args.protocol):
            print(line, file=sys.stderr)
        return 1
    return 0


def _next_steps(result, proto, protocol: str) -> list[str]:
    """What to do about the failures: check the clips' source when clips failed, then rerun."""
    lines = []
    if (result.failures["stage"] == "clips").any():
        from sonieval.data.results_folder import read_pin

        pinned = read_pin(proto.results_path)
        where = f"--esc50 {pinned.root}" if pinned is not None and not pinned.synthetic else "--esc50 DIR"
        lines.append(f"  check every clip of the copy with `sonieval data esc50 {where}`")
    lines.append(f"  fix what the errors name, then `sonieval run {protocol}` redoes only the failed items")
    return lines
