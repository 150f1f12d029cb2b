"""sonieval demo: the main job end to end, offline, on embedded defaults."""

from __future__ import annotations

import argparse

HELP = "run the whole pipeline offline on small random models (protocols/demo.yaml)"
DESCRIPTION = (
    "Runs protocols/demo.yaml end to end: clips, prepare, train, sonify, score, a listening study "
    "and a report on SIMULATED ratings. Uses ESC-50 from $SONIEVAL_ESC50 when set, otherwise a "
    "built-in synthetic clip set. Models are small and randomly initialised (no downloads); every "
    "output says so. Rerunning reuses finished work."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", help="another demo protocol (default: protocols/demo.yaml)")


def run(args: argparse.Namespace) -> int:
    from sonieval.extras import require

    require("sonieval demo", "transformers", "tensorboard", "sqlalchemy")
    from sonieval.demo import run_demo

    run_demo(args.protocol)
    return 0
