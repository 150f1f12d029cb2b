"""Inter-rater reliability on all marks: ICCs from crossed random effects, Krippendorff's α
(ordinal and interval), and the classic complete-block ICC as a secondary figure.

- **ICCs from variance components** (primary). The two-way random-effects model
  ``mark ~ 1 + (1|rater) + (1|stimulus)`` is fitted by REML on every mark
  (:mod:`sonieval.stats.crossed`), so incomplete and unbalanced designs use all their data
  (ten Hove, Jorgensen & van der Ark 2022, "Updated guidelines on selecting an ICC for
  interrater reliability, with applications to incomplete observational designs", *Psychol.
  Methods* 29(5); 2025, *Multivar. Behav. Res.*, doi:10.1080/00273171.2025.2507745, which
  prefers ML random-effects estimates with Monte-Carlo intervals). With σ²_s (stimulus),
  σ²_r (rater) and σ²_e (residual):
  ICC(A,1) = σ²_s/(σ²_s+σ²_r+σ²_e), ICC(A,k̂) = σ²_s/(σ²_s+(σ²_r+σ²_e)/k̂) (absolute agreement),
  ICC(C,1) = σ²_s/(σ²_s+σ²_e), ICC(C,k̂) = σ²_s/(σ²_s+σ²_e/k̂) (consistency: rater leniency
  left out, which is right only when the units compared share their raters), k̂ = the harmonic
  mean of the number of raters per stimulus. On a complete balanced design these equal the
  ANOVA forms of McGraw & Wong (1996) (tested on Shrout & Fleiss 1979). 95 % intervals are
  Monte-Carlo: variance components drawn from their asymptotic normal distribution (inverse
  REML information) on the log scale, the ICC computed per draw, percentiles taken.
- **Krippendorff's α** (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability"),
  ordinal and interval, from the coincidence matrix of all marks per stimulus
  (o_ck = Σ_u n_uc(n_uk − [c=k])/(m_u − 1)), with the scale as value domain (an unused mark
  still counts as a scale step for the ordinal metric). This equals the ``krippendorff``
  package on a raters × units matrix (tested) but also takes a rater's repeated marks of one
  stimulus, and resamples units for the bootstrap CI as one matrix product (Zapf et al. 2016,
  *BMC Med. Res. Methodol.* 16:93). The package cannot do either at our sizes.
- **Complete-block ICC** (secondary): the McGraw & Wong (1996) ANOVA forms on a complete
  raters × stimuli block chosen greedily, with F-based CIs. Written out here because
  ``pingouin.intraclass_corr`` rounds its CIs to two decimals (tested against its point
  estimates). The report gives the share of marks the block uses and how it was chosen.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from sonieval.stats.bootstrap import percentile_ci, resample_counts
from sonieval.stats.crossed import NotFittedError, codes, fit_crossed_reml

__all__ = [
    "ICC_FORMS",
    "BLOCK_METHOD",
    "icc_variance_components",
    "icc_complete_block",
    "icc_anova",
    "complete_block",
    "krippendorff_alpha",
    "alpha_from_counts",
    "ordinal_alpha_from_counts",
    "unit_value_counts",
    "rater_panel_agreement",
    "attribute_agreement",
]

ICC_FORMS = ("icc_a1", "icc_ak", "icc_c1", "icc_ck")


def unit_ids(df: pd.DataFrame) -> np.ndarray:
    """A rated unit is one stimulus: a system's sonification of a clip (integer code per unit)."""
    return df.groupby(["system_id", "clip_id"], observed=True, sort=True).ngroup().to_numpy()


def rater_unit_matrix(part: pd.DataFrame) -> tuple[np.ndarray, pd.Index, pd.Index, int]:
    """raters × units matrix of marks (NaN where not rated); a rater's repeated marks of one unit
    are averaged (the count of such cells is returned)."""
    return _cell_matrix(part["rater_id"].astype(str).to_numpy(), unit_ids(part), part["mark"].to_numpy(dtype=float))


