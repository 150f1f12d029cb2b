"""The report's computing steps: checked ratings and scores in, named tables and a summary out.

:func:`analyse` runs the steps in order (screening, descriptives, reliability, models,
correlations, screening effect) and records each one's seconds; nothing here reads or writes a
file or draws a figure (that is :mod:`sonieval.stats.render`), and nothing here decides where the
inputs came from (that is :mod:`sonieval.stats.reporting`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sonieval.errors import DataError
from sonieval.stats import correlation, descriptives, models, reliability
from sonieval.stats.bootstrap import draw_weights
from sonieval.stats.inputs import Ratings, Scores, match_systems
from sonieval.stats.screening import screen_raters
from sonieval.tables import RATING_ROLES, control_of

__all__ = ["analyse", "reliability_stage", "models_stage", "reference_table", "with_control_column", "primary_metric"]

SONIFICATION = RATING_ROLES[0]


@dataclass
class _Screened:
    """What the screening step hands on: the kept raters' sonification marks and every rater's."""

    screening: object  # ScreeningResult
    kept: set
    son: pd.DataFrame  # sonification marks of the kept raters
    son_all: pd.DataFrame  # sonification marks of every rater
    matched: list[str]  # systems rated and scored


def _timed(timings: dict, stage: str, fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    timings[stage] = time.perf_counter() - t
    return out


def analyse(
    ratings: Ratings,
    scores: Scores,
    item_scores: pd.DataFrame | None,
    options,
    *,
    timings: dict[str, float] | None = None,
) -> tuple[dict, dict[str, pd.DataFrame], list[str]]:
    """Run every step; returns (summary dict, tables, notes). No files are written here."""
    timings = {} if timings is None else timings
    notes = list(ratings.notes) + list(scores.notes) + list(options.notes)
    tables: dict[str, pd.DataFrame] = {}
    sc = _timed(timings, "screening", _screen, ratings, scores, options, tables, notes)
    means, means_all, boot = _timed(timings, "descriptives", _descriptives, ratings, sc, options, tables, notes)
    summary_rel, attr_agree = _timed(timings, "reliability", _reliability, ratings, sc, options, tables)
    summary_pairwise = _timed(timings, "models", _models, sc, tables)
    corr = _timed(timings, "correlations", _correlations, sc, means, boot, scores, item_scores, options, tables, notes)
    _screening_effect(sc, means, means_all, corr, scores, options, tables)
    for name, table in tables.items():  # controls are marked in every table that names systems
        tables[name] = with_control_column(table)
    summary = _summary(ratings, sc, means, tables, summary_rel, summary_pairwise, attr_agree)
    return summary, tables, notes


def _screen(ratings: Ratings, scores: Scores, options, tables: dict, notes: list) -> _Screened:
    df = ratings.table
    # thresholds given on 1-5 are mapped to the study's scale (0-100: BS.1534-3's own)
    screening = screen_raters(df, options.rules.for_scale(ratings.scale_min, ratings.scale_max))
    notes += screening.notes
    kept = set(screening.kept or screening.per_rater["rater_id"].tolist())
    tables["screening"] = screening.per_rater
    son_all = df[df["role"] == SONIFICATION]
    son = son_all[son_all["rater_id"].isin(kept)]
    if son.empty:
        raise DataError(
            "no sonification marks after screening",
            path=ratings.source.path if ratings.source else "ratings",
            hint="the ratings need rows with role=sonification",
        )
    matched, match_notes = match_systems(
        son_all, set(scores.overall["system_id"]), path=scores.source.path if scores.source else None
    )
    notes += match_notes
    return _Screened(screening, kept, son, son_all, matched)


def _descriptives(ratings: Ratings, sc: _Screened, options, tables: dict, notes: list):
    son = sc.son
    weights = None
    one = [f"one {what}" for what, col in (("rater", "rater_id"), ("clip", "clip_id")) if son[col].nunique() < 2]
    if one:
        notes.append(
            f"{' and '.join(one)}: the cluster bootstrap over raters and clips has nothing to resample, "
            "so every bootstrap CI is undefined (it would not cover rater or clip variation)"
        )
    elif options.n_boot:
        weights = draw_weights(son["rater_id"].unique(), son["clip_id"].unique(), options.n_boot, options.seed)
    means, boot = descriptives.system_means(son, weights)
    means_all, _ = descriptives.system_means(sc.son_all, None)
    tables["system_means"] = means
    tables["role_means"] = descriptives.role_means(ratings.table[ratings.table["rater_id"].isin(sc.kept)])
    tables["mark_distribution"] = descriptives.mark_distribution(son, ratings.scale_min, ratings.scale_max)
    return means, means_all, boot


def _reliability(ratings: Ratings, sc: _Screened, options, tables: dict) -> tuple[dict, dict]:
    rel_tables, summary_rel = reliability_stage(sc.son, ratings.scale_min, ratings.scale_max, options)
    tables.update(rel_tables)
    tables["rater_agreement"] = reliability.rater_panel_agreement(sc.son)
    attr_agree = reliability.attribute_agreement(sc.son)
    tables["attribute_agreement"] = pd.DataFrame([attr_agree])
    return summary_rel, attr_agree


def _models(sc: _Screened, tables: dict) -> dict:
    model_tables, summary_pairwise = models_stage(sc.son, sorted(sc.son_all["system_id"].astype(str).unique()))
    tables.update(model_tables)
    return summary_pairwise


def _correlations(
    sc: _Screened, means, boot, scores: Scores, item_scores, options, tables: dict, notes: list
) -> pd.DataFrame:
    matched_means = means[means["system_id"].isin(sc.matched)]
    corr, samples = correlation.system_level(matched_means, boot, scores.overall, seed=options.seed)
    frames = [corr]
    comparisons = [correlation.compare_metrics(samples, corr, "system")]
    if item_scores is not None and not item_scores.empty:
        items_table, item_samples = correlation.item_level(
            sc.son, item_scores, n_boot=options.n_boot, seed=options.seed
        )
        frames.append(items_table)
        comparisons.append(correlation.compare_metrics(item_samples, items_table, "item"))
    cls = correlation.per_class(sc.son, scores.per_class, seed=options.seed)
    if not cls.empty:
        frames.append(cls)
    elif not scores.per_class.empty:
        notes.append("per-class correlations need a category column in the ratings (or --clips): not computed")
    corr_table = pd.concat(frames, ignore_index=True)
    for col in ("category", "embedding", "reference_set", "permutation"):
        if col in corr_table.columns:
            corr_table[col] = corr_table[col].fillna("")
    tables["correlations"] = corr_table
    tables["metric_comparison"] = pd.concat(comparisons, ignore_index=True)
    tables["rank_agreement"] = correlation.rank_agreement(matched_means, scores.overall)
    return corr


def _screening_effect(sc: _Screened, means, means_all, corr, scores: Scores, options, tables: dict) -> None:
    """Means and system-level correlations with and without screening, side by side."""
    cmp = means[["system_id", "attribute", "mean", "ci_low", "ci_high", "n"]].merge(
        means_all[["system_id", "attribute", "mean", "n"]],
        on=["system_id", "attribute"],
        how="outer",
        suffixes=("_screened", "_all_raters"),
    )
    cmp["note"] = np.select(
        [cmp["mean_screened"].isna(), cmp["ci_low"].isna()],
        ["system rated only by excluded raters", "no bootstrap CI (bootstrap off or undefined, see system_means)"],
        "",
    )
    tables["screening_effect_means"] = cmp
    corr_all, _ = correlation.system_level(
        means_all[means_all["system_id"].isin(sc.matched)], {}, scores.overall, seed=options.seed
    )
    if not corr.empty:
        cols = ["metric", "attribute", "spearman", "kendall_tau_b", "pearson"]
        sec = corr[cols + ["n"]].merge(
            corr_all[cols], on=["metric", "attribute"], suffixes=("_screened", "_all_raters")
        )
        sec["note"] = np.where(
            sec[["spearman_screened", "spearman_all_raters"]].isna().any(axis=1),
            "correlation undefined in one version: see correlations.csv notes",
            "",
        )
        tables["screening_effect_correlations"] = sec
    matched_means = means[means["system_id"].isin(sc.matched)]
    tables["reference_table"] = reference_table(matched_means, scores.overall)


_CORRELATION_KEYS = (
    "metric",
    "attribute",
    "level",
    "category",
    "direction",
    "spearman",
    "kendall_tau_b",
    "pearson",
    "p_permutation",
    "ci_low",
    "ci_high",
    "n",
    "note",
)


def _summary(ratings: Ratings, sc: _Screened, means, tables, summary_rel, summary_pairwise, attr_agree) -> dict:
    df = ratings.table
    screening = sc.screening
    return {
        "n_ratings": int(len(df)),
        "n_sonification_marks": int(len(sc.son_all)),
        "n_raters": int(df["rater_id"].nunique()),
        "n_raters_kept": int(len(sc.kept)),
        "n_systems_rated": int(sc.son_all["system_id"].nunique()),
        "n_systems_matched": len(sc.matched),
        "n_clips": int(sc.son_all["clip_id"].nunique()),
        "scale": [ratings.scale_min, ratings.scale_max],
        "excluded_raters": [{"rater_id": r, "reasons": w} for r, w in screening.excluded.itertuples(index=False)],
        "screening_rules": screening.rules.describe(),
        "study": ", ".join(sorted(df["study_id"].astype(str).unique())) if "study_id" in df.columns else "",
        "reliability": summary_rel,
        "pairwise": summary_pairwise,
        "attribute_agreement": attr_agree,
        "systems": [
            {
                "system": r.system_id,
                "attribute": r.attribute,
                "mean": r.mean,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "t_ci_low": r.t_ci_low,
                "t_ci_high": r.t_ci_high,
                "n": int(r.n),
                "note": r.note,
            }
            for r in means.itertuples()
        ],
        "correlations": [
            {k: row.get(k) for k in _CORRELATION_KEYS if k in row} for row in tables["correlations"].to_dict("records")
        ],
        "orientation": "correlations use scores oriented so that positive = the metric agrees with the listeners "
        "(lower-is-better metrics such as KAD/FAD are negated)",
    }


def _ci_columns(result: dict, forms) -> dict:
    """``form``, ``form_ci_low``, ``form_ci_high`` of each form from a ``form_ci95`` pair (or None)."""
    out = {}
    for form in forms:
        ci = result[f"{form}_ci95"] or [None, None]
        out.update({form: result[form], f"{form}_ci_low": ci[0], f"{form}_ci_high": ci[1]})
    return out


def _reliability_row(attribute, icc: dict, a: dict) -> dict:
    row = {
        "attribute": attribute,
        "n_marks": icc["n_marks"],
        "n_raters": icc["n_raters"],
        "n_stimuli": icc["n_units"],
        "k_hat": icc["k_hat"],
        **_ci_columns(icc, reliability.ICC_FORMS),
    }
    row.update(
        {
            "var_stimulus": icc["var_stimulus"],
            "var_rater": icc["var_rater"],
            "var_residual": icc["var_residual"],
            "krippendorff_alpha_ordinal": a["alpha"],
            "alpha_ci_low": a["ci_low"],
            "alpha_ci_high": a["ci_high"],
            "krippendorff_alpha_interval": a["alpha_interval"],
            "interval_alpha_ci_low": a["interval_ci_low"],
            "interval_alpha_ci_high": a["interval_ci_high"],
            "n_stimuli_pairable": a["n_units_pairable"],
            "note": "; ".join(filter(None, [icc["note"], a["note"]])),
        }
    )
    return row


def _block_row(attribute, block: dict) -> dict:
    return {
        "attribute": attribute,
        "method": block["method"],
        "n_raters_block": block["n_raters_block"],
        "n_stimuli_block": block["n_units_block"],
        "n_marks_block": block["n_marks_block"],
        "share_of_marks": block["share_of_marks"],
        "n_systems_block": block["n_systems_block"],
        "n_systems_total": block["n_systems_total"],
        "largest_system_share": block["largest_system_share"],
        **_ci_columns(block, reliability.ICC_FORMS),
        "note": block["note"],
    }


def _reliability_summary(icc: dict, a: dict, block: dict, note: str) -> dict:
    forms = reliability.ICC_FORMS
    return {
        "krippendorff_alpha_ordinal": a["alpha"],
        "krippendorff_alpha_ci": [a["ci_low"], a["ci_high"]],
        "krippendorff_alpha_interval": a["alpha_interval"],
        "krippendorff_alpha_interval_ci": [a["interval_ci_low"], a["interval_ci_high"]],
        **{form: icc[form] for form in forms},
        **{f"{form}_ci95": icc[f"{form}_ci95"] for form in forms},
        # ICC(2,1)/ICC(2,k) in Shrout & Fleiss's names: the agreement forms, on all marks.
        "icc2_1": icc["icc_a1"],
        "icc2_k": icc["icc_ak"],
        "icc2_1_ci95": icc["icc_a1_ci95"],
        "icc2_k_ci95": icc["icc_ak_ci95"],
        "icc_k_hat": icc["k_hat"],
        "n_marks": icc["n_marks"],
        "n_units": icc["n_units"],
        "complete_block": {
            k: block[k]
            for k in (
                "n_raters_block",
                "n_units_block",
                "n_marks_block",
                "share_of_marks",
                "method",
                "icc_a1",
                "icc_ak",
                "icc_c1",
                "icc_ck",
                "note",
            )
        },
        "note": note,
    }


def reliability_stage(
    son: pd.DataFrame, scale_min: int, scale_max: int, options
) -> tuple[dict[str, pd.DataFrame], dict]:
    """Per attribute: ICCs from variance components on all marks, α (ordinal, interval), and the
    complete-block ICC as a secondary table."""
    rows, block_rows, summary = [], [], {}
    for attribute, part in son.groupby("attribute", observed=True):
        a = reliability.krippendorff_alpha(part, scale_min, scale_max, options.n_boot, options.seed)
        icc = reliability.icc_variance_components(part, seed=options.seed)
        block = reliability.icc_complete_block(part)
        rows.append(_reliability_row(attribute, icc, a))
        block_rows.append(_block_row(attribute, block))
        summary[attribute] = _reliability_summary(icc, a, block, rows[-1]["note"])
    return {"reliability": pd.DataFrame(rows), "reliability_complete_block": pd.DataFrame(block_rows)}, summary


def models_stage(son: pd.DataFrame, systems: list[str]) -> tuple[dict[str, pd.DataFrame], dict]:
    """Per attribute: the design, the mixed model and its contrasts, the paired tests; which
    pairwise result is primary and why."""
    emm, fits, contrasts, fr_rows, wilcoxon, designs, summary = [], [], [], [], [], [], {}
    for attribute, part in son.groupby("attribute", observed=True):
        design = models.design_summary(part)
        designs.append({"attribute": attribute, **design})
        est, info, fit = models.mixed_model(part, systems=systems)
        emm.append(est.assign(attribute=attribute))
        fits.append({"attribute": attribute, **{k: v for k, v in info.items() if k != "systems_fitted"}})
        pairs_mm = models.mixed_model_contrasts(fit, info.get("systems_fitted", []))
        contrasts.append(pairs_mm.assign(attribute=attribute))
        fr, pairs_w = models.friedman_wilcoxon(part)
        primary = design["primary_pairwise"]
        if primary == "mixed_model":
            fr["note"] = "; ".join(filter(None, [f"secondary ({design['reason'].split(':')[0]})", fr["note"]]))
        fr_rows.append({"attribute": attribute, **fr})
        wilcoxon.append(pairs_w.assign(attribute=attribute))
        chosen = pairs_mm if primary == "mixed_model" else pairs_w
        summary[attribute] = {
            "method": primary,
            "reason": design["reason"],
            "pairs": chosen.assign(attribute=attribute).to_dict("records"),
        }
    tables = {
        "design": pd.DataFrame(designs),
        "mixed_model": pd.concat(emm, ignore_index=True),
        "mixed_model_fit": pd.DataFrame(fits),
        "pairwise_mixed_model": pd.concat(contrasts, ignore_index=True),
        "friedman": pd.DataFrame(fr_rows),
        "pairwise_wilcoxon": pd.concat(wilcoxon, ignore_index=True),
    }
    return tables, summary


def with_control_column(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with a ``control`` column right after ``system_id`` (``none``, ``untrained``, ``shuffled``,
    ``ceiling``), when it has a system_id column and no control column yet."""
    if "system_id" not in table.columns or "control" in table.columns:
        return table
    out = table.copy()
    out.insert(out.columns.get_loc("system_id") + 1, "control", [control_of(s) for s in out["system_id"]])
    return out


