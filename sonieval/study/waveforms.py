"""Waveform pictures: the original above the stimulus, rendered once and cached on disk.

Rendering with matplotlib takes tens of milliseconds, too slow to do on every page view,
so each (original, stimulus) pair is drawn once into ``<study_dir>/waveforms/<name>.png``
when the study is created; the app only reads the PNG. Both panels share the time axis and
the amplitude axis so that shapes and loudness compare honestly (the reference work
compared waveforms by eye in Audacity, each at full scale).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sonieval.audio import read_audio

FIG_SIZE = (8.0, 3.2)
DPI = 80
# Down-sample to this many min/max columns: enough for an 640-pixel-wide picture.
COLUMNS = 1200


def _envelope(samples: np.ndarray, columns: int = COLUMNS) -> tuple[np.ndarray, np.ndarray]:
    """Min/max per column, so peaks survive the down-sampling (plain striding drops them)."""
    n = len(samples)
    if n <= columns:
        return samples, samples
    edges = np.linspace(0, n, columns + 1).astype(int)
    lo = np.minimum.reduceat(samples, edges[:-1])
    hi = np.maximum.reduceat(samples, edges[:-1])
    return lo, hi


def render_waveform_pair(
    original: Path, stimulus: Path, dest: Path, *, top_label: str = "Original", bottom_label: str = "Sonification"
) -> Path:
    """Draw ``original`` above ``stimulus`` into ``dest`` (PNG), unless it exists already."""
    if dest.exists():
        return dest
    from sonieval.plotting import pyplot, save_figure

    plt = pyplot()

    a, rate_a, _ = read_audio(original)
    b, rate_b, _ = read_audio(stimulus)
    peak = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))), 1e-3) * 1.05
    fig, axes = plt.subplots(2, 1, figsize=FIG_SIZE, dpi=DPI, sharex=True, sharey=True)
    for ax, x, rate, label, colour in (
        (axes[0], a, rate_a, top_label, "#1f4e79"),
        (axes[1], b, rate_b, bottom_label, "#8a3b12"),
    ):
        lo, hi = _envelope(x)
        t = np.linspace(0, len(x) / rate, len(lo))
        ax.fill_between(t, lo, hi, color=colour, linewidth=0.4)
        ax.set_ylim(-peak, peak)
        ax.set_ylabel(label, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.axhline(0, color="#999999", linewidth=0.4)
    axes[1].set_xlabel("time (s)", fontsize=8)
    # fixed margins, measured once from tight_layout(pad=0.4) on this size: tight_layout measures
    # every label by drawing the figure once more (40 % of the time of a study's hundreds of pictures)
    fig.subplots_adjust(left=0.085, right=0.99, top=0.975, bottom=0.135, hspace=0.06)
    return save_figure(fig, dest)
