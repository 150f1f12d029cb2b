"""System differences per attribute: the crossed mixed model, its contrasts, and paired tests.

- **Mixed model** ``mark ~ 0 + system + (1|rater) + (1|clip)`` by REML on every mark
  (:mod:`sonieval.stats.crossed`: exact, sparse in the design, no subsampling). The system
  coefficients are the estimated marginal means (EMMs: a system's mean mark at an average rater
  and clip); their 95 % CIs use Satterthwaite degrees of freedom.
- **Pairwise contrasts** of the EMMs: Wald t tests with Satterthwaite df (as lmerTest/emmeans),
  Holm's step-down correction across pairs (:func:`holm`, equal to statsmodels'
  ``multipletests(method="holm")``, tested; written out because that call costs ~0.1 s each here,
  which dominated the 500-data-set error-rate check). Raters and clips are random, so the contrasts
  generalise to new raters and clips; a per-rater mean over *different* clips would confound clip
  difficulty with systems.
- **Friedman + Wilcoxon** (secondary unless the design is complete): paired on the same
  (rater, clip) cells — Friedman across systems on each rater's mean over the clips they marked
  with every system; Wilcoxon signed-rank per pair on each rater's mean difference over the clips
  they marked with both; Holm across pairs; effect size the matched-pairs rank-biserial
  correlation r = (T⁺ − T⁻)/(T⁺ + T⁻) (Kerby 2014, *Compr. Psychol.* 3:11.IT.3.1). They treat
  clips as fixed, which is why the mixed model is the primary result whenever the design is
  incomplete or unbalanced (:func:`design_summary` says which and why).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import stats

from sonieval.stats.crossed import CrossedFit, NotFittedError, SingularFitError, codes, fit_crossed_reml

__all__ = [
    "design_summary",
    "mixed_model",
    "mixed_model_contrasts",
    "friedman_wilcoxon",
    "holm",
    "EMM_COLUMNS",
    "CONTRAST_COLUMNS",
]

EMM_COLUMNS = ["system_id", "estimate", "se", "df", "ci_low", "ci_high", "n", "note"]
CONTRAST_COLUMNS = [
    "system_a",
    "system_b",
    "difference",
    "se",
    "df",
    "t",
    "ci_low",
    "ci_high",
    "p_value",
    "p_holm",
    "note",
]


def design_summary(part: pd.DataFrame) -> dict:
    """Is the design complete (every rater marked every stimulus) and balanced (once each)?

    Decides the primary pairwise result: Friedman + Wilcoxon only for a complete, balanced
    design; the mixed-model contrasts otherwise. ``reason`` says why in words.
    """
    r, raters = codes(part["rater_id"])
    c, clips = codes(part["clip_id"])
    s, systems = codes(part["system_id"])
    stimulus = s * len(clips) + c
    stim = len(np.unique(stimulus))
    cells = np.unique(r * (len(systems) * len(clips)) + stimulus, return_counts=True)[1]  # marks per cell
    possible = len(raters) * stim
    repeated = int((cells > 1).sum())
    complete = len(cells) == possible
    balanced = repeated == 0
    out = {
        "n_marks": int(len(part)),
        "n_raters": len(raters),
        "n_clips": len(clips),
        "n_systems": len(systems),
        "n_stimuli": int(stim),
        "n_cells_marked": int(len(cells)),
        "n_cells_possible": int(possible),
        "n_cells_repeated": repeated,
        "complete": bool(complete),
        "balanced": bool(balanced),
    }
    if complete and balanced:
        out["primary_pairwise"] = "friedman_wilcoxon"
        out["reason"] = "complete, balanced design: every rater marked every stimulus once"
    else:
        why = []
        if not complete:
            why.append(
                f"incomplete: {len(cells):,} of {len(raters):,} raters × {stim:,} stimuli = {possible:,} cells marked "
                f"({len(cells) / possible:.1%})"
            )
        if not balanced:
            why.append(f"unbalanced: {repeated:,} rater × stimulus cells marked more than once")
        out["primary_pairwise"] = "mixed_model"
        out["reason"] = (
            "design " + "; ".join(why) + ": per-rater means would compare different clips, so the "
            "mixed-model contrasts (raters and clips random) are the pairwise result"
        )
    return out


def mixed_model(
    part: pd.DataFrame, *, systems: list[str] | None = None
) -> tuple[pd.DataFrame, dict, CrossedFit | None]:
    """Fit mark ~ 0 + system + (1|rater) + (1|clip) by REML on every mark of ``part``.

    Returns the EMM table (system_id, estimate, se, df, ci_low, ci_high, n, note), a dict with the
    variance components and fit details, and the fit (None when not fitted). ``systems``: every
    system of the study; one without marks here gets a row saying so.
    """
    s_codes, levels = codes(part["system_id"])
    r_codes, raters = codes(part["rater_id"])
    c_codes, clips = codes(part["clip_id"])
    present = list(levels)
    systems = sorted(set(systems or []) | set(present))
    info = {
        "n_rows": int(len(part)),
        "n_rows_used": 0,
        "n_raters": len(raters),
        "n_clips": len(clips),
        "rater_variance": None,
        "clip_variance": None,
        "residual_variance": None,
        "reml_criterion": None,
        "converged": None,
        "n_evaluations": None,
        "method": "REML, exact sparse crossed random intercepts (sonieval.stats.crossed)",
        "note": "",
    }
    counts = dict(zip(present, np.bincount(s_codes, minlength=len(present)).tolist()))
    missing = [s for s in systems if s not in counts]
    table = pd.DataFrame(
        {
            "system_id": systems,
            "estimate": np.nan,
            "se": np.nan,
            "df": np.nan,
            "ci_low": np.nan,
            "ci_high": np.nan,
            "n": [counts.get(s, 0) for s in systems],
            "note": ["no marks for this attribute: mean not estimable" if s in missing else "" for s in systems],
        }
    )
    why = _not_fittable(info)
    if why:
        info["note"] = why
        table.loc[~table["system_id"].isin(missing), "note"] = f"undefined: {why}"
        return table, info, None
    try:
        fit = fit_crossed_reml(part["mark"].to_numpy(float), s_codes, r_codes, c_codes)
    except NotFittedError as exc:
        kind = "singular fit" if isinstance(exc, SingularFitError) else "not fitted"
        info["note"] = f"{kind}: {exc}"
        table.loc[~table["system_id"].isin(missing), "note"] = f"undefined: {kind} ({exc})"
        return table, info, None
    info["systems_fitted"] = list(levels)
    info.update(
        n_rows_used=int(fit.n),
        rater_variance=float(fit.var_a),
        clip_variance=float(fit.var_b),
        residual_variance=float(fit.var_resid),
        reml_criterion=float(fit.reml_criterion),
        converged=bool(fit.converged),
        n_evaluations=int(fit.n_evaluations),
    )
    notes = []
    if fit.boundary[0]:
        notes.append("rater variance estimated at 0 (boundary fit): raters do not differ in leniency beyond noise")
    if fit.boundary[1]:
        notes.append("clip variance estimated at 0 (boundary fit): clips do not differ beyond noise")
    if not fit.converged:
        notes.append(fit.message)
    if not fit.information_ok:
        notes.append("REML information matrix singular: df are the residual df (n − p), not Satterthwaite's")
    info["note"] = "; ".join(notes)
    est, se, df = np.array([fit.contrast(row) for row in np.eye(fit.p)]).T
    q = stats.t.ppf(0.975, df)
    rows = table.set_index("system_id").index.get_indexer(levels)
    for col, values in (("estimate", est), ("se", se), ("df", df), ("ci_low", est - q * se), ("ci_high", est + q * se)):
        table.iloc[rows, table.columns.get_loc(col)] = values
    return table[EMM_COLUMNS], info, fit


def _not_fittable(info: dict) -> str:
    if info["n_raters"] < 2:
        return "one rater: rater variance cannot be told apart from the residual, the model is not fitted"
    if info["n_clips"] < 2:
        return "one clip: clip variance cannot be told apart from the residual, the model is not fitted"
    return ""


def holm(p_values) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values; NaN stays NaN and is not counted."""
    p = np.asarray(p_values, float)
    out = np.full(len(p), np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def mixed_model_contrasts(fit: CrossedFit | None, levels: list[str], note: str = "") -> pd.DataFrame:
    """All pairwise EMM differences: Wald t with Satterthwaite df, 95 % CI, Holm across pairs."""
    if fit is None or len(levels) < 2:
        return pd.DataFrame(columns=CONTRAST_COLUMNS)
    pairs = list(itertools.combinations(range(len(levels)), 2))
    eye = np.eye(fit.p)
    est, se, df = np.array([fit.contrast(eye[i] - eye[j]) for i, j in pairs]).T
    q = stats.t.ppf(0.975, df)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, est / se, np.nan)
    p = 2 * stats.t.sf(np.abs(t), df)
    return pd.DataFrame(
        {
            "system_a": [levels[i] for i, _ in pairs],
            "system_b": [levels[j] for _, j in pairs],
            "difference": est,
            "se": se,
            "df": df,
            "t": t,
            "ci_low": est - q * se,
            "ci_high": est + q * se,
            "p_value": p,
            "p_holm": holm(p),
            "note": np.where(np.isfinite(p), note, "zero standard error: test undefined"),
        }
    )[CONTRAST_COLUMNS]


