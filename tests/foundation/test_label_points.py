"""Scatter labels that never overlap (sonieval.plotting.label_points), against a naive control."""

from __future__ import annotations

import numpy as np
from matplotlib.text import Text

from sonieval.plotting import label_points, pyplot


def _boxes(ax):
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [Text.get_window_extent(t, renderer) for t in ax.texts]


def _overlaps(boxes) -> int:
    return sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def _crowded():
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 0.05, 10), [1.0, 1.01]]
    y = np.r_[rng.normal(3, 0.05, 10), [2.0, 2.0]]
    return x, y, [f"hubert/LIN-C/lr0.005/e{i}/transpose" for i in range(12)]


def test_labels_of_a_crowded_scatter_do_not_overlap_each_other_or_the_points():
    plt = pyplot()
    x, y, labels = _crowded()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(x, y, "o")
    assert label_points(ax, x, y, labels) == []
    boxes = _boxes(ax)
    assert len(boxes) == 12 and _overlaps(boxes) == 0
    frame = ax.get_window_extent()
    assert all(b.x0 >= frame.x0 and b.x1 <= frame.x1 and b.y0 >= frame.y0 and b.y1 <= frame.y1 for b in boxes)
    points = ax.transData.transform(np.column_stack([x, y]))
    assert not any(b.contains(px, py) for b in boxes for px, py in points)
    assert sorted(t.get_text() for t in ax.texts) == sorted(labels)
    plt.close(fig)


def test_control_labels_at_a_fixed_offset_overlap():
    plt = pyplot()
    x, y, labels = _crowded()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(x, y, "o")
    for xi, yi, label in zip(x, y, labels):
        ax.annotate(label, (xi, yi), xytext=(3, 3), textcoords="offset points", fontsize=6)
    assert _overlaps(_boxes(ax)) > 5
    plt.close(fig)


def test_labels_that_find_no_place_are_returned_not_overlapped():
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2, 1.0))
    x, y = np.zeros(8), np.zeros(8)
    ax.plot(x, y, "o")
    left = label_points(ax, x, y, [f"a long label number {i}" for i in range(8)])
    assert left and _overlaps(_boxes(ax)) == 0 and len(ax.texts) == 8 - len(left)
    plt.close(fig)
