"""Benchmark: the report's mixed model on all marks, at 75,000 and 800,000 marks.

``mark ~ 0 + system + (1|rater) + (1|clip)`` by exact REML (sonieval.stats.crossed) on SIMULATED
incomplete designs shaped like a crowdsourced study (each rater marks 25 random clips; clips
nested in 14 systems, as in the public data set the issue was found on):

    75k:  75,000 marks, 3,000 raters, 1,000 clips     (goal < 10 s, < 4 GiB)
    800k: 800,000 marks, 32,000 raters, 2,000 clips   (goal < 60 s, < 4 GiB)

Each size runs in its own subprocess, so its peak resident memory (ru_maxrss, data included) is
its own. Timed: the fit with Satterthwaite inference and all 91 pairwise contrasts, as the report
calls them (``models.mixed_model`` + ``models.mixed_model_contrasts``), and, separately, the
reliability model ``mark ~ 1 + (1|rater) + (1|stimulus)``. Side by side in one process: the same
fit against statsmodels' MixedLM (dense variance components) on a 1,000-mark subset: the
speed ratio and the largest relative difference of the variance components.

    .venv/bin/python bench/bench_mixed_model.py [--sizes 75k 800k] [--compare-rows 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {"75k": (3000, 25, 1000), "800k": (32000, 25, 2000)}  # raters, marks per rater, clips
GOALS = {"75k": 10.0, "800k": 60.0}


def _data(size: str, seed: int = 0):
    from sonieval.stats.simulate import simulate_incomplete_ratings

    raters, per, clips = SIZES[size]
    quality = [3.0 + 0.05 * k for k in range(14)]
    ratings, _ = simulate_incomplete_ratings(
        quality=quality, n_raters=raters, n_clips=clips, per_rater=per, nested=True, seed=seed
    )
    return ratings


def child(size: str) -> dict:
    from sonieval.stats import models
    from sonieval.stats.reliability import icc_variance_components

    part = _data(size)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t0 = time.perf_counter()
    _, info, fit = models.mixed_model(part)
    pairs = models.mixed_model_contrasts(fit, info["systems_fitted"])
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    icc = icc_variance_components(part)
    t_icc = time.perf_counter() - t0
    return {
        "size": size,
        "n": len(part),
        "raters": int(part["rater_id"].nunique()),
        "clips": int(part["clip_id"].nunique()),
        "seconds_fit": t_fit,
        "seconds_icc": t_icc,
        "evaluations": info["n_evaluations"],
        "converged": info["converged"],
        "n_pairs": len(pairs),
        "rater_variance": info["rater_variance"],
        "clip_variance": info["clip_variance"],
        "residual_variance": info["residual_variance"],
        "icc_a1": icc["icc_a1"],
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "rss_after_data_gib": rss_data,
    }


def compare(n_rows: int) -> None:
    """Ours vs statsmodels MixedLM on the same small incomplete data: time ratio and agreement."""
    import numpy as np
    import statsmodels.formula.api as smf

    from sonieval.stats import models

    part = _data("75k", seed=1)
    keep = part["rater_id"].isin(part["rater_id"].drop_duplicates().iloc[: n_rows // 25])
    part = part[keep].reset_index(drop=True)
    t0 = time.perf_counter()
    _, info, _ = models.mixed_model(part)
    t_ours = time.perf_counter() - t0
    df = part.assign(
        system=part["system_id"].astype(str),
        rater=part["rater_id"].astype(str),
        clip=part["clip_id"].astype(str),
        one=1,
    )
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = smf.mixedlm(
            "mark ~ 0 + system",
            df,
            groups="one",
            re_formula="0",
            vc_formula={"rater": "0 + C(rater)", "clip": "0 + C(clip)"},
        ).fit(reml=True)
    t_sm = time.perf_counter() - t0
    vc = dict(zip(ref.model.exog_vc.names, ref.vcomp))
    rel = max(
        abs(info["rater_variance"] / vc["rater"] - 1),
        abs(info["clip_variance"] / vc["clip"] - 1),
        abs(info["residual_variance"] / ref.scale - 1),
    )
    print(
        f"\nside by side on {len(part):,} marks ({part['rater_id'].nunique()} raters, {part['clip_id'].nunique()} clips):"
    )
    print(f"  sonieval exact sparse REML (with Satterthwaite inference): {t_ours:6.2f} s")
    print(f"  statsmodels MixedLM, dense variance components:           {t_sm:6.2f} s")
    print(
        f"  ratio: {t_sm / t_ours:.0f}x; largest relative difference of the variance components: {rel:.1e}"
        f"{'' if np.isfinite(rel) else ' (statsmodels failed)'}"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--compare-rows", type=int, default=1000, help="marks for the statsmodels comparison (0: skip)")
    ap.add_argument("--child", choices=list(SIZES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    print(
        f"cores visible: {os.cpu_count()}; load average at start: {os.getloadavg()[0]:.1f} "
        "(other engineers share this machine); SIMULATED incomplete designs, clips nested in 14 systems"
    )
    print(
        f"{'size':>5} {'marks':>9} {'raters':>7} {'clips':>6} {'fit+91 contrasts':>17} {'ICC model':>10} "
        f"{'peak RSS':>9} {'evals':>6}  goal"
    )
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", size], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        ok = r["seconds_fit"] < GOALS[size] and r["peak_rss_gib"] < 4
        print(
            f"{size:>5} {r['n']:>9,} {r['raters']:>7,} {r['clips']:>6,} {r['seconds_fit']:>15.1f} s "
            f"{r['seconds_icc']:>8.1f} s {r['peak_rss_gib']:>6.2f} GiB {r['evaluations']:>6}  "
            f"< {GOALS[size]:.0f} s, < 4 GiB: {'met' if ok else 'NOT met'}"
        )
        print(
            f"      variances rater {r['rater_variance']:.4f}, clip {r['clip_variance']:.4f}, "
            f"residual {r['residual_variance']:.4f}; converged {r['converged']}; "
            f"RSS after making the data {r['rss_after_data_gib']:.2f} GiB"
        )
    if args.compare_rows:
        compare(args.compare_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