def _cell_matrix(
    raters: np.ndarray, units: np.ndarray, marks: np.ndarray
) -> tuple[np.ndarray, pd.Index, pd.Index, int]:
    cells = (
        pd.DataFrame({"rater": raters, "unit": units, "mark": marks})
        .groupby(["rater", "unit"], sort=False)["mark"]
        .agg(["mean", "size"])
        .reset_index()
    )
    row_index = pd.Index(sorted(cells["rater"].unique()))
    col_index = pd.Index(np.unique(cells["unit"]))
    m = np.full((len(row_index), len(col_index)), np.nan)
    m[row_index.get_indexer(cells["rater"]), col_index.get_indexer(cells["unit"])] = cells["mean"].to_numpy()
    return m, row_index, col_index, int((cells["size"] > 1).sum())


def unit_value_counts(matrix: np.ndarray, domain: np.ndarray) -> np.ndarray:
    """units × values counts of marks (from a raters × units matrix)."""
    counts = np.zeros((matrix.shape[1], len(domain)))
    for j, v in enumerate(domain):
        counts[:, j] = (matrix == v).sum(axis=0)
    return counts


def _long_value_counts(units: np.ndarray, marks: np.ndarray, domain: np.ndarray) -> np.ndarray:
    """units × values counts from one row per mark (every mark, repeats included)."""
    col = np.searchsorted(domain, marks)
    counts = np.zeros((int(units.max()) + 1, len(domain)))
    np.add.at(counts, (units, col), 1.0)
    return counts


def coincidences(counts: np.ndarray, unit_weights: np.ndarray | None = None) -> np.ndarray:
    """Coincidence matrices o_ck = Σ_u w_u n_uc(n_uk − [c=k])/(m_u − 1), one per weighting (B × V × V).

    ``unit_weights`` is (B × U) (bootstrap multiplicities) or None (the data as they are).
    """
    m = counts.sum(axis=1)
    pairable = m >= 2
    counts = counts[pairable]
    m = m[pairable]
    w = np.ones((1, len(m))) if unit_weights is None else unit_weights[:, pairable]
    a = w / (m - 1)[None, :]  # B × U
    v = counts.shape[1]
    pairs = (counts[:, :, None] * counts[:, None, :]).reshape(len(m), v * v)  # U × V², one BLAS product below
    o = (a @ pairs).reshape(len(a), v, v)
    o[:, np.arange(v), np.arange(v)] -= a @ counts
    return o


