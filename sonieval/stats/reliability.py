"""Inter-rater reliability: Krippendorff's α (ordinal), ICC(2,1)/ICC(2,k), panel agreement.

- Krippendorff's α (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability") with the
  ``krippendorff`` package. Two of its defaults are wrong for marks: it assumes *interval*
  data and it takes a raters × units matrix (not units × raters), so both are passed
  explicitly, with the scale as ``value_domain`` (so an unused mark still counts as a scale
  step for the ordinal metric). α handles incomplete designs: a unit with one mark is simply
  not pairable.
- Its CI is a percentile bootstrap over units (Zapf et al. 2016, *BMC Med. Res. Methodol.* 16:93).
  The package has no bootstrap and calling it 2,000 times is slow, so the resamples use the
  coincidence-matrix form (α = 1 − D_o/D_e with o_ck = Σ_u n_uc(n_uk − [c=k])/(m_u − 1)) as
  one matrix product over unit weights; :func:`ordinal_alpha_from_counts` reproduces the
  package's point estimate exactly (tested).
- ICC(2,1) and ICC(2,k) (Shrout & Fleiss 1979; McGraw & Wong's "A,1"/"A,k") with
  ``pingouin.intraclass_corr``, which drops every target with a missing rating: it is run on an
  explicitly chosen complete block of raters × units and the report says how many were kept.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from sonieval.stats.bootstrap import percentile_ci


def unit_ids(df: pd.DataFrame) -> np.ndarray:
    """A rated unit is one stimulus: a system's sonification of a clip (integer code per unit)."""
    return df.groupby(["system_id", "clip_id"], observed=True, sort=True).ngroup().to_numpy()


def rater_unit_matrix(part: pd.DataFrame) -> tuple[np.ndarray, pd.Index, pd.Index, int]:
    """raters × units matrix of marks (NaN where not rated); repeated marks keep the first given."""
    df = part.assign(unit=unit_ids(part))
    if "submitted_at" in df.columns:
        df = df.sort_values("submitted_at", kind="stable")
    n_dup = int(df.duplicated(["rater_id", "unit"]).sum())
    df = df.drop_duplicates(["rater_id", "unit"], keep="first")
    raters = pd.Index(sorted(df["rater_id"].astype(str).unique()))
    units = pd.Index(np.unique(df["unit"]))
    m = np.full((len(raters), len(units)), np.nan)
    m[raters.get_indexer(df["rater_id"].astype(str)), units.get_indexer(df["unit"])] = df["mark"].to_numpy(dtype=float)
    return m, raters, units, n_dup


def unit_value_counts(matrix: np.ndarray, domain: np.ndarray) -> np.ndarray:
    """units × values counts of marks (from a raters × units matrix)."""
    counts = np.zeros((matrix.shape[1], len(domain)))
    for j, v in enumerate(domain):
        counts[:, j] = (matrix == v).sum(axis=0)
    return counts


