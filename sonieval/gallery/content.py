"""What a results folder's gallery shows, read from its tables (no audio is read here).

- **Rows**: the clips that have sonifications (the listening set), in clip order, each with its
  original (from the clips table).
- **Columns**: every system of the sonifications table, ordered per codec, then encoder and layer; within
  a group each trained gate is followed by its controls (random twin, shuffled, untrained) and each
  codec's group ends with its own reconstruction (the ceiling). Each system carries its parts
  (:func:`sonieval.tables.system_parts`, the filters), its controls (:func:`sonieval.tables.control_ids`,
  for the trained-minus-control sort) and the leaderboard's mark when a model was randomly initialised.
- **Cells**: one per (clip, system): the source WAV and its sha256, the per-item measures of
  ``scores/item_scores.parquet`` and, when a study was exported (``study/ratings.parquet`` or ``.csv``),
  the marks raters gave that sonification (the original: the hidden reference's marks).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sonieval.errors import DataError
from sonieval.measures import MEASURES
from sonieval.results_layout import ResultsLayout
from sonieval.tables import (
    CEILING,
    NO_CONTROL,
    TWIN,
    parse_system_id,
    read_table,
    resolve_table_path,
    system_parts,
)

__all__ = ["FACETS", "GalleryContent", "Measure", "read_content"]

# The filters the page offers, in this order (a facet with a single value is not shown).
FACETS = ("encoder", "layer", "variant", "alignment", "seed", "codec", "control", "postprocess", "lr", "epoch")
CONTROL_ORDER = {NO_CONTROL: 0, TWIN: 1, "shuffled": 2, "untrained": 3, CEILING: 4}


@dataclass(frozen=True)
class Measure:
    """One per-item measure column of the page: a metric on one embedding (or audio basis)."""

    id: str  # the metric, or "metric · embedding" when the metric was computed on several
    metric: str
    embedding: str
    title: str
    direction: str  # lower | higher


@dataclass
class GalleryContent:
    """Everything the page shows but the sounds and pictures (made from ``sources``)."""

    results: Path
    systems: pd.DataFrame  # one row per system, in column order: system_id, parts, control, group, controls, mark
    clips: pd.DataFrame  # one row per clip: clip_id, category, original (path), original_sha256 (None: unknown)
    cells: pd.DataFrame  # clip_id, system_id, path, sha256, status, error, seconds
    measures: list[Measure] = field(default_factory=list)
    values: dict = field(default_factory=dict)  # (system_id, clip_id) -> {measure id: value or error text}
    marks: dict = field(default_factory=dict)  # (system_id | "original", clip_id) -> {attribute: [mean, n]}
    marks_info: dict = field(default_factory=dict)  # attributes, scale, n_ratings, simulated, source
    data_label: str = ""
    notes: list[str] = field(default_factory=list)


def read_content(results: str | os.PathLike, protocol: str | os.PathLike | None = None) -> GalleryContent:
    """The gallery content of a results folder; one clear line when its sonifications are missing."""
    from sonieval.data.results_folder import require_tables

    results = Path(results)
    require_tables(results, ["clips", "sonifications"], protocol)
    son = read_table(ResultsLayout(results).table("sonifications"), "sonifications")
    clips = read_table(ResultsLayout(results).table("clips"), "clips")
    cells = _cells(son, clips, results)
    content = GalleryContent(results, _systems(cells), _clips(cells, clips, results), cells)
    content.measures, content.values = _item_values(results, cells)
    content.marks, content.marks_info = _marks(results)
    content.data_label = _data_label(results)
    if not content.measures:
        content.notes.append("no per-item measures yet (scores/item_scores.parquet): run `sonieval score` to add them")
    return content


def _cells(son: pd.DataFrame, clips: pd.DataFrame, results: Path) -> pd.DataFrame:
    """One row per (clip, system) of the sonifications table whose clip is in the clips table."""
    known = set(clips["clip_id"].astype(str))
    son = son.assign(clip_id=son["clip_id"].astype(str), system_id=son["system_id"].astype(str))
    son = son[son["clip_id"].isin(known)]
    if son.empty:
        raise DataError(
            "no sonification of a clip in the clips table",
            path=ResultsLayout(results).table("sonifications"),
            hint="run `sonieval sonify PROTOCOL` (or `sonieval run PROTOCOL`) for this results folder",
        )
    son = son.drop_duplicates(["clip_id", "system_id"], keep="last")
    out = son[["clip_id", "system_id", "path", "sha256", "status", "error"]].copy()
    out["path"] = [str(resolve_table_path(p, results)) if isinstance(p, str) else None for p in out["path"]]
    out["sha256"] = [s if isinstance(s, str) and s else None for s in out["sha256"]]
    out["codec"] = son["codec"].to_numpy() if "codec" in son.columns else None
    for col in ("encoder_random_init", "codec_random_init", "random_init"):
        out[col] = son[col].astype("boolean").to_numpy() if col in son.columns else pd.NA
    return out.reset_index(drop=True)


def _mark(rows: pd.DataFrame) -> str:
    """The leaderboard's mark (:func:`sonieval.tables.random_mark`): † a randomly initialised codec,
    ‡ a randomly initialised encoder only; a table with the single ``random_init`` flag: † when it is set."""
    from sonieval.tables import RANDOM_CODEC_MARK, RANDOM_ENCODER_MARK

    def flag(col: str) -> bool | None:
        got = rows[col].dropna() if col in rows else pd.Series([], dtype=bool)
        return bool(got.astype(bool).any()) if len(got) else None

    codec, encoder = flag("codec_random_init"), flag("encoder_random_init")
    if codec is None:
        return RANDOM_CODEC_MARK if flag("random_init") else ""
    return RANDOM_CODEC_MARK if codec else RANDOM_ENCODER_MARK if encoder else ""


def _system_row(system_id: str, rows: pd.DataFrame) -> dict:
    try:
        parts = system_parts(system_id)
        key = parse_system_id(system_id)
        slot, depth = (key.encoder, key.slot.depth) if parts["control"] != CEILING else ("", 0)
        family = key.family
    except DataError:  # a system named freely (folder studies): a group of its own
        parts = {f: None for f in FACETS} | {"control": NO_CONTROL}
        slot, depth, family = system_id, 0, (system_id,)
    primary = not parts.get("codec") and parts["control"] != CEILING  # a gate onto the protocol's first codec
    if primary and "codec" in rows and rows["codec"].notna().any():
        parts["codec"] = str(rows["codec"].dropna().iloc[0])  # its id names none: the table's column does
    codec = parts.get("codec") or ""
    ceiling = parts["control"] == CEILING
    group = f"{codec} · ceiling" if ceiling else " · ".join(x for x in (parts["encoder"], parts["layer"], codec) if x)
    return {
        "system_id": system_id,
        **{f: ("" if parts.get(f) is None else str(parts[f])) for f in FACETS},
        "group": group,
        "mark": _mark(rows),
        "_primary": primary,
        "_order": (
            codec,
            ceiling,
            str(parts.get("encoder") or slot),
            depth,
            str(family),
            CONTROL_ORDER.get(parts["control"], 5),
            float(parts.get("lr") or 0),
            int(parts.get("epoch") or 0),
            system_id,
        ),
    }


def _systems(cells: pd.DataFrame) -> pd.DataFrame:
    """Every system in column order, with its parts, group, mark and controls (indices into this table)."""
    from sonieval.tables import control_ids

    rows = [_system_row(sid, g) for sid, g in cells.groupby("system_id", sort=False)]
    first = {r["codec"] for r in rows if r["_primary"]}  # the protocol's first codec leads, others follow by name
    rows.sort(key=lambda r: (r["codec"] not in first, *r["_order"]))
    systems = pd.DataFrame(rows).drop(columns=["_order", "_primary"])
    # the primary codec (the gates' whose system_id names none: the table's codec column says which) has the
    # ceiling those gates are compared with
    primary = next(iter(first)) if len(first) == 1 else None
    index = {sid: i for i, sid in enumerate(systems["system_id"])}
    systems["controls"] = [
        {k: index[v] for k, v in (control_ids(sid, primary) or {}).items() if v in index}
        for sid in systems["system_id"]
    ]
    return systems


def _clips(cells: pd.DataFrame, clips: pd.DataFrame, results: Path) -> pd.DataFrame:
    """The rows: every clip with a sonification, in clip order, with its original."""
    wanted = sorted(cells["clip_id"].unique())
    table = clips.assign(clip_id=clips["clip_id"].astype(str)).drop_duplicates("clip_id").set_index("clip_id")
    out = []
    for clip in wanted:
        r = table.loc[clip]
        path = resolve_table_path(r["path"], results) if isinstance(r["path"], str) else None
        out.append(
            {
                "clip_id": clip,
                "category": str(r["category"]) if pd.notna(r["category"]) else "",
                "original": str(path) if path is not None else None,
                "original_status": str(r["status"]) if pd.notna(r["status"]) else "ok",
                "original_error": r["error"] if isinstance(r["error"], str) else None,
            }
        )
    return pd.DataFrame(out)


def _item_values(results: Path, cells: pd.DataFrame) -> tuple[list[Measure], dict]:
    """The measure columns (catalogue order) and each cell's values (an undefined one: its reason)."""
    path = ResultsLayout(results).scores.item_scores_table
    if not path.is_file():
        return [], {}
    items = read_table(path, "item_scores")
    items = items.assign(system_id=items["system_id"].astype(str), clip_id=items["clip_id"].astype(str))
    pairs = items[["metric", "embedding"]].drop_duplicates()
    per_metric = pairs.groupby("metric")["embedding"].nunique()
    order = {name: i for i, name in enumerate(MEASURES)}
    measures = []
    for r in sorted(
        pairs.itertuples(index=False), key=lambda r: (order.get(r.metric, len(order)), r.metric, r.embedding)
    ):
        entry = MEASURES.get(r.metric)
        mid = r.metric if per_metric[r.metric] == 1 else f"{r.metric} · {r.embedding}"
        direction = entry.direction if entry else _direction_column(items, r.metric)
        measures.append(Measure(mid, r.metric, str(r.embedding), entry.title if entry else r.metric, direction))
    ids = {(m.metric, m.embedding): m.id for m in measures}
    values: dict = {}
    errors = items["error"] if "error" in items.columns else pd.Series([None] * len(items), index=items.index)
    for r, err in zip(items.itertuples(index=False), errors):
        v = float(r.value) if r.value is not None and pd.notna(r.value) else math.nan
        shown = v if math.isfinite(v) else (err if isinstance(err, str) and err else "undefined")
        values.setdefault((r.system_id, r.clip_id), {})[ids[(r.metric, r.embedding)]] = shown
    return measures, values


