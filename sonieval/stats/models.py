"""Models and tests of system differences, per attribute.

- Linear mixed model ``mark ~ system + (1|rater) + (1|clip)`` (statsmodels ``MixedLM``). Crossed
  random effects are fitted the way statsmodels supports them: one group holding every row and
  the two intercept families as variance components (``vc_formula``). statsmodels builds the
  variance-component design densely, so fitting time grows steeply with rows (measured here: 5,000
  rows ≈ 5 s, 20,000 rows ≈ 95 s). Above ``max_rows`` the model is fitted on a random cluster
  subsample: a subset of raters and of clips, all their marks, seeded; the report states the
  subset. Fixed effects stay unbiased; their CIs are those of the subset (wider).
- Friedman's test across systems on per-rater mean marks (raters who rated every system), then
  pairwise Wilcoxon signed-rank tests with Holm's correction (``multipletests(method="holm")``;
  the statsmodels default would be Holm–Šidák), effect size the matched-pairs rank-biserial
  correlation r = (T⁺ − T⁻)/(T⁺ + T⁻) (Kerby 2014, *Compr. Psychol.* 3:11.IT.3.1).
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
from scipy import stats


def _cluster_subsample(part: pd.DataFrame, max_rows: int, seed: int) -> tuple[pd.DataFrame, str]:
    if len(part) <= max_rows:
        return part, ""
    rng = np.random.default_rng(seed)
    raters = np.array(sorted(part["rater_id"].unique()))
    clips = np.array(sorted(part["clip_id"].unique()))
    share = np.sqrt(max_rows / len(part))  # the same share of raters and of clips
    n_r = max(2, min(len(raters), int(np.floor(len(raters) * share))))
    n_c = max(2, min(len(clips), int(np.floor(len(clips) * share))))
    while True:
        keep_r = rng.choice(raters, n_r, replace=False)
        keep_c = rng.choice(clips, n_c, replace=False)
        sub = part[part["rater_id"].isin(keep_r) & part["clip_id"].isin(keep_c)]
        if len(sub) <= max_rows or (n_r <= 2 and n_c <= 2):
            break
        n_r = max(2, int(n_r * 0.9))
        n_c = max(2, int(n_c * 0.9))
    note = (f"fitted on a seeded random subsample of {sub['rater_id'].nunique()} of {len(raters)} raters × "
            f"{sub['clip_id'].nunique()} of {len(clips)} clips ({len(sub)} of {len(part)} marks) to bound "
            "fitting time (statsmodels fits crossed effects densely)")
    return sub, note


def mixed_model(part: pd.DataFrame, *, max_rows: int = 3000, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Fit mark ~ system + (1|rater) + (1|clip) by REML; estimated system means with 95 % CIs.

    Returns a table (system_id, estimate = model mean mark, ci_low, ci_high) and a dict with the
    variance components, the rows used and any note (subsample, convergence).
    """
    import statsmodels.formula.api as smf

    info = {"n_rows_used": 0, "n_rows": int(len(part)), "rater_variance": None, "clip_variance": None,
            "residual_variance": None, "converged": None, "note": ""}
    systems = sorted(part["system_id"].astype(str).unique())
    if part["rater_id"].nunique() < 2 or part["clip_id"].nunique() < 2:
        info["note"] = "needs at least 2 raters and 2 clips: not fitted"
        return pd.DataFrame(columns=["system_id", "estimate", "ci_low", "ci_high", "note"]), info
    sub, note = _cluster_subsample(part, max_rows, seed)
    sub = sub.assign(one=1, system=pd.Categorical(sub["system_id"].astype(str), categories=systems),
                     rater=sub["rater_id"].astype(str), clip=sub["clip_id"].astype(str))
    info["n_rows_used"] = int(len(sub))
    formula = "mark ~ 0 + system" if len(systems) > 1 else "mark ~ 1"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = smf.mixedlm(formula, sub, groups="one", re_formula="0",
                                vc_formula={"rater": "0 + C(rater)", "clip": "0 + C(clip)"})
            fit = model.fit(reml=True, method=["lbfgs", "powell"])
        except (np.linalg.LinAlgError, ValueError) as exc:
            info["note"] = "; ".join(filter(None, [note, f"fit failed: {exc}"]))
            return pd.DataFrame(columns=["system_id", "estimate", "ci_low", "ci_high", "note"]), info
    conv_msgs = sorted({str(w.message).split(".")[0] for w in caught if "Convergence" in type(w.message).__name__})
    ci = fit.conf_int()
    params = fit.fe_params
    if len(systems) > 1:
        names = [f"system[{s}]" for s in systems]
    else:
        names = ["Intercept"]
    table = pd.DataFrame({
        "system_id": systems,
        "estimate": [float(params[n]) for n in names],
        "ci_low": [float(ci.loc[n, 0]) for n in names],
        "ci_high": [float(ci.loc[n, 1]) for n in names],
    })
    table["note"] = np.where(table[["estimate", "ci_low", "ci_high"]].isna().any(axis=1),
                             "undefined at the fit (singular information matrix); see mixed_model_fit", "")
    vc = dict(zip(model.exog_vc.names, np.asarray(fit.vcomp, float)))
    info.update(rater_variance=float(vc.get("rater", np.nan)), clip_variance=float(vc.get("clip", np.nan)),
                residual_variance=float(fit.scale), converged=bool(fit.converged))
    notes = [note] if note else []
    if conv_msgs:
        notes.append("statsmodels: " + "; ".join(conv_msgs))
    info["note"] = "; ".join(notes)
    return table, info


