"""The report's rendering: the document (Markdown and HTML from one :class:`~sonieval.document.Document`),
the figures, and the files written into a report folder. Nothing here computes a statistic."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from sonieval.document import Document, fmt, json_safe
from sonieval.files import atomic_path, write_text_atomic
from sonieval.results_layout import ReportLayout, ResultsLayout
from sonieval.stats import reliability

__all__ = ["SIMULATED_BANNER", "system_labels", "write_files"]

SIMULATED_BANNER = "SIMULATED RATINGS: not a study result"


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


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


# --- files ---------------------------------------------------------------------------------------


def write_files(
    out_dir: Path,
    summary: dict,
    tables: dict[str, pd.DataFrame],
    notes: list[str],
    *,
    scores,
    son: pd.DataFrame,
    options,
    sources,
    stamp: str,
    timings: dict,
) -> list[Path]:
    """Write tables/*.csv, figures/*.png, report.md, report.html and summary.json; returns the paths."""
    import time

    t = time.perf_counter()
    simulated = bool(summary.get("simulated"))
    files = _write_tables(ReportLayout(out_dir).tables, tables, stamp, simulated)
    figures: list[tuple[str, str]] = []
    if options.figures:
        fig_dir = ReportLayout(out_dir).figures
        fig_dir.mkdir(parents=True, exist_ok=True)
        figures = _figures(tables, scores, son, fig_dir, stamp, simulated)
        files += [out_dir / f for f, _ in figures]
    timings["tables_figures"] = time.perf_counter() - t

    t = time.perf_counter()
    doc = _compose(summary, tables, notes, figures, options, sources, simulated, stamp, _examples(out_dir, tables))
    title = (
        ("SIMULATED — " if simulated else "")
        + "sonieval correlation report"
        + (f": {summary['study']}" if summary.get("study") else "")
    )
    md = doc.markdown()
    if simulated:
        md = f"**{SIMULATED_BANNER}**\n\n{md}\n**{SIMULATED_BANNER}**\n"
    files.append(write_text_atomic(out_dir / "report.md", md))
    files.append(write_text_atomic(out_dir / "report.html", doc.html(title)))
    files.append(
        write_text_atomic(out_dir / "summary.json", json.dumps(json_safe(summary), indent=2, default=str) + "\n")
    )
    timings["write"] = time.perf_counter() - t
    return files


def _write_tables(table_dir: Path, tables: dict[str, pd.DataFrame], stamp: str, simulated: bool) -> list[Path]:
    """Every table as CSV, each row labelled SIMULATED (when it is) and with the provenance stamp."""
    table_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for name, df in tables.items():
        df = df.copy()
        if simulated:
            df.insert(0, "simulated", "SIMULATED")
        df["provenance"] = stamp
        path = table_dir / f"{name}.csv"
        with atomic_path(path) as tmp:
            df.to_csv(tmp, index=False)
        files.append(path)
    return files


# --- figures -------------------------------------------------------------------------------------


class _FigureWriter:
    """Saves figures with the provenance stamp under them (and the SIMULATED banner over them)."""

    def __init__(self, fig_dir: Path, stamp: str, simulated: bool):
        self.fig_dir, self.stamp, self.simulated = fig_dir, stamp, simulated
        self.out: list[tuple[str, str]] = []

    def save(self, fig, name: str, alt: str) -> None:
        from sonieval.plotting import save_figure

        # Stamp and banner go just outside everything already drawn (tick labels, axis labels,
        # legends): at a fixed figure fraction they overlapped the x-axis label of short figures.
        box = fig.get_tightbbox(fig.canvas.get_renderer())  # inches
        height = fig.get_figheight()
        pad = 0.08 / height
        fig.text(
            0.01, box.y0 / height - pad, "\n".join(textwrap.wrap(self.stamp, 160)), fontsize=6, color="#555", va="top"
        )
        if self.simulated:
            fig.suptitle(SIMULATED_BANNER, color="#b00", fontweight="bold", y=box.y1 / height + pad, va="bottom")
        save_figure(fig, self.fig_dir / name, dpi=90, bbox_inches="tight")
        self.out.append(((Path(self.fig_dir.name) / name).as_posix(), alt))  # relative to the report


def _random_marks(scores, stamp: str) -> tuple[dict[str, str], str]:
    """Systems made with randomly initialised models carry the leaderboard's marks on every figure,
    explained in the stamp under each figure."""
    from sonieval.tables import RANDOM_CODEC_MARK, RANDOM_ENCODER_MARK, random_mark

    overall = scores.overall.drop_duplicates("system_id").set_index("system_id")
    marks = {str(sid): random_mark(row) for sid, row in overall.iterrows()}
    used = set(marks.values()) - {""}
    if used:
        stamp += "".join(
            f" | {m} {what}"
            for m, what in (
                (RANDOM_CODEC_MARK, "randomly initialised codec (RANDOM-INIT)"),
                (RANDOM_ENCODER_MARK, "randomly initialised encoder (RANDOM-INIT)"),
            )
            if m in used
        )
    return marks, stamp


def _figures(tables, scores, son: pd.DataFrame, fig_dir: Path, stamp: str, simulated: bool) -> list[tuple[str, str]]:
    from sonieval.plotting import pyplot

    plt = pyplot()
    marks, stamp = _random_marks(scores, stamp)
    writer = _FigureWriter(fig_dir, stamp, simulated)
    means = tables["system_means"]
    attrs = sorted(tables["mark_distribution"]["attribute"].unique())
    # One system order for every panel (best mean first at the top), labels on the left axis only.
    order = means.groupby("system_id", observed=True)["mean"].mean().sort_values().index.astype(str).tolist()
    labels = {sid: label + marks.get(sid, "") for sid, label in system_labels(order).items()}
    label_width = max(len(v) for v in labels.values()) * 0.075
    size = (label_width + 5 * len(attrs), 0.35 * len(order) + 1.5)
    _mark_distribution_figure(plt, writer, tables["mark_distribution"], attrs, order, labels, size)
    _system_means_figure(plt, writer, means, attrs, order, labels, size)
    for metric_key, s in scores.overall.groupby("metric_key"):
        _scatter_figure(plt, writer, tables, metric_key, s, attrs, marks)
    _rater_agreement_figure(plt, writer, tables["rater_agreement"])
    return writer.out


def _mark_distribution_figure(plt, writer, dist, attrs, order, labels, size) -> None:
    share_cols = [c for c in dist.columns if c.startswith("share_")]
    pos = {sid: k for k, sid in enumerate(order)}
    fig, axes = plt.subplots(1, len(attrs), figsize=size, squeeze=False, sharey=True)
    cmap = plt.get_cmap("RdYlGn", len(share_cols))
    for ax, attr in zip(axes[0], attrs):
        d = dist[dist["attribute"] == attr].set_index("system_id")
        y = np.array([pos[str(sid)] for sid in d.index])
        left = np.zeros(len(d))
        for k, c in enumerate(share_cols):
            ax.barh(y, d[c], left=left, color=cmap(k), label=c.split("_")[1])
            left += d[c].to_numpy()
        ax.set_title(f"{attr} marks")
        ax.set_xlabel("share of marks")
    axes[0][0].set_yticks(np.arange(len(order)), [labels[sid] for sid in order])
    axes[0][-1].legend(title="mark", bbox_to_anchor=(1.0, 1.0), loc="upper left")
    writer.save(fig, "mark_distribution.png", "Distribution of marks per system")


def _system_means_figure(plt, writer, means, attrs, order, labels, size) -> None:
    pos = {sid: k for k, sid in enumerate(order)}
    fig, axes = plt.subplots(1, len(attrs), figsize=size, squeeze=False, sharey=True)
    for ax, attr in zip(axes[0], attrs):
        m = means[means["attribute"] == attr]
        y = np.array([pos[str(sid)] for sid in m["system_id"]])
        ax.errorbar(
            m["mean"],
            y,
            xerr=[m["mean"] - m["ci_low"].fillna(m["mean"]), m["ci_high"].fillna(m["mean"]) - m["mean"]],
            fmt="o",
            capsize=3,
        )
        ax.set_title(f"{attr}: mean mark, 95% cluster-bootstrap CI", fontsize=9)
    axes[0][0].set_yticks(np.arange(len(order)), [labels[sid] for sid in order])
    writer.save(fig, "system_means.png", "Mean marks with 95% CIs")


def _scatter_figure(plt, writer, tables, metric_key, s, attrs, marks) -> None:
    corr = tables["correlations"]
    sysc = corr[corr["level"] == "system"] if "level" in corr else corr
    means = tables["system_means"]
    fig, axes = plt.subplots(1, len(attrs), figsize=(5 * len(attrs), 4), squeeze=False)
    sv = s.set_index("system_id")["value"]
    increasing = s["direction"].iloc[0] == "higher"
    for ax, attr in zip(axes[0], attrs):
        m = means[(means["attribute"] == attr) & means["system_id"].isin(sv.index)]
        if m.empty:
            ax.set_title(f"{attr}: no matched systems")
            continue
        _scatter_panel(ax, sv.loc[m["system_id"]].to_numpy(float), m, increasing, marks)
        row = sysc[(sysc["metric"] == metric_key) & (sysc["attribute"] == attr)]
        rho = fmt(row["spearman"].iloc[0], 2) if len(row) else "n/a"
        ax.set_title(f"{attr}: agreement ρ = {rho} (n={len(m)})", fontsize=9)
        random_emb = "random-init" in str(s["embedding"].iloc[0]) and "[" not in metric_key
        ax.set_xlabel(
            f"{metric_key}{' on a RANDOM-INIT embedding' if random_emb else ''} "
            f"({'lower' if not increasing else 'higher'} is better)"
        )
        ax.set_ylabel("mean mark")
    writer.save(fig, f"scatter_{_safe(metric_key)}.png", f"Mean mark vs {metric_key}")


def _scatter_panel(ax, x, m, increasing: bool, marks) -> None:
    from scipy.optimize import isotonic_regression

    from sonieval.plotting import label_points

    y = m["mean"].to_numpy(float)
    ax.errorbar(x, y, yerr=[y - m["ci_low"].fillna(m["mean"]), m["ci_high"].fillna(m["mean"]) - y], fmt="o", capsize=3)
    order = np.argsort(x)
    fit = isotonic_regression(y[order], increasing=increasing).x
    ax.plot(x[order], fit, "-", color="C1", label="monotone fit")
    ax.legend(fontsize=7)  # before the labels, which then keep clear of it
    if len(m) <= 15:  # labels never overlap (label_points); any left out is said in the panel
        names = system_labels(m["system_id"].astype(str))
        left = label_points(ax, x, y, [names[sid] + marks.get(sid, "") for sid in m["system_id"].astype(str)])
        if left:
            ax.text(
                0.99,
                0.01,
                f"{len(left)} label(s) left out (crowded)",
                transform=ax.transAxes,
                fontsize=6,
                ha="right",
                va="bottom",
                color="#555",
            )


def _rater_agreement_figure(plt, writer, ra) -> None:
    if not ra["spearman_with_panel"].notna().any():
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for attr, part in ra.groupby("attribute"):
        ax.hist(part["spearman_with_panel"].dropna(), bins=20, alpha=0.6, label=attr)
    ax.set_xlabel("Spearman ρ of a rater with the other raters' mean")
    ax.set_ylabel("raters")
    ax.legend()
    writer.save(fig, "rater_agreement.png", "Per-rater agreement with the panel")


# --- the document --------------------------------------------------------------------------------


def _reliability_view(table: pd.DataFrame) -> pd.DataFrame:
    """The reliability table as read: one CI column per form ("lo – hi") instead of two."""
    out = table.copy()
    pairs = [(f, f"{f}_ci_low", f"{f}_ci_high") for f in reliability.ICC_FORMS] + [
        ("krippendorff_alpha_ordinal", "alpha_ci_low", "alpha_ci_high"),
        ("krippendorff_alpha_interval", "interval_alpha_ci_low", "interval_alpha_ci_high"),
    ]
    for value, lo, hi in pairs:
        out[f"{value}_ci95"] = [
            f"{fmt(a)} – {fmt(b)}" if a is not None and pd.notna(a) else "n/a" for a, b in zip(out[lo], out[hi])
        ]
        out = out.drop(columns=[lo, hi])
    order = ["attribute", "n_marks", "n_raters", "n_stimuli", "k_hat"]
    for value, _, _ in pairs:
        order += [value, f"{value}_ci95"]
    return out[order + [c for c in out.columns if c not in order]]


def _examples(out_dir: Path, tables: dict[str, pd.DataFrame]) -> list[tuple[str, str]]:
    """(system, link) to each rated system's column in the results folder's listening gallery, where every
    sonification is shown and played with the marks raters gave it; none for a report outside a results folder."""
    from sonieval.gallery_links import in_results_folder, system_link

    results = in_results_folder(out_dir)
    means = tables.get("system_means")
    if results is None or means is None or means.empty:
        return []
    sonified = set(pd.read_parquet(ResultsLayout(results).table("sonifications"), columns=["system_id"])["system_id"])
    rated = [s for s in dict.fromkeys(means["system_id"].astype(str)) if s in sonified]
    return [(s, system_link(s, out_dir, results)) for s in rated]


def _compose(summary, tables, notes, figures, options, sources, simulated, stamp, examples=()) -> Document:
    doc = Document(banner=SIMULATED_BANNER if simulated else None)
    fig = dict((Path(f).stem, (f, alt)) for f, alt in figures)
    _head(doc, summary, notes, options, sources, simulated)
    _screening_section(doc, summary, tables, options)
    _descriptives_section(doc, tables, fig)
    if examples:
        doc.p(
            "Each system's examples, seen and heard beside their originals with the marks raters gave each one, "
            "in the listening gallery (made by `sonieval gallery PROTOCOL`; it shows the marks of the study's "
            "ratings export, study/ratings.parquet or .csv):"
        )
        doc.links(examples)
    _reliability_section(doc, tables, fig)
    _models_section(doc, summary, tables)
    _agreement_section(doc, summary, tables, fig)
    doc.h(2, "Files")
    doc.bullets(
        [(ReportLayout(Path()).tables / f"{n}.csv").as_posix() for n in tables]
        + ["summary.json", "report.md", "report.html"]
    )
    doc.p(stamp)
    return doc


def _head(doc, summary, notes, options, sources, simulated) -> None:
    doc.h(
        1,
        ("SIMULATED — " if simulated else "")
        + "Correlation report: objective scores vs listener marks"
        + (f" (study {summary['study']})" if summary.get("study") else ""),
    )
    if simulated:
        doc.p(f"{SIMULATED_BANNER}. {options.simulated_note or 'The ratings are marked simulated.'}")
    doc.h(2, "Provenance")
    prov = summary["provenance"]
    doc.bullets(
        [f"{s.kind}: {s.path} (sha256 {s.sha256}, {s.n_rows} rows)" for s in sources if s is not None]
        + [
            f"created {prov['created_at']}; " + ", ".join(f"{k} {v}" for k, v in prov["versions"].items()),
            f"scale {summary['scale'][0]}–{summary['scale'][1]}; bootstrap resamples {options.n_boot}; "
            f"seed {options.seed}",
            f"{summary['n_ratings']} ratings, {summary['n_raters']} raters ({summary['n_raters_kept']} kept), "
            f"{summary['n_systems_rated']} systems rated ({summary['n_systems_matched']} with scores), "
            f"{summary['n_clips']} clips",
        ]
    )
    doc.h(2, "Data checks and warnings")
    doc.bullets(notes or ["none"])


def _screening_section(doc, summary, tables, options) -> None:
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


def _descriptives_section(doc, tables, fig) -> None:
    doc.h(2, "2. Descriptives")
    doc.p(
        "Mean mark per system and attribute (screened raters). ci_low/ci_high: 95 % two-way cluster bootstrap "
        "over raters and clips (Owen 2007), the interval to read; t_ci: naive t interval treating marks as "
        "independent."
    )
    doc.table(tables["system_means"])
    doc.p("The reference work's table form (mean marks and the rank by the primary objective score, 1 = best):")
    doc.table(tables["reference_table"])
    doc.p("Hidden reference and anchor means (the two ends of the scale as used):")
    doc.table(tables["role_means"])
    for key in ("mark_distribution", "system_means"):
        if key in fig:
            doc.image(*fig[key])


def _reliability_section(doc, tables, fig) -> None:
    doc.h(2, "3. Reliability")
    doc.p(
        "On every mark. ICCs from the variance components of mark ~ 1 + (1|rater) + (1|stimulus) (REML, crossed "
        "random intercepts): agreement ICC(A,1), ICC(A,k̂) and consistency ICC(C,1), ICC(C,k̂), with k̂ the "
        "harmonic mean number of raters per stimulus (ten Hove et al. 2022); 95 % Monte-Carlo intervals from the REML "
        "information. Consistency leaves rater leniency out, which suits only comparisons of stimuli marked by the "
        "same raters; in an incomplete design read the agreement forms. Krippendorff's α, ordinal and interval, "
        "from all marks per stimulus with the scale as value domain; CI: bootstrap over stimuli."
    )
    doc.table(_reliability_view(tables["reliability"]))
    doc.p(
        "Secondary: McGraw & Wong ICCs (F-based CIs) on a complete block of raters × stimuli. The block is chosen "
        f"{reliability.BLOCK_METHOD}; it holds only the share of marks shown, so read the ICCs above."
    )
    doc.table(tables["reliability_complete_block"])
    doc.p("Agreement between the visual and the audio mark of the same rater and stimulus:")
    doc.table(tables["attribute_agreement"])
    doc.p(
        "Per-rater agreement with the panel (Spearman ρ with the leave-one-out mean of the other raters); lowest "
        "ten (raters without a defined ρ after them):"
    )
    doc.table(tables["rater_agreement"].sort_values(["spearman_with_panel", "rater_id"], na_position="last").head(10))
    if "rater_agreement" in fig:
        doc.image(*fig["rater_agreement"])


def _models_section(doc, summary, tables) -> None:
    doc.h(2, "4. Models and tests")
    doc.p("Design per attribute, and which pairwise result is primary:")
    doc.table(
        tables["design"][
            [
                "attribute",
                "n_marks",
                "n_raters",
                "n_clips",
                "n_systems",
                "n_cells_marked",
                "n_cells_possible",
                "complete",
                "balanced",
                "primary_pairwise",
            ]
        ]
    )
    for attribute, info in summary["pairwise"].items():
        name = "mixed-model contrasts" if info["method"] == "mixed_model" else "Friedman + Wilcoxon"
        doc.p(f"{attribute}: primary pairwise result = {name}. Why: {info['reason']}.")
    doc.p(
        "Linear mixed model mark ~ 0 + system + (1|rater) + (1|clip), fitted by REML on every mark (exact sparse "
        "crossed random intercepts, sonieval.stats.crossed). estimate = estimated marginal mean (a system's mean "
        "mark at an average rater and clip); 95 % CIs with Satterthwaite df."
    )
    doc.table(tables["mixed_model"])
    doc.table(tables["mixed_model_fit"])
    doc.p(
        "Pairwise contrasts of the marginal means: Wald t tests with Satterthwaite df, Holm's correction across pairs."
    )
    doc.table(tables["pairwise_mixed_model"])
    doc.p(
        "Friedman test and pairwise Wilcoxon signed-rank tests paired on the same (rater, clip) cells (Friedman: "
        "each rater's mean over the clips marked with every system; Wilcoxon: each rater's mean difference over the "
        "clips marked with both systems), Holm's correction; effect size: matched-pairs rank-biserial correlation. "
        "Clips are fixed here: primary only for a complete, balanced design."
    )
    doc.table(tables["friedman"])
    doc.table(tables["pairwise_wilcoxon"])


def _agreement_section(doc, summary, tables, fig) -> None:
    doc.h(2, "5. Agreement with objective scores")
    doc.p(
        summary["orientation"] + ". p_permutation: two-sided permutation p of Spearman's ρ (exact for ≤ 8 "
        "systems); ci_low/ci_high: 95 % bootstrap CI of ρ, resampling systems, raters and clips (Boot-Both, "
        "Deutsch et al. 2021)."
    )
    corr = tables["correlations"]
    cols = [
        c
        for c in [
            "metric",
            "attribute",
            "level",
            "category",
            "direction",
            "n",
            "spearman",
            "ci_low",
            "ci_high",
            "kendall_tau_b",
            "pearson",
            "p_permutation",
            "note",
        ]
        if c in corr.columns
    ]
    doc.table(corr[cols])
    doc.p("Comparison of metrics: paired bootstrap of the difference in ρ on the same resamples:")
    doc.table(tables["metric_comparison"])
    doc.p("Rank agreement (human rank vs metric rank; 1 = best):")
    doc.table(tables["rank_agreement"])
    for key, (f, alt) in fig.items():
        if key.startswith("scatter_"):
            doc.image(f, alt)
