"""Reliability and the mixed model on any tidy table: DataFrame in, DataFrame out, column names as
arguments (as pingouin does).

A tidy table has one row per mark. The column arguments name its columns:

- ``rater``: who gave the mark (default ``rater_id``);
- ``item``: what was marked, one column or a list of columns that together name it (default
  ``clip_id``; for sonieval's own ratings, where a stimulus is a system's rendering of a clip, pass
  ``item=["system_id", "clip_id"]`` and one attribute's rows);
- ``mark``: the numeric mark (default ``mark``);
- ``system`` (mixed model only): the fixed factor whose means are estimated (default ``system_id``).

The maths is the report's own (:mod:`sonieval.stats.reliability`, :mod:`sonieval.stats.models`,
:mod:`sonieval.stats.crossed`): these functions only check and rename columns, and shape the
answer. Every mark is used; an empty cell or a missing column is one :class:`SonievalError` line.
"""

from __future__ import annotations

import pandas as pd

from sonieval.errors import SonievalError
from sonieval.stats import models, reliability

__all__ = ["icc", "krippendorff_alpha", "mixed_model"]

_ICC_NAMES = {
    "icc_a1": ("ICC(A,1)", "absolute agreement, one rater"),
    "icc_ak": ("ICC(A,k)", "absolute agreement, mean of k raters"),
    "icc_c1": ("ICC(C,1)", "consistency, one rater"),
    "icc_ck": ("ICC(C,k)", "consistency, mean of k raters"),
}
_ALPHA_KEYS = {
    "ordinal": ("alpha", "ci_low", "ci_high"),
    "interval": ("alpha_interval", "interval_ci_low", "interval_ci_high"),
}


def _tidy(data, where: str, **columns) -> pd.DataFrame:
    """The columns the caller named, under the report's names (rater_id, clip_id, system_id, mark).

    ``columns`` maps an argument name to a column name or a list of them (``item``). A missing
    column, an empty cell or a non-numeric mark is one SonievalError line.
    """
    if not isinstance(data, pd.DataFrame):
        raise SonievalError(
            f"data must be a pandas DataFrame with one row per mark, not {type(data).__name__}",
            path=where,
            hint="e.g. pd.read_csv('ratings.csv')",
        )
    present = [str(c) for c in data.columns]
    for arg, names in columns.items():
        for name in [names] if isinstance(names, str) else list(names):
            if name not in data.columns:
                raise SonievalError(
                    f"column {name!r} ({arg}=) is not in the data",
                    path=where,
                    hint=f"columns present: {', '.join(present)}; name the right one with {arg}='<column>'",
                )
    used = [n for names in columns.values() for n in ([names] if isinstance(names, str) else names)]
    if data.empty:
        raise SonievalError("the data have no rows", path=where, hint="one row per mark is needed")
    empty = data[used].isna()
    if empty.any().any():
        col = empty.any().idxmax()
        raise SonievalError(
            f"{int(empty.any(axis=1).sum())} row(s) with an empty cell (e.g. in column {col!r})",
            path=where,
            hint=f"drop or fill them first: data.dropna(subset={used!r})",
        )
    mark = pd.to_numeric(data[columns["mark"]], errors="coerce")
    if mark.isna().any():
        example = data.loc[mark.isna(), columns["mark"]].iloc[0]
        raise SonievalError(
            f"column {columns['mark']!r} has {int(mark.isna().sum())} non-numeric value(s), e.g. {example!r}",
            path=where,
            hint="marks must be numbers",
        )
    out = pd.DataFrame({"mark": mark.to_numpy(float)}, index=data.index)
    out["rater_id"] = data[columns["rater"]].astype(str).to_numpy()
    item = columns["item"]
    out["clip_id"] = (
        data[item].astype(str)
        if isinstance(item, str)
        else data.groupby(list(item), sort=True).ngroup()  # integer codes keep the sorted order
    )
    out["system_id"] = data[columns["system"]].astype(str) if "system" in columns else ""
    return out


