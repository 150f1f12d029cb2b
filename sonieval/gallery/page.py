"""The gallery page: one static HTML file with its data, the A/B engine and its script inside.

The page's data is JSON in a ``<script type="application/json">`` element (a page opened from
``file://`` cannot fetch a JSON file beside it); the A/B transport is
``sonieval/assets/ab/engine.js`` (the study's player's engine), inlined; the page's own script and
style are ``page/gallery.js`` and ``page/gallery.css`` of this package. Sounds and thumbnails stay in
files beside the page, loaded when needed (:mod:`sonieval.gallery.build`).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from sonieval.files import write_text_atomic
from sonieval.gallery.content import FACETS, GalleryContent
from sonieval.gallery.copies import CopyFormat
from sonieval.gallery.thumbs import HEIGHT, RANGE_DB, WIDTH
from sonieval.tables import CEILING

__all__ = ["PAGE_COLUMNS", "page_data", "render_page", "write_page"]

PAGE_DIR = Path(__file__).resolve().parent / "page"
PAGE_COLUMNS = 24  # systems shown at once; the filters and the column pager choose which
CEILING_FACETS = ("codec", "control")


def _folder_name(results: Path) -> str:
    """The results folder's name (``demo``; ``runs/results`` for a folder named just ``results``): no absolute
    path, so a folder moved or shared keeps a page that says the same."""
    return results.name if results.name != "results" else f"{results.parent.name}/{results.name}"


def _round(v, digits: int = 2):
    return None if v is None or not math.isfinite(float(v)) else round(float(v), digits)


def _cell(rec: dict | None, measures: list[str], values: dict, marks: dict) -> dict | None:
    """One cell as the page reads it (short keys: a controls-sized page holds thousands)."""
    if rec is None:
        return None
    if "error" in rec:
        return {"e": rec["error"]}
    out = {
        "k": rec["key"],
        "t": rec["thumb"],
        "s": _round(rec["seconds"], 4),
        "l": _round(rec.get("lufs"), 1),
        "p": _round(rec.get("true_peak_dbtp"), 1),
        "g": _round(rec.get("gain_db"), 1),
        "w": rec.get("limited", ""),
    }
    if measures:
        out["m"] = [_measure_value(values.get(m)) for m in measures]
    if marks:
        out["r"] = marks
    return out


def _measure_value(v):
    if isinstance(v, str):
        return v  # why the measure is undefined for this clip
    return _round(v, 4)


def _systems(content: GalleryContent) -> list[dict]:
    groups: dict[str, int] = {}
    out = []
    for r in content.systems.itertuples(index=False):
        out.append(
            {
                "id": r.system_id,
                "group": r.group,
                "g": groups.setdefault(r.group, len(groups)),
                "control": r.control,
                "mark": r.mark,
                "facets": {f: getattr(r, f) for f in FACETS},
                "controls": r.controls,
            }
        )
    return out


def _value_order(v: str):
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


def _facets(systems: list[dict]) -> list[dict]:
    """The filters with more than one value. The ceiling (the codec's own reconstruction, every group's
    upper reference) answers only to the codec and control filters: its other parts are not a gate's."""
    out = []
    for f in FACETS:
        values = {s["facets"][f] for s in systems if s["control"] != CEILING or f in CEILING_FACETS}
        if len(values) > 1:
            out.append({"name": f, "values": sorted(values, key=_value_order)})
    return out


def _copy_meta(spec, fmt: CopyFormat, records: list[dict]) -> dict:
    seconds = sum(r.get("seconds", 0) for r in records)
    size = sum(r.get("bytes", 0) for r in records)
    return {
        "format": f"{fmt.container}, mono, {fmt.sample_rate / 1000:g} kHz, variable bitrate",
        "rate": fmt.sample_rate,
        "kbps": round(8 * size / seconds / 1000, 1) if seconds else None,
        "target_lufs": spec.target_lufs,
        "ceiling_dbtp": spec.ceiling_dbtp,
        "max_gain_db": spec.max_gain_db,
    }


def page_data(
    content: GalleryContent, originals: dict[str, dict], cells: dict[tuple[str, str | None], dict], *, spec, fmt
) -> dict:
    """The page's JSON: meta, measures, facets, systems and one entry per clip (its original and cells)."""
    from sonieval import __version__

    mids = [m.id for m in content.measures]
    systems = _systems(content)
    clips = []
    for c in content.clips.itertuples(index=False):
        row = [
            _cell(
                cells.get((c.clip_id, s["id"])),
                mids,
                content.values.get((s["id"], c.clip_id), {}),
                content.marks.get((s["id"], c.clip_id), {}),
            )
            for s in systems
        ]
        original = _cell(originals.get(c.clip_id), [], {}, content.marks.get(("original", c.clip_id), {}))
        clips.append({"id": c.clip_id, "category": c.category, "original": original, "cells": row})
    records = [r for r in [*originals.values(), *cells.values()] if "key" in r]
    return {
        "meta": {
            "title": f"Listening gallery: {_folder_name(content.results)}",
            "data_label": content.data_label,
            "version": __version__,
            "copy": _copy_meta(spec, fmt, records),
            "thumbs": {"width": WIDTH, "height": HEIGHT, "range_db": RANGE_DB},
            "page_columns": PAGE_COLUMNS,
            "marks": content.marks_info,
            "notes": content.notes,
        },
        "measures": [
            {"id": m.id, "title": m.title, "direction": m.direction, "metric": m.metric} for m in content.measures
        ],
        "facets": _facets(systems),
        "systems": systems,
        "clips": clips,
    }


def _script_json(data: dict) -> str:
    """JSON that is safe inside a <script> element (no "</" can close it early)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")


def render_page(data: dict) -> str:
    """The whole HTML page."""
    from sonieval.assets import ENGINE_JS

    template = (PAGE_DIR / "index.html").read_text(encoding="utf-8")
    parts = {
        "{{title}}": html.escape(data["meta"]["title"]),
        "{{css}}": (PAGE_DIR / "gallery.css").read_text(encoding="utf-8"),
        "{{engine}}": ENGINE_JS.read_text(encoding="utf-8"),
        "{{script}}": (PAGE_DIR / "gallery.js").read_text(encoding="utf-8"),
        "{{data}}": _script_json(data),
    }
    for mark, text in parts.items():
        template = template.replace(mark, text.replace("</script", "<\\/script") if mark != "{{title}}" else text)
    return template


def write_page(path: Path, content: GalleryContent, originals: dict, cells: dict, *, spec, fmt) -> Path:
    """Write ``index.html`` atomically; returns its path."""
    return write_text_atomic(path, render_page(page_data(content, originals, cells, spec=spec, fmt=fmt)))
