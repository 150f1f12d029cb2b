"""Agreement between objective scores and human marks, with uncertainty.

Orientation: every metric is *oriented* before correlating, so that a **positive** ρ, τ or r
always means "the metric agrees with the listeners". Marks are higher-is-better; a
lower-is-better metric (KAD, FAD, distances; :data:`sonieval.stats.inputs.METRIC_DIRECTIONS`)
is negated, a higher-is-better one (envelope correlation, similarities) is used as it is. The
tables keep the raw ``value`` and a ``direction`` column.

- System level: Spearman ρ, Kendall τ-b, Pearson r between per-system mean marks and scores.
  Permutation p-values (two-sided) by exact enumeration of all n! orderings for n ≤ 8
  systems, otherwise 9,999 random permutations (p = (1 + #|stat*| ≥ |stat|)/(1 + N)). With few
  systems the smallest possible p is large (4 systems: 2/24 = 0.083); the report says so in
  words. 95 % CIs: percentile bootstrap that resamples the *systems* with replacement and,
  for the human side, raters and clips (the two-way resamples of the system means): the
  "Boot-Both" scheme of Deutsch, Dror & Roth (2021, TACL 9:1132, "A statistical analysis of
  summarization evaluation metrics using resampling methods"). Holding the systems fixed would
  give a zero-width interval whenever listeners order the few systems the same way in every
  resample, which hides the main uncertainty: which systems happened to be compared.
  Resamples in which the drawn systems' scores or means are all tied are left out and counted.
- Metric comparison: the paired bootstrap of ρ(metric A) − ρ(metric B) on the same resamples
  (same systems drawn, same raters and clips).
- Item level: per-item (system × clip) scores vs per-item mean marks; CI by a bootstrap over
  clips (items of one clip move together), using weighted mid-ranks so no resample is built
  row by row.
- Per class: the system level computed within each sound class, when the ratings carry a
  ``category`` column and the scores have per-class rows.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats

from sonieval.stats.bootstrap import percentile_ci

__all__ = [
    "orient",
    "correlate",
    "permutation_test",
    "system_level",
    "compare_metrics",
    "item_level",
    "per_class",
    "rank_agreement",
]

EXACT_MAX_N = 8
N_PERMUTATIONS = 9_999
KENDALL_PERMUTATION_MAX_N = 60


def orient(values, direction: str) -> np.ndarray:
    """Scores turned so that larger = better (see module docstring)."""
    v = np.asarray(values, dtype=float)
    return -v if direction == "lower" else v


# --- row-wise statistics: one fixed x against many y rows ---------------------------------


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean()
    yc = y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (yc @ xc) / np.sqrt((yc**2).sum(axis=1) * (xc**2).sum())


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _pearson_rows(stats.rankdata(x), stats.rankdata(y, axis=1))


def _kendall_b_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(len(x), k=1)
    sx = np.sign(x[i] - x[j])
    sy = np.sign(y[:, i] - y[:, j])
    n0 = len(i)
    n1 = (sx == 0).sum()
    n2 = (sy == 0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sy @ sx) / np.sqrt((n0 - n1) * (n0 - n2))


STATISTICS = {"spearman": _spearman_rows, "kendall_tau_b": _kendall_b_rows, "pearson": _pearson_rows}


# --- row-wise statistics where both x and y vary by row (bootstrap over systems) -------------


def _pearson_pairs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=1, keepdims=True)
    yc = y - y.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (xc * yc).sum(axis=1) / np.sqrt((xc**2).sum(axis=1) * (yc**2).sum(axis=1))


def _spearman_pairs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _pearson_pairs(stats.rankdata(x, axis=1), stats.rankdata(y, axis=1))


def _kendall_b_pairs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(x.shape[1], k=1)
    sx = np.sign(x[:, i] - x[:, j])
    sy = np.sign(y[:, i] - y[:, j])
    n0 = len(i)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sx * sy).sum(axis=1) / np.sqrt((n0 - (sx == 0).sum(axis=1)) * (n0 - (sy == 0).sum(axis=1)))


PAIRED_STATISTICS = {"spearman": _spearman_pairs, "kendall_tau_b": _kendall_b_pairs, "pearson": _pearson_pairs}


def system_draws(n_systems: int, n_boot: int, seed: int) -> np.ndarray:
    """B × n indices of systems drawn with replacement; the same for every metric with n systems
    (so that metrics scored on the same systems are compared on the same draws)."""
    return np.random.default_rng([seed, 7, n_systems]).integers(0, n_systems, size=(n_boot, n_systems))


def permutations(n: int, seed: int, n_random: int = N_PERMUTATIONS) -> tuple[np.ndarray, bool]:
    """All n! orderings (n ≤ EXACT_MAX_N) or random ones with the identity first."""
    if n <= EXACT_MAX_N:
        return np.array(list(itertools.permutations(range(n)))), True
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((n_random, n)), axis=1)
    return np.vstack([np.arange(n), perms]), False


def permutation_test(x: np.ndarray, y: np.ndarray, seed: int) -> dict:
    """Two-sided permutation p-values of the three statistics, and the smallest p possible."""
    perms, exact = permutations(len(x), seed)
    out = {"exact": exact, "n_permutations": int(len(perms) - (0 if exact else 1))}
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    for name, fn in STATISTICS.items():
        if name == "kendall_tau_b" and len(x) > KENDALL_PERMUTATION_MAX_N:
            out[f"p_{name}"] = None  # O(n²) per permutation: Spearman's p is the one reported
            continue
        observed = fn(x, y[None, :])[0]
        if name == "spearman":  # ranks of a permuted vector = permuted ranks: rank once
            null = np.concatenate([_pearson_rows(rx, ry[perms[i : i + 1000]]) for i in range(0, len(perms), 1000)])
        else:
            null = np.concatenate([fn(x, y[perms[i : i + 1000]]) for i in range(0, len(perms), 1000)])
        if not np.isfinite(observed):
            out[f"p_{name}"] = None
            continue
        tol = 1e-12 * max(1.0, abs(observed))
        hits = np.sum(np.abs(null) >= abs(observed) - tol)
        # Exact: share of all orderings. Random: the identity is row 0, so this is (1 + #)/(1 + N).
        out[f"p_{name}"] = float(hits / len(perms))
        if name == "spearman":
            finite = np.abs(null[np.isfinite(null)])
            top = finite.max() if len(finite) else np.nan
            out["min_p_possible"] = float(np.sum(finite >= top - 1e-12) / len(perms))
    return out


def too_few_systems_warning(n: int, min_p: float | None, alpha: float = 0.05) -> str:
    if n < 3:
        return f"only {n} system(s): a correlation needs at least 3"
    if min_p is not None and min_p > alpha:
        return (
            f"with {n} systems the smallest possible two-sided permutation p is {min_p:.3f}: "
            f"this test cannot reach p < {alpha} however strong the agreement; rate more systems"
        )
    if n < 10:
        return f"only {n} systems: wide CIs, read the interval, not the p-value"
    return ""


def correlate(
    human: np.ndarray, oriented_score: np.ndarray, *, seed: int, boot_human: np.ndarray | None = None
) -> dict:
    """ρ, τ-b, r, permutation p-values and (optionally) bootstrap CIs over rows of ``boot_human``."""
    n = len(human)
    res: dict = {
        "n": int(n),
        "spearman": None,
        "kendall_tau_b": None,
        "pearson": None,
        "p_permutation": None,
        "p_permutation_kendall": None,
        "p_permutation_pearson": None,
        "ci_low": None,
        "ci_high": None,
        "kendall_ci_low": None,
        "kendall_ci_high": None,
        "pearson_ci_low": None,
        "pearson_ci_high": None,
        "min_p_possible": None,
        "note": "",
    }
    if n < 3:
        res["note"] = too_few_systems_warning(n, None)
        return res
    if np.ptp(human) == 0 or np.ptp(oriented_score) == 0:
        which = "human means" if np.ptp(human) == 0 else "scores"
        res["note"] = f"the {which} are constant across the {n} units: correlation undefined"
        return res
    res["spearman"] = float(stats.spearmanr(oriented_score, human).statistic)
    res["kendall_tau_b"] = float(stats.kendalltau(oriented_score, human, variant="b").statistic)
    res["pearson"] = float(stats.pearsonr(oriented_score, human).statistic)
    perm = permutation_test(oriented_score, human, seed)
    res["p_permutation"] = perm["p_spearman"]
    res["p_permutation_kendall"] = perm["p_kendall_tau_b"]
    res["p_permutation_pearson"] = perm["p_pearson"]
    res["min_p_possible"] = perm.get("min_p_possible")
    if res["p_permutation_kendall"] is None:
        notes_kendall = f"Kendall permutation p only for ≤ {KENDALL_PERMUTATION_MAX_N} units"
    else:
        notes_kendall = ""
    res["permutation"] = "exact" if perm["exact"] else f"{perm['n_permutations']} random"
    notes = [too_few_systems_warning(n, res["min_p_possible"]), notes_kendall]
    if boot_human is not None and len(boot_human):
        draws = system_draws(n, len(boot_human), seed)
        xb = oriented_score[draws]
        yb = np.take_along_axis(boot_human, draws, axis=1)
        for name, fn in PAIRED_STATISTICS.items():
            samples = fn(xb, yb)
            lo, hi = percentile_ci(samples)
            key = "" if name == "spearman" else ("kendall_" if name == "kendall_tau_b" else "pearson_")
            res[f"{key}ci_low"] = None if np.isnan(lo) else float(lo)
            res[f"{key}ci_high"] = None if np.isnan(hi) else float(hi)
            if name == "spearman":
                res["_boot_spearman"] = samples
                if np.isnan(samples).any():
                    notes.append(
                        f"{int(np.isnan(samples).sum())} of {len(samples)} resamples with all-tied drawn "
                        "systems left out of the CI"
                    )
    else:
        notes.append("bootstrap off: no CI")
    res["note"] = "; ".join(filter(None, notes))
    return res


def system_level(
    system_table: pd.DataFrame, boot: dict, scores: pd.DataFrame, *, seed: int
) -> tuple[pd.DataFrame, dict]:
    """Correlations of every (metric, attribute) at system level.

    ``system_table`` holds per-(system, attribute) means, ``boot`` the matching bootstrap
    samples, ``scores`` the overall score rows. Returns the table and, per (metric, attribute),
    the bootstrap ρ samples (for the paired metric comparison).
    """
    rows = []
    samples: dict = {}
    for attribute, part in system_table.groupby("attribute"):
        human = part.set_index("system_id")["mean"]
        systems_b, boot_b = boot.get(attribute, (None, None))
        for metric_key, srows in scores.groupby("metric_key", sort=True):
            s = srows.set_index("system_id")
            common = sorted(set(human.index) & set(s.index))
            direction = s["direction"].iloc[0]
            oriented = orient(s.loc[common, "value"], direction)
            hb = None
            if boot_b is not None:
                hb = boot_b[:, systems_b.get_indexer(common)]
                ok = ~np.isnan(hb).any(axis=1)
                hb = hb[ok]
            res = correlate(human.loc[common].to_numpy(float), oriented, seed=seed, boot_human=hb)
            boot_rho = res.pop("_boot_spearman", None)
            if boot_rho is not None:
                samples[(metric_key, attribute)] = (common, boot_rho, hb)
            first = srows.iloc[0]
            rows.append(
                {
                    "metric": metric_key,
                    "attribute": attribute,
                    "level": "system",
                    "embedding": first["embedding"],
                    "reference_set": first["reference_set"],
                    "direction": direction,
                    **res,
                }
            )
    return pd.DataFrame(rows), samples


def compare_metrics(samples: dict, table: pd.DataFrame, level: str = "system") -> pd.DataFrame:
    """Paired bootstrap of ρ(A) − ρ(B) per attribute, on the units (systems or items) both scored.

    ``samples[(metric, attribute)] = (units, ρ resamples, …)`` drawn with the same resampling
    indices for every metric on the same units, so the difference is paired.
    """
    rows = []
    keys = sorted(samples)
    table = table[table["level"] == level] if "level" in table.columns else table
    for (ma, attr_a), (mb, attr_b) in itertools.combinations(keys, 2):
        if attr_a != attr_b:
            continue
        common_a, rho_a = samples[(ma, attr_a)][:2]
        common_b, rho_b = samples[(mb, attr_b)][:2]
        row = {"metric_a": ma, "metric_b": mb, "attribute": attr_a, "level": level}
        if common_a != common_b:
            row.update(
                difference=None,
                ci_low=None,
                ci_high=None,
                share_a_higher=None,
                note=f"the metrics scored different {level}s: no paired comparison",
            )
        elif len(rho_a) != len(rho_b):
            row.update(
                difference=None,
                ci_low=None,
                ci_high=None,
                share_a_higher=None,
                note="different numbers of valid resamples: no paired comparison",
            )
        else:
            get = lambda m, a=attr_a: table.loc[(table["metric"] == m) & (table["attribute"] == a), "spearman"].iloc[0]
            diff = rho_a - rho_b
            lo, hi = percentile_ci(diff)
            row.update(
                spearman_a=get(ma),
                spearman_b=get(mb),
                difference=float(get(ma) - get(mb)),
                ci_low=float(lo),
                ci_high=float(hi),
                share_a_higher=float(np.nanmean(diff > 0)),
                note="",
            )
        rows.append(row)
    cols = [
        "metric_a",
        "metric_b",
        "attribute",
        "level",
        "spearman_a",
        "spearman_b",
        "difference",
        "ci_low",
        "ci_high",
        "share_a_higher",
        "note",
    ]
    return pd.DataFrame(rows, columns=cols)


# --- item level -------------------------------------------------------------------------------


def _weighted_midranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mid-ranks of x when item i appears w[b, i] times, for every row b of w (B × N)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    gid = np.cumsum(np.r_[True, xs[1:] != xs[:-1]]) - 1
    gw = np.add.reduceat(w[:, order], starts, axis=1)
    before = np.cumsum(gw, axis=1) - gw
    rank_sorted = (before + (gw + 1) / 2)[:, gid]
    ranks = np.empty_like(rank_sorted)
    ranks[:, order] = rank_sorted
    return ranks


def _weighted_pearson_rows(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson r per row with weights w (B × N); x and y may be (B × N) or (N,)."""
    sw = w.sum(axis=1, keepdims=True)
    mx = (w * x).sum(axis=1, keepdims=True) / sw
    my = (w * y).sum(axis=1, keepdims=True) / sw
    dx, dy = x - mx, y - my
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * dx * dy).sum(axis=1) / np.sqrt((w * dx**2).sum(axis=1) * (w * dy**2).sum(axis=1))


