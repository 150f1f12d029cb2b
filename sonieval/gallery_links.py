"""Where a system's examples are: the gallery page of a results folder and the fragment that opens it
at one system's column. Pages that link to the gallery (the leaderboard, the report) use these, so the
link and the page that answers it agree. It stands on the ground floor, below the pages of metrics and
stats and the gallery itself, so none of them imports another for it (``sonieval.gallery.links`` re-exports
it).

The fragment is ``#system=<system_id>`` (percent-encoded); the page shows that system's column (widening
its filters when they hid it), scrolls to it and marks it. The column's header element carries the id
``system=<system_id>`` too.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from sonieval.results_layout import GALLERY, GALLERY_PAGE, ResultsLayout

__all__ = ["GALLERY_DIR", "GALLERY_PAGE", "gallery_page", "in_results_folder", "system_anchor", "system_link"]

GALLERY_DIR = GALLERY  # <results>/gallery/ (sonieval.results_layout)
ANCHOR_PREFIX = "system="


def gallery_page(results_dir: str | os.PathLike) -> Path:
    """``<results>/gallery/index.html``."""
    return ResultsLayout(Path(results_dir)).gallery_page


def system_anchor(system_id: str) -> str:
    """The fragment (without ``#``) that opens the gallery at ``system_id``'s column."""
    return ANCHOR_PREFIX + quote(str(system_id), safe="/@.-_")


def system_link(system_id: str, page_dir: str | os.PathLike, results_dir: str | os.PathLike) -> str:
    """The relative URL from a page in ``page_dir`` to ``system_id``'s column of ``results_dir``'s gallery."""
    target = gallery_page(results_dir)
    rel = os.path.relpath(target, Path(page_dir))
    return Path(rel).as_posix() + "#" + system_anchor(system_id)


def in_results_folder(page_dir: str | os.PathLike) -> Path | None:
    """The results folder a page folder sits in (``<results>/scores``, ``<results>/report``): the parent
    that holds ``tables/sonifications.parquet``; None for pages written elsewhere (folder scores, a report
    given ``--out`` outside the results), which have no gallery to link."""
    parent = Path(page_dir).resolve().parent
    return parent if ResultsLayout(parent).table("sonifications").is_file() else None
