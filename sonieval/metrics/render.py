"""Rendering a leaderboard: one :class:`~sonieval.document.Document` (notes, the learning, seed and
depth tables, the ranked tables, per-class and paired tables, figures) written as both
``leaderboard.md`` and ``leaderboard.html``, so the two pages carry the same sections; and the
reference work's dot plots. Nothing here computes a score: the tables come from
:mod:`sonieval.metrics.scoring` and :mod:`sonieval.metrics.controls`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from sonieval.document import Document
from sonieval.errors import SonievalError
from sonieval.measures import ATTRIBUTES, HEADINGS, MEASURES
from sonieval.metrics.scoring import CI_LEVEL, RANDOM_CODEC_MARK, RANDOM_ENCODER_MARK, random_mark

TITLE = "KAD / FAD leaderboard"
# every measure's heading (title and direction) comes from the measure catalogue
MEASURE_TITLES = HEADINGS
LEARNING_INTRO = (
    "Each trained gate beside the same gate untrained and trained on shuffled pairs, and the codec's "
    "own reconstruction (ceiling). R² is measured on the held-out clips, which chose neither the epoch nor "
    "the learning rate (the validation clips chose them). 95 % CIs: R² resamples held-out clips, KAD and the item measures "
    "resample sonified clips (KAD also the reference set), FAD's is a jackknife over them (its ci_method "
    "says for what). *beats both*: for KAD, the paired "
    "bootstrap difference to each control (one reference resample for both, the same clip draws; "
    "paired_controls.csv) has its 95 % CI below 0; for the per-item measures the paired bootstrap of the "
    "clip-wise differences (paired_items.csv) has its 95 % CI on the better side of 0; for R² and FAD the trained CI "
    "lies entirely on the better side of both controls' CIs. Where the encoder's random twin was scored, "
    "*twin* shows the same gate on it."
)
SEEDS_INTRO = (
    "Each system trained with {n} seeds (gate initialisation and batch order; the data are the same): "
    "mean over seeds with a 95 % t interval over seeds, beside the controls trained with the same seeds and "
    "the codec ceiling. *seeds* = how many seeds beat both controls on their own per-clip CIs; *beats both* "
    "= the trained seed interval lies entirely on the better side of both controls' seed intervals."
)
DEPTH_INTRO = (
    "Each encoder sonified at several layers: per layer, the trained gate beside the same gate "
    "untrained and trained on shuffled pairs, and the codec's own reconstruction (ceiling), with 95 % CIs "
    "(R²: held-out clips resampled; KAD and item measures: sonified clips resampled). *Beats both "
    "controls down to* = the deepest layer whose trained CI lies entirely on the better side of both "
    "controls' CIs (*beats both* per layer)."
)
CONTROL_SIDES = (("trained", "system"), ("shuffled", "shuffled"), ("untrained", "untrained"), ("ceiling", "ceiling"))
GALLERY_NOTE = (
    "In leaderboard.html each system name links to its column in the listening gallery (`../gallery/index.html`: "
    "every listening clip's original beside every system, seen and heard; made by `sonieval gallery PROTOCOL` "
    "and at the end of `sonieval run`)."
)


def _fmt(v, digits=4) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "—"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _verdict(v) -> str:
    return {True: "yes", False: "no"}.get(v, "—")


def _ci_cell(row, name: str) -> str:
    v = row.get(f"{name}_value")
    if v is None or not np.isfinite(v):
        return "—"
    lo, hi = row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    ci = f" [{_fmt(lo, 3)}, {_fmt(hi, 3)}]" if lo is not None and np.isfinite(lo) else ""
    return f"{_fmt(v, 3)}{ci}"


# --------------------------------------------------------------------------- learning, seeds, depth


def controls_table(g: pd.DataFrame, lead: dict[str, str], *, seeds: bool = False) -> pd.DataFrame:
    """The one row renderer of the learning, seed and depth tables: ``lead`` columns (title → column,
    a system column in backticks), then each side with its CI, then the verdict."""
    out = {
        title: [f"`{v}`" if col in ("system_id", "system", "gate") else str(v) for v in g[col]]
        for title, col in lead.items()
    }
    rows = [r for _, r in g.iterrows()]
    sides = list(CONTROL_SIDES)
    if "twin_value" in g.columns and np.isfinite(g["twin_value"].astype(float)).any():
        sides.insert(1, ("twin", "twin"))  # the encoder's random twin, where it was scored
    out.update({title: [_ci_cell(r, side) for r in rows] for title, side in sides})
    if seeds:
        out["seeds"] = [f"{int(r['seeds_beating_both'])}/{int(r['n_seeds'])}" for r in rows]
    out["beats both"] = [_verdict(r["beats_controls"]) for r in rows]
    return pd.DataFrame(out)


def add_learning(doc: Document, learning: pd.DataFrame | None) -> None:
    """Each trained system beside its controls and the codec ceiling, per measure, with 95 % CIs."""
    if learning is None or learning.empty:
        return
    doc.h(2, "Learning: trained systems against their controls")
    doc.p(LEARNING_INTRO)
    for (measure, emb), g in learning.groupby(["measure", "embedding"], sort=False):
        if measure in MEASURES and MEASURES[measure].attribute:
            continue  # a what-is-kept measure: in the explanation profile
        doc.h(3, f"{MEASURE_TITLES.get(measure, measure)} · {emb}")
        doc.table(controls_table(g, {"system": "system_id"}), max_rows=None, formatted=True)


def add_seeds(doc: Document, seeds: pd.DataFrame | None) -> None:
    """The learning table over replicate seeds: mean and t interval over seeds per side."""
    if seeds is None or seeds.empty:
        return
    doc.h(2, "Learning over replicate seeds")
    doc.p(SEEDS_INTRO.format(n=int(seeds["n_seeds"].max())))
    for (measure, emb), g in seeds.groupby(["measure", "embedding"], sort=False):
        doc.h(3, f"{MEASURE_TITLES.get(measure, measure)} · {emb}")
        doc.table(controls_table(g, {"system": "system"}, seeds=True), max_rows=None, formatted=True)


def depth_notes(scores: pd.DataFrame, training: pd.DataFrame | None) -> dict[str, str]:
    """Per encoder, the provenance line of its depth figure: random weights, n validation and sonified clips."""
    from sonieval.tables import system_parts

    if scores is None or scores.empty:
        return {}
    overall = scores[scores["category"].isna()] if "category" in scores.columns else scores
    encoders: dict[str, list] = {}
    for sid, g in overall.groupby("system_id"):
        try:
            encoders.setdefault(system_parts(sid)["encoder"], []).append(g)
        except SonievalError:
            continue
    return {enc: _depth_note(pd.concat(parts), enc, training) for enc, parts in encoders.items()}


def _depth_note(g: pd.DataFrame, enc: str, training: pd.DataFrame | None) -> str:
    col = "system_encoder_random_init"
    random = col in g.columns and g[col].fillna(False).astype(bool).any()
    n_son = int(pd.to_numeric(g["n_evaluated"], errors="coerce").max())
    n_val, which = None, "validation"
    for col, name in (("n_validation", "validation"), ("n_heldout", "held-out")):
        if training is not None and col in training.columns:
            v = pd.to_numeric(training.loc[training["encoder"] == enc, col], errors="coerce").dropna()
            if not v.empty and v.max() > 0:
                n_val, which = int(v.max()), name
    bits = ["RANDOM-WEIGHT encoder (tests the method, not a pretrained model)" if random else "pretrained encoder"]
    bits += [f"R² over {n_val} {which} clips"] if n_val else []
    bits += [f"KAD/items over {n_son} sonified clips; bars: 95 % CIs"]
    return "; ".join(bits)


def add_depth(
    doc: Document,
    depth: pd.DataFrame | None,
    figures: list[Path] | None = None,
    out_dir: Path | None = None,
    notes: dict[str, str] | None = None,
) -> None:
    """Audibility by depth: per encoder a table per measure (layer by layer) and its figure."""
    from sonieval.metrics.depth import depth_summary

    if depth is None or depth.empty:
        return
    summary = depth_summary(depth)
    figs = {f.stem.split("__", 1)[1]: f for f in figures or []}
    doc.h(2, "Audibility by depth")
    doc.p(DEPTH_INTRO)
    for enc, d in depth.groupby("encoder", sort=False):
        doc.h(3, str(enc))
        if (notes or {}).get(enc):
            doc.p(f"*{notes[enc]}*")
        if enc in figs and out_dir is not None:
            doc.image(figs[enc].relative_to(out_dir).as_posix(), f"audibility by depth: {enc}")
        for (measure, emb), g in d.groupby(["measure", "embedding"], sort=False):
            s = summary[(summary["encoder"] == enc) & (summary["measure"] == measure) & (summary["embedding"] == emb)]
            reach = "; ".join(
                f"`{r.gate}`: {'no layer' if pd.isna(r.audible_to) else r.audible_to}" for r in s.itertuples()
            )
            doc.h(4, f"{MEASURE_TITLES.get(measure, measure)} · {emb}")
            doc.p(f"Beats both controls down to: {reach}.")
            doc.table(controls_table(g, {"layer": "layer", "gate": "gate"}), max_rows=None, formatted=True)


# --------------------------------------------------------------------------- the explanation profile

PROFILE_SIDES = (("trained", "system"), ("shuffled", "shuffled"), ("untrained", "untrained"), ("twin", "twin"))


def _pair_cell(r, control: str) -> str:
    d, lo, hi = r[f"d_{control}"], r[f"d_{control}_low"], r[f"d_{control}_high"]
    if not np.isfinite(d):
        return "—"
    ci = f" [{lo:+.3g}, {hi:+.3g}]" if np.isfinite(lo) and np.isfinite(hi) else ""
    return f"{d:+.3g}{ci}"


def _verdict_cell(r) -> str:
    twin = {"keeps it": " ▲twin", "twin better": " ▼twin", "no difference": " =twin"}.get(r["pretraining"], "")
    share = f" ({r['share']:.0%})" if r["verdict"] in ("kept", "partly kept") and np.isfinite(r["share"]) else ""
    return f"{r['verdict']}{share}{twin}"


def profile_matrix(profile: pd.DataFrame) -> pd.DataFrame:
    """Systems x attributes: the verdict, its share of the way to the ceiling and the twin comparison."""
    attributes = [a for a in ATTRIBUTES if a in set(profile["attribute"])]
    rows = []
    for _, g in profile.groupby("system_id", sort=False):
        cells = {r["attribute"]: _verdict_cell(r) for _, r in g.iterrows()}
        first = g.iloc[0]
        row = {"encoder": str(first["encoder"]), "layer": str(first["layer"]), "gate": f"`{first['gate']}`"}
        row.update({ATTRIBUTES[a].title: cells.get(a, "—") for a in attributes})
        rows.append(row)
    return pd.DataFrame(rows)


def profile_details(g: pd.DataFrame) -> pd.DataFrame:
    """One attribute: per system the n defined, the values, the paired differences with CIs and the verdict."""
    rows = [r for _, r in g.iterrows()]
    out = {"system": [f"`{r['system_id']}`" for r in rows]}
    out["n defined"] = [f"{int(r['n_defined'])}/{int(r['n_items'])}" for r in rows]
    for title, side in PROFILE_SIDES + (("ceiling", "ceiling"),):
        out[title] = [_fmt(r[f"{side}_value"], 3) for r in rows]
    for control in ("shuffled", "untrained", "twin", "ceiling"):
        out[f"Δ {control} [95% CI]"] = [_pair_cell(r, control) for r in rows]
    out["verdict"] = [_verdict_cell(r) for r in rows]
    out["why"] = [str(r["reason"]) for r in rows]
    return pd.DataFrame(out)


def add_profile(
    doc: Document, profile: pd.DataFrame | None, figures: list[Path] | None = None, out_dir: Path | None = None
) -> None:
    """What each trained system keeps, per attribute: the decision rule, the heat map, the verdicts, then per
    attribute the values and the paired differences that decide them."""
    from sonieval.metrics.profile import PROFILE_RULE

    if profile is None or profile.empty:
        return
    doc.h(2, "Explanation profile: what each trained system keeps")
    doc.p(PROFILE_RULE)
    shown = {Path(f).stem: f for f in figures or []}
    if "profile" in shown and out_dir is not None:
        doc.image(Path(shown["profile"]).relative_to(out_dir).as_posix(), "explanation profile")
    doc.table(profile_matrix(profile), max_rows=None, formatted=True)
    for attribute, g in profile.groupby("attribute", sort=False):
        measure = MEASURES[g["measure"].iloc[0]]
        doc.h(3, f"{ATTRIBUTES[attribute].title} · {measure.name}")
        doc.p(
            f"{measure.heading}; unit: {measure.unit}. Values are means over the clips where the measure is "
            "defined; Δ = trained − control, mean over the clips defined on both sides, with its paired 95 % "
            "bootstrap CI."
        )
        doc.table(profile_details(g), max_rows=None, formatted=True)
    if "profile_values" in shown and out_dir is not None:
        doc.image(Path(shown["profile_values"]).relative_to(out_dir).as_posix(), "explanation profile: values")


# --------------------------------------------------------------------------- the ranked tables


def board_notes(board: pd.DataFrame) -> list[str]:
    """What a reader must know before reading the numbers: random weights, codecs, controls, conventions."""
    notes = []
    marks = {random_mark(r) for _, r in board.iterrows()}
    if RANDOM_CODEC_MARK in marks:
        notes.append(
            f"Systems marked {RANDOM_CODEC_MARK} were decoded by a RANDOMLY INITIALISED codec (or made "
            "with randomly initialised models): their scores show that the pipeline runs, not how a "
            "trained system performs."
        )
    if RANDOM_ENCODER_MARK in marks:
        notes.append(
            f"Systems marked {RANDOM_ENCODER_MARK} sonify a RANDOMLY INITIALISED encoder (a random "
            "projection of the audio, not a pretrained model) through a real or weight-free codec: their "
            "gates really learn, so they test the method, not what a pretrained encoder holds."
        )
    if "system_codec_label" in board.columns:
        labels = sorted({str(v) for v in board["system_codec_label"].dropna()})
        if labels:
            notes.append("Codecs: " + ", ".join(f"`{v}`" for v in labels) + ".")
    if "control" in board.columns and (board["control"].isin(["untrained", "shuffled", "ceiling", "twin"])).any():
        notes.append(
            "Controls are systems: `.untrained` = the gate at its initialisation, `.shuffled` = the gate "
            "trained on mismatched (embedding, latent) pairs, `codec/…/codec` = the codec's own "
            "reconstruction of the original (the ceiling)"
            + (
                ", `ENCODER.twin` = the same gate on the encoder's random twin (its architecture with "
                "re-initialised weights: what pretraining adds)."
                if (board["control"] == "twin").any()
                else "."
            )
        )
    notes += [_metric_note(emb, metric, g) for (emb, metric), g in board.groupby(["embedding", "metric"])]
    return notes


def _metric_note(emb: str, metric: str, g: pd.DataFrame) -> str:
    first = g.iloc[0]
    line = (
        f"{metric.upper()} on `{emb}` against reference set `{first['reference_set']}` "
        f"(n_reference = {first['n_reference']} clips)"
    )
    if metric == "kad":
        line += f", bandwidth σ = {_fmt(first['bandwidth'])} (median pairwise distance of the reference), scale ×100"
        if g["saturated"].fillna(False).astype(bool).all():
            line += (
                ". **All systems are saturated** (cross term ≈ 0 on σ's scale): equal KADs here mean "
                "'all far from the reference', not 'all equal'"
            )
    method = first.get("ci_method")
    if isinstance(method, str) and not method.startswith("none"):
        line += f"; CIs: {method}"
    if "random-init" in emb:
        line += ". The embedding is RANDOMLY INITIALISED (not a pretrained model)"
    if "weight-free" in emb:
        line += ". The embedding is weight-free (log-mel), not a learned model"
    return line + "."


def per_class_table(scores: pd.DataFrame, embedding: str, metric: str) -> pd.DataFrame:
    """Per-class values: one row per category, one column per system."""
    rows = scores[(scores["embedding"] == embedding) & (scores["metric"] == metric) & scores["category"].notna()]
    if rows.empty:
        return pd.DataFrame()
    return rows.pivot_table(index="category", columns="system_id", values="value", aggfunc="first")


def ranked_table(g: pd.DataFrame) -> pd.DataFrame:
    """One (embedding, metric) of the board as text: rank, system (with its † / ‡ mark), value, CI, n, note."""

    def note(r) -> str:
        sat = r.get("saturated")
        return r["error"] if isinstance(r.get("error"), str) else ("saturated" if pd.notna(sat) and bool(sat) else "")

    rows = [r for _, r in g.iterrows()]
    return pd.DataFrame(
        {
            "rank": [int(r["rank"]) for r in rows],
            "system": [f"`{r['system_id']}`" + (f" {random_mark(r)}" if random_mark(r) else "") for r in rows],
            "value": [_fmt(r["value"]) for r in rows],
            "95% CI": [
                "—" if not np.isfinite(r["ci_low"]) else f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" for r in rows
            ],
            "n evaluated": [int(r["n_evaluated"]) for r in rows],
            "note": [note(r) for r in rows],
        }
    )


def paired_table(pg: pd.DataFrame) -> pd.DataFrame:
    def cells(r) -> list:
        if isinstance(r.get("error"), str):
            return [f"`{r['system_id']}`", "—", "—", "—", r["error"]]
        return [
            f"`{r['system_id']}`",
            _fmt(r["kad_difference"]),
            f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]",
            _fmt(r["p_value"], 3),
            "yes" if r["paired_clips"] else "no",
        ]

    return pd.DataFrame(
        [cells(r) for _, r in pg.iterrows()], columns=["system", "difference", "95% CI", "p", "paired clips"]
    )


def add_ranked(doc: Document, board: pd.DataFrame, scores: pd.DataFrame | None, paired: pd.DataFrame | None) -> None:
    """Per (embedding, metric): the ranked systems, their per-class values, and (KAD) the paired comparison."""
    for (emb, metric), g in board.groupby(["embedding", "metric"]):
        doc.h(2, f"{metric.upper()} · {emb}")
        doc.table(ranked_table(g), max_rows=None, formatted=True)
        pivot = per_class_table(scores, emb, metric) if scores is not None and not scores.empty else pd.DataFrame()
        if not pivot.empty:
            doc.p(f"Per class ({metric.upper()}, no CIs; a class's reference and evaluated clips only):")
            shown = pd.DataFrame(
                {"class": list(pivot.index), **{f"`{c}`": [_fmt(v) for v in pivot[c]] for c in pivot.columns}}
            )
            doc.table(shown, max_rows=None, formatted=True)
        pg = paired[paired["embedding"] == emb] if metric == "kad" and paired is not None and not paired.empty else None
        if pg is not None and not pg.empty:
            doc.p(
                f"Paired bootstrap against the best system `{pg['best_system'].iloc[0]}` "
                "(KAD(best) − KAD(system); same reference resamples, shared clip draws when the "
                "systems sonified the same clips):"
            )
            doc.table(paired_table(pg), max_rows=None, formatted=True)


def _versions_line(board: pd.DataFrame) -> str:
    versions = json.loads(board["versions"].iloc[0])
    skip = ("kad_convention", "fad_convention", "embedding_params")
    return "Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if k not in skip)


# --------------------------------------------------------------------------- the page


def leaderboard_document(
    board: pd.DataFrame,
    scores: pd.DataFrame | None = None,
    paired: pd.DataFrame | None = None,
    learning: pd.DataFrame | None = None,
    *,
    seeds: pd.DataFrame | None = None,
    depth: pd.DataFrame | None = None,
    depth_figures: list[Path] | None = None,
    depth_notes: dict[str, str] | None = None,
    figures: list[Path] | None = None,
    out_dir: Path | None = None,
    profile: pd.DataFrame | None = None,
    profile_figures: list[Path] | None = None,
    gallery=None,
) -> Document:
    """The whole leaderboard page as one document (Markdown and HTML are its two renderings). ``gallery``
    (system_id -> URL of its column in the listening gallery): the HTML page links every system name there."""
    from sonieval.metrics.controls import seed_table

    doc = Document(markup=True)
    doc.h(1, TITLE)
    if board.empty:
        doc.p("No scores.")
        return doc
    doc.bullets(board_notes(board) + [_versions_line(board)] + ([GALLERY_NOTE] if gallery else []))
    add_learning(doc, learning)
    add_profile(doc, profile, profile_figures, out_dir)
    if seeds is None and learning is not None and not learning.empty:
        seeds = seed_table(learning)
    add_seeds(doc, seeds)
    add_depth(doc, depth, depth_figures, out_dir, depth_notes)
    add_ranked(doc, board, scores, paired)
    if figures and out_dir is not None:
        doc.h(2, "Figures")
        for f in figures:
            doc.image(Path(f).relative_to(out_dir).as_posix(), Path(f).stem)
    if gallery:
        doc.code_links.update({sid: gallery(sid) for sid in board["system_id"].astype(str)})
    return doc


def leaderboard_markdown(
    board: pd.DataFrame,
    scores: pd.DataFrame | None = None,
    paired: pd.DataFrame | None = None,
    learning: pd.DataFrame | None = None,
    **parts,
) -> str:
    return leaderboard_document(board, scores, paired, learning, **parts).markdown()


def leaderboard_html(
    board: pd.DataFrame,
    scores: pd.DataFrame | None = None,
    paired: pd.DataFrame | None = None,
    learning: pd.DataFrame | None = None,
    **parts,
) -> str:
    return leaderboard_document(board, scores, paired, learning, **parts).html(TITLE)


def write_pages(doc: Document, out_dir: Path, stem: str = "leaderboard") -> list[Path]:
    """``<stem>.md`` and ``<stem>.html`` of one document, written atomically."""
    from sonieval.files import write_text_atomic

    return [
        write_text_atomic(Path(out_dir) / f"{stem}.md", doc.markdown()),
        write_text_atomic(Path(out_dir) / f"{stem}.html", doc.html(TITLE)),
    ]


# --------------------------------------------------------------------------- figures


def dot_plots(board: pd.DataFrame, fig_dir: Path) -> list[Path]:
    """The reference work's figure: one point per system (with its CI), a line at the best."""
    if board.empty:
        return []
    paths = []
    for (emb, metric, enc, post), g in board.groupby(["embedding", "metric", "encoder", "postprocess"]):
        g = g[np.isfinite(g["value"].astype(float))].sort_values("system_label")
        if not g.empty:
            paths.append(_dot_plot(g, emb, metric, enc, post, fig_dir))
    return paths


