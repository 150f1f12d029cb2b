"""``sonieval sonify PROTOCOL``: trained gates → audio, with post-processing; waveform figures."""

from __future__ import annotations

import argparse

from sonieval.commands.engine_args import add_engine_arguments, open_engine

HELP = "sonify the listening set with every trained gate and post-processing (resumable, --shard k/N)"
DESCRIPTION = (
    "For every trained system and listening-set clip: cached embedding -> gate -> latent -> codec decode "
    "(once per system and clip) -> every post-processing of protocol.sonify.postprocess, plus the codec's own "
    "reconstruction. Writes sonifications/<system_id>/<clip_id>.wav and tables/sonifications.parquet. "
    "With --figure CLIP_ID it draws a waveform stack (original on top) instead."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("protocol", help="protocol file (protocols/*.yaml)")
    parser.add_argument(
        "--shard",
        metavar="k/N",
        help="do only shard k of N (1..N; deterministic, disjoint), recorded in the shard's own "
        "ledger; afterwards `sonieval sonify PROTOCOL` merges the shards and writes the table",
    )
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, ...")
    parser.add_argument("--figure", metavar="CLIP_ID", help="draw the waveform stack of this clip and exit")
    parser.add_argument("--systems", nargs="+", metavar="SYSTEM_ID", help="with --figure: the systems to show")
    parser.add_argument(
        "--out", help="with --figure: the PNG to write (default <results>/figures/waveforms_<clip>.png)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from sonieval.errors import SonievalError
    from sonieval.protocol import load_protocol

    proto = load_protocol(args.protocol)
    if args.figure:
        from sonieval.data.results_folder import require_tables
        from sonieval.pipeline.figures import sonification_figure

        require_tables(proto.results_path, ["clips", "sonifications"], args.protocol)
        path = sonification_figure(
            proto.results_path, args.figure, args.systems, args.out, clip_seconds=proto.data.clip_seconds
        )
        print(f"figure: {path}")
        return 0
    if args.systems or args.out:
        raise SonievalError("--systems and --out go with --figure CLIP_ID")

    from sonieval.commands.prepare import _print_failures
    from sonieval.ledger import open_ledger
    from sonieval.pipeline.sonify import parse_shard, run_sonify

    shard = parse_shard(args.shard)
    if shard is None:
        ledger = open_ledger(proto.results_path)
    else:  # its own ledger: no SQLite file shared between machines (sonieval.pipeline.ledgers)
        from sonieval.pipeline.ledgers import open_shard_ledger

        ledger = open_shard_ledger(proto.results_path, "sonify", shard)
    with open_engine(args) as engine, ledger:
        result = run_sonify(
            proto,
            ledger,
            shard,
            device=args.device,
            progress=not args.no_progress,
            engine=engine,
            write_table=shard is None,
        )
    print(f"sonify: {result.summary()}")
    _print_failures(result.batch.failed, ledger.path)
    if shard is None:
        print(f"table: {proto.layout.table('sonifications')}")
    else:
        print(
            f"ledger: {ledger.path}; when every shard has finished, `sonieval sonify {args.protocol}` merges "
            "them and writes the table"
        )
    return 1 if result.batch.failed else 0
