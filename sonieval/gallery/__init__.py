"""The listening gallery: see and hear a results folder's sonifications beside their originals.

``build_gallery(results)`` (``sonieval gallery PROTOCOL``) writes ``<results>/gallery/index.html``, a
static page that opens from the file system: for each clip of the listening set a row with the original,
then every system (each trained gate beside its random-twin, shuffled and untrained controls, each codec's
own reconstruction as the ceiling), each cell a spectrogram-and-waveform thumbnail on the row's scales,
the per-item measures, the marks raters gave (when a study was exported) and its sound. The sounds are
listening copies (:mod:`~sonieval.gallery.copies`: the study's loudness rules, true peak checked on the
MP3) played through the study's A/B transport: one playhead per row, switching at the same moment.

- ``content.py``: what the page shows, from the tables (compute).
- ``copies.py``: loudness-aligned, true-peak safe MP3 copies (compute).
- ``thumbs.py``: spectrogram and waveform thumbnails (compute, drawn with numpy).
- ``build.py``: makes or reuses copies and thumbnails, writes the page (orchestrate).
- ``page.py`` and ``page/``: the HTML, its script and style (render).
- ``links.py``: the link to one system's column (the leaderboard and the report use it).

The open view names every system; the study stays blind.
"""

from __future__ import annotations

from sonieval.gallery_links import GALLERY_DIR, GALLERY_PAGE, gallery_page, system_anchor, system_link

__all__ = [
    "GALLERY_DIR",
    "GALLERY_PAGE",
    "GalleryResult",
    "ListeningCopy",
    "build_gallery",
    "gallery_page",
    "make_copy",
    "read_sound_file",
    "system_anchor",
    "system_link",
]

_LAZY = {
    "GalleryResult": "sonieval.gallery.build",
    "build_gallery": "sonieval.gallery.build",
    "read_sound_file": "sonieval.gallery.build",
    "ListeningCopy": "sonieval.gallery.copies",
    "make_copy": "sonieval.gallery.copies",
}


def __getattr__(name: str):
    # The leaderboard and the report import links.py; the builder (tables, audio, the metrics' control map)
    # loads only when used, so those imports stay light and free of cycles.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sonieval.gallery' has no attribute {name!r}")