def icc(
    data: pd.DataFrame,
    *,
    rater: str = "rater_id",
    item: str | list[str] = "clip_id",
    mark: str = "mark",
    method: str = "reml",
    n_draws: int = 4000,
    seed: int = 0,
) -> pd.DataFrame:
    """Intraclass correlations of a tidy table: one row per form, ICC(A,1), ICC(A,k), ICC(C,1), ICC(C,k).

    ``method="reml"`` (default): from the variance components of ``mark ~ 1 + (1|rater) + (1|item)``
    fitted by REML on every mark (incomplete and unbalanced designs included), k = the harmonic mean
    number of raters per item, 95 % Monte-Carlo intervals (``n_draws``, ``seed``). On a complete,
    balanced design these equal pingouin's ICC2, ICC2k, ICC3, ICC3k. ``method="anova"``: McGraw &
    Wong's ANOVA forms with F-based intervals on the largest complete raters × items block found
    (greedily). Columns: form, type, description, icc, ci_low, ci_high, n_marks, n_raters, n_items,
    k, var_item, var_rater, var_residual (REML only), note (why a value is undefined, the block used).
    """
    part = _tidy(data, "sonieval.stats.icc", rater=rater, item=item, mark=mark)
    if method == "reml":
        res = reliability.icc_variance_components(part, n_draws=n_draws, seed=seed)
        n = {
            "n_marks": res["n_marks"],
            "n_raters": res["n_raters"],
            "n_items": res["n_units"],
            "k": res["k_hat"],
            "var_item": res["var_stimulus"],
            "var_rater": res["var_rater"],
            "var_residual": res["var_residual"],
        }
    elif method == "anova":
        res = reliability.icc_complete_block(part)
        n = {
            "n_marks": res["n_marks_block"],
            "n_raters": res["n_raters_block"],
            "n_items": res["n_units_block"],
            "k": res["k"],
        }
    else:
        raise SonievalError(f"unknown ICC method {method!r}", path="sonieval.stats.icc", hint="use 'reml' or 'anova'")
    rows = []
    for form, (label, description) in _ICC_NAMES.items():
        lo, hi = res[f"{form}_ci95"] or (None, None)
        rows.append(
            {
                "form": label,
                "type": form,
                "description": description,
                "icc": res[form],
                "ci_low": lo,
                "ci_high": hi,
                **n,
                "note": res["note"],
            }
        )
    return pd.DataFrame(rows).astype({"icc": float, "ci_low": float, "ci_high": float})


def krippendorff_alpha(
    data: pd.DataFrame,
    *,
    rater: str = "rater_id",
    item: str | list[str] = "clip_id",
    mark: str = "mark",
    level: str | list[str] = "ordinal",
    scale: tuple[int, int] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Krippendorff's α of a tidy table, with a bootstrap CI over items: one row per ``level``.

    ``level``: ``"ordinal"`` (default), ``"interval"`` or a list of both. ``scale=(lo, hi)``: the
    integer scale as value domain (an unused mark still counts as a step for the ordinal metric);
    None: the values that occur (the ``krippendorff`` package's default). Every mark counts, a
    rater's repeated marks of an item included. ``n_boot=0``: no CI. Columns: level, alpha, ci_low,
    ci_high, n_marks, n_raters, n_items, n_items_pairable (items with ≥ 2 marks), n_boot, note.
    """
    levels = [level] if isinstance(level, str) else list(level)
    bad = [lv for lv in levels if lv not in _ALPHA_KEYS]
    if bad or not levels:
        raise SonievalError(
            f"unknown level(s) {bad or levels!r}",
            path="sonieval.stats.krippendorff_alpha",
            hint=f"use {' or '.join(map(repr, _ALPHA_KEYS))}",
        )
    part = _tidy(data, "sonieval.stats.krippendorff_alpha", rater=rater, item=item, mark=mark)
    lo, hi = scale if scale is not None else (None, None)
    res = reliability.krippendorff_alpha(part, lo, hi, n_boot, seed)
    rows = []
    for lv in levels:
        key, lo_key, hi_key = _ALPHA_KEYS[lv]
        rows.append(
            {
                "level": lv,
                "alpha": res[key],
                "ci_low": res[lo_key],
                "ci_high": res[hi_key],
                "n_marks": int(len(part)),
                "n_raters": res["n_raters"],
                "n_items": res["n_units"],
                "n_items_pairable": res["n_units_pairable"],
                "n_boot": int(n_boot),
                "note": res["note"],
            }
        )
    return pd.DataFrame(rows).astype({"alpha": float, "ci_low": float, "ci_high": float})


def mixed_model(
    data: pd.DataFrame,
    *,
    mark: str = "mark",
    system: str = "system_id",
    rater: str = "rater_id",
    item: str | list[str] = "clip_id",
) -> pd.DataFrame:
    """Estimated marginal means of ``mark ~ 0 + system + (1|rater) + (1|item)``, exact REML on every mark.

    One row per level of ``system``: estimate, se, df (Satterthwaite), ci_low, ci_high (95 %), n,
    note. The variance components and fit details are in ``result.attrs["fit"]`` (rater_variance,
    clip_variance = the item variance, residual_variance, reml_criterion, converged, note).
    """
    part = _tidy(data, "sonieval.stats.mixed_model", rater=rater, item=item, mark=mark, system=system)
    table, info, _ = models.mixed_model(part)
    out = table.rename(columns={"system_id": system})
    out.attrs["fit"] = {k: v for k, v in info.items() if k != "systems_fitted"}
    return out
