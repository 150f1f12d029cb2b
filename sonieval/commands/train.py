"""``sonieval train PROTOCOL``: the gate training sweep."""

from __future__ import annotations

import argparse

from sonieval.commands.engine_args import add_engine_arguments, open_engine

HELP = "train gates over encoders x variants x alignments x learning rates x epochs (resumable)"
DESCRIPTION = (
    "Trains every gate of the protocol's sweep on the cached embeddings and latents (split train, evaluated on "
    "validation each epoch; MSE, batch 64, accumulation 2, seed 42 by default). Writes checkpoints/, training/<run>/ "
    "(losses.csv, loss_curves.png, tensorboard/) and tables/training.parquet. A killed sweep resumes at the next "
    "unfinished run, and within a run from its last saved epoch."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("protocol", help="protocol file (protocols/*.yaml)")
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, ...")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from sonieval.extras import require

    require("sonieval train", "tensorboard")
    from sonieval.commands.prepare import _print_failures
    from sonieval.ledger import open_ledger
    from sonieval.pipeline.train import run_train
    from sonieval.protocol import load_protocol

    proto = load_protocol(args.protocol)
    with open_engine(args) as engine, open_ledger(proto.results_path) as ledger:
        result = run_train(proto, ledger, device=args.device, progress=not args.no_progress, engine=engine)
    print(f"train: {result.summary('runs')}")
    _print_failures(result.failed, ledger.path)
    print(f"table: {proto.layout.table('training')}")
    return 1 if result.failed else 0
