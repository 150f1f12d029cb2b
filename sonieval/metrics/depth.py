"""Audibility by depth: how much of a clip a gate can make audible from each layer of an encoder.

An encoder sonified at several layers (``encoders[i].layer``: a list or ``all``; system ids
``wavlm``, ``wavlm.layer1``, ...) gives one trained gate per layer, each beside the same gate
untrained and trained on shuffled pairs, and beside the codec's own reconstruction (the ceiling):
the learning table of :mod:`sonieval.metrics.controls`. :func:`depth_table` arranges it by depth
(one row per encoder, gate, layer, measure); :func:`depth_summary` says, per encoder, gate and
measure, down to which layer the trained gate still beats both controls (95 % CIs apart, the
learning table's conservative test); :func:`depth_figure` draws one PNG per encoder: a panel per
measure, layer depth on the x axis, the trained gate with its CI, both controls and the ceiling.

This is a probing curve heard and measured: "how much of the sound survives at layer k". The CIs
are the learning table's (R²: held-out clips resampled; KAD and the item measures: sonified clips
resampled). With randomly initialised encoders it tests the method, not what a pretrained model holds.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from sonieval.metrics.controls import LEARNING_MEASURES
from sonieval.tables import parse_system_id

__all__ = ["depth_table", "depth_summary", "depth_figure", "depth_figures"]

SIDES = ("system", "shuffled", "untrained", "ceiling")


def depth_table(learning: pd.DataFrame) -> pd.DataFrame:
    """The learning table's rows of every encoder with two or more layers, ordered by depth.

    Adds ``depth`` (0 for ``input``, k for ``layer<k>``) and ``gate`` (the system_id without its
    encoder slot: variant, lr, epoch, alignment, post-processing; the line one layer sweep draws).
    Empty when no encoder was sonified at several layers.
    """
    if learning is None or learning.empty or "layer" not in learning.columns:
        return pd.DataFrame()
    rows = learning[learning["layer"].notna()].copy()
    if rows.empty:
        return pd.DataFrame()
    keys = [parse_system_id(s) for s in rows["system_id"]]
    rows["depth"] = [k.slot.depth for k in keys]
    rows["gate"] = [s.split("/", 1)[1] for s in rows["system_id"]]
    deep = rows.groupby("encoder")["depth"].transform("nunique") >= 2
    rows = rows[deep]
    if rows.empty:
        return pd.DataFrame()
    order = {m: i for i, m in enumerate(LEARNING_MEASURES)}
    rows["_o"] = rows["measure"].map(lambda m: order.get(m, len(order)))
    rows = rows.sort_values(["encoder", "_o", "embedding", "gate", "depth"]).drop(columns="_o")
    front = ["encoder", "layer", "depth", "gate", "measure", "embedding"]
    return rows[front + [c for c in rows.columns if c not in front]].reset_index(drop=True)


def depth_summary(depth: pd.DataFrame) -> pd.DataFrame:
    """Per (encoder, gate, measure, embedding): the layers, and the deepest layer whose trained gate
    still beats both controls (``audible_to``; None when no layer does, ``unknown`` when a CI is missing)."""
    cols = ["encoder", "gate", "measure", "embedding", "layers", "beating_layers", "audible_to"]
    if depth is None or depth.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for (enc, gate, measure, emb), g in depth.groupby(["encoder", "gate", "measure", "embedding"], sort=False):
        g = g.sort_values("depth")
        verdicts = list(g["beats_controls"])
        beating = [layer for layer, v in zip(g["layer"], verdicts) if v is True]
        if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in verdicts) and not beating:
            audible_to = "unknown"
        else:
            audible_to = beating[-1] if beating else None
        rows.append(
            {
                "encoder": enc,
                "gate": gate,
                "measure": measure,
                "embedding": emb,
                "layers": ", ".join(g["layer"]),
                "beating_layers": ", ".join(beating),
                "audible_to": audible_to,
            }
        )
    return pd.DataFrame(rows, columns=cols)


def _errorbar(ax, x, value, lo, hi, **kw):
    """Points with their CI (bars clamped at 0: a percentile interval need not contain the estimate)."""
    value, lo, hi = (np.asarray(v, float) for v in (value, lo, hi))
    has = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(value)
    ax.errorbar(
        np.asarray(x)[has],
        value[has],
        yerr=[np.clip(value[has] - lo[has], 0, None), np.clip(hi[has] - value[has], 0, None)],
        fmt="none",
        ecolor=kw.get("color"),
        alpha=0.6,
        capsize=3,
    )
    finite = np.isfinite(value)
    ax.plot(np.asarray(x)[finite], value[finite], **kw)


def depth_figure(depth: pd.DataFrame, encoder: str, path: str | Path, *, note: str = "") -> Path:
    """One encoder's audibility by depth: a panel per measure, the trained gate (solid) beside the shuffled
    (dashed) and untrained (dotted) controls with 95 % CIs, the codec ceiling as a grey band."""
    from sonieval.measures import HEADINGS as MEASURE_TITLES
    from sonieval.plotting import pyplot, save_figure

    plt = pyplot()
    d = depth[depth["encoder"] == encoder]
    panels = list(dict.fromkeys(zip(d["measure"], d["embedding"])))
    ncols = min(3, len(panels))
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows + 0.6), squeeze=False)
    layers = d.drop_duplicates("depth").sort_values("depth")
    gates = list(dict.fromkeys(d["gate"]))
    for ax, (measure, emb) in zip(axes.flat, panels):
        p = d[(d["measure"] == measure) & (d["embedding"] == emb)]
        for i, gate in enumerate(gates):
            g = p[p["gate"] == gate].sort_values("depth")
            if g.empty:
                continue
            color = f"C{i % 10}"
            label = gate if len(gates) > 1 else "trained"
            _errorbar(
                ax,
                g["depth"],
                g["system_value"],
                g["system_ci_low"],
                g["system_ci_high"],
                color=color,
                marker="o",
                ls="-",
                label=label,
            )
            _errorbar(
                ax,
                g["depth"] + 0.08,
                g["shuffled_value"],
                g["shuffled_ci_low"],
                g["shuffled_ci_high"],
                color=color,
                marker="s",
                ls="--",
                alpha=0.55,
                label="shuffled" if i == 0 else None,
            )
            _errorbar(
                ax,
                g["depth"] - 0.08,
                g["untrained_value"],
                g["untrained_ci_low"],
                g["untrained_ci_high"],
                color=color,
                marker="^",
                ls=":",
                alpha=0.55,
                label="untrained" if i == 0 else None,
            )
        ceiling = p[["ceiling_value", "ceiling_ci_low", "ceiling_ci_high"]].dropna(subset=["ceiling_value"])
        if not ceiling.empty:
            c = ceiling.iloc[0]
            ax.axhline(c["ceiling_value"], color="0.4", lw=1, label="codec ceiling")
            if np.isfinite(c["ceiling_ci_low"]) and np.isfinite(c["ceiling_ci_high"]):
                ax.axhspan(c["ceiling_ci_low"], c["ceiling_ci_high"], color="0.85", zorder=0)
        lower = bool(p["lower_is_better"].iloc[0])
        title = MEASURE_TITLES.get(measure, measure).split(" (")[0]
        ax.set_title(f"{title}\n{emb} ({'lower' if lower else 'higher'} is better)", fontsize=8)
        ax.set_xticks(layers["depth"], layers["layer"], fontsize=8)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    legend = {}  # every panel's entries once (the ceiling is absent from R²'s panel)
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    labels, handles = list(legend), list(legend.values())
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=7, frameon=False)
    fig.suptitle(f"Audibility by depth · {encoder}" + (f"\n{note}" if note else ""), fontsize=9)
    fig.tight_layout(rect=(0, 0.05 + 0.02 * (len(labels) > 4), 1, 1))
    return save_figure(fig, Path(path), dpi=110)


def depth_figures(depth: pd.DataFrame, fig_dir: str | Path, notes: dict[str, str] | None = None) -> list[Path]:
    """:func:`depth_figure` for every encoder of ``depth``: ``<fig_dir>/depth__<encoder>.png``."""
    if depth is None or depth.empty:
        return []
    out = []
    for enc in dict.fromkeys(depth["encoder"]):
        slug = re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(enc))
        out.append(depth_figure(depth, enc, Path(fig_dir) / f"depth__{slug}.png", note=(notes or {}).get(enc, "")))
    return out