def item_level(son: pd.DataFrame, item_scores: pd.DataFrame, *, n_boot: int, seed: int) -> tuple[pd.DataFrame, dict]:
    """Per-item scores vs per-item mean marks, per metric and attribute; bootstrap over clips.

    Returns the table and the bootstrap ρ samples per (metric, attribute) for the paired metric
    comparison (metrics scored on the same items get the same clip resamples).
    """
    rows = []
    samples: dict = {}
    items = son.groupby(["attribute", "system_id", "clip_id"])["mark"].agg(["mean", "size"]).reset_index()
    for metric_key, ms in item_scores.groupby("metric_key", sort=True):
        direction = ms["direction"].iloc[0]
        ms = ms.groupby(["system_id", "clip_id"], as_index=False)["value"].mean()
        for attribute, it in items.groupby("attribute"):
            merged = it.merge(ms, on=["system_id", "clip_id"], how="inner")
            base = {"metric": metric_key, "attribute": attribute, "level": "item", "direction": direction}
            if merged.empty:
                rows.append(
                    {**base, "n": 0, "note": "no item has both a score and marks (clip_id/system_id do not match)"}
                )
                continue
            human = merged["mean"].to_numpy(float)
            score = orient(merged["value"], direction)
            res = correlate(human, score, seed=seed)
            res["note"] = res["note"].replace("systems", "items").replace("system(s)", "item(s)")
            if res["spearman"] is not None and n_boot:
                clips = pd.Index(sorted(merged["clip_id"].unique()))
                cidx = clips.get_indexer(merged["clip_id"])
                rng = np.random.default_rng(seed + 17)
                wc = rng.multinomial(len(clips), np.full(len(clips), 1 / len(clips)), size=n_boot).astype(float)
                w = wc[:, cidx]
                rho = _weighted_pearson_rows(_weighted_midranks(score, w), _weighted_midranks(human, w), w)
                r = _weighted_pearson_rows(np.broadcast_to(score, w.shape), np.broadcast_to(human, w.shape), w)
                res["ci_low"], res["ci_high"] = (float(v) for v in percentile_ci(rho))
                samples[(metric_key, attribute)] = (
                    tuple(zip(merged["system_id"].astype(str), merged["clip_id"].astype(str))),
                    rho,
                )
                res["pearson_ci_low"], res["pearson_ci_high"] = (float(v) for v in percentile_ci(r))
                res["note"] = "; ".join(
                    filter(
                        None,
                        [
                            "CI: bootstrap over clips; Kendall CI not computed at item level",
                            "p: items permuted freely (ignores clustering; read the CI)",
                            res["note"],
                        ],
                    )
                )
            res["note"] = "; ".join(filter(None, [f"{merged['clip_id'].nunique()} clips", res["note"]]))
            rows.append({**base, **res})
    return pd.DataFrame(rows), samples


