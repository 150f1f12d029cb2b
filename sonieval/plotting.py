"""The one place that sets up matplotlib and writes figures.

Figures are drawn off-screen (the Agg backend, so no display is needed and importing
sonieval never opens a window) and written atomically like every other output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported only when a figure is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """Write ``fig`` as PNG atomically and close it; returns the path."""
    from sonieval.files import atomic_path

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", **savefig_kwargs)
    finally:
        pyplot().close(fig)
    return path


def label_points(ax: Any, x, y, labels, *, fontsize: float = 6) -> list[str]:
    """Label scatter points so that no two labels overlap and none covers a point; returns the
    labels that found no free place (left out; the caller says so).

    Greedy: points in order of height, each label tried at growing distances in 16 directions
    (a thin leader line once it sits away from its point), kept at the first place that overlaps
    no point and no label already placed and stays inside the axes. Written here rather than
    with adjustText because that library moves labels to *reduce* overlaps iteratively and can
    leave some in crowded plots; this placement never overlaps, by construction, and is
    deterministic. Call it after everything else is drawn on ``ax`` (it reads the final limits).
    """
    import numpy as np
    from matplotlib.text import Text

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    ax.autoscale_view()
    px = ax.transData.transform(np.column_stack([np.asarray(x, float), np.asarray(y, float)]))
    frame = ax.get_window_extent(renderer)
    dot = 4.0 * fig.dpi / 72.0  # half a marker, in pixels
    taken = [(cx - dot, cy - dot, cx + dot, cy + dot) for cx, cy in px]
    legend = ax.get_legend()
    if legend is not None:  # a legend drawn first keeps its place ("best" is settled by a draw)
        fig.canvas.draw()
        b = legend.get_window_extent(renderer)
        taken.append((b.x0, b.y0, b.x1, b.y1))

    def free(b) -> bool:
        inside = b.x0 >= frame.x0 and b.x1 <= frame.x1 and b.y0 >= frame.y0 and b.y1 <= frame.y1
        return inside and all(b.x1 <= x0 or b.x0 >= x1 or b.y1 <= y0 or b.y0 >= y1 for x0, y0, x1, y1 in taken)

    angles = np.deg2rad([45, -45, 135, -135, 0, 180, 90, -90, 22.5, -22.5, 157.5, -157.5, 67.5, -67.5, 112.5, -112.5])
    directions = [(float(np.round(np.cos(a), 3)), float(np.round(np.sin(a), 3))) for a in angles]
    left_out = []
    for i in np.argsort(-px[:, 1], kind="stable"):
        placed = False
        for radius in (3, 8, 14, 20, 27, 35, 44, 54, 65, 77, 90, 105, 120):
            for dx, dy in directions:
                text = ax.annotate(
                    str(labels[i]),
                    (x[i], y[i]),
                    xytext=(dx * radius, dy * radius),
                    textcoords="offset points",
                    fontsize=fontsize,
                    ha="left" if dx > 0 else "right" if dx < 0 else "center",
                    va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "#777", "shrinkA": 0, "shrinkB": 3}
                    if radius > 8
                    else None,
                )
                text.update_positions(renderer)
                box = Text.get_window_extent(
                    text, renderer
                )  # the words only (an Annotation's own extent spans its leader)
                if free(box):
                    taken.append((box.x0, box.y0, box.x1, box.y1))
                    placed = True
                    break
                text.remove()
            if placed:
                break
        if not placed:
            left_out.append(str(labels[i]))
    return left_out
