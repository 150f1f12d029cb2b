"""The explanation profile: which attributes of the sound each trained system keeps.

A random network keeps everything and latent R² cannot tell a pretrained encoder from its random twin
(issue 19's trial: 0.634 vs 0.623); what pretraining changes is *which* attributes survive. So per
trained system (encoder, layer, gate) and per attribute of the measure catalogue
(:data:`sonieval.measures.ATTRIBUTES`: pitch, loudness envelope, spectral envelope, brightness, onsets),
the attribute's deciding measure (:mod:`sonieval.metrics.attributes`) is compared, clip by clip, with
the same measure on the system's controls (:func:`sonieval.metrics.controls.paired_item_differences`),
and the profile says:

- **not measurable**: a control or the ceiling was not scored, fewer than :data:`MIN_PAIRS` clips have
  the measure defined on both sides, or the codec's own reconstruction (the ceiling) does not beat both
  controls on it (then the codec cannot carry the attribute and no gate onto it can show it);
- **kept**: the trained system beats both the shuffled and the untrained control (95 % paired bootstrap
  CIs of the clip-wise differences exclude 0 on its better side) *and* goes at least
  :data:`KEPT_SHARE` of the way from the better control to the ceiling (``share``, from the paired mean
  differences: 0 = the better control, 1 = the ceiling);
- **partly kept**: beats both controls, less than that share of the way;
- **lost**: does not beat both controls.

Beside it, **pretraining** (where the encoder's random twin was scored): ``keeps it`` when the trained
system beats the same gate on the twin (paired CI beyond 0), ``twin better`` when the twin beats it,
``no difference`` otherwise. :func:`profile_figure` draws it as a heat map (systems x attributes, colour =
share of the way to the ceiling, the verdict and the twin comparison written in each cell) and
:func:`profile_values_figure` the values themselves (trained, twin, controls and ceiling with 95 % CIs,
one panel per attribute).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from sonieval.measures import ATTRIBUTES, get_measure
from sonieval.metrics.controls import control_ids, paired_difference, side_of_zero
from sonieval.tables import CEILING, TWIN, parse_system_id

__all__ = [
    "KEPT_SHARE",
    "MIN_PAIRS",
    "PROFILE_RULE",
    "profile_figure",
    "profile_table",
    "profile_values_figure",
]

KEPT_SHARE = 0.5
MIN_PAIRS = 5
VERDICTS = ("kept", "partly kept", "lost", "not measurable")
GATE_CONTROLS = ("shuffled", "untrained")
SIDES = ("system", "shuffled", "untrained", TWIN, CEILING)
PROFILE_RULE = (
    f"Per trained system and attribute, the attribute's measure is compared clip by clip with the same measure "
    f"on the system's controls (95 % paired bootstrap CIs of the mean difference over the clips where both are "
    f"defined). **kept**: the trained system beats both the shuffled and the untrained control (both paired CIs "
    f"exclude 0 on its better side) and goes at least {KEPT_SHARE:.0%} of the way from the better control to the "
    f"codec's own reconstruction (the ceiling; *share*: 0 = the better control, 1 = the ceiling). "
    f"**partly kept**: beats both controls, less of the way. **lost**: does not beat both. **not measurable**: a "
    f"control or the ceiling was not scored, fewer than {MIN_PAIRS} clips have the measure defined on both sides, "
    f"or the ceiling itself does not beat both controls (the codec cannot carry the attribute). **pretraining**: "
    f"*keeps it* when the trained system beats the same gate on the encoder's random twin (paired CI beyond 0), "
    f"*twin better* when the twin beats it, *no difference* when the CI holds 0, — when no twin was scored."
)


def profile_table(
    item_scores: pd.DataFrame,
    paired_items: pd.DataFrame,
    primary_codec: str | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (trained system, attribute) whose deciding measure was scored (see the module docstring)."""
    if item_scores is None or item_scores.empty or paired_items is None or paired_items.empty:
        return pd.DataFrame()
    values = item_scores.assign(value=pd.to_numeric(item_scores["value"], errors="coerce").astype(float))
    pairs = {(r.system_id, r.control, r.metric): r for r in paired_items.itertuples(index=False)}
    rows = []
    for attribute in ATTRIBUTES.values():
        scored = values[values["metric"] == attribute.measure]
        if scored.empty:
            continue
        wide = scored.pivot_table(index="clip_id", columns="system_id", values="value", aggfunc="first")
        n_items = scored.groupby("system_id").size()  # every clip scored, defined or not
        for sid in sorted(paired_items.loc[paired_items["metric"] == attribute.measure, "system_id"].unique()):
            ctrl = control_ids(sid, primary_codec) or {}
            row = _profile_row(sid, attribute, wide, ctrl, pairs, n_boot, seed)
            rows.append({**row, "n_items": int(n_items.get(sid, 0))})
    return _ordered(pd.DataFrame(rows))


