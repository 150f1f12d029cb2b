"""The correlation report: analysis of ratings + scores, written as HTML, Markdown, CSV, PNG, JSON.

:func:`build_report` reads the tables, runs every stage (screening, descriptives,
reliability, models, correlations), and writes into ``out_dir``:

    report.html, report.md        the same content, with figures
    summary.json                  the headline numbers (keys documented in docs/INTERFACES.md)
    tables/*.csv                  every table, each row with a ``provenance`` column
    figures/*.png                 mark distributions, system means, metric scatter plots, rater agreement

Every page and file names its inputs (path + SHA-256), n and package versions; when the ratings
are simulated, every page, table row, figure and the JSON say "SIMULATED". An undefined number is
written as "n/a" (null in JSON) with a note next to it saying why.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sonieval.document import Document, display_table, fmt, json_safe
from sonieval.errors import DataError
from sonieval.files import atomic_path, write_text_atomic
from sonieval.stats import correlation, descriptives, models, reliability
from sonieval.stats.bootstrap import draw_weights
from sonieval.stats.inputs import (
    InputFile, Ratings, Scores, load_item_scores, load_ratings, load_scores, match_systems,
)
from sonieval.stats.screening import ScreeningRules, screen_raters
from sonieval.tables import control_of

SIMULATED_BANNER = "SIMULATED RATINGS: not a study result"


@dataclass
class ReportOptions:
    scale_min: int | None = None  # None: the ratings' scale_min column, else 1
    scale_max: int | None = None  # None: the ratings' scale_max column, else 5
    n_boot: int = 2000
    seed: int = 0
    rules: ScreeningRules = field(default_factory=ScreeningRules)
    duplicates: str | None = None  # None: duplicated (rater, trial, attribute) rows are an error; first|last|mean
    figures: bool = True
    progress: bool = False  # a tqdm bar over the stages (the CLI turns it on)
    simulated: bool | None = None  # None: from the ratings' `simulated` column
    simulated_note: str = ""
    notes: list[str] = field(default_factory=list)  # about the options themselves (e.g. a deprecated key)

    @classmethod
    def from_protocol(cls, proto) -> "ReportOptions":
        """Options of a protocol: the study's scale, the report section's bootstrap and screening."""
        spec = proto.report
        notes = []
        if getattr(spec, "mixed_model_max_rows", None) is not None:
            notes.append(f"protocol key report.mixed_model_max_rows ({spec.mixed_model_max_rows}) is deprecated and "
                         "ignored: the mixed model is now fitted exactly on every mark; delete the key")
        return cls(scale_min=proto.study.scale_min, scale_max=proto.study.scale_max, n_boot=spec.bootstrap,
                   seed=proto.seed, rules=ScreeningRules.from_spec(spec),
                   duplicates=getattr(spec, "duplicates", None), notes=notes)


STAGES = ("read", "screening", "descriptives", "reliability", "models", "correlations", "tables_figures", "write")


class _StageTimer(dict):
    """Stage → seconds; each finished stage also advances a tqdm bar (long reports take a while)."""

    def __init__(self, progress: bool):
        super().__init__()
        self.progress = progress
        self.bar = None

    def close(self):
        if self.bar is not None:
            self.bar.close()  # leave=False: the bar's line is cleared, an error stays one line

    def __setitem__(self, stage, seconds):
        super().__setitem__(stage, seconds)
        if self.progress and self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=len(STAGES), desc="report", unit="stage", leave=False)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{stage} {seconds:.1f} s")
            self.bar.update(1)
            if self.bar.n >= self.bar.total:
                self.bar.close()


@dataclass
class ReportResult:
    out_dir: Path
    summary: dict
    tables: dict[str, pd.DataFrame]
    timings: dict[str, float]
    files: list[Path]


# --- formatting ----------------------------------------------------------------------------------

def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("sonieval", "numpy", "pandas", "scipy", "statsmodels", "pingouin", "krippendorff", "matplotlib"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            if name == "sonieval":
                from sonieval import __version__

                out[name] = __version__
    return out



# --- analysis ------------------------------------------------------------------------------------

def analyse(
    ratings: Ratings,
    scores: Scores,
    item_scores: pd.DataFrame | None,
    options: ReportOptions,
    *,
    timings: dict[str, float] | None = None,
) -> tuple[dict, dict[str, pd.DataFrame], list[str]]:
    """Run every stage; returns (summary dict, tables, notes). No files are written here."""
    timings = {} if timings is None else timings
    notes = list(ratings.notes) + list(scores.notes) + list(options.notes)
    tables: dict[str, pd.DataFrame] = {}
    summary: dict = {}
    df = ratings.table

    t = time.perf_counter()
    # thresholds given on 1-5 are mapped to the study's scale (0-100: BS.1534-3's own)
    screening = screen_raters(df, options.rules.for_scale(ratings.scale_min, ratings.scale_max))
    notes += screening.notes
    kept = screening.kept
    if not kept:
        kept = screening.per_rater["rater_id"].tolist()
    tables["screening"] = screening.per_rater
    kept_set = set(kept)
    son_all = df[df["role"] == "sonification"]
    son = son_all[son_all["rater_id"].isin(kept_set)]
    if son.empty:
        raise DataError("no sonification marks after screening", path=ratings.source.path if ratings.source else "ratings",
                        hint="the ratings need rows with role=sonification")
    systems_scored = set(scores.overall["system_id"])
    matched, match_notes = match_systems(son_all, systems_scored, path=scores.source.path if scores.source else None)
    notes += match_notes
    timings["screening"] = time.perf_counter() - t

    t = time.perf_counter()
    weights = None
    one = [f"one {what}" for what, col in (("rater", "rater_id"), ("clip", "clip_id")) if son[col].nunique() < 2]
    if one:
        notes.append(f"{' and '.join(one)}: the cluster bootstrap over raters and clips has nothing to resample, so "
                     "every bootstrap CI is undefined (it would not cover rater or clip variation)")
    elif options.n_boot:
        weights = draw_weights(son["rater_id"].unique(), son["clip_id"].unique(), options.n_boot, options.seed)
    means, boot = descriptives.system_means(son, weights)
    means_all, _ = descriptives.system_means(son_all, None)
    tables["system_means"] = means
    tables["role_means"] = descriptives.role_means(df[df["rater_id"].isin(kept_set)])
    tables["mark_distribution"] = descriptives.mark_distribution(son, ratings.scale_min, ratings.scale_max)
    timings["descriptives"] = time.perf_counter() - t

    t = time.perf_counter()
    rel_tables, summary_rel = reliability_stage(son, ratings.scale_min, ratings.scale_max, options)
    tables.update(rel_tables)
    tables["rater_agreement"] = reliability.rater_panel_agreement(son)
    attr_agree = reliability.attribute_agreement(son)
    tables["attribute_agreement"] = pd.DataFrame([attr_agree])
    timings["reliability"] = time.perf_counter() - t

    t = time.perf_counter()
    model_tables, summary_pairwise = models_stage(son, sorted(son_all["system_id"].astype(str).unique()))
    tables.update(model_tables)
    timings["models"] = time.perf_counter() - t

    t = time.perf_counter()
    matched_means = means[means["system_id"].isin(matched)]
    corr, samples = correlation.system_level(matched_means, boot, scores.overall, seed=options.seed)
    frames = [corr]
    comparisons = [correlation.compare_metrics(samples, corr, "system")]
    if item_scores is not None and not item_scores.empty:
        items_table, item_samples = correlation.item_level(son, item_scores, n_boot=options.n_boot, seed=options.seed)
        frames.append(items_table)
        comparisons.append(correlation.compare_metrics(item_samples, items_table, "item"))
    cls = correlation.per_class(son, scores.per_class, seed=options.seed)
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
    timings["correlations"] = time.perf_counter() - t

    # With and without screening, side by side.
    cmp = means[["system_id", "attribute", "mean", "ci_low", "ci_high", "n"]].merge(
        means_all[["system_id", "attribute", "mean", "n"]], on=["system_id", "attribute"], how="outer",
        suffixes=("_screened", "_all_raters"))
    cmp["note"] = np.select(
        [cmp["mean_screened"].isna(), cmp["ci_low"].isna()],
        ["system rated only by excluded raters", "no bootstrap CI (bootstrap off or undefined, see system_means)"], "")
    tables["screening_effect_means"] = cmp
    corr_all, _ = correlation.system_level(means_all[means_all["system_id"].isin(matched)], {}, scores.overall,
                                           seed=options.seed)
    if not corr.empty:
        tables["screening_effect_correlations"] = corr[["metric", "attribute", "spearman", "kendall_tau_b", "pearson", "n"]].merge(
            corr_all[["metric", "attribute", "spearman", "kendall_tau_b", "pearson"]], on=["metric", "attribute"],
            suffixes=("_screened", "_all_raters"))
        sec = tables["screening_effect_correlations"]
        sec["note"] = np.where(sec[["spearman_screened", "spearman_all_raters"]].isna().any(axis=1),
                               "correlation undefined in one version: see correlations.csv notes", "")
    tables["reference_table"] = reference_table(matched_means, scores.overall)
    for name, table in tables.items():  # controls are marked in every table that names systems
        tables[name] = with_control_column(table)

    summary.update({
        "n_ratings": int(len(df)),
        "n_sonification_marks": int(len(son_all)),
        "n_raters": int(df["rater_id"].nunique()),
        "n_raters_kept": int(len(kept_set)),
        "n_systems_rated": int(son_all["system_id"].nunique()),
        "n_systems_matched": len(matched),
        "n_clips": int(son_all["clip_id"].nunique()),
        "scale": [ratings.scale_min, ratings.scale_max],
        "excluded_raters": [{"rater_id": r, "reasons": w} for r, w in screening.excluded.itertuples(index=False)],
        "screening_rules": screening.rules.describe(),
        "study": ", ".join(sorted(df["study_id"].astype(str).unique())) if "study_id" in df.columns else "",
        "reliability": summary_rel,
        "pairwise": summary_pairwise,
        "attribute_agreement": attr_agree,
        "systems": [
            {"system": r.system_id, "attribute": r.attribute, "mean": r.mean, "ci_low": r.ci_low, "ci_high": r.ci_high,
             "t_ci_low": r.t_ci_low, "t_ci_high": r.t_ci_high, "n": int(r.n), "note": r.note}
            for r in means.itertuples()
        ],
        "correlations": [
            {k: row.get(k) for k in ("metric", "attribute", "level", "category", "direction", "spearman", "kendall_tau_b",
                                      "pearson", "p_permutation", "ci_low", "ci_high", "n", "note") if k in row}
            for row in tables["correlations"].to_dict("records")
        ],
        "orientation": "correlations use scores oriented so that positive = the metric agrees with the listeners "
                       "(lower-is-better metrics such as KAD/FAD are negated)",
    })
    return summary, tables, notes


def reliability_stage(son: pd.DataFrame, scale_min: int, scale_max: int, options: ReportOptions
                      ) -> tuple[dict[str, pd.DataFrame], dict]:
    """Per attribute: ICCs from variance components on all marks, α (ordinal, interval), and the
    complete-block ICC as a secondary table."""
    rows, block_rows, summary = [], [], {}
    for attribute, part in son.groupby("attribute", observed=True):
        a = reliability.krippendorff_alpha(part, scale_min, scale_max, options.n_boot, options.seed)
        icc = reliability.icc_variance_components(part, seed=options.seed)
        block = reliability.icc_complete_block(part)
        row = {"attribute": attribute, "n_marks": icc["n_marks"], "n_raters": icc["n_raters"],
               "n_stimuli": icc["n_units"], "k_hat": icc["k_hat"]}
        for form in reliability.ICC_FORMS:
            ci = icc[f"{form}_ci95"] or [None, None]
            row.update({form: icc[form], f"{form}_ci_low": ci[0], f"{form}_ci_high": ci[1]})
        row.update({"var_stimulus": icc["var_stimulus"], "var_rater": icc["var_rater"],
                    "var_residual": icc["var_residual"],
                    "krippendorff_alpha_ordinal": a["alpha"], "alpha_ci_low": a["ci_low"], "alpha_ci_high": a["ci_high"],
                    "krippendorff_alpha_interval": a["alpha_interval"], "interval_alpha_ci_low": a["interval_ci_low"],
                    "interval_alpha_ci_high": a["interval_ci_high"], "n_stimuli_pairable": a["n_units_pairable"],
                    "note": "; ".join(filter(None, [icc["note"], a["note"]]))})
        rows.append(row)
        brow = {"attribute": attribute, "method": block["method"], "n_raters_block": block["n_raters_block"],
                "n_stimuli_block": block["n_units_block"], "n_marks_block": block["n_marks_block"],
                "share_of_marks": block["share_of_marks"], "n_systems_block": block["n_systems_block"],
                "n_systems_total": block["n_systems_total"], "largest_system_share": block["largest_system_share"]}
        for form in reliability.ICC_FORMS:
            ci = block[f"{form}_ci95"] or [None, None]
            brow.update({form: block[form], f"{form}_ci_low": ci[0], f"{form}_ci_high": ci[1]})
        brow["note"] = block["note"]
        block_rows.append(brow)
        summary[attribute] = {
            "krippendorff_alpha_ordinal": a["alpha"], "krippendorff_alpha_ci": [a["ci_low"], a["ci_high"]],
            "krippendorff_alpha_interval": a["alpha_interval"],
            "krippendorff_alpha_interval_ci": [a["interval_ci_low"], a["interval_ci_high"]],
            **{form: icc[form] for form in reliability.ICC_FORMS},
            **{f"{form}_ci95": icc[f"{form}_ci95"] for form in reliability.ICC_FORMS},
            # ICC(2,1)/ICC(2,k) in Shrout & Fleiss's names: the agreement forms, on all marks.
            "icc2_1": icc["icc_a1"], "icc2_k": icc["icc_ak"], "icc2_1_ci95": icc["icc_a1_ci95"],
            "icc2_k_ci95": icc["icc_ak_ci95"], "icc_k_hat": icc["k_hat"], "n_marks": icc["n_marks"],
            "n_units": icc["n_units"],
            "complete_block": {k: block[k] for k in ("n_raters_block", "n_units_block", "n_marks_block", "share_of_marks",
                                                     "method", "icc_a1", "icc_ak", "icc_c1", "icc_ck", "note")},
            "note": row["note"],
        }
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
        summary[attribute] = {"method": primary, "reason": design["reason"],
                              "pairs": chosen.assign(attribute=attribute).to_dict("records")}
    tables = {"design": pd.DataFrame(designs), "mixed_model": pd.concat(emm, ignore_index=True),
              "mixed_model_fit": pd.DataFrame(fits), "pairwise_mixed_model": pd.concat(contrasts, ignore_index=True),
              "friedman": pd.DataFrame(fr_rows), "pairwise_wilcoxon": pd.concat(wilcoxon, ignore_index=True)}
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
    """The reference work's table form: system, visual mean, audio mean, rank by the objective score."""
    wide = means.pivot_table(index="system_id", columns="attribute", values="mean").reset_index()
    wide.columns.name = None
    wide = wide.rename(columns={a: f"{a}_mean" for a in ("visual", "audio")})
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