def alpha_from_coincidences(o: np.ndarray, values: np.ndarray | None = None, level: str = "ordinal") -> np.ndarray:
    """Krippendorff's α (``ordinal`` or ``interval``) per coincidence matrix; NaN where undefined."""
    v = o.shape[1]
    n_c = o.sum(axis=2)  # B × V
    n = n_c.sum(axis=1)
    if level == "ordinal":
        # δ²_ck = (Σ_{g=c..k} n_g − (n_c + n_k)/2)²
        cum = np.cumsum(n_c, axis=1)
        ci, ki = np.meshgrid(np.arange(v), np.arange(v), indexing="ij")
        lo, hi = np.minimum(ci, ki), np.maximum(ci, ki)
        between = cum[:, hi] - cum[:, lo] + n_c[:, lo]
        delta2 = (between - (n_c[:, ci] + n_c[:, ki]) / 2) ** 2
    elif level == "interval":
        vals = np.asarray(values, float)
        delta2 = np.broadcast_to((vals[:, None] - vals[None, :]) ** 2, (len(n), v, v))
    else:
        raise ValueError(f"unknown level {level!r}")
    d_o = (o * delta2).sum(axis=(1, 2))
    d_e = (n_c[:, :, None] * n_c[:, None, :] * delta2).sum(axis=(1, 2)) / np.maximum(n - 1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = 1 - d_o / d_e
    alpha[(d_e <= 0) | (n < 2)] = np.nan
    return alpha


def alpha_from_counts(
    counts: np.ndarray, values: np.ndarray | None = None, level: str = "ordinal", unit_weights: np.ndarray | None = None
) -> np.ndarray:
    """Krippendorff's α from units × values counts, for one or many unit weightings (B × U)."""
    return alpha_from_coincidences(coincidences(counts, unit_weights), values, level)


def ordinal_alpha_from_counts(counts: np.ndarray, unit_weights: np.ndarray | None = None) -> np.ndarray:
    """Ordinal α from units × values counts (see :func:`alpha_from_counts`)."""
    return alpha_from_counts(counts, None, "ordinal", unit_weights)


def krippendorff_alpha(
    part: pd.DataFrame, scale_min: int | None, scale_max: int | None, n_boot: int, seed: int, chunk: int = 200
) -> dict:
    """Ordinal and interval α of one attribute's sonification marks, unit-bootstrap 95 % CIs.

    Every mark counts (a rater's repeated marks of a stimulus are values of that stimulus);
    marks that are not on the integer scale (means of duplicates) join the value domain.
    ``scale_min``/``scale_max`` None: the domain is the values that occur (as the ``krippendorff``
    package's default).
    """
    units = unit_ids(part)
    marks = part["mark"].to_numpy(dtype=float)
    scale = np.arange(scale_min, scale_max + 1, dtype=float) if scale_min is not None else np.array([])
    domain = np.union1d(scale, np.unique(marks))
    n_raters = int(part["rater_id"].nunique())
    out = {
        "n_raters": n_raters,
        "n_units": int(units.max()) + 1 if len(units) else 0,
        "alpha": None,
        "ci_low": None,
        "ci_high": None,
        "alpha_interval": None,
        "interval_ci_low": None,
        "interval_ci_high": None,
        "note": "",
    }
    counts = _long_value_counts(units, marks, domain) if len(units) else np.zeros((0, len(domain)))
    out["n_units_pairable"] = int((counts.sum(axis=1) >= 2).sum())
    if n_raters < 2:
        out["note"] = "one rater: agreement between raters is undefined"
        return out
    if out["n_units_pairable"] == 0:
        out["note"] = "no unit was marked twice: α undefined"
        return out
    if len(np.unique(marks)) < 2:
        out["note"] = "every mark is the same value: α undefined (no variation to agree on)"
        return out
    notes = []
    levels = (
        ("ordinal", "alpha", "ci_low", "ci_high"),
        ("interval", "alpha_interval", "interval_ci_low", "interval_ci_high"),
    )
    o = coincidences(counts)
    for level, key, _, _ in levels:
        point = float(alpha_from_coincidences(o, domain, level)[0])
        out[key] = point if np.isfinite(point) else None
    if n_boot:
        rng = np.random.default_rng(seed)
        samples = {level: [] for level, *_ in levels}
        for start in range(0, n_boot, chunk):  # B × U weights in chunks: 28k units × 2000 would be 450 MB
            o = coincidences(counts, resample_counts(rng, len(counts), min(chunk, n_boot - start)).astype(float))
            for level in samples:
                samples[level].append(alpha_from_coincidences(o, domain, level))
        for level, key, lo_key, hi_key in levels:
            if out[key] is None:
                continue
            values = np.concatenate(samples[level])
            lo, hi = percentile_ci(values)
            out[lo_key], out[hi_key] = float(lo), float(hi)
            if np.isnan(values).any() and level == "ordinal":
                notes.append(f"{int(np.isnan(values).sum())} resamples without variation left out of the CI")
    if not n_boot:
        notes.append("bootstrap off: no CI")
    out["note"] = "; ".join(notes)
    return out


def harmonic_raters_per_unit(raters: np.ndarray, units: np.ndarray) -> float:
    """k̂: harmonic mean over stimuli of the number of distinct raters (ten Hove et al. 2022)."""
    cells = sp.csr_matrix((np.ones(len(units)), (units, raters)))
    cells.sum_duplicates()
    per_unit = np.diff(cells.indptr).astype(float)  # distinct raters per unit
    per_unit = per_unit[per_unit > 0]
    return float(len(per_unit) / np.sum(1.0 / per_unit))


def icc_forms(var_unit, var_rater, var_resid, k: float) -> dict[str, np.ndarray]:
    """The four ICC forms from variance components (arrays broadcast: one value per draw)."""
    s, r, e = (np.asarray(v, float) for v in (var_unit, var_rater, var_resid))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "icc_a1": s / (s + r + e),
            "icc_ak": s / (s + (r + e) / k),
            "icc_c1": s / (s + e),
            "icc_ck": s / (s + e / k),
        }


