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