# --- figures -------------------------------------------------------------------------------------

def system_labels(system_ids) -> dict[str, str]:
    """Short unique figure labels: the system_id parts in which the systems differ.

    ``ast/LIN/lr0.005/e3/transpose/minmax`` and ``ast/CONV/lr0.005/e3/transpose/minmax`` become
    ``LIN`` and ``CONV``; ids that are not of the system_id form are kept whole.
    """
    ids = [str(s) for s in system_ids]
    parts = [s.split("/") for s in ids]
    if len({len(p) for p in parts}) == 1 and len(ids) > 1:
        varying = [k for k in range(len(parts[0])) if len({p[k] for p in parts}) > 1]
        labels = {s: "/".join(p[k] for k in varying) for s, p in zip(ids, parts)}
        if len(set(labels.values())) == len(ids) and all(labels.values()):
            return labels
    return {s: s for s in ids}


def _figures(tables, scores: Scores, son: pd.DataFrame, fig_dir: Path, stamp: str, simulated: bool) -> list[tuple[str, str]]:
    from scipy.optimize import isotonic_regression

    from sonieval.metrics.leaderboard import RANDOM_CODEC_MARK, RANDOM_ENCODER_MARK, random_mark
    from sonieval.plotting import label_points, pyplot, save_figure

    plt = pyplot()

    out = []
    # Systems made with randomly initialised models carry the leaderboard's marks on every figure,
    # explained in the stamp under each figure.
    marks = {str(sid): random_mark(row) for sid, row in scores.overall.drop_duplicates("system_id").set_index("system_id").iterrows()}
    used = set(marks.values()) - {""}
    if used:
        stamp += "".join(f" | {m} {what}" for m, what in ((RANDOM_CODEC_MARK, "randomly initialised codec (RANDOM-INIT)"),
                                                           (RANDOM_ENCODER_MARK, "randomly initialised encoder (RANDOM-INIT)"))
                         if m in used)

    def save(fig, name, alt):
        import textwrap

        # Stamp and banner go just outside everything already drawn (tick labels, axis labels,
        # legends): at a fixed figure fraction they overlapped the x-axis label of short figures.
        box = fig.get_tightbbox(fig.canvas.get_renderer())  # inches
        height = fig.get_figheight()
        pad = 0.08 / height
        fig.text(0.01, box.y0 / height - pad, "\n".join(textwrap.wrap(stamp, 160)), fontsize=6, color="#555", va="top")
        if simulated:
            fig.suptitle(SIMULATED_BANNER, color="#b00", fontweight="bold", y=box.y1 / height + pad, va="bottom")
        save_figure(fig, fig_dir / name, dpi=90, bbox_inches="tight")
        out.append((f"figures/{name}", alt))

    dist = tables["mark_distribution"]
    means = tables["system_means"]
    attrs = sorted(dist["attribute"].unique())
    share_cols = [c for c in dist.columns if c.startswith("share_")]
    # One system order for every panel (best mean first at the top), labels on the left axis only.
    order = means.groupby("system_id", observed=True)["mean"].mean().sort_values().index.astype(str).tolist()
    labels = {sid: label + marks.get(sid, "") for sid, label in system_labels(order).items()}
    pos = {sid: k for k, sid in enumerate(order)}
    label_width = max(len(v) for v in labels.values()) * 0.075
    size = (label_width + 5 * len(attrs), 0.35 * len(order) + 1.5)
    fig, axes = plt.subplots(1, len(attrs), figsize=size, squeeze=False, sharey=True)
    cmap = plt.get_cmap("RdYlGn", len(share_cols))
    for ax, attr in zip(axes[0], attrs):
        d = dist[dist["attribute"] == attr].set_index("system_id")
        y = np.array([pos[str(sid)] for sid in d.index])
        left = np.zeros(len(d))
        for k, c in enumerate(share_cols):
            ax.barh(y, d[c], left=left, color=cmap(k), label=c.split("_")[1])
            left += d[c].to_numpy()
        ax.set_title(f"{attr} marks"); ax.set_xlabel("share of marks")
    axes[0][0].set_yticks(np.arange(len(order)), [labels[sid] for sid in order])
    axes[0][-1].legend(title="mark", bbox_to_anchor=(1.0, 1.0), loc="upper left")
    save(fig, "mark_distribution.png", "Distribution of marks per system")

    fig, axes = plt.subplots(1, len(attrs), figsize=size, squeeze=False, sharey=True)
    for ax, attr in zip(axes[0], attrs):
        m = means[means["attribute"] == attr]
        y = np.array([pos[str(sid)] for sid in m["system_id"]])
        ax.errorbar(m["mean"], y, xerr=[m["mean"] - m["ci_low"].fillna(m["mean"]), m["ci_high"].fillna(m["mean"]) - m["mean"]],
                    fmt="o", capsize=3)
        ax.set_title(f"{attr}: mean mark, 95% cluster-bootstrap CI", fontsize=9)
    axes[0][0].set_yticks(np.arange(len(order)), [labels[sid] for sid in order])
    save(fig, "system_means.png", "Mean marks with 95% CIs")

    corr = tables["correlations"]
    sysc = corr[corr["level"] == "system"] if "level" in corr else corr
    for metric_key, s in scores.overall.groupby("metric_key"):
        fig, axes = plt.subplots(1, len(attrs), figsize=(5 * len(attrs), 4), squeeze=False)
        sv = s.set_index("system_id")["value"]
        for ax, attr in zip(axes[0], attrs):
            m = means[(means["attribute"] == attr) & means["system_id"].isin(sv.index)]
            if m.empty:
                ax.set_title(f"{attr}: no matched systems"); continue
            x = sv.loc[m["system_id"]].to_numpy(float)
            y = m["mean"].to_numpy(float)
            ax.errorbar(x, y, yerr=[y - m["ci_low"].fillna(m["mean"]), m["ci_high"].fillna(m["mean"]) - y], fmt="o", capsize=3)
            order = np.argsort(x)
            increasing = s["direction"].iloc[0] == "higher"
            fit = isotonic_regression(y[order], increasing=increasing).x
            ax.plot(x[order], fit, "-", color="C1", label="monotone fit")
            ax.legend(fontsize=7)  # before the labels, which then keep clear of it
            if len(m) <= 15:  # labels never overlap (label_points); any left out is said in the panel
                names = system_labels(m["system_id"].astype(str))
                left = label_points(ax, x, y, [names[sid] + marks.get(sid, "") for sid in m["system_id"].astype(str)])
                if left:
                    ax.text(0.99, 0.01, f"{len(left)} label(s) left out (crowded)", transform=ax.transAxes, fontsize=6,
                            ha="right", va="bottom", color="#555")
            row = sysc[(sysc["metric"] == metric_key) & (sysc["attribute"] == attr)]
            rho = fmt(row["spearman"].iloc[0], 2) if len(row) else "n/a"
            ax.set_title(f"{attr}: agreement ρ = {rho} (n={len(m)})", fontsize=9)
            random_emb = "random-init" in str(s["embedding"].iloc[0]) and "[" not in metric_key
            ax.set_xlabel(f"{metric_key}{' on a RANDOM-INIT embedding' if random_emb else ''} "
                          f"({'lower' if not increasing else 'higher'} is better)")
            ax.set_ylabel("mean mark")
        save(fig, f"scatter_{_safe(metric_key)}.png", f"Mean mark vs {metric_key}")

    ra = tables["rater_agreement"]
    if ra["spearman_with_panel"].notna().any():
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for attr, part in ra.groupby("attribute"):
            ax.hist(part["spearman_with_panel"].dropna(), bins=20, alpha=0.6, label=attr)
        ax.set_xlabel("Spearman ρ of a rater with the other raters' mean"); ax.set_ylabel("raters"); ax.legend()
        save(fig, "rater_agreement.png", "Per-rater agreement with the panel")
    return out


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