def primary_metric(scores: pd.DataFrame) -> str:
    """The metric the reference table ranks by: KAD when scored (first embedding), else the first."""
    keys = sorted(scores["metric_key"].unique())
    kad = sorted(scores.loc[scores["metric"].astype(str).str.lower() == "kad", "metric_key"].unique())
    return kad[0] if kad else keys[0]


def reference_table(means: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """The reference work's table form: system, the mean of each attribute (visual_mean, audio_mean, ...),
    rank by the objective score."""
    wide = means.pivot_table(index="system_id", columns="attribute", values="mean")
    wide = wide.rename(columns=lambda a: f"{a}_mean").reset_index()
    wide.columns.name = None
    if scores.empty:
        return wide
    primary = primary_metric(scores)
    s = scores[scores["metric_key"] == primary].set_index("system_id")
    oriented = pd.Series(correlation.orient(s["value"], s["direction"].iloc[0]), index=s.index)
    rank = oriented.rank(ascending=False, method="min")
    wide[f"{primary}_value"] = wide["system_id"].map(s["value"])
    wide[f"{primary}_rank"] = wide["system_id"].map(rank)
    wide[f"{primary}_rank_of"] = len(s)
    wide["note"] = np.where(wide.isna().any(axis=1), "n/a: this system lacks marks for an attribute or a score", "")
    return wide.sort_values(f"{primary}_rank")