def icc_variance_components(part: pd.DataFrame, *, n_draws: int = 4000, seed: int = 0, level: float = 0.95) -> dict:
    """ICC(A,1), ICC(A,k̂), ICC(C,1), ICC(C,k̂) from mark ~ 1 + (1|rater) + (1|stimulus) on all marks."""
    out = {form: None for form in ICC_FORMS}
    out.update({f"{form}_ci95": None for form in ICC_FORMS})
    units = unit_ids(part)
    raters, _ = codes(part["rater_id"])
    out.update(
        {
            "k_hat": None,
            "var_stimulus": None,
            "var_rater": None,
            "var_residual": None,
            "n_marks": int(len(part)),
            "n_raters": int(raters.max()) + 1 if len(part) else 0,
            "n_units": int(units.max()) + 1 if len(part) else 0,
            "note": "",
        }
    )
    if out["n_raters"] < 2:
        out["note"] = "one rater: rater and stimulus variance cannot be separated, ICC undefined"
        return out
    if out["n_units"] < 2:
        out["note"] = "one stimulus: there is no variance between stimuli to be reliable about, ICC undefined"
        return out
    y = part["mark"].to_numpy(dtype=float)
    if np.ptp(y) == 0:
        out["note"] = "every mark is the same value: ICC undefined"
        return out
    try:
        fit = fit_crossed_reml(y, np.zeros(len(y), dtype=np.int64), raters, units)
    except NotFittedError as exc:
        out["note"] = f"ICC undefined: {exc}"
        return out
    k = harmonic_raters_per_unit(raters, units)
    out.update(k_hat=k, var_stimulus=float(fit.var_b), var_rater=float(fit.var_a), var_residual=float(fit.var_resid))
    point = icc_forms(fit.var_b, fit.var_a, fit.var_resid, k)
    for form, value in point.items():
        out[form] = float(value)
    notes = []
    if fit.var_b <= 0:
        notes.append("stimulus variance estimated at 0 (boundary): every ICC is 0")
    if fit.var_a <= 0:
        notes.append("rater variance estimated at 0 (boundary): agreement and consistency forms coincide")
    draws = _variance_draws(fit, n_draws, seed)
    if draws is None:
        notes.append("information matrix singular: no ICC intervals")
    else:
        sampled = icc_forms(draws[:, 1], draws[:, 0], draws[:, 2], k)
        alpha = (1 - level) / 2
        for form, values in sampled.items():
            lo, hi = np.nanquantile(values, [alpha, 1 - alpha])
            out[f"{form}_ci95"] = [float(lo), float(hi)]
    if not fit.converged:
        notes.append(fit.message)
    out["note"] = "; ".join(notes)
    return out


def _variance_draws(fit, n_draws: int, seed: int) -> np.ndarray | None:
    """Monte-Carlo draws of (var_rater, var_stimulus, var_resid): log-normal from the REML
    information; components estimated at 0 stay at 0."""
    cov = fit.cov_variances
    est = fit.variances
    if cov is None or not np.all(np.isfinite(cov)):
        return None
    free = est > 0
    idx = np.flatnonzero(free)
    scale = 1.0 / est[idx]
    cov_log = cov[np.ix_(idx, idx)] * np.outer(scale, scale)
    try:
        chol = np.linalg.cholesky(cov_log + 1e-15 * np.eye(len(idx)))
    except np.linalg.LinAlgError:
        return None
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_draws, len(idx))) @ chol.T
    draws = np.zeros((n_draws, 3))
    draws[:, idx] = est[idx] * np.exp(z)
    return draws