# --- writing -------------------------------------------------------------------------------------

def build_report(
    ratings_path: str | os.PathLike,
    scores_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    item_scores_path: str | os.PathLike | None = None,
    clips_path: str | os.PathLike | None = None,
    options: ReportOptions | None = None,
) -> ReportResult:
    """Read the tables, analyse, and write the report into ``out_dir`` (see module docstring)."""
    options = options or ReportOptions()
    timings = _StageTimer(options.progress)
    try:
        return _build_report(ratings_path, scores_path, out_dir, item_scores_path, clips_path, options, timings)
    finally:
        timings.close()


def _build_report(ratings_path, scores_path, out_dir, item_scores_path, clips_path, options, timings) -> ReportResult:
    t = time.perf_counter()
    ratings = load_ratings(ratings_path, scale_min=options.scale_min, scale_max=options.scale_max,
                           duplicates=options.duplicates)
    if options.simulated is not None:
        ratings.simulated = ratings.simulated or options.simulated
    scores = load_scores(scores_path)
    item_scores, item_source, item_notes = (None, None, [])
    if item_scores_path is not None:
        item_scores, item_source, item_notes = load_item_scores(item_scores_path)
    sources: list[InputFile] = [ratings.source, scores.source] + ([item_source] if item_source else [])
    if clips_path is not None:
        from sonieval.files import sha256_file
        from sonieval.tables import read_table

        clips = read_table(clips_path, "clips")
        mapping = clips.assign(clip_id=clips["clip_id"].astype(str)).drop_duplicates("clip_id").set_index("clip_id")["category"]
        if "category" not in ratings.table.columns:
            ratings.table["category"] = ratings.table["clip_id"].map(mapping)
        sources.append(InputFile("clips", os.fspath(clips_path), sha256_file(clips_path), int(len(clips))))
        if "dataset" in clips.columns and clips["dataset"].notna().any():  # the clips stage's data-set label
            item_notes = [*item_notes, f"data source: {clips['dataset'].dropna().iloc[0]} (per the clips table)"]
    timings["read"] = time.perf_counter() - t
    return write_report(ratings, scores, item_scores, out_dir, options=options, sources=sources,
                        extra_notes=item_notes, timings=timings)