def _profile_row(sid: str, attribute, wide: pd.DataFrame, ctrl: dict, pairs: dict, n_boot: int, seed: int) -> dict:
    measure = get_measure(attribute.measure)
    key = parse_system_id(sid)
    row = {
        "system_id": sid,
        "encoder": key.slot.name,
        "layer": key.slot.layer,
        "depth": key.slot.depth,
        "gate": sid.split("/", 1)[1],
        "attribute": attribute.name,
        "attribute_title": attribute.title,
        "measure": measure.name,
        "lower_is_better": measure.lower_is_better,
        "n_defined": int(wide[sid].notna().sum()),
    }
    for side, cid in (("system", sid), *((c, ctrl.get(c)) for c in SIDES[1:])):
        row.update(_side_values(side, wide[cid] if cid in wide.columns else None))
    for control in SIDES[1:]:
        got = pairs.get((sid, control, measure.name))
        row.update(_pair_cells(control, got))
    row.update(_codec_carries(wide, ctrl, measure.lower_is_better, n_boot, seed, measure.name))
    row.update(_decide(row, measure.lower_is_better))
    return row


def _side_values(side: str, v: pd.Series | None) -> dict:
    """Mean over the clips where the measure is defined, with its n (no CI: the paired CIs decide)."""
    if v is None or v.notna().sum() == 0:
        return {f"{side}_value": np.nan, f"{side}_n": 0}
    return {f"{side}_value": float(v.mean()), f"{side}_n": int(v.notna().sum())}


def _pair_cells(control: str, got) -> dict:
    if got is None:
        return {f"d_{control}": np.nan, f"d_{control}_low": np.nan, f"d_{control}_high": np.nan, f"n_{control}": 0}
    return {
        f"d_{control}": float(got.difference),
        f"d_{control}_low": float(got.ci_low),
        f"d_{control}_high": float(got.ci_high),
        f"n_{control}": int(got.n_pairs),
    }


def _codec_carries(wide: pd.DataFrame, ctrl: dict, lower: bool, n_boot: int, seed: int, metric: str) -> dict:
    """Whether the ceiling beats both gate controls on this measure (paired CIs), so the codec can carry it."""
    ceiling = ctrl.get(CEILING)
    verdicts = []
    for control in GATE_CONTROLS:
        cid = ctrl.get(control)
        if ceiling not in wide.columns or cid not in wide.columns:
            return {"codec_carries": None}
        _, _, lo, hi = paired_difference(wide[ceiling], wide[cid], n_boot, f"{ceiling}|{cid}|{metric}", seed)
        verdicts.append(side_of_zero(lo, hi, lower))
    return {"codec_carries": all(v is True for v in verdicts)}