def complete_block(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (raters) and columns (units) of a complete sub-matrix, chosen greedily.

    Repeatedly drops the rater or unit with the largest share of missing marks (ties: all of
    them at once) until nothing is missing. Not guaranteed maximal, but deterministic; the
    counts are updated as rows and columns go, so the search is O(raters × units) in all.
    """
    present = ~np.isnan(matrix)
    row_alive = np.ones(present.shape[0], bool)
    col_alive = np.ones(present.shape[1], bool)
    row_count = present.sum(axis=1).astype(np.int64)  # marks within the alive columns
    col_count = present.sum(axis=0).astype(np.int64)  # marks within the alive rows
    while row_alive.any() and col_alive.any():
        n_rows, n_cols = int(row_alive.sum()), int(col_alive.sum())
        row_miss = np.where(row_alive, 1 - row_count / n_cols, -1.0)
        col_miss = np.where(col_alive, 1 - col_count / n_rows, -1.0)
        if row_miss.max() <= 1e-12 and col_miss.max() <= 1e-12:
            break
        if row_miss.max() >= col_miss.max():
            drop = np.flatnonzero(row_alive & (row_miss >= row_miss.max() - 1e-12))
            row_alive[drop] = False
            col_count -= present[drop].sum(axis=0)
        else:
            drop = np.flatnonzero(col_alive & (col_miss >= col_miss.max() - 1e-12))
            col_alive[drop] = False
            row_count -= present[:, drop].sum(axis=1)
    return np.flatnonzero(row_alive), np.flatnonzero(col_alive)


# Above this many raters × stimuli cells the block is searched among the BLOCK_SEARCH_SIDE most
# marked stimuli and their most active raters (the dense matrix would not fit otherwise).
BLOCK_SEARCH_CELLS = 4_000_000
BLOCK_SEARCH_SIDE = 2000
BLOCK_METHOD = (
    "greedy: repeatedly drop the rater or stimulus with the largest share of missing cells until none is missing"
)


def _anova_points(ms_r: float, ms_c: float, ms_e: float, n: int, k: int) -> dict:
    return {
        "icc_a1": (ms_r - ms_e) / (ms_r + (k - 1) * ms_e + k * (ms_c - ms_e) / n),
        "icc_ak": (ms_r - ms_e) / (ms_r + (ms_c - ms_e) / n),
        "icc_c1": (ms_r - ms_e) / (ms_r + (k - 1) * ms_e),
        "icc_ck": (ms_r - ms_e) / ms_r,
    }


def icc_anova(block: np.ndarray, level: float = 0.95) -> dict:
    """McGraw & Wong (1996) ICC(A,1), ICC(A,k), ICC(C,1), ICC(C,k) with F-based CIs.

    ``block``: complete raters × units matrix (k raters, n units). Two-way ANOVA mean squares
    of units (MSR), raters (MSC) and error (MSE); the agreement intervals use the approximate
    df of McGraw & Wong (1996, *Psychol. Methods* 1(1):30-46, Table 7), as pingouin does.
    """
    x = np.asarray(block, float).T  # units × raters
    n, k = x.shape
    grand = x.mean()
    ms_r = k * ((x.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    ms_c = n * ((x.mean(axis=0) - grand) ** 2).sum() / (k - 1)
    sse = ((x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + grand) ** 2).sum()
    ms_e = sse / ((n - 1) * (k - 1))
    q = 0.5 + level / 2
    with np.errstate(divide="ignore", invalid="ignore"):  # no variance: NaN, reported as undefined by the caller
        out = _anova_points(ms_r, ms_c, ms_e, n, k)
        f = ms_r / ms_e
        df1, df2 = n - 1, (n - 1) * (k - 1)
        f_lo = f / stats.f.ppf(q, df1, df2)
        f_hi = f * stats.f.ppf(q, df2, df1)
        out["icc_c1_ci95"] = [(f_lo - 1) / (f_lo + k - 1), (f_hi - 1) / (f_hi + k - 1)]
        out["icc_ck_ci95"] = [1 - 1 / f_lo, 1 - 1 / f_hi]
        icc = out["icc_a1"]
        a = k * icc / (n * (1 - icc))
        b = 1 + k * icc * (n - 1) / (n * (1 - icc))
        v = (a * ms_c + b * ms_e) ** 2 / ((a * ms_c) ** 2 / (k - 1) + (b * ms_e) ** 2 / ((n - 1) * (k - 1)))
        fl = stats.f.ppf(q, n - 1, v)
        fu = stats.f.ppf(q, v, n - 1)
        lo = n * (ms_r - fl * ms_e) / (fl * (k * ms_c + (k * n - k - n) * ms_e) + n * ms_r)
        hi = n * (fu * ms_r - ms_e) / (k * ms_c + (k * n - k - n) * ms_e + n * fu * ms_r)
        out["icc_a1_ci95"] = [lo, hi]
        out["icc_ak_ci95"] = [lo * k / (1 + lo * (k - 1)), hi * k / (1 + hi * (k - 1))]
    return {key: ([float(x) for x in val] if isinstance(val, list) else float(val)) for key, val in out.items()}


def _block_search_rows(raters: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, str]:
    """Rows to search for the block: all, or (large designs) the most-marked stimuli and their
    most active raters, so the dense raters × stimuli matrix stays small."""
    n_r, n_u = int(raters.max()) + 1, int(units.max()) + 1
    if n_r * n_u <= BLOCK_SEARCH_CELLS:
        return np.ones(len(raters), bool), BLOCK_METHOD
    per_unit = pd.Series(np.bincount(np.unique(units.astype(np.int64) * n_r + raters) // n_r, minlength=n_u))
    top_units = per_unit.sort_values(ascending=False, kind="stable").index[:BLOCK_SEARCH_SIDE].to_numpy()
    sel = np.isin(units, top_units)
    per_rater = pd.Series(np.bincount(raters[sel], minlength=n_r)).sort_values(ascending=False, kind="stable")
    sel &= np.isin(raters, per_rater.index[:BLOCK_SEARCH_SIDE].to_numpy())
    return sel, (
        f"{BLOCK_METHOD}, searched among the {len(top_units)} of {n_u} stimuli marked by most raters and "
        f"the {min(len(per_rater), BLOCK_SEARCH_SIDE)} of {n_r} raters with most marks on them"
    )


def icc_complete_block(part: pd.DataFrame) -> dict:
    """Secondary: McGraw & Wong ICCs on a greedily chosen complete block of raters × stimuli."""
    raters_all, _ = codes(part["rater_id"])  # integer codes: set operations on 800k strings take seconds
    units_all = unit_ids(part)
    sel, method = _block_search_rows(raters_all, units_all)
    matrix, raters, units, n_repeat_cells = _cell_matrix(
        raters_all[sel], units_all[sel], part["mark"].to_numpy(dtype=float)[sel]
    )
    rows, cols = complete_block(matrix)
    out = {form: None for form in ICC_FORMS}
    out.update({f"{form}_ci95": None for form in ICC_FORMS})
    unit_system = pd.Series(part["system_id"].astype(str).to_numpy()).groupby(units_all).first()
    block_units = np.asarray(units[cols])
    in_block = np.isin(raters_all, np.asarray(raters[rows], dtype=np.int64)) & np.isin(units_all, block_units)
    systems_in_block = unit_system.reindex(block_units).value_counts()
    n_raters_total, n_units_total = int(raters_all.max()) + 1, len(unit_system)
    out.update(
        {
            "k": int(len(rows)),
            "n_raters_block": int(len(rows)),
            "n_units_block": int(len(cols)),
            "n_raters_total": n_raters_total,
            "n_units_total": n_units_total,
            "n_marks_block": int(in_block.sum()),
            "share_of_marks": float(in_block.mean()) if len(part) else 0.0,
            "n_systems_block": int(len(systems_in_block)),
            "n_systems_total": int(unit_system.nunique()),
            "largest_system_share": float(systems_in_block.iloc[0] / len(cols)) if len(cols) else None,
            "method": method,
            "n_repeat_cells_averaged": n_repeat_cells,
            "note": "",
        }
    )
    if len(rows) < 2 or len(cols) < 2:
        out["note"] = "no complete block of ≥ 2 raters × ≥ 2 stimuli: block ICC undefined (design too sparse)"
        return out
    sub = matrix[np.ix_(rows, cols)]
    if np.all(sub == sub.flat[0]):
        out["note"] = "every mark in the complete block is the same: block ICC undefined"
        return out
    out.update(icc_anova(sub))
    # ANOVA estimates leave [−1, 1] when the block's stimuli do not vary beyond its noise (MSR ≤ MSE)
    # in a small block: such a value means nothing, so it is undefined.
    undefined = [form for form in ICC_FORMS if not (np.isfinite(out[form]) and -1 <= out[form] <= 1)]
    for form in ICC_FORMS:
        if form in undefined or not np.all(np.isfinite(out[f"{form}_ci95"])):
            out[f"{form}_ci95"] = None
        if form in undefined:
            out[form] = None
    notes = [
        f"block of {len(rows)} of {n_raters_total} raters × {len(cols)} of {n_units_total} stimuli: "
        f"{out['n_marks_block']} of {len(part)} marks ({out['share_of_marks']:.1%}), "
        f"stimuli from {out['n_systems_block']} of {out['n_systems_total']} systems"
    ]
    if n_repeat_cells:
        notes.append(f"{n_repeat_cells} rater × stimulus cells with repeated marks averaged")
    if undefined:
        notes.append(
            f"{', '.join(undefined)} undefined: outside [−1, 1] or no variance (the block's stimuli do not "
            "vary beyond its noise)"
        )
    out["note"] = (
        "; ".join(notes)
        if (len(rows) < n_raters_total or len(cols) < n_units_total or n_repeat_cells or undefined)
        else ""
    )
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
    rater_code, rater_names = codes(son["rater_id"])  # integer keys: text groupbys cost seconds at 800k marks
    attr_code, attr_names = codes(son["attribute"])
    df = pd.DataFrame(
        {"rater_id": rater_code, "attribute": attr_code, "unit": unit_ids(son), "mark": son["mark"].to_numpy(float)}
    )
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
    agg = (
        df.groupby(keys)
        .agg(
            n_shared_units=("mark", "size"),
            xy=("xy", "sum"),
            xx=("xx", "sum"),
            yy=("yy", "sum"),
            mean_abs_difference=("dev", "mean"),
        )
        .reset_index()
    )
    defined = (agg["n_shared_units"] >= 3) & (agg["xx"] > 1e-12) & (agg["yy"] > 1e-12)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = agg["xy"] / np.sqrt(agg["xx"] * agg["yy"])
    agg["spearman_with_panel"] = np.where(defined, rho, np.nan)
    agg["note"] = np.where(
        defined,
        "",
        np.where(
            agg["n_shared_units"] < 3,
            "fewer than 3 units shared with other raters",
            "no variation in this rater's marks or in the panel mean",
        ),
    )
    all_raters = pd.DataFrame({"rater_id": rater_code, "attribute": attr_code}).drop_duplicates()
    cols = ["rater_id", "attribute", "n_shared_units", "spearman_with_panel", "mean_abs_difference", "note"]
    table = all_raters.merge(agg[cols], on=keys, how="left")
    table["rater_id"] = np.asarray(rater_names, dtype=object)[table["rater_id"].to_numpy()]
    table["attribute"] = np.asarray(attr_names, dtype=object)[table["attribute"].to_numpy()]
    missing = table["n_shared_units"].isna()
    table.loc[missing, "n_shared_units"] = 0
    table.loc[missing, "note"] = "no unit also marked by another rater"
    return table.sort_values(["attribute", "rater_id"]).reset_index(drop=True)


def attribute_agreement(son: pd.DataFrame) -> dict:
    """Agreement between the visual and the audio mark of the same rater on the same stimulus
    (a rater's repeated marks of a stimulus are averaged per attribute)."""
    rater, _ = codes(son["rater_id"])
    stimulus = unit_ids(son)
    key = stimulus.astype(np.int64) * (int(rater.max()) + 1 if len(son) else 1) + rater
    marks = son["mark"].to_numpy(float)
    attribute, names = codes(son["attribute"])
    wide = pd.DataFrame(
        {name: pd.Series(marks[attribute == k]).groupby(key[attribute == k]).mean() for k, name in enumerate(names)}
    )
    out = {
        "n_pairs": 0,
        "spearman": None,
        "kendall_tau_b": None,
        "share_equal": None,
        "mean_visual_minus_audio": None,
        "spearman_item_means": None,
        "note": "",
    }
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
    items = pairs.groupby(pairs.index.to_numpy() // (int(rater.max()) + 1)).mean()  # per stimulus
    out["spearman_item_means"] = _spearman(items["visual"], items["audio"])
    return out