def rank_biserial(diff: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation (Kerby 2014); zero differences dropped."""
    d = diff[diff != 0]
    if len(d) == 0:
        return 0.0
    ranks = stats.rankdata(np.abs(d))
    plus = ranks[d > 0].sum()
    minus = ranks[d < 0].sum()
    return float((plus - minus) / (plus + minus))


def friedman_wilcoxon(part: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """Friedman across systems on per-rater means, then pairwise Wilcoxon with Holm correction."""
    from statsmodels.stats.multitest import multipletests

    means = part.groupby(["rater_id", "system_id"])["mark"].mean().unstack()
    complete = means.dropna()
    systems = list(means.columns)
    info = {"n_systems": len(systems), "n_raters_complete": int(len(complete)), "n_raters": int(len(means)),
            "statistic": None, "p_value": None, "kendall_w": None, "note": ""}
    pair_cols = ["system_a", "system_b", "n", "median_difference", "wilcoxon_statistic", "p_value",
                 "p_holm", "rank_biserial", "note"]
    if len(systems) < 2:
        info["note"] = "one system: nothing to compare"
        return info, pd.DataFrame(columns=pair_cols)
    if len(systems) >= 3 and len(complete) >= 2:
        res = stats.friedmanchisquare(*[complete[s].to_numpy() for s in systems])
        info["statistic"] = float(res.statistic) if np.isfinite(res.statistic) else None
        info["p_value"] = float(res.pvalue) if np.isfinite(res.pvalue) else None
        if info["statistic"] is not None:
            info["kendall_w"] = float(res.statistic / (len(complete) * (len(systems) - 1)))
        else:
            info["note"] = "all per-rater means tie: Friedman statistic undefined"
    elif len(systems) < 3:
        info["note"] = "two systems: Friedman needs three; see the Wilcoxon test"
    else:
        info["note"] = "fewer than 2 raters rated every system: Friedman not run"
    if len(complete) < len(means):
        extra = f"{len(means) - len(complete)} rater(s) without every system left out of Friedman"
        info["note"] = "; ".join(filter(None, [info["note"], extra]))
    rows = []
    for a, b in itertools.combinations(systems, 2):
        pair = means[[a, b]].dropna()
        d = (pair[a] - pair[b]).to_numpy()
        row = {"system_a": a, "system_b": b, "n": len(d), "median_difference": float(np.median(d)) if len(d) else None,
               "wilcoxon_statistic": None, "p_value": None, "rank_biserial": None, "note": ""}
        if len(d) < 2 or np.all(d == 0):
            row["note"] = "fewer than 2 raters with both systems" if len(d) < 2 else "no rater differs: test undefined"
        else:
            # Exact null distribution only where it is exact (small n, no ties or zeros); otherwise the
            # normal approximation with tie correction. scipy's "auto" would fall back to a slow
            # permutation test with ties.
            nz = d[d != 0]
            exact = len(nz) <= 25 and len(np.unique(np.abs(nz))) == len(nz) and len(nz) == len(d)
            res = stats.wilcoxon(pair[a], pair[b], zero_method="wilcox", method="exact" if exact else "approx")
            row["wilcoxon_statistic"] = float(res.statistic)
            row["p_value"] = float(res.pvalue)
            row["rank_biserial"] = rank_biserial(d)
        rows.append(row)
    pairs = pd.DataFrame(rows)
    tested = pairs["p_value"].notna()
    pairs["p_holm"] = np.nan
    if tested.any():
        pairs.loc[tested, "p_holm"] = multipletests(pairs.loc[tested, "p_value"].astype(float), method="holm")[1]
    pairs.loc[~tested, "p_holm"] = None
    return info, pairs[pair_cols]