def write_report(
    ratings: Ratings,
    scores: Scores,
    item_scores: pd.DataFrame | None,
    out_dir: str | os.PathLike,
    *,
    options: ReportOptions,
    sources: list[InputFile],
    extra_notes: list[str] = (),
    timings: dict[str, float] | None = None,
) -> ReportResult:
    timings = {} if timings is None else timings
    out_dir = Path(out_dir)
    simulated = bool(ratings.simulated)
    summary, tables, notes = analyse(ratings, scores, item_scores, options, timings=timings)
    notes = list(notes) + list(extra_notes)

    t = time.perf_counter()
    versions = _versions()
    created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    provenance = {
        "inputs": [asdict(s) for s in sources if s is not None],
        "versions": versions,
        "created_at": created,
        "parameters": {"scale": [ratings.scale_min, ratings.scale_max], "bootstrap": options.n_boot,
                       "seed": options.seed, "screening": asdict(options.rules),
                       "duplicates": options.duplicates or "refuse"},
        "n_ratings": summary["n_ratings"], "n_raters": summary["n_raters"], "n_raters_kept": summary["n_raters_kept"],
    }
    stamp = (("SIMULATED | " if simulated else "") + " ".join(s.label() for s in sources if s is not None)
             + f" | n_ratings={summary['n_ratings']} raters={summary['n_raters_kept']}/{summary['n_raters']}"
             + f" | sonieval {versions.get('sonieval', '?')} | B={options.n_boot} seed={options.seed}")
    summary = {"simulated": simulated, **({"warning": SIMULATED_BANNER + (": " + options.simulated_note if options.simulated_note else "")} if simulated else {}),
               **summary, "notes": notes, "provenance": provenance}

    files: list[Path] = []
    table_dir = out_dir / "tables"
    table_dir.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        df = df.copy()
        if simulated:
            df.insert(0, "simulated", "SIMULATED")
        df["provenance"] = stamp
        path = table_dir / f"{name}.csv"
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
        files.append(path)

    figures: list[tuple[str, str]] = []
    if options.figures:
        fig_dir = out_dir / "figures"
        fig_dir.mkdir(parents=True, exist_ok=True)
        son = ratings.table[ratings.table["role"] == "sonification"]
        figures = _figures(tables, scores, son, fig_dir, stamp, simulated)
        files += [out_dir / f for f, _ in figures]
    timings["tables_figures"] = time.perf_counter() - t

    t = time.perf_counter()
    doc = _compose(summary, tables, notes, figures, options, sources, simulated, stamp)
    title = ("SIMULATED — " if simulated else "") + "sonieval correlation report" + (f": {summary['study']}" if summary.get("study") else "")
    md = doc.markdown()
    if simulated:
        md = f"**{SIMULATED_BANNER}**\n\n{md}\n**{SIMULATED_BANNER}**\n"
    files.append(write_text_atomic(out_dir / "report.md", md))
    files.append(write_text_atomic(out_dir / "report.html", doc.html(title)))
    files.append(write_text_atomic(out_dir / "summary.json", json.dumps(json_safe(summary), indent=2, default=str) + "\n"))
    timings["write"] = time.perf_counter() - t
    return ReportResult(out_dir=out_dir, summary=json_safe(summary), tables=tables, timings=dict(timings), files=files)


