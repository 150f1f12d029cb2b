"""``sonieval prepare PROTOCOL``: embeddings and codec latents into the on-disk cache."""

from __future__ import annotations

import argparse
import os

from sonieval.commands.engine_args import add_engine_arguments, open_engine

HELP = "compute encoder embeddings and codec latents once into the cache (resumable)"
DESCRIPTION = (
    "For the clips of tables/clips.parquet needed downstream (train, validation, listening set), compute each "
    "encoder's embedding (float16) and the codec latent (float32) into <results>/cache/, keyed by the clip's "
    "content hash and the model. Finished entries are skipped on rerun; writes tables/prepared.parquet."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("protocol", help="protocol file (protocols/*.yaml)")
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per encoder/codec forward (default 8)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from sonieval.extras import require

    require("sonieval prepare", "transformers")
    from sonieval.ledger import open_ledger
    from sonieval.pipeline.prepare import run_prepare
    from sonieval.protocol import load_protocol

    proto = load_protocol(args.protocol)
    if args.batch_size < 1:
        from sonieval.errors import SonievalError

        raise SonievalError(f"--batch-size {args.batch_size}: must be at least 1")
    with open_engine(args) as engine, open_ledger(proto.results_path) as ledger:
        result = run_prepare(
            proto,
            ledger,
            device=args.device,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            engine=engine,
        )
    print(f"prepare: {result.summary()}")
    _print_failures({k: v for b in result.batches.values() for k, v in b.failed.items()}, ledger.path)
    print(f"table: {proto.layout.table('prepared')}")
    return 1 if any(b.failed for b in result.batches.values()) else 0


def _print_failures(failed: dict[str, str], ledger_file: os.PathLike, limit: int = 10) -> None:
    for i, (key, err) in enumerate(sorted(failed.items())):
        if i == limit:
            print(f"  ... and {len(failed) - limit} more (see {ledger_file})")
            break
        print(f"  failed {key}: {err}")