def _dot_plot(g: pd.DataFrame, emb: str, metric: str, enc: str, post: str, fig_dir: Path) -> Path:
    import textwrap

    from sonieval.plotting import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(g) + 2), 4.0))
    x = np.arange(len(g))
    y = g["value"].to_numpy(float)
    lo, hi = g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float)
    has_ci = np.isfinite(lo) & np.isfinite(hi)
    # a percentile interval need not contain the estimate: clamp the bar lengths at 0
    below = np.clip(y[has_ci] - lo[has_ci], 0, None)
    above = np.clip(hi[has_ci] - y[has_ci], 0, None)
    ax.errorbar(x[has_ci], y[has_ci], yerr=[below, above], fmt="none", ecolor="0.6", capsize=3)
    ax.plot(x, y, "o", color="C0")
    best = float(np.min(y))
    ax.axhline(best, color="C3", lw=1, ls="--", label=f"best {best:.4g}")
    ax.set_xticks(x, g["system_label"], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric.upper()} (lower is better)")
    first = g.iloc[0]
    method = first.get("ci_method")  # the interval's own provenance (KAD: clip bootstrap; FAD: jackknife)
    bars = method if isinstance(method, str) and not method.startswith("none") else f"{CI_LEVEL:.0%} CI"
    subtitle = textwrap.fill(f"{emb} vs {first['reference_set']} (n_ref={first['n_reference']}); bars: {bars}", 80)
    ax.set_title(f"{metric.upper()} · {enc} · {post}\n{subtitle}", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    slug = "__".join(re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(v)) for v in (metric, emb, enc, post))
    return save_figure(fig, fig_dir / f"{slug}.png", dpi=110)
