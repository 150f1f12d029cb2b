"""Per-system descriptives: mean marks with t-based and two-way cluster bootstrap 95 % CIs.

The t interval (mean ± t₀.₉₇₅,n−1 · sd/√n) treats marks as independent and is too narrow when
raters and clips repeat; the two-way cluster bootstrap (:mod:`sonieval.stats.bootstrap`)
resamples raters and clips and is the interval to read. Both are given so the difference is
visible.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from sonieval.stats.bootstrap import TwoWayWeights, group_means, percentile_ci
from sonieval.tables import RATING_ROLES

__all__ = ["system_means", "role_means", "mark_distribution"]


def system_means(son: pd.DataFrame, weights: TwoWayWeights | None, level: float = 0.95) -> tuple[pd.DataFrame, dict]:
    """One row per (system, attribute) of sonification marks.

    Returns the table and the bootstrap samples ``{attribute: (systems, B × S array)}`` so the
    correlations can reuse the same resamples (a paired comparison of metrics needs that).
    """
    rows = []
    boot: dict[str, tuple[pd.Index, np.ndarray]] = {}
    for attribute, part in son.groupby("attribute", sort=True):
        g = part.groupby("system_id")["mark"]
        agg = pd.DataFrame(
            {
                "n": g.size(),
                "mean": g.mean(),
                "sd": g.std(ddof=1),
                "median": g.median(),
                "n_raters": part.groupby("system_id")["rater_id"].nunique(),
                "n_clips": part.groupby("system_id")["clip_id"].nunique(),
            }
        )
        tq = stats.t.ppf(0.5 + level / 2, np.maximum(agg["n"] - 1, 1))
        half = tq * agg["sd"] / np.sqrt(agg["n"])
        agg["t_ci_low"] = agg["mean"] - half
        agg["t_ci_high"] = agg["mean"] + half
        if weights is not None and weights.n_boot:
            systems, samples = group_means(part, "system_id", weights)
            lo, hi = percentile_ci(samples)
            agg.loc[systems, "ci_low"] = lo
            agg.loc[systems, "ci_high"] = hi
            agg.loc[systems, "boot_undefined"] = np.isnan(samples).sum(axis=0)
            boot[attribute] = (systems, samples)
        else:
            agg["ci_low"] = np.nan
            agg["ci_high"] = np.nan
            agg["boot_undefined"] = 0
        agg["attribute"] = attribute
        notes = []
        for _, r in agg.iterrows():
            note = []
            if r["n"] < 2:
                note.append("one mark: no spread, CIs undefined")
            elif r["sd"] == 0:
                note.append("all marks equal: zero-width t CI")
            if weights is None or not weights.n_boot:
                note.append("bootstrap off: no cluster CI")
            elif r["n_raters"] < 2 or r["n_clips"] < 2:
                note.append("fewer than 2 raters or clips: cluster CI degenerate")
            if r.get("boot_undefined", 0):
                note.append(f"{int(r['boot_undefined'])} resamples without this system left out")
            notes.append("; ".join(note))
        agg["note"] = notes
        rows.append(agg.reset_index())
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    cols = [
        "system_id",
        "attribute",
        "n",
        "n_raters",
        "n_clips",
        "mean",
        "sd",
        "median",
        "t_ci_low",
        "t_ci_high",
        "ci_low",
        "ci_high",
        "note",
    ]
    return table[cols] if len(table) else table, boot


_SON, _REFERENCE, _ANCHOR, _ATTENTION = RATING_ROLES  # the order sonieval.tables lists them in


def role_means(ratings: pd.DataFrame) -> pd.DataFrame:
    """Mean marks of the hidden reference and anchor trials: the scale's two ends as used."""
    part = ratings[ratings["role"].isin([_REFERENCE, _ANCHOR])]
    if part.empty:
        return pd.DataFrame(columns=["role", "attribute", "n", "mean", "sd"])
    table = part.groupby(["role", "attribute"])["mark"].agg(n="size", mean="mean", sd="std").reset_index()
    table["note"] = np.where(table["n"] < 2, "one mark: sd undefined", "")
    return table


def mark_distribution(son: pd.DataFrame, scale_min: int, scale_max: int) -> pd.DataFrame:
    """Share of each mark per (system, attribute): the data behind the distribution figure.

    Every scale step has a column; a mark between steps (the mean of duplicated rows, kept by
    ``--duplicates mean``) gets its own column, so the shares still sum to one. A scale of more
    than 11 steps (a 0-100 slider) is shown in five equal intervals (``share_0-20`` ...).
    """
    if scale_max - scale_min > 10:  # a slider scale (0-100): five equal intervals (BS.1534's Bad ... Excellent)
        edges = np.linspace(scale_min, scale_max, 6)
        names = [f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:])]
        binned = son.assign(mark=pd.cut(son["mark"], edges, labels=names, include_lowest=True))
        counts = binned.groupby(["system_id", "attribute"], observed=True)["mark"].value_counts().unstack(fill_value=0)
        shares = counts.reindex(columns=names, fill_value=0)
        shares = shares.div(shares.sum(axis=1), axis=0)
        shares.columns = [f"share_{c}" for c in names]
        return shares.reset_index()
    counts = son.groupby(["system_id", "attribute"], observed=True)["mark"].value_counts().unstack(fill_value=0)
    values = sorted(set(range(scale_min, scale_max + 1)) | {float(v) for v in counts.columns})
    counts = counts.reindex(columns=values, fill_value=0)
    shares = counts.div(counts.sum(axis=1), axis=0)
    shares.columns = [f"share_{float(m):g}" for m in shares.columns]
    return shares.reset_index()