def _reliability_view(table: pd.DataFrame) -> pd.DataFrame:
    """The reliability table as read: one CI column per form ("lo – hi") instead of two."""
    out = table.copy()
    pairs = [(f, f"{f}_ci_low", f"{f}_ci_high") for f in reliability.ICC_FORMS] + [
        ("krippendorff_alpha_ordinal", "alpha_ci_low", "alpha_ci_high"),
        ("krippendorff_alpha_interval", "interval_alpha_ci_low", "interval_alpha_ci_high")]
    for value, lo, hi in pairs:
        out[f"{value}_ci95"] = [f"{fmt(a)} – {fmt(b)}" if a is not None and pd.notna(a) else "n/a"
                                for a, b in zip(out[lo], out[hi])]
        out = out.drop(columns=[lo, hi])
    order = ["attribute", "n_marks", "n_raters", "n_stimuli", "k_hat"]
    for value, _, _ in pairs:
        order += [value, f"{value}_ci95"]
    return out[order + [c for c in out.columns if c not in order]]


def _compose(summary, tables, notes, figures, options, sources, simulated, stamp) -> _Doc:
    doc = Document(banner=SIMULATED_BANNER if simulated else None)
    fig = dict((Path(f).stem, (f, alt)) for f, alt in figures)
    doc.h(1, ("SIMULATED — " if simulated else "") + "Correlation report: objective scores vs listener marks"
          + (f" (study {summary['study']})" if summary.get("study") else ""))
    if simulated:
        doc.p(f"{SIMULATED_BANNER}. {options.simulated_note or 'The ratings are marked simulated.'}")
    doc.h(2, "Provenance")
    doc.bullets([f"{s.kind}: {s.path} (sha256 {s.sha256}, {s.n_rows} rows)" for s in sources if s is not None]
                + [f"created {summary['provenance']['created_at']}; "
                   + ", ".join(f"{k} {v}" for k, v in summary["provenance"]["versions"].items()),
                   f"scale {summary['scale'][0]}–{summary['scale'][1]}; bootstrap resamples {options.n_boot}; seed {options.seed}",
                   f"{summary['n_ratings']} ratings, {summary['n_raters']} raters ({summary['n_raters_kept']} kept), "
                   f"{summary['n_systems_rated']} systems rated ({summary['n_systems_matched']} with scores), {summary['n_clips']} clips"])
    doc.h(2, "Data checks and warnings")
    doc.bullets(notes or ["none"])

    doc.h(2, "1. Screening")
    doc.p("A rater is excluded when any rule holds (ITU-R BS.1534-3 post-screening adapted to the mark scale):")
    doc.bullets(summary.get("screening_rules") or options.rules.describe())
    excl = tables["screening"]
    excl = excl[excl["excluded"]][["rater_id", "n_marks", "reasons"]]
    doc.p(f"Excluded {len(excl)} of {summary['n_raters']} raters." + ("" if len(excl) else " Nobody was excluded."))
    doc.table(excl)
    doc.p("Main results with and without screening (means; system-level correlations):")
    doc.table(tables["screening_effect_means"])
    if "screening_effect_correlations" in tables:
        doc.table(tables["screening_effect_correlations"])

    doc.h(2, "2. Descriptives")
    doc.p("Mean mark per system and attribute (screened raters). ci_low/ci_high: 95 % two-way cluster bootstrap "
          "over raters and clips (Owen 2007), the interval to read; t_ci: naive t interval treating marks as independent.")
    doc.table(tables["system_means"])
    doc.p("The reference work's table form (mean marks and the rank by the primary objective score, 1 = best):")
    doc.table(tables["reference_table"])
    doc.p("Hidden reference and anchor means (the two ends of the scale as used):")
    doc.table(tables["role_means"])
    for key in ("mark_distribution", "system_means"):
        if key in fig:
            doc.image(*fig[key])

    doc.h(2, "3. Reliability")
    doc.p("On every mark. ICCs from the variance components of mark ~ 1 + (1|rater) + (1|stimulus) (REML, crossed "
          "random intercepts): agreement ICC(A,1), ICC(A,k̂) and consistency ICC(C,1), ICC(C,k̂), with k̂ the harmonic "
          "mean number of raters per stimulus (ten Hove et al. 2022); 95 % Monte-Carlo intervals from the REML "
          "information. Consistency leaves rater leniency out, which suits only comparisons of stimuli marked by the "
          "same raters; in an incomplete design read the agreement forms. Krippendorff's α, ordinal and interval, "
          "from all marks per stimulus with the scale as value domain; CI: bootstrap over stimuli.")
    doc.table(_reliability_view(tables["reliability"]))
    block = tables["reliability_complete_block"]
    doc.p("Secondary: McGraw & Wong ICCs (F-based CIs) on a complete block of raters × stimuli. The block is chosen "
          f"{reliability.BLOCK_METHOD}; it holds only the share of marks shown, so read the ICCs above.")
    doc.table(block)
    doc.p("Agreement between the visual and the audio mark of the same rater and stimulus:")
    doc.table(tables["attribute_agreement"])
    ra = tables["rater_agreement"]
    doc.p("Per-rater agreement with the panel (Spearman ρ with the leave-one-out mean of the other raters); lowest ten "
          "(raters without a defined ρ after them):")
    doc.table(ra.sort_values(["spearman_with_panel", "rater_id"], na_position="last").head(10))
    if "rater_agreement" in fig:
        doc.image(*fig["rater_agreement"])

    doc.h(2, "4. Models and tests")
    doc.p("Design per attribute, and which pairwise result is primary:")
    doc.table(tables["design"][["attribute", "n_marks", "n_raters", "n_clips", "n_systems", "n_cells_marked",
                                "n_cells_possible", "complete", "balanced", "primary_pairwise"]])
    for attribute, info in summary["pairwise"].items():
        name = "mixed-model contrasts" if info["method"] == "mixed_model" else "Friedman + Wilcoxon"
        doc.p(f"{attribute}: primary pairwise result = {name}. Why: {info['reason']}.")
    doc.p("Linear mixed model mark ~ 0 + system + (1|rater) + (1|clip), fitted by REML on every mark (exact sparse "
          "crossed random intercepts, sonieval.stats.crossed). estimate = estimated marginal mean (a system's mean mark "
          "at an average rater and clip); 95 % CIs with Satterthwaite df.")
    doc.table(tables["mixed_model"])
    doc.table(tables["mixed_model_fit"])
    doc.p("Pairwise contrasts of the marginal means: Wald t tests with Satterthwaite df, Holm's correction across pairs.")
    doc.table(tables["pairwise_mixed_model"])
    doc.p("Friedman test and pairwise Wilcoxon signed-rank tests paired on the same (rater, clip) cells (Friedman: "
          "each rater's mean over the clips marked with every system; Wilcoxon: each rater's mean difference over the "
          "clips marked with both systems), Holm's correction; effect size: matched-pairs rank-biserial correlation. "
          "Clips are fixed here: primary only for a complete, balanced design.")
    doc.table(tables["friedman"])
    doc.table(tables["pairwise_wilcoxon"])

    doc.h(2, "5. Agreement with objective scores")
    doc.p(summary["orientation"] + ". p_permutation: two-sided permutation p of Spearman's ρ (exact for ≤ 8 "
          "systems); ci_low/ci_high: 95 % bootstrap CI of ρ, resampling systems, raters and clips (Boot-Both, "
          "Deutsch et al. 2021).")
    corr = tables["correlations"]
    cols = [c for c in ["metric", "attribute", "level", "category", "direction", "n", "spearman", "ci_low", "ci_high",
                        "kendall_tau_b", "pearson", "p_permutation", "note"] if c in corr.columns]
    doc.table(corr[cols])
    doc.p("Comparison of metrics: paired bootstrap of the difference in ρ on the same resamples:")
    doc.table(tables["metric_comparison"])
    doc.p("Rank agreement (human rank vs metric rank; 1 = best):")
    doc.table(tables["rank_agreement"])
    for key, (f, alt) in fig.items():
        if key.startswith("scatter_"):
            doc.image(f, alt)
    doc.h(2, "Files")
    doc.bullets([f"tables/{n}.csv" for n in tables] + ["summary.json", "report.md", "report.html"])
    doc.p(stamp)
    return doc
