"""``sonieval report``: correlation report from a ratings table and score tables."""

from __future__ import annotations

import argparse

from sonieval.results_layout import StudyLayout

HELP = "Correlation report: screening, reliability, mixed models, metric-human agreement with CIs."
DESCRIPTION = (
    "Reads a ratings table (study export or any CSV/Parquet with the ratings columns) and the scores "
    "table (and optionally per-item scores), and writes report.html, report.md, summary.json, "
    "tables/*.csv and figures/*.png into --out. With --protocol, the tables, the scale, the bootstrap "
    "and the screening rules default to that protocol's (results/<name>/study/ratings.parquet, "
    "results/<name>/scores/*.parquet, results/<name>/report). --simulated writes a demo report on "
    "SIMULATED ratings."
)


def add_arguments(parser) -> None:
    parser.add_argument("--protocol", help="protocol YAML: default tables, scale, bootstrap and screening rules")
    parser.add_argument(
        "--ratings", help="ratings table (.csv or .parquet), e.g. the output of `sonieval study export`"
    )
    parser.add_argument("--scores", help="scores table (.csv or .parquet): the score stage's scores.parquet")
    parser.add_argument("--item-scores", help="per-item scores table (optional)")
    parser.add_argument(
        "--clips",
        help="clips table giving each clip's category, for per-class correlations "
        "(optional; the study export already carries category)",
    )
    parser.add_argument("--out", help="output folder (default with --protocol: results/<name>/report)")
    parser.add_argument(
        "--scale-min",
        type=int,
        default=None,
        help="lowest mark on the study's scale (default: the table's scale_min column, else 1)",
    )
    parser.add_argument(
        "--scale-max",
        type=int,
        default=None,
        help="highest mark on the study's scale (default: the table's scale_max column, else 5)",
    )
    parser.add_argument("--bootstrap", type=int, default=None, help="bootstrap resamples (default 2000; 0 = no CIs)")
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of every resampling (default 0, or the protocol's)"
    )
    parser.add_argument("--no-screening", action="store_true", help="keep every rater")
    parser.add_argument(
        "--reference-max-mark",
        type=int,
        default=None,
        help="hidden reference marked at or below this counts against a rater (default 3)",
    )
    parser.add_argument(
        "--reference-max-fraction",
        type=float,
        default=None,
        help="share of hidden-reference trials a rater may mark that low (default 0.15)",
    )
    parser.add_argument(
        "--anchor-min-mark",
        type=int,
        default=None,
        help="anchor marked at or above this counts against a rater (default 4)",
    )
    parser.add_argument(
        "--anchor-max-fraction",
        type=float,
        default=None,
        help="share of anchor trials a rater may mark that high (default 0.15)",
    )
    parser.add_argument(
        "--attention-max-fraction",
        type=float,
        default=None,
        help="share of attention checks a rater may miss (default 0)",
    )
    parser.add_argument(
        "--duplicates",
        choices=("first", "last", "mean"),
        default=None,
        help="keep one of duplicated (rater_id, trial_id, attribute) rows: the first or last "
        "(by submitted_at, else table order) or their mean mark (default: refuse them)",
    )
    # Removed: the mixed model is fitted exactly on every mark. Kept hidden to say so in one line.
    parser.add_argument("--mixed-model-max-rows", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument(
        "--simulated",
        action="store_true",
        help="ignore --ratings/--scores and write a demo report on SIMULATED ratings and scores",
    )


def _options(args):
    """ReportOptions from the protocol (if any), then the flags given on the command line."""
    import dataclasses
    from pathlib import Path

    from sonieval.stats.reporting import ReportOptions

    paths = {"ratings": args.ratings, "scores": args.scores, "item_scores": args.item_scores, "out": args.out}
    options = ReportOptions()
    if args.protocol:
        from sonieval.protocol import load_protocol

        proto = load_protocol(args.protocol)
        options = ReportOptions.from_protocol(proto)
        layout = proto.layout
        try:
            from sonieval.study.create import study_paths_for_protocol

            study_dir = study_paths_for_protocol(proto)[0]
        except ImportError:  # the study package is optional for reports
            study_dir = layout.study
        defaults = {
            "ratings": StudyLayout(study_dir).ratings_table,
            "scores": layout.scores.scores_table,
            "item_scores": layout.scores.item_scores_table,
            "out": layout.report.root,
        }
        for key, value in defaults.items():
            if paths[key] is None and (key != "item_scores" or Path(value).is_file()):
                paths[key] = str(value)
    rules = options.rules
    rule_flags = {
        "hidden_reference_max_mark": args.reference_max_mark,
        "hidden_reference_max_fraction": args.reference_max_fraction,
        "anchor_min_mark": args.anchor_min_mark,
        "anchor_max_fraction": args.anchor_max_fraction,
        "attention_max_fraction": args.attention_max_fraction,
    }
    rules = dataclasses.replace(rules, **{k: v for k, v in rule_flags.items() if v is not None})
    if args.no_screening:
        rules = dataclasses.replace(rules, enabled=False)
    given = {
        "scale_min": args.scale_min,
        "scale_max": args.scale_max,
        "n_boot": args.bootstrap,
        "seed": args.seed,
        "duplicates": args.duplicates,
    }
    options = dataclasses.replace(
        options,
        rules=rules,
        figures=not args.no_figures,
        progress=True,
        **{k: v for k, v in given.items() if v is not None},
    )
    return options, paths


def run(args) -> int:
    from sonieval.errors import SonievalError
    from sonieval.stats.reporting import report

    if args.bootstrap is not None and args.bootstrap < 0:
        raise SonievalError("--bootstrap must be ≥ 0")
    if args.mixed_model_max_rows is not None:
        raise SonievalError(
            "--mixed-model-max-rows was removed: the mixed model is now fitted exactly on every mark",
            hint="drop the flag",
        )
    if args.simulated:
        from sonieval.stats.simulate import write_simulated_report

        if not args.out:
            raise SonievalError("--out is required", hint="the folder to write the SIMULATED demo report into")
        result = write_simulated_report(
            args.out, n_boot=2000 if args.bootstrap is None else args.bootstrap, seed=args.seed or 0
        )
    else:
        options, paths = _options(args)
        missing = [f"--{k.replace('_', '-')}" for k in ("ratings", "scores", "out") if not paths[k]]
        if missing:
            raise SonievalError(
                f"{', '.join(missing)} required",
                hint="or pass --protocol PROTOCOL, or --simulated --out DIR for a demo report",
            )
        _require_inputs(paths, args.protocol)
        if not args.clips:  # with --clips the report names the clips table's data set itself
            options.notes.append(_data_source_note(paths["scores"], args.protocol))
        result = report(
            paths["ratings"],
            paths["scores"],
            item_scores=paths["item_scores"],
            clips=args.clips,
            out_dir=paths["out"],
            options=options,
        )
    s = result.summary
    label = "SIMULATED ratings: " if s.get("simulated") else ""
    print(
        f"{label}{s['n_ratings']} ratings, {s['n_raters_kept']}/{s['n_raters']} raters kept; "
        f"report in {result.out_dir / 'report.html'}"
    )
    for c in s["correlations"]:
        if c.get("level") == "system" and c.get("spearman") is not None:
            print(
                f"  {c['metric']} vs {c['attribute']} marks: rho={c['spearman']:.2f} "
                f"[{_f(c.get('ci_low'))}, {_f(c.get('ci_high'))}] p_perm={_f(c.get('p_permutation'))} n={c['n']}"
            )
    return 0


def _require_inputs(paths: dict, protocol: str | None) -> None:
    """A missing ratings or scores table is named with the command that makes it (nothing is written)."""
    from pathlib import Path

    from sonieval.data.results_folder import missing_table_error

    for kind in ("ratings", "scores"):
        if not Path(paths[kind]).is_file():
            raise missing_table_error(kind, paths[kind], protocol)


def _data_source_note(scores_path: str, protocol: str | None) -> str:
    """The data checks' line on where the scored clips came from (the results folder's pinned source)."""
    from pathlib import Path

    from sonieval.data.results_folder import pinned_source

    if protocol:
        from sonieval.protocol import load_protocol

        results = load_protocol(protocol).results_path
    else:
        results = Path(scores_path).resolve().parent.parent  # <results>/scores/scores.parquet
    source, where = pinned_source(results) if results.is_dir() else (None, None)
    if source is None:
        return (
            f"data source: not recorded (no data_source.json or clips table in {results}); the scores' "
            "reference_set column says what they were scored against"
        )
    sha = f", meta/esc50.csv sha256 {source.meta_sha256[:12]}" if source.meta_sha256 and not source.synthetic else ""
    return f"data source: {source.label or source.describe()}{sha} (recorded in {where})"


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