def ordinal_alpha_from_counts(counts: np.ndarray, unit_weights: np.ndarray | None = None) -> np.ndarray:
    """Ordinal Krippendorff's α from units × values counts, for one or many unit weightings.

    ``unit_weights`` is (B × U) (bootstrap multiplicities) or None (the data as they are).
    Returns an array of B alphas (NaN where undefined: no pairable values or no variation).
    """
    m = counts.sum(axis=1)
    pairable = m >= 2
    counts = counts[pairable]
    m = m[pairable]
    w = np.ones((1, len(m))) if unit_weights is None else unit_weights[:, pairable]
    a = w / (m - 1)[None, :]  # B × U
    # o_ck = Σ_u a_u n_uc n_uk − δ_ck Σ_u a_u n_uc
    o = np.einsum("bu,uc,uk->bck", a, counts, counts, optimize=True)
    diag = a @ counts
    o[:, np.arange(counts.shape[1]), np.arange(counts.shape[1])] -= diag
    n_c = o.sum(axis=2)  # B × V
    n = n_c.sum(axis=1)
    # Ordinal metric: δ²_ck = (Σ_{g=c..k} n_g − (n_c + n_k)/2)²
    cum = np.cumsum(n_c, axis=1)
    v = n_c.shape[1]
    ci, ki = np.meshgrid(np.arange(v), np.arange(v), indexing="ij")
    lo, hi = np.minimum(ci, ki), np.maximum(ci, ki)
    between = cum[:, hi] - cum[:, lo] + n_c[:, lo]
    delta2 = (between - (n_c[:, ci] + n_c[:, ki]) / 2) ** 2
    d_o = (o * delta2).sum(axis=(1, 2))
    d_e = (n_c[:, :, None] * n_c[:, None, :] * delta2).sum(axis=(1, 2)) / np.maximum(n - 1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = 1 - d_o / d_e
    alpha[(d_e <= 0) | (n < 2)] = np.nan
    return alpha


def krippendorff_alpha(part: pd.DataFrame, scale_min: int, scale_max: int, n_boot: int, seed: int,
                       matrix=None) -> dict:
    """Ordinal α of one attribute's sonification marks with a unit-bootstrap 95 % CI.

    ``matrix``: the :func:`rater_unit_matrix` of ``part`` when already built.
    """
    import krippendorff

    matrix, raters, units, n_dup = matrix if matrix is not None else rater_unit_matrix(part)
    domain = np.arange(scale_min, scale_max + 1)
    out = {"n_raters": len(raters), "n_units": len(units), "n_repeated_marks_ignored": n_dup,
           "alpha": None, "ci_low": None, "ci_high": None, "note": ""}
    counts = unit_value_counts(matrix, domain)
    pairable = int((counts.sum(axis=1) >= 2).sum())
    out["n_units_pairable"] = pairable
    if pairable == 0:
        out["note"] = "no unit was marked by two raters: α undefined"
        return out
    if len(np.unique(matrix[~np.isnan(matrix)])) < 2:
        out["note"] = "every mark is the same value: α undefined (no variation to agree on)"
        return out
    try:
        alpha = float(krippendorff.alpha(reliability_data=matrix, level_of_measurement="ordinal", value_domain=domain.tolist()))
    except (ValueError, ZeroDivisionError) as exc:
        out["note"] = f"α undefined: {exc}"
        return out
    out["alpha"] = alpha
    if n_boot:
        rng = np.random.default_rng(seed)
        w = rng.multinomial(len(units), np.full(len(units), 1 / len(units)), size=n_boot).astype(float)
        samples = ordinal_alpha_from_counts(counts, w)
        lo, hi = percentile_ci(samples)
        out["ci_low"], out["ci_high"] = float(lo), float(hi)
        if np.isnan(samples).any():
            out["note"] = f"{int(np.isnan(samples).sum())} resamples without variation left out of the CI"
    else:
        out["note"] = "bootstrap off: no CI"
    return out


def complete_block(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (raters) and columns (units) of a complete sub-matrix, chosen greedily.

    Repeatedly drops the rater or unit with the largest share of missing marks (ties: all of
    them at once) until nothing is missing. Not guaranteed maximal, but deterministic and fast;
    the report states the size kept.
    """
    rows = np.arange(matrix.shape[0])
    cols = np.arange(matrix.shape[1])
    present = ~np.isnan(matrix)
    for _ in range(10_000):
        sub = present[np.ix_(rows, cols)]
        if sub.size == 0 or sub.all():
            break
        row_miss = 1 - sub.mean(axis=1)
        col_miss = 1 - sub.mean(axis=0)
        if row_miss.max() >= col_miss.max():
            rows = rows[row_miss < row_miss.max() - 1e-12]
        else:
            cols = cols[col_miss < col_miss.max() - 1e-12]
    return rows, cols


def icc_balanced(part: pd.DataFrame, matrix=None) -> dict:
    """ICC(2,1) and ICC(2,k) (two-way random, absolute agreement) on a complete block."""
    import pingouin

    matrix, raters, units, _ = matrix if matrix is not None else rater_unit_matrix(part)
    rows, cols = complete_block(matrix)
    out = {"icc2_1": None, "icc2_k": None, "icc2_1_ci95": None, "icc2_k_ci95": None,
           "n_raters_balanced": int(len(rows)), "n_units_balanced": int(len(cols)),
           "n_raters_total": int(len(raters)), "n_units_total": int(len(units)), "note": ""}
    if len(rows) < 2 or len(cols) < 2:
        out["note"] = "no complete block of ≥ 2 raters × ≥ 2 units: ICC undefined (design too sparse)"
        return out
    sub = matrix[np.ix_(rows, cols)]
    if np.all(sub == sub.flat[0]):
        out["note"] = "every mark in the complete block is the same: ICC undefined"
        return out
    long = pd.DataFrame({
        "unit": np.tile(np.arange(len(cols)), len(rows)),
        "rater": np.repeat(np.arange(len(rows)), len(cols)),
        "mark": sub.ravel(),
    })
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = pingouin.intraclass_corr(data=long, targets="unit", raters="rater", ratings="mark")
    res = res.set_index("Type")
    # pingouin ≥ 0.6 names the forms after McGraw & Wong (ICC(A,1)); older releases ICC2.
    one = "ICC(A,1)" if "ICC(A,1)" in res.index else "ICC2"
    k = "ICC(A,k)" if "ICC(A,k)" in res.index else "ICC2k"
    out["icc2_1"] = float(res.loc[one, "ICC"])
    out["icc2_k"] = float(res.loc[k, "ICC"])
    out["icc2_1_ci95"] = [float(x) for x in res.loc[one, "CI95"]]
    out["icc2_k_ci95"] = [float(x) for x in res.loc[k, "CI95"]]
    out["k"] = int(len(rows))
    if len(rows) < out["n_raters_total"] or len(cols) < out["n_units_total"]:
        out["note"] = (f"on the complete block of {len(rows)} of {out['n_raters_total']} raters × "
                       f"{len(cols)} of {out['n_units_total']} units")
    return out


def _spearman(x, y) -> float | None:
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(stats.spearmanr(x, y).statistic)


def rater_panel_agreement(son: pd.DataFrame) -> pd.DataFrame:
    """Per rater and attribute: Spearman ρ of the rater's marks with the other raters' mean.

    Leave-one-out: the panel mean of a unit excludes the rater's own mark, so a rater does not
    agree with themself. Computed for all raters at once: within-rater mid-ranks, then Pearson
    on the ranks from grouped sums (Spearman's ρ with ties = Pearson's r of mid-ranks).
    """
    df = pd.DataFrame({"rater_id": son["rater_id"].astype(str).to_numpy(),
                       "attribute": son["attribute"].astype(str).to_numpy(),
                       "unit": unit_ids(son), "mark": son["mark"].to_numpy(float)})
    g = df.groupby(["attribute", "unit"])["mark"]
    total = g.transform("sum")
    count = g.transform("size")
    shared = (count > 1).to_numpy()
    df = df[shared].copy()
    df["panel_mean"] = ((total - df["mark"].reindex(total.index)) / (count - 1))[shared].to_numpy()
    keys = ["rater_id", "attribute"]
    by = df.groupby(keys)
    df["rx"] = by["mark"].rank()
    df["ry"] = by["panel_mean"].rank()
    df["dev"] = (df["mark"] - df["panel_mean"]).abs()
    for a in ("rx", "ry"):
        df[a] = df[a] - df.groupby(keys)[a].transform("mean")
    df["xy"], df["xx"], df["yy"] = df["rx"] * df["ry"], df["rx"] ** 2, df["ry"] ** 2
    agg = df.groupby(keys).agg(n_shared_units=("mark", "size"), xy=("xy", "sum"), xx=("xx", "sum"),
                               yy=("yy", "sum"), mean_abs_difference=("dev", "mean")).reset_index()
    defined = (agg["n_shared_units"] >= 3) & (agg["xx"] > 1e-12) & (agg["yy"] > 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = agg["xy"] / np.sqrt(agg["xx"] * agg["yy"])
    agg["spearman_with_panel"] = np.where(defined, rho, np.nan)
    agg["note"] = np.where(defined, "", np.where(agg["n_shared_units"] < 3, "fewer than 3 units shared with other raters",
                                                 "no variation in this rater's marks or in the panel mean"))
    all_raters = pd.DataFrame({"rater_id": son["rater_id"].astype(str).to_numpy(),
                               "attribute": son["attribute"].astype(str).to_numpy()}).drop_duplicates()
    cols = ["rater_id", "attribute", "n_shared_units", "spearman_with_panel", "mean_abs_difference", "note"]
    table = all_raters.merge(agg[cols], on=keys, how="left")
    missing = table["n_shared_units"].isna()
    table.loc[missing, "n_shared_units"] = 0
    table.loc[missing, "note"] = "no unit also marked by another rater"
    return table.sort_values(["attribute", "rater_id"]).reset_index(drop=True)


def attribute_agreement(son: pd.DataFrame) -> dict:
    """Agreement between the visual and the audio mark of the same rater on the same stimulus."""
    keys = ["rater_id", "system_id", "clip_id"]
    wide = son.pivot_table(index=keys, columns="attribute", values="mark", aggfunc="first")
    out = {"n_pairs": 0, "spearman": None, "kendall_tau_b": None, "share_equal": None,
           "mean_visual_minus_audio": None, "spearman_item_means": None, "note": ""}
    if not {"visual", "audio"} <= set(wide.columns):
        out["note"] = "only one attribute was rated"
        return out
    pairs = wide[["visual", "audio"]].dropna()
    out["n_pairs"] = int(len(pairs))
    if len(pairs) < 3:
        out["note"] = "fewer than 3 stimuli with both marks"
        return out
    out["spearman"] = _spearman(pairs["visual"], pairs["audio"])
    if out["spearman"] is not None:
        out["kendall_tau_b"] = float(stats.kendalltau(pairs["visual"], pairs["audio"], variant="b").statistic)
    else:
        out["note"] = "no variation in one attribute's marks: correlation undefined"
    out["share_equal"] = float((pairs["visual"] == pairs["audio"]).mean())
    out["mean_visual_minus_audio"] = float((pairs["visual"] - pairs["audio"]).mean())
    items = pairs.groupby(level=["system_id", "clip_id"]).mean()
    out["spearman_item_means"] = _spearman(items["visual"], items["audio"])
    return out