def per_class(son: pd.DataFrame, per_class_scores: pd.DataFrame, *, seed: int) -> pd.DataFrame:
    """System-level correlation within each sound class (point estimates and permutation p)."""
    if "category" not in son.columns or per_class_scores.empty:
        return pd.DataFrame()
    rows = []
    means = son.groupby(["category", "attribute", "system_id"])["mark"].mean()
    for (category, metric_key), s in per_class_scores.groupby(["category", "metric_key"], sort=True):
        s = s.set_index("system_id")
        direction = s["direction"].iloc[0]
        for attribute in sorted(son["attribute"].unique()):
            try:
                human = means.loc[(category, attribute)]
            except KeyError:
                continue
            common = sorted(set(human.index) & set(s.index))
            res = correlate(human.loc[common].to_numpy(float), orient(s.loc[common, "value"], direction), seed=seed)
            res["note"] = "; ".join(filter(None, [res["note"], "no CI per class (few clips per class)"]))
            rows.append(
                {
                    "metric": metric_key,
                    "attribute": attribute,
                    "level": "class",
                    "category": category,
                    "direction": direction,
                    **res,
                }
            )
    return pd.DataFrame(rows)


def rank_agreement(system_table: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """The reference work's rank table: human rank next to each metric's rank (1 = best)."""
    rows = []
    for attribute, part in system_table.groupby("attribute"):
        human = part.set_index("system_id")["mean"]
        for metric_key, s in scores.groupby("metric_key", sort=True):
            s = s.set_index("system_id")
            common = sorted(set(human.index) & set(s.index))
            if not common:
                continue
            h = human.loc[common]
            oriented = pd.Series(orient(s.loc[common, "value"], s["direction"].iloc[0]), index=common)
            hr = h.rank(ascending=False, method="average")
            mr = oriented.rank(ascending=False, method="average")
            for sid in common:
                rows.append(
                    {
                        "metric": metric_key,
                        "attribute": attribute,
                        "system_id": sid,
                        "human_mean": float(h[sid]),
                        "human_rank": float(hr[sid]),
                        "metric_value": float(s.loc[sid, "value"]),
                        "metric_rank": float(mr[sid]),
                        "rank_difference": float(hr[sid] - mr[sid]),
                    }
                )
    return pd.DataFrame(rows)
