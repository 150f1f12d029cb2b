"""Vectorised two-way cluster bootstrap over raters and clips.

Marks are crossed: each rater hears many clips and each clip is heard by many raters, so
neither raters nor clips are independent units on their own. The pigeonhole ("two-way
cluster") bootstrap (Owen 2007, "The pigeonhole bootstrap", *Ann. Appl. Stat.* 1(2):386-411;
McCullagh 2000) resamples raters and clips independently with replacement; a mark enters a
resample with weight ``w_rater × w_clip``. A weighted group mean is then

    mean_g = Σ_i w_r[r_i] w_c[c_i] x_i / Σ_i w_r[r_i] w_c[c_i],

which is computed for all resamples at once as sparse (group·clip × rater) matrices times the
dense rater-weight matrix, so 2,000 resamples of 800,000 marks take seconds, with no loop over
resamples in pandas.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = ["TwoWayWeights", "draw_weights", "resample_counts", "group_means", "percentile_ci"]


@dataclass
class TwoWayWeights:
    """Resampling weights: ``rater`` (B × R) and ``clip`` (B × C) multinomial counts."""

    raters: pd.Index
    clips: pd.Index
    rater: np.ndarray
    clip: np.ndarray

    @property
    def n_boot(self) -> int:
        return int(self.rater.shape[0])


def draw_weights(raters, clips, n_boot: int, seed: int) -> TwoWayWeights:
    """Multinomial counts for resampling raters and clips with replacement (one draw per resample)."""
    raters = pd.Index(sorted(set(map(str, raters))))
    clips = pd.Index(sorted(set(map(str, clips))))
    rng = np.random.default_rng(seed)
    return TwoWayWeights(
        raters, clips, resample_counts(rng, len(raters), n_boot), resample_counts(rng, len(clips), n_boot)
    )


def resample_counts(rng: np.random.Generator, n: int, n_boot: int, chunk: int = 250) -> np.ndarray:
    """How often each of ``n`` items is drawn in each of ``n_boot`` resamples with replacement.

    The same distribution as ``rng.multinomial(n, [1/n]*n, size=n_boot)``, from uniform draws
    counted with one bincount per chunk (3× faster at 32,000 raters); int32 halves the memory of
    the B × n array (2,000 × 32,000 raters: 256 MB).
    """
    out = np.empty((n_boot, n), dtype=np.int32)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        draws = rng.integers(0, n, (size, n)) + (np.arange(size) * n)[:, None]
        out[start : start + size] = np.bincount(draws.ravel(), minlength=size * n).reshape(size, n)
    return out


def group_means(
    df: pd.DataFrame, group_col: str, weights: TwoWayWeights, *, value_col: str = "mark", chunk: int = 250
) -> tuple[pd.Index, np.ndarray]:
    """Bootstrap means of ``value_col`` per ``group_col``: returns (groups, array B × G).

    A resample in which a group received no weight (all its raters or clips left out) gives NaN
    for that group; callers count those and say so.
    """
    groups = pd.Index(sorted(df[group_col].astype(str).unique()))
    g = groups.get_indexer(df[group_col].astype(str))
    r = weights.raters.get_indexer(df["rater_id"].astype(str))
    c = weights.clips.get_indexer(df["clip_id"].astype(str))
    if (r < 0).any() or (c < 0).any():
        raise ValueError("ratings contain raters or clips that the bootstrap weights do not know")
    n_c = len(weights.clips)
    # Collapse marks into (group, clip) × rater cells: sums and counts.
    cell = g.astype(np.int64) * n_c + c
    cells, cell_idx = np.unique(cell, return_inverse=True)
    x = df[value_col].to_numpy(dtype=np.float64)
    shape = (len(cells), len(weights.raters))
    sums = sp.csr_matrix((x, (cell_idx, r)), shape=shape)
    counts = sp.csr_matrix((np.ones_like(x), (cell_idx, r)), shape=shape)
    sums.sum_duplicates()
    counts.sum_duplicates()
    cell_group = cells // n_c
    cell_clip = cells % n_c
    to_group = sp.csr_matrix(
        (np.ones(len(cells)), (cell_group, np.arange(len(cells)))), shape=(len(groups), len(cells))
    )
    out = np.empty((weights.n_boot, len(groups)))
    for start in range(0, weights.n_boot, chunk):
        stop = min(start + chunk, weights.n_boot)
        wr = weights.rater[start:stop].T.astype(np.float64)  # R × b
        wc = weights.clip[start:stop][:, cell_clip].T.astype(np.float64)  # cells × b
        num = to_group @ (np.asarray(sums @ wr) * wc)
        den = to_group @ (np.asarray(counts @ wr) * wc)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:stop] = (num / den).T
    return groups, out


def percentile_ci(samples: np.ndarray, level: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over ``axis``, ignoring resamples where the statistic was undefined."""
    alpha = (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN, explained by callers
        lo = np.nanquantile(samples, alpha, axis=axis)
        hi = np.nanquantile(samples, 1 - alpha, axis=axis)
    return lo, hi
