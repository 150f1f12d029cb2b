"""Where a system's examples are: moved to :mod:`sonieval.gallery_links` (issue 23), below the pages that
link to the gallery; re-exported here, where older code imports it from."""

from __future__ import annotations

from sonieval.gallery_links import (  # noqa: F401
    ANCHOR_PREFIX,
    GALLERY_DIR,
    GALLERY_PAGE,
    __all__,
    gallery_page,
    in_results_folder,
    system_anchor,
    system_link,
)
