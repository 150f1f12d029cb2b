"""sonieval run PROTOCOL: all stages of a protocol, in order."""

from __future__ import annotations

import argparse

HELP = "run every stage of a protocol (clips, prepare, train, sonify, score)"
DESCRIPTION = (
    "Run a protocol end to end. Each stage reads the protocol and the previous stages' tables; "
    "finished items are skipped, so an interrupted run resumes where it stopped."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("protocol", help="protocol YAML file (see protocols/)")
    p.add_argument("--only", nargs="+", metavar="STAGE", help="run only these stages")
    p.add_argument("--until", metavar="STAGE", help="stop after this stage")


def run(args: argparse.Namespace) -> int:
    from sonieval.pipeline.run import run_protocol
    from sonieval.protocol import load_protocol

    proto = load_protocol(args.protocol)
    run_protocol(proto, only=args.only, until=args.until)
    print(f"results: {proto.results_path}")
    return 0