def rank_biserial(diff: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation (Kerby 2014); zero differences dropped."""
    d = diff[diff != 0]
    if len(d) == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(d))
    plus = ranks[d > 0].sum()
    minus = ranks[d < 0].sum()
    return float((plus - minus) / (plus + minus))


def _cells(part: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(rater, clip) cells × systems of mean marks (NaN: not marked; a repeated cell is averaged).

    Returns (means: cells × systems, rater code per cell, marks per cell, system names). Integer
    codes and bincounts: a pandas groupby on three text keys took seconds at 400,000 marks.
    """
    r, _ = codes(part["rater_id"])
    c, clips = codes(part["clip_id"])
    s, systems = codes(part["system_id"])
    p = len(systems)
    cell_ids, row = np.unique(r * len(clips) + c, return_inverse=True)
    flat = row * p + s
    marks = part["mark"].to_numpy(float)
    total = np.bincount(flat, marks, len(cell_ids) * p).reshape(-1, p)
    count = np.bincount(flat, minlength=len(cell_ids) * p).reshape(-1, p)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return means, cell_ids // len(clips), count.sum(axis=1), list(systems)


def _per_rater_mean(values: np.ndarray, rater: np.ndarray) -> np.ndarray:
    """Mean of ``values`` per rater code (raters without values left out)."""
    n = np.bincount(rater)
    keep = n > 0
    return (
        np.bincount(rater, values)
        if values.ndim == 1
        else np.stack([np.bincount(rater, v, len(n)) for v in values.T], axis=1)
    )[keep] / (n[keep] if values.ndim == 1 else n[keep, None])


def friedman_wilcoxon(part: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """Friedman across systems and pairwise Wilcoxon, paired on the same (rater, clip) cells.

    Friedman: each rater's mean over the clips they marked with every system (blocks = raters).
    Wilcoxon for systems a, b: each rater's mean of (a − b) over the clips they marked with both.
    """
    means, cell_rater, cell_marks, systems = _cells(part)
    complete = ~np.isnan(means).any(axis=1)
    per_rater = (
        _per_rater_mean(means[complete], cell_rater[complete]) if complete.any() else np.zeros((0, len(systems)))
    )
    info = {
        "n_systems": len(systems),
        "n_raters_complete": int(len(per_rater)),
        "n_raters": int(part["rater_id"].nunique()),
        "n_cells_complete": int(complete.sum()),
        "share_of_marks": float(cell_marks[complete].sum() / len(part)) if len(part) else 0.0,
        "statistic": None,
        "p_value": None,
        "kendall_w": None,
        "note": "",
    }
    pair_cols = [
        "system_a",
        "system_b",
        "n",
        "n_cells",
        "median_difference",
        "wilcoxon_statistic",
        "p_value",
        "p_holm",
        "rank_biserial",
        "note",
    ]
    if len(systems) < 2:
        info["note"] = "one system: nothing to compare"
        return info, pd.DataFrame(columns=pair_cols)
    if len(systems) >= 3 and len(per_rater) >= 2:
        res = stats.friedmanchisquare(*per_rater.T)
        info["statistic"] = float(res.statistic) if np.isfinite(res.statistic) else None
        info["p_value"] = float(res.pvalue) if np.isfinite(res.pvalue) else None
        if info["statistic"] is not None:
            info["kendall_w"] = float(res.statistic / (len(per_rater) * (len(systems) - 1)))
        else:
            info["note"] = "all per-rater means tie: Friedman statistic undefined"
    elif len(systems) < 3:
        info["note"] = "two systems: Friedman needs three; see the Wilcoxon test"
    else:
        info["note"] = "fewer than 2 raters marked a clip with every system: Friedman not run"
    if info["share_of_marks"] < 1 and len(systems) >= 3:
        extra = (
            f"paired on {int(complete.sum())} (rater, clip) cells with every system: "
            f"{info['share_of_marks']:.1%} of the marks"
        )
        info["note"] = "; ".join(filter(None, [info["note"], extra]))
    rows = [_wilcoxon_pair(means, cell_rater, systems, i, j) for i, j in itertools.combinations(range(len(systems)), 2)]
    pairs = pd.DataFrame(rows)
    pairs["p_holm"] = holm(pairs["p_value"].astype(float))
    return info, pairs[pair_cols]


def _wilcoxon_pair(means: np.ndarray, cell_rater: np.ndarray, systems: list[str], i: int, j: int) -> dict:
    """Wilcoxon signed-rank test of systems i and j on each rater's mean difference over shared clips."""
    both = ~np.isnan(means[:, i]) & ~np.isnan(means[:, j])
    d = _per_rater_mean(means[both, i] - means[both, j], cell_rater[both]) if both.any() else np.zeros(0)
    row = {
        "system_a": systems[i],
        "system_b": systems[j],
        "n": len(d),
        "n_cells": int(both.sum()),
        "median_difference": float(np.median(d)) if len(d) else None,
        "wilcoxon_statistic": None,
        "p_value": None,
        "rank_biserial": None,
        "note": "",
    }
    if len(d) < 2 or np.all(d == 0):
        row["note"] = (
            "fewer than 2 raters marked a clip with both systems" if len(d) < 2 else "no rater differs: test undefined"
        )
        return row
    # Exact null distribution only where it is exact (small n, no ties or zeros); otherwise the
    # normal approximation with tie correction. scipy's "auto" would fall back to a slow
    # permutation test with ties.
    nz = d[d != 0]
    exact = len(nz) <= 25 and len(np.unique(np.abs(nz))) == len(nz) and len(nz) == len(d)
    res = stats.wilcoxon(d, zero_method="wilcox", method="exact" if exact else "approx")
    row.update(wilcoxon_statistic=float(res.statistic), p_value=float(res.pvalue), rank_biserial=rank_biserial(d))
    return row
