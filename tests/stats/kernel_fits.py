"""Child process of test_stats_machines.py: the crossed REML fits under whatever BLAS kernel and
thread count the environment forces (OPENBLAS_CORETYPE, OPENBLAS_NUM_THREADS); prints one JSON line
with the kernel OpenBLAS really used and each fit's estimates and convergence verdict."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_stats_crossed import PENICILLIN  # noqa: E402 - the published data, kept in one place

from sonieval.stats.crossed import codes, fit_crossed_reml  # noqa: E402
from sonieval.stats.simulate import simulate_incomplete_ratings, simulate_ratings  # noqa: E402


def _fit_row(fit) -> dict:
    return {
        "converged": bool(fit.converged),
        "message": fit.message,
        "values": [fit.var_a, fit.var_b, fit.var_resid, fit.reml_criterion, *fit.beta.tolist()],
    }


def _ratings_fit(ratings) -> dict:
    s, _ = codes(ratings["system_id"])
    a, _ = codes(ratings["rater_id"])
    b, _ = codes(ratings["clip_id"])
    return _fit_row(fit_crossed_reml(ratings["mark"].to_numpy(float), s, a, b))


def penicillin() -> dict:
    plate, sample = np.repeat(np.arange(24), 6), np.tile(np.arange(6), 24)
    return _fit_row(fit_crossed_reml(PENICILLIN.ravel(), np.zeros(144, dtype=int), plate, sample))


def planted() -> dict:
    """The planted-effects report's design (tests/stats/test_stats_planted.py): 8 systems, 16 raters, 24 clips."""
    ratings, _ = simulate_ratings(
        quality=np.linspace(4.4, 1.6, 8), n_raters=16, n_clips=24, rater_bias_sd=0.5, clip_sd=0.5, seed=11
    )
    return _ratings_fit(ratings)


def crowd() -> dict:
    """bench_mixed_model's 800k-mark crowd design (each rater 25 random clips, clips nested in 14
    systems) reduced to test size: 20,000 marks, 800 raters, 400 clips."""
    ratings, _ = simulate_incomplete_ratings(
        quality=[3.0 + 0.05 * k for k in range(14)], n_raters=800, n_clips=400, per_rater=25, nested=True, seed=0
    )
    return _ratings_fit(ratings)


def main() -> None:
    from threadpoolctl import threadpool_info

    kernels = sorted({i.get("architecture") or "" for i in threadpool_info() if i.get("internal_api") == "openblas"})
    out = {"kernels": kernels, "fits": {f.__name__: f() for f in (penicillin, planted, crowd)}}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
