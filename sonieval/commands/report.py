"""``sonieval report``: correlation report from a ratings table and score tables."""

from __future__ import annotations

HELP = "Correlation report: screening, reliability, mixed models, metric-human agreement with CIs."
DESCRIPTION = (
    "Reads a ratings table (study export or any CSV/Parquet with the ratings columns) and the scores "
    "table (and optionally per-item scores), and writes report.html, report.md, summary.json, "
    "tables/*.csv and figures/*.png into --out. Use --simulated to build a demo report on SIMULATED ratings."
)


def add_arguments(parser) -> None:
    parser.add_argument("--ratings", help="ratings table (.csv or .parquet)")
    parser.add_argument("--scores", help="scores table (.csv or .parquet): the leaderboard's scores.parquet")
    parser.add_argument("--item-scores", help="per-item scores table (optional)")
    parser.add_argument("--clips", help="clips table giving each clip's category, for per-class correlations (optional)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--scale-min", type=int, default=None,
                        help="lowest mark on the study's scale (default: the table's scale_min column, else 1)")
    parser.add_argument("--scale-max", type=int, default=None,
                        help="highest mark on the study's scale (default: the table's scale_max column, else 5)")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default 2000; 0 = no CIs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-screening", action="store_true", help="keep every rater")
    parser.add_argument("--reference-max-mark", type=int, default=3,
                        help="hidden reference marked at or below this counts against a rater (default 3)")
    parser.add_argument("--reference-max-fraction", type=float, default=0.15)
    parser.add_argument("--anchor-min-mark", type=int, default=4,
                        help="anchor marked at or above this counts against a rater (default 4)")
    parser.add_argument("--anchor-max-fraction", type=float, default=0.15)
    parser.add_argument("--attention-max-fraction", type=float, default=0.0)
    parser.add_argument("--mixed-model-max-rows", type=int, default=3000,
                        help="fit the mixed model on a seeded rater×clip subsample above this many marks (default 3000)")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--simulated", action="store_true",
                        help="ignore --ratings/--scores and write a demo report on SIMULATED ratings and scores")


def run(args) -> int:
    from sonieval.errors import SonievalError
    from sonieval.stats.report import ReportOptions, build_report
    from sonieval.stats.screening import ScreeningRules

    if args.bootstrap < 0:
        raise SonievalError("--bootstrap must be ≥ 0")
    if args.simulated:
        from sonieval.stats.simulate import write_simulated_report

        result = write_simulated_report(args.out, n_boot=args.bootstrap, seed=args.seed)
    else:
        if not args.ratings or not args.scores:
            raise SonievalError("--ratings and --scores are required", hint="or pass --simulated for a demo report")
        rules = ScreeningRules(
            hidden_reference_max_mark=args.reference_max_mark, hidden_reference_max_fraction=args.reference_max_fraction,
            anchor_min_mark=args.anchor_min_mark, anchor_max_fraction=args.anchor_max_fraction,
            attention_max_fraction=args.attention_max_fraction, enabled=not args.no_screening,
        )
        options = ReportOptions(scale_min=args.scale_min, scale_max=args.scale_max, n_boot=args.bootstrap,
                                seed=args.seed, rules=rules, mixed_model_max_rows=args.mixed_model_max_rows,
                                figures=not args.no_figures, progress=True)
        result = build_report(args.ratings, args.scores, args.out, item_scores_path=args.item_scores,
                              clips_path=args.clips, options=options)
    s = result.summary
    label = "SIMULATED ratings: " if s.get("simulated") else ""
    print(f"{label}{s['n_ratings']} ratings, {s['n_raters_kept']}/{s['n_raters']} raters kept; "
          f"report in {result.out_dir / 'report.html'}")
    for c in s["correlations"]:
        if c.get("level") == "system" and c.get("spearman") is not None:
            print(f"  {c['metric']} vs {c['attribute']}: rho={c['spearman']:.2f} "
                  f"[{_f(c.get('ci_low'))}, {_f(c.get('ci_high'))}] p_perm={_f(c.get('p_permutation'))} n={c['n']}")
    return 0


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