def _direction_column(items: pd.DataFrame, metric: str) -> str:
    if "direction" in items.columns:
        got = items.loc[items["metric"] == metric, "direction"].dropna()
        if len(got) and str(got.iloc[0]) in ("lower", "higher"):
            return str(got.iloc[0])
    return "lower"


def _marks(results: Path) -> tuple[dict, dict]:
    """Mean mark and count per (system or "original", clip, attribute), from the study's ratings export."""
    study = ResultsLayout(results).study_folder
    path = next((p for p in (study.ratings_table, study.ratings_csv) if p.is_file()), None)
    if path is None:
        return {}, {}
    ratings = read_table(path, "ratings")
    simulated = "simulated" in ratings.columns and bool(ratings["simulated"].fillna(False).astype(bool).any())
    r = ratings[ratings["role"].isin(["sonification", "reference"]) & ratings["mark"].notna()]
    r = r.assign(who=np.where(r["role"] == "reference", "original", r["system_id"].astype(str)))
    out: dict = {}
    for (who, clip, attribute), g in r.groupby(["who", r["clip_id"].astype(str), "attribute"]):
        marks = g["mark"].astype(float)
        out.setdefault((who, clip), {})[str(attribute)] = [round(float(marks.mean()), 3), int(len(marks))]
    scale = [None, None]
    for i, col in enumerate(("scale_min", "scale_max")):
        if col in ratings.columns and ratings[col].notna().any():
            scale[i] = int(ratings[col].dropna().iloc[0])
    info = {
        "source": path.relative_to(results).as_posix(),
        "attributes": sorted(r["attribute"].astype(str).unique()),
        "n_ratings": int(len(r)),
        "n_raters": int(r["rater_id"].nunique()),
        "scale": scale,
        "simulated": simulated,
    }
    return out, info


def _data_label(results: Path) -> str:
    from sonieval.data.results_folder import read_pin

    try:
        pin = read_pin(results)
    except DataError:
        return ""
    return pin.describe() if pin is not None else ""