def _decide(row: dict, lower: bool) -> dict:
    """verdict, its reason in words, share of the way to the ceiling, and the twin comparison."""
    out = {"share": np.nan, "pretraining": _pretraining(row, lower)}
    missing = [s for s in (*GATE_CONTROLS, CEILING) if not row[f"n_{s}"]]
    if missing:
        return {**out, "verdict": "not measurable", "reason": f"not scored: {', '.join(missing)}"}
    n = min(row[f"n_{s}"] for s in (*GATE_CONTROLS, CEILING))
    if n < MIN_PAIRS:
        return {**out, "verdict": "not measurable", "reason": f"defined on {n} paired clips (< {MIN_PAIRS})"}
    if not row["codec_carries"]:
        return {**out, "verdict": "not measurable", "reason": "the ceiling does not beat both controls"}
    sign = -1.0 if lower else 1.0  # oriented: > 0 means the trained system is better
    floor = min(sign * row[f"d_{c}"] for c in GATE_CONTROLS)
    gap = floor - sign * row[f"d_{CEILING}"]  # the better control to the ceiling
    out["share"] = float(floor / gap) if gap > 0 else np.nan
    beats = [side_of_zero(row[f"d_{c}_low"], row[f"d_{c}_high"], lower) for c in GATE_CONTROLS]
    if not all(b is True for b in beats):
        lost = [c for c, b in zip(GATE_CONTROLS, beats) if b is not True]
        return {**out, "verdict": "lost", "reason": f"does not beat {' or '.join(lost)}"}
    kept = np.isfinite(out["share"]) and out["share"] >= KEPT_SHARE
    reason = f"beats both controls, {out['share']:.0%} of the way to the ceiling"
    return {**out, "verdict": "kept" if kept else "partly kept", "reason": reason}


def _pretraining(row: dict, lower: bool) -> str | None:
    if not row[f"n_{TWIN}"]:
        return None
    side = side_of_zero(row[f"d_{TWIN}_low"], row[f"d_{TWIN}_high"], lower)
    return {True: "keeps it", False: "twin better", None: "no difference"}[side]


