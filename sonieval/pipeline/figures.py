"""Thesis-style figures: waveform stacks and loss curves.

- :func:`waveform_stack`: the original clip on top, then one row per system, each labelled with
  its ``system_id`` (the reference work's figures 4.19-4.29 stack waveforms the same way). All
  rows share the time axis; each row's amplitude axis is fixed to [-1, 1] so that amplitude
  differences (the reason for the thesis's rescaling) stay visible.
- :func:`plot_loss_curves`: training and validation loss, raw (thin) and smoothed with
  TensorBoard's debiased 0.99 EMA (bold), as the thesis read its curves.
- :func:`sonification_figure`: a waveform stack for one clip from a results folder.

matplotlib is imported inside the functions with the non-interactive Agg backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sonieval.errors import DataError, SonievalError
from sonieval.plotting import pyplot, save_figure
from sonieval.results_layout import ResultsLayout


def waveform_stack(
    original: np.ndarray,
    systems: Sequence[tuple[str, np.ndarray]],
    sample_rate: int,
    path: str | Path,
    *,
    title: str | None = None,
    original_label: str = "original",
    note: str | None = None,
) -> Path:
    """Plot the original on top and each ``(label, samples)`` below it; write a PNG atomically.
    ``note`` is printed under the title (what the marks in the labels mean)."""
    plt = pyplot()
    rows = [(original_label, np.asarray(original))] + [(label, np.asarray(x)) for label, x in systems]
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 1.3 * len(rows) + 0.6), sharex=True, squeeze=False)
    for ax, (label, x) in zip(axes[:, 0], rows):
        t = np.arange(x.size) / sample_rate
        ax.plot(t, x, linewidth=0.4, color="tab:blue" if label != original_label else "black")
        ax.set_ylim(-1.05, 1.05)
        ax.set_yticks([-1, 0, 1])
        ax.set_title(label, fontsize=8, loc="left")
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("time (s)")
    if title or note:
        fig.suptitle("\n".join(t for t in (title, note) if t), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_loss_curves(losses: pd.DataFrame, path: str | Path, *, title: str = "") -> Path:
    """Training and validation loss against the optimisation step, raw and smoothed.

    ``losses`` has columns step, split (train | validation), loss, smoothed (losses.csv).
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, split in zip(axes, ("train", "validation")):
        part = losses[losses["split"] == split]
        if not part.empty:
            ax.plot(part["step"], part["loss"], color="tab:orange", alpha=0.35, linewidth=0.8, label="raw")
            ax.plot(part["step"], part["smoothed"], color="tab:orange", linewidth=1.8, label="smoothed (EMA 0.99)")
            if (part["loss"] > 0).all() and part["loss"].max() / max(part["loss"].min(), 1e-30) > 50:
                ax.set_yscale("log")
        ax.set_title(f"{'training' if split == 'train' else 'validation'} loss (MSE)", fontsize=9)
        ax.set_xlabel("optimisation step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def sonification_figure(
    results: str | Path,
    clip_id: str,
    systems: Sequence[str] | None = None,
    out: str | Path | None = None,
    *,
    clip_seconds: float = 5.0,
) -> Path:
    """Waveform stack of one clip from a results folder (``tables/clips.parquet`` + ``tables/sonifications.parquet``).

    ``systems``: system_ids to show (default: every system with a finished sonification of the clip).
    """
    from sonieval.audio import CODEC_RATE, load_clip, read_audio
    from sonieval.tables import read_table, resolve_table_path

    results = Path(results)
    layout = ResultsLayout(results)
    clips = read_table(layout.table("clips"), "clips")
    son = read_table(layout.table("sonifications"), "sonifications")
    match = clips[clips["clip_id"] == clip_id]
    if match.empty:
        raise DataError(f"clip {clip_id!r} is not in the clips table", path=layout.table("clips"))
    rows = son[(son["clip_id"] == clip_id) & (son["status"] == "done")]
    if systems:
        unknown = [s for s in systems if s not in set(rows["system_id"])]
        if unknown:
            raise SonievalError(
                f"no finished sonification of clip {clip_id!r} for system(s) {', '.join(unknown)}",
                hint="list them with the sonifications table, or run `sonieval sonify`",
            )
        rows = rows.set_index("system_id").loc[list(systems)].reset_index()
    if rows.empty:
        raise SonievalError(f"no finished sonification of clip {clip_id!r}", hint="run `sonieval sonify PROTOCOL`")
    original = load_clip(resolve_table_path(match.iloc[0]["path"], results), CODEC_RATE, clip_seconds).samples
    marks = [_random_mark(r) for r in rows.to_dict("records")]
    stack = [
        (f"{r.system_id}{mark}", read_audio(resolve_table_path(r.path, results), CODEC_RATE)[0])
        for r, mark in zip(rows.itertuples(), marks)
    ]
    category = match.iloc[0]["category"]
    out = Path(out) if out else layout.figures / f"waveforms_{clip_id}.png"
    note = "\n".join(text for mark, text in RANDOM_MARKS.items() if any(m.strip() == mark for m in marks)) or None
    return waveform_stack(original, stack, CODEC_RATE, out, title=f"{clip_id} ({category})", note=note)


RANDOM_MARKS = {
    "†": "† decoded by a RANDOMLY INITIALISED codec: the pipeline runs, not a result",
    "‡": "‡ a RANDOMLY INITIALISED encoder: the gate really learns, not a pretrained model",
}


def _random_mark(row: dict) -> str:
    """` †` for a random codec, ` ‡` for a random encoder through a real or weight-free codec, else ''."""
    if bool(row.get("codec_random_init") or False):
        return " †"
    if bool(row.get("encoder_random_init") or False):
        return " ‡"
    return ""
