"""``sonieval score``: KAD/FAD leaderboards and per-item scores."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sonieval.commands.engine_args import add_engine_arguments, open_engine
from sonieval.models.catalogue import metric_embedding_names
from sonieval.results_layout import ScoresLayout

HELP = "KAD/FAD leaderboards against a reference set, per-item scores (for a protocol or any folders of audio)"
DESCRIPTION = (
    "Score systems with KAD and FAD against a reference set.\n\n"
    "  sonieval score PROTOCOL                      the protocol's sonified systems vs metrics.reference_set\n"
    "  sonieval score --reference DIR --system NAME=DIR [--system NAME=DIR ...] --out DIR\n\n"
    "Writes scores.parquet/csv, item_scores.parquet, paired_kad.csv, leaderboard.csv/.md/.html and figures/ "
    "(one dot plot per embedding, metric, encoder and post-processing). The default embedding is the "
    f"weight-free 'logmel'; others: {', '.join(metric_embedding_names())} (transformers; ':small' = random-init, "
    "':DIR' = a local save_pretrained folder) and kadtk:<model>."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("protocol", nargs="?", help="protocol YAML (omit when scoring folders)")
    parser.add_argument("--reference", metavar="DIR", help="folder of reference audio (folder mode)")
    parser.add_argument(
        "--system",
        metavar="NAME=DIR",
        action="append",
        default=[],
        help="a system's folder of audio (repeat for each system)",
    )
    parser.add_argument("--out", metavar="DIR", help="output folder (folder mode; protocol mode: <results>/scores)")
    parser.add_argument(
        "--embedding",
        action="append",
        metavar="SPEC",
        help="embedding spec (repeatable); default: the protocol's, or 'logmel'",
    )
    parser.add_argument("--metric", action="append", choices=["kad", "fad"], help="metric (repeatable)")
    parser.add_argument("--bootstrap", type=int, metavar="N", help="bootstrap resamples for CIs (0: none)")
    parser.add_argument(
        "--bandwidth",
        type=float,
        metavar="SIGMA",
        help="fixed KAD bandwidth (default: median pairwise distance of the reference)",
    )
    parser.add_argument("--cache", metavar="DIR", help="embedding cache folder")
    parser.add_argument("--no-items", action="store_true", help="skip per-item scores")
    add_engine_arguments(parser)


def _systems(values: list[str]) -> dict[str, str]:
    from sonieval.errors import SonievalError

    out: dict[str, str] = {}
    for v in values:
        name, sep, folder = v.partition("=")
        if not sep or not name or not folder:
            raise SonievalError(f"--system {v!r}: expected NAME=DIR", hint="e.g. --system lowpass=out/lowpass")
        if name in out:
            raise SonievalError(f"--system {name!r} given twice", hint="system names must be unique")
        out[name] = folder
    return out


def run(args: argparse.Namespace) -> int:
    from sonieval.errors import SonievalError

    overrides = {
        "embeddings": args.embedding,
        "metrics": args.metric,
        "bootstrap": args.bootstrap,
        "bandwidth": args.bandwidth,
        "progress": not args.no_progress,
    }
    if args.no_items:
        overrides["item_metrics"] = []
    if args.bootstrap is not None and args.bootstrap < 0:
        raise SonievalError(f"--bootstrap {args.bootstrap}: must be 0 or more")
    if args.protocol:
        if args.reference or args.system:
            raise SonievalError("give either a PROTOCOL or --reference/--system folders, not both")
        from sonieval.ledger import open_ledger
        from sonieval.metrics.leaderboard import run_score
        from sonieval.protocol import load_protocol

        proto = load_protocol(args.protocol)
        if args.cache:
            proto.cache_dir = args.cache
        with open_engine(args) as engine, open_ledger(proto.results_path) as ledger:
            outputs = run_score(proto, ledger, engine=engine, **overrides)
        out_dir = proto.layout.scores.root
    else:
        if args.engine != "local" or args.address:
            raise SonievalError("--engine and --address go with a PROTOCOL (folder mode scores in this process)")
        if not args.reference or not args.system or not args.out:
            raise SonievalError(
                "folder mode needs --reference DIR, at least one --system NAME=DIR and --out DIR",
                hint="or give a protocol: sonieval score protocols/demo.yaml",
            )
        from sonieval.data.results_folder import check_audio_folders
        from sonieval.metrics.leaderboard import score_folders
        from sonieval.metrics.scoring import ScoreConfig

        config = ScoreConfig.from_spec(per_class=False, **overrides)
        systems = _systems(args.system)
        # Folders inside a results folder: no stale WAV counted, no mix of data sources.
        check_audio_folders(args.reference, systems, purpose="scored")
        outputs = score_folders(args.reference, systems, args.out, config=config, cache_dir=args.cache)
        out_dir = Path(args.out)
    board = outputs.leaderboard
    if not board.empty:
        for (emb, metric), g in board.groupby(["embedding", "metric"]):
            print(f"{metric.upper()} on {emb} (reference {g['reference_set'].iloc[0]}, n={g['n_reference'].iloc[0]}):")
            for _, r in g.iterrows():
                ci = "" if r["ci_low"] != r["ci_low"] else f" [{r['ci_low']:.4g}, {r['ci_high']:.4g}]"
                value = "error: " + str(r["error"]) if r["value"] != r["value"] else f"{r['value']:.4g}{ci}"
                flag = r.get("system_random_init")
                mark = " (random-init models, not a result)" if flag is not None and flag == flag and bool(flag) else ""
                print(f"  {int(r['rank']):>3}. {r['system_id']}: {value}{mark}")
    for _key, err in outputs.failures.items():
        print(f"failed: {err}")
    for note in outputs.notes:
        print(f"warning: {note}", file=sys.stderr)
    print(
        f"wrote {ScoresLayout(out_dir).leaderboard} ({len(outputs.scores)} score rows, "
        f"{len(outputs.item_scores)} item rows, {len(outputs.failures)} failure(s))"
    )
    return 1 if outputs.failures else 0