def _ordered(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table
    order = {a: i for i, a in enumerate(ATTRIBUTES)}
    table["_a"] = table["attribute"].map(order)
    table = table.sort_values(["encoder", "depth", "gate", "_a"]).drop(columns="_a")
    return table.reset_index(drop=True)


# --------------------------------------------------------------------------- figures

VERDICT_MARK = {"kept": "kept", "partly kept": "partly", "lost": "lost", "not measurable": "n/m"}
TWIN_MARK = {"keeps it": "▲ twin", "twin better": "▼ twin", "no difference": "= twin"}


def _row_label(r) -> str:
    return f"{r['encoder']} · {r['layer']}\n{r['gate']}"


def profile_figure(profile: pd.DataFrame, path: str | Path) -> Path:
    """Heat map, trained systems x attributes: colour = share of the way from the better control (0) to the
    ceiling (1); each cell says the verdict, the share and the twin comparison (▲ the trained system beats
    its random twin, ▼ the twin beats it, = no difference); grey hatching: not measurable."""
    from matplotlib.colors import TwoSlopeNorm

    from sonieval.plotting import pyplot, save_figure

    plt = pyplot()
    systems = list(dict.fromkeys(profile["system_id"]))
    attributes = [a for a in ATTRIBUTES if a in set(profile["attribute"])]
    grid = profile.set_index(["system_id", "attribute"])
    share = np.full((len(systems), len(attributes)), np.nan)
    for (i, sid), (j, att) in ((a, b) for a in enumerate(systems) for b in enumerate(attributes)):
        if (sid, att) in grid.index and grid.loc[(sid, att), "verdict"] != "not measurable":
            share[i, j] = grid.loc[(sid, att), "share"]
    width = max(7.5, 1.6 * len(attributes) + 3.2)
    fig, ax = plt.subplots(figsize=(width, 0.62 * len(systems) + 2.1))
    norm = TwoSlopeNorm(vmin=-0.5, vcenter=0.0, vmax=1.0)
    image = ax.imshow(np.clip(share, -0.5, 1.0), cmap="RdYlGn", norm=norm, aspect="auto")
    for i, sid in enumerate(systems):
        for j, att in enumerate(attributes):
            _cell(ax, i, j, grid.loc[(sid, att)] if (sid, att) in grid.index else None)
    first = profile.drop_duplicates("system_id").set_index("system_id")
    ax.set_yticks(range(len(systems)), [_row_label(first.loc[s]) for s in systems], fontsize=7)
    titles = {a: ATTRIBUTES[a].title for a in attributes}
    ax.set_xticks(range(len(attributes)), [titles[a] for a in attributes], fontsize=8)
    ax.xaxis.tick_top()
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("share: better control 0 → ceiling 1", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    title = (
        f"What each trained system keeps. kept: beats shuffled and untrained (paired 95 % CIs) and goes ≥ "
        f"{KEPT_SHARE:.0%} of the way to the ceiling. ▲ / ▼ / = twin: beats / is beaten by / ties with the same "
        "gate on the random twin"
    )
    ax.set_title(textwrap.fill(title, int(width * 11)), fontsize=8, pad=28)
    fig.tight_layout()
    return save_figure(fig, Path(path), dpi=110)


def _cell(ax, i: int, j: int, r) -> None:
    if r is None:
        return
    if r["verdict"] == "not measurable":
        ax.add_patch(_hatch(ax, i, j))
        ax.text(j, i, "not\nmeasurable", ha="center", va="center", fontsize=6.5, color="0.35")
        return
    share = "" if not np.isfinite(r["share"]) else f"\n{r['share']:.0%}"
    twin = f"\n{TWIN_MARK[r['pretraining']]}" if isinstance(r["pretraining"], str) else ""
    weight = "bold" if r["verdict"] == "kept" else "normal"
    ax.text(j, i, f"{r['verdict']}{share}{twin}", ha="center", va="center", fontsize=7, fontweight=weight)


def _hatch(ax, i: int, j: int):
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="0.93", edgecolor="0.7", hatch="///", lw=0)


def profile_values_figure(profile: pd.DataFrame, path: str | Path) -> Path:
    """Per attribute a panel: for each trained system its value beside the shuffled and untrained controls,
    the twin and the ceiling (means over the clips where the measure is defined), the trained value with
    the paired CI of its difference to the better control drawn around the control's value."""
    from sonieval.plotting import pyplot, save_figure

    plt = pyplot()
    attributes = [a for a in ATTRIBUTES if a in set(profile["attribute"])]
    systems = list(dict.fromkeys(profile["system_id"]))
    fig, axes = plt.subplots(1, len(attributes), figsize=(2.9 * len(attributes) + 2.4, 0.55 * len(systems) + 1.9))
    axes = np.atleast_1d(axes)
    first = profile.drop_duplicates("system_id").set_index("system_id")
    styles = {
        "system": ("o", "C0", "trained"),
        TWIN: ("D", "C1", "random twin"),
        "shuffled": ("s", "C3", "shuffled"),
        "untrained": ("^", "C7", "untrained"),
        CEILING: ("|", "k", "ceiling"),
    }
    for ax, att in zip(axes, attributes):
        p = profile[profile["attribute"] == att].set_index("system_id").reindex(systems)
        y = np.arange(len(systems))[::-1]
        for side, (marker, color, label) in styles.items():
            ax.plot(p[f"{side}_value"], y, marker, color=color, label=label, ms=7 if side == CEILING else 5)
        _control_ci(ax, p, y)
        measure = get_measure(ATTRIBUTES[att].measure)
        ax.set_title(f"{ATTRIBUTES[att].title}\n{measure.name} ({measure.direction} is better)", fontsize=8)
        ax.set_yticks(y, [_row_label(first.loc[s]) for s in systems] if ax is axes[0] else [], fontsize=6.5)
        ax.set_ylim(-0.6, len(systems) - 0.4)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=7, frameon=False)
    fig.suptitle(
        "What each trained system keeps: values per attribute (bars: paired 95 % CI vs the better control)", fontsize=9
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, Path(path), dpi=110)


def _control_ci(ax, p: pd.DataFrame, y: np.ndarray) -> None:
    """The trained value's paired CI against the better control, drawn as a bar from that control's value."""
    for yi, (_, r) in zip(y, p.iterrows()):
        if not np.isfinite(r.get("system_value", np.nan)):
            continue
        lower = bool(r["lower_is_better"])
        sign = -1.0 if lower else 1.0
        best = max(GATE_CONTROLS, key=lambda c: sign * r[f"{c}_value"] if np.isfinite(r[f"{c}_value"]) else -np.inf)
        lo, hi = r[f"d_{best}_low"], r[f"d_{best}_high"]
        if np.isfinite(lo) and np.isfinite(hi):
            base = r[f"{best}_value"]
            ax.plot([base + lo, base + hi], [yi, yi], color="C0", lw=2, alpha=0.5)
