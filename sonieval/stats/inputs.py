"""Reading and checking the report's inputs: ratings, scores and per-item scores.

Every check ends in either a defined result (rows dropped and counted, a warning the report
prints) or one :class:`~sonieval.errors.DataError` line naming the file, the problem and what
to do. Metric directions live here, so that every part of the report agrees on which way is
"better".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sonieval.errors import DataError
from sonieval.files import sha256_file
from sonieval.measures import direction as catalogue_direction
from sonieval.measures import measure_names
from sonieval.rating_attributes import RATING_ATTRIBUTES
from sonieval.tables import RATING_ROLES, check_columns, read_table

__all__ = [
    "METRIC_DIRECTIONS",
    "OTHER_METRIC_DIRECTIONS",
    "metric_direction",
    "InputFile",
    "Ratings",
    "Scores",
    "check_ratings",
    "check_scores",
    "check_item_scores",
    "load_ratings",
    "load_scores",
    "load_item_scores",
    "read_ratings",
    "read_scores",
    "read_item_scores",
    "read_clip_categories",
    "match_systems",
    "RATINGS_REQUIRED",
    "SCORES_REQUIRED",
    "ITEM_SCORES_REQUIRED",
    "CLIPS_REQUIRED",
    "DUPLICATE_POLICIES",
]

# Direction of each known metric. ``lower`` = smaller values are better (distances: KAD, FAD,
# per-item embedding distances); ``higher`` = larger values are better (correlations,
# similarities). sonieval's own measures take theirs from the measure catalogue
# (sonieval.measures); the names below are those other tools write into a scores table. A table may
# also declare its own with a ``direction`` column (lower/higher, as the score stage writes for
# per-item measures) or a ``higher_is_better`` column.
# The report orients every metric so that a *positive* correlation with the human marks means
# "the metric agrees with the listeners" (marks are higher-is-better).
OTHER_METRIC_DIRECTIONS: dict[str, str] = {
    "mmd": "lower",
    "distance": "lower",
    "embedding_distance": "lower",
    "cosine_distance": "lower",
    "l2_distance": "lower",
    "mel_distance": "lower",
    "log_spectral_distance": "lower",
    "mse": "lower",
    "mae": "lower",
    "correlation": "higher",
    "cosine_similarity": "higher",
    "si_sdr": "higher",
    "snr": "higher",
    "pesq": "higher",
}
METRIC_DIRECTIONS: dict[str, str] = {
    **{name: catalogue_direction(name) for name in measure_names()},
    **OTHER_METRIC_DIRECTIONS,
}


def metric_direction(metric: str, declared: object = None) -> str | None:
    """``'lower'`` / ``'higher'`` for a metric name, or None when it is not known.

    A declared ``higher_is_better`` value (from the table) wins; otherwise the exact name,
    then a known suffix (``*_distance`` lower, ``*_correlation``/``*_similarity`` higher).
    """
    if declared is not None and not (isinstance(declared, float) and np.isnan(declared)):
        text = str(declared).strip().lower()
        if text in ("1", "true", "yes", "higher"):
            return "higher"
        if text in ("0", "false", "no", "lower"):
            return "lower"
    name = str(metric).strip().lower()
    if catalogue_direction(name) is not None:  # the catalogue, measures registered since import included
        return catalogue_direction(name)
    if name in METRIC_DIRECTIONS:
        return METRIC_DIRECTIONS[name]
    if name.endswith(("_distance", "_error", "_loss")) or name.startswith(("kad", "fad")):
        return "lower"
    if name.endswith(("_correlation", "_similarity", "_snr", "_sdr")):
        return "higher"
    return None


@dataclass
class InputFile:
    """Where a table came from: path, content hash, rows."""

    kind: str
    path: str
    sha256: str
    n_rows: int

    def label(self) -> str:
        return f"{self.kind}={Path(self.path).name}@{self.sha256[:12]}"


# The columns the statistics use. ``role`` (absent: every row is a sonification) and ``trial_id``
# (absent: duplicates are judged per stimulus) are read when present; the rest of the study
# export's columns are welcome but not needed.
RATINGS_REQUIRED = ["rater_id", "clip_id", "system_id", "attribute", "mark"]
SCORES_REQUIRED = ["system_id", "metric", "value"]
ITEM_SCORES_REQUIRED = ["system_id", "clip_id", "metric", "value"]
DUPLICATE_POLICIES = ("first", "last", "mean")


@dataclass
class Ratings:
    """Checked ratings: one row per mark, with the problems found on the way."""

    table: pd.DataFrame
    scale_min: int
    scale_max: int
    source: InputFile | None
    simulated: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class Scores:
    """Checked system-level scores (overall and per class) with declared directions."""

    overall: pd.DataFrame  # system_id, metric_key, metric, embedding, reference_set, value, direction, ...
    per_class: pd.DataFrame
    source: InputFile | None
    notes: list[str] = field(default_factory=list)


def _is_simulated(df: pd.DataFrame) -> bool:
    if "simulated" not in df.columns:
        return False
    col = df["simulated"]
    if col.dtype == bool:
        return bool(col.any())
    return bool(col.astype(str).str.strip().str.lower().isin(["1", "true", "yes", "simulated"]).any())


def _source(path: str | os.PathLike | None, kind: str, df: pd.DataFrame) -> InputFile | None:
    if path is None:
        return None
    return InputFile(kind=kind, path=os.fspath(path), sha256=sha256_file(path), n_rows=int(len(df)))


def check_ratings(
    df: pd.DataFrame,
    *,
    scale_min: int = 1,
    scale_max: int = 5,
    path: str | os.PathLike | None = None,
    simulated: bool | None = None,
    duplicates: str | None = None,
    attributes: Sequence[str] | None = None,
) -> Ratings:
    """Check a ratings table (the columns in RATINGS_REQUIRED) against the declared integer scale.

    Rows without a rater, clip, system, role, attribute or mark are dropped and counted (a
    half-finished session leaves such rows); a mark outside ``[scale_min, scale_max]``, a
    non-integer mark, an unknown role or attribute is an error, because it means the table is
    not on the declared scale or not a ratings table. ``attributes``: the rating attributes the
    study asked (a protocol's ``study.attributes``); default: the catalogue's
    (:data:`sonieval.rating_attributes.RATING_ATTRIBUTES`). Duplicated (rater, trial, attribute) rows
    are an error naming the first few, unless ``duplicates`` is ``first``, ``last`` (by
    ``submitted_at`` when present, else table order) or ``mean`` (their mean mark); the choice
    and the rows it touched are in the notes, and every later stage sees the same rows.
    """
    where = path or "ratings"
    check_columns(df, "ratings", where, RATINGS_REQUIRED)
    if scale_min >= scale_max:
        raise DataError(f"scale {scale_min}..{scale_max} is empty", path=where, hint="use --scale-min < --scale-max")
    if duplicates is not None and duplicates not in DUPLICATE_POLICIES:
        raise DataError(
            f"unknown duplicates policy {duplicates!r}", path=where, hint=f"use one of {', '.join(DUPLICATE_POLICIES)}"
        )
    df, notes = _complete_rows(df, where, scale_min, scale_max)
    _check_values(df, where, scale_min, scale_max, tuple(attributes or RATING_ATTRIBUTES))
    df["mark"] = df["mark"].to_numpy(dtype=float).astype(np.int64)
    df, dup_note = resolve_duplicates(df, duplicates, where)
    if dup_note:
        notes.append(dup_note)
    # Categorical ids: every later groupby/filter works on integer codes (800k marks: ~10× faster
    # than Arrow-backed strings).
    for col in ("rater_id", "clip_id", "system_id", "role", "attribute"):
        df[col] = df[col].astype(str).astype("category")
    if simulated is None:
        simulated = _is_simulated(df)
    return Ratings(
        table=df.reset_index(drop=True),
        scale_min=scale_min,
        scale_max=scale_max,
        source=_source(path, "ratings", df) if path is not None else None,
        simulated=bool(simulated),
        notes=notes,
    )


def _complete_rows(df: pd.DataFrame, where, scale_min: int, scale_max: int) -> tuple[pd.DataFrame, list[str]]:
    """Ids as text, marks as numbers, rows with an empty required cell dropped and counted."""
    df = df.copy()
    notes: list[str] = []
    n_in = len(df)
    if "role" not in df.columns:
        df["role"] = RATING_ROLES[0]
        notes.append("the ratings have no role column: every row is taken as a sonification mark")
    for col in ("rater_id", "clip_id", "system_id", "trial_id", "study_id"):
        if col in df.columns:
            df[col] = df[col].where(df[col].isna(), df[col].astype(str))
    mark = pd.to_numeric(df["mark"], errors="coerce")
    bad_text = df["mark"].notna() & mark.isna()
    if bad_text.any():
        example = df.loc[bad_text, "mark"].iloc[0]
        raise DataError(
            f"column mark has {int(bad_text.sum())} non-numeric value(s), e.g. {example!r}",
            path=where,
            hint=f"marks must be integers on the declared scale {scale_min}..{scale_max}",
        )
    df["mark"] = mark
    required = ["rater_id", "clip_id", "system_id", "role", "attribute", "mark"]
    missing = df[required].isna().any(axis=1)
    if missing.any():
        counts = {c: int(df[c].isna().sum()) for c in required if df[c].isna().any()}
        notes.append(
            f"{int(missing.sum())} of {n_in} rating rows dropped because a required cell is empty "
            f"({', '.join(f'{c}: {n}' for c, n in counts.items())})"
        )
        df = df.loc[~missing]
    if df.empty:
        raise DataError(
            "no complete rating rows",
            path=where,
            hint="every row needs rater_id, clip_id, system_id, role, attribute and mark",
        )
    df["role"] = df["role"].astype(str).str.strip().str.lower()
    df["attribute"] = df["attribute"].astype(str).str.strip().str.lower()
    return df, notes


def _check_values(df: pd.DataFrame, where, scale_min: int, scale_max: int, attributes: tuple[str, ...]) -> None:
    """Known roles and attributes; integer marks on the declared scale (else one DataError)."""
    for col, allowed in (("role", RATING_ROLES), ("attribute", attributes)):
        bad = ~df[col].isin(allowed)
        if bad.any():
            more = (
                "; a study's own: its protocol's study.attributes (--protocol) or attributes="
                if col == "attribute"
                else ""
            )
            raise DataError(
                f"column {col} has unknown value(s) {sorted(df.loc[bad, col].unique())[:5]}",
                path=where,
                hint=f"allowed: {', '.join(allowed)}{more}",
            )
    marks = df["mark"].to_numpy(dtype=float)
    not_int = marks != np.round(marks)
    if not_int.any():
        raise DataError(
            f"column mark has {int(not_int.sum())} non-integer value(s), e.g. {marks[not_int][0]}",
            path=where,
            hint=f"marks must be integers on the declared scale {scale_min}..{scale_max}",
        )
    outside = (marks < scale_min) | (marks > scale_max)
    if outside.any():
        vals = sorted(set(marks[outside].astype(int).tolist()))[:5]
        raise DataError(
            f"{int(outside.sum())} mark(s) outside the declared scale {scale_min}..{scale_max} (e.g. {vals})",
            path=where,
            hint="declare the study's scale with --scale-min/--scale-max, or fix the marks",
        )


def _duplicate_key(df: pd.DataFrame) -> tuple[pd.Series, str]:
    """One text key per (rater, trial, attribute); a row without a trial_id is keyed by its stimulus."""
    stimulus = (
        "stimulus " + df["system_id"].astype(str) + " | " + df["clip_id"].astype(str) + " | " + df["role"].astype(str)
    )
    if "trial_id" in df.columns:
        trial = df["trial_id"].astype(object).where(df["trial_id"].notna(), stimulus)
        label = "(rater_id, trial_id, attribute)"
    else:
        trial = stimulus
        label = "(rater_id, stimulus, attribute) (no trial_id column)"
    return df["rater_id"].astype(str) + " / " + trial.astype(str) + " / " + df["attribute"].astype(str), label


def resolve_duplicates(df: pd.DataFrame, policy: str | None, where) -> tuple[pd.DataFrame, str]:
    """Refuse duplicated (rater, trial, attribute) rows, or keep one per key by ``policy``."""
    key, label = _duplicate_key(df)
    dup = key.duplicated(keep=False)
    if not dup.any():
        return df, ""
    groups = key[dup]
    n_keys = int(groups.nunique())
    n_extra = int(dup.sum()) - n_keys
    examples = ", ".join(f"({k})" for k in pd.unique(groups)[:3]) + (" …" if n_keys > 3 else "")
    stim = df.loc[dup, ["system_id", "clip_id", "role"]].astype(str).assign(key=groups.to_numpy())
    conflicting = stim.groupby("key").nunique().gt(1).any(axis=1)
    if conflicting.any():
        raise DataError(
            f"{int(conflicting.sum())} {label} key(s) name different stimuli in their rows, "
            f"e.g. ({conflicting[conflicting].index[0]})",
            path=where,
            hint="a trial is one stimulus: fix the trial ids before the report",
        )
    if policy is None:
        raise DataError(
            f"{n_extra} duplicated {label} row(s) in {n_keys} key(s), e.g. {examples}",
            path=where,
            hint="keep one per key with --duplicates first|last|mean (ReportOptions.duplicates)",
        )
    order = df
    if "submitted_at" in df.columns:
        when = pd.to_datetime(df["submitted_at"], errors="coerce", utc=True)
        order = df.assign(_when=when).sort_values("_when", kind="stable", na_position="first").drop(columns="_when")
    okey = key.loc[order.index]
    if policy == "mean":
        marks = order["mark"].astype(float).groupby(okey.to_numpy()).transform("mean")
        kept = order.assign(mark=marks.to_numpy()).loc[~okey.duplicated(keep="first").to_numpy()]
        how = "their mean mark kept"
    else:
        kept = order.loc[~okey.duplicated(keep=policy).to_numpy()]
        by = "submitted_at" if "submitted_at" in df.columns else "table order"
        how = f"the {policy} by {by} kept"
    kept = kept.sort_index()
    note = (
        f"{n_extra} duplicated {label} row(s) in {n_keys} key(s), e.g. {examples}: {how} "
        f"(--duplicates {policy}); every statistic uses the {len(kept)} remaining rows"
    )
    return kept, note


def declared_scale(df: pd.DataFrame, scale_min: int | None, scale_max: int | None) -> tuple[int, int, str]:
    """The scale to check marks against: given values win, else the table's own ``scale_min``/
    ``scale_max`` columns (the study export writes them), else 1–5."""
    found = []
    for name, given, default in (("scale_min", scale_min, 1), ("scale_max", scale_max, 5)):
        if given is not None:
            found.append((int(given), ""))
            continue
        values = pd.to_numeric(df[name], errors="coerce").dropna().unique() if name in df.columns else []
        if len(values) == 1:
            found.append((int(values[0]), f"{name} {int(values[0])} from the table's {name} column"))
        else:
            found.append((default, ""))
    note = "; ".join(n for _, n in found if n)
    return found[0][0], found[1][0], note


def load_ratings(
    path: str | os.PathLike,
    *,
    scale_min: int | None = None,
    scale_max: int | None = None,
    duplicates: str | None = None,
    attributes: Sequence[str] | None = None,
) -> Ratings:
    df = read_table(path, "ratings", RATINGS_REQUIRED)
    scale_min, scale_max, note = declared_scale(df, scale_min, scale_max)
    ratings = check_ratings(
        df, scale_min=scale_min, scale_max=scale_max, path=path, duplicates=duplicates, attributes=attributes
    )
    if note:
        ratings.notes.append(note)
    ratings.source = InputFile("ratings", os.fspath(path), sha256_file(path), int(len(df)))
    return ratings


def _declared(df: pd.DataFrame) -> list:
    """A table's own direction declaration per row (``direction`` or ``higher_is_better``), else None."""
    if "direction" in df.columns:
        return list(df["direction"])
    if "higher_is_better" in df.columns:
        return list(df["higher_is_better"])
    return [None] * len(df)


def _metric_key(df: pd.DataFrame) -> pd.Series:
    """One name per (metric, embedding, reference set), short when there is no ambiguity."""
    emb = df["embedding"].fillna("").astype(str)
    ref = df["reference_set"].fillna("").astype(str)
    key = df["metric"].astype(str)
    if emb.groupby(key).nunique().max() > 1 or ref.groupby(key).nunique().max() > 1:
        key = key + "[" + emb + (("|" + ref) if ref.groupby(df["metric"]).nunique().max() > 1 else "") + "]"
    return key


def check_scores(df: pd.DataFrame, *, path: str | os.PathLike | None = None) -> Scores:
    """Split a scores table into overall and per-class rows and attach each metric's direction.

    A metric whose direction is unknown (not in the measure catalogue nor :data:`METRIC_DIRECTIONS`, no
    ``higher_is_better`` column) is left out with a note rather than guessed: a wrong sign would
    turn agreement into disagreement.
    """
    where = path or "scores"
    check_columns(df, "scores", where, SCORES_REQUIRED)
    df = df.copy()
    notes: list[str] = []
    for col in ("embedding", "reference_set"):
        if col not in df.columns:
            df[col] = ""
    df["system_id"] = df["system_id"].astype(str)
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    if "category" not in df.columns:
        df["category"] = ""
    df["category"] = [("" if pd.isna(v) else str(v)) for v in df["category"]]
    df["direction"] = [metric_direction(m, d) for m, d in zip(df["metric"], _declared(df))]
    unknown = sorted(df.loc[df["direction"].isna(), "metric"].astype(str).unique())
    if unknown:
        notes.append(
            f"metric(s) {', '.join(unknown)} left out: direction unknown (add a higher_is_better column "
            "to the scores table, or declare the measure in the catalogue: sonieval.measures.register_measure)"
        )
        df = df.loc[df["direction"].notna()]
    bad = ~np.isfinite(df["value"].to_numpy(dtype=float))
    if bad.any():
        notes.append(
            f"{int(bad.sum())} score row(s) with a missing or non-finite value left out "
            f"(metrics: {', '.join(sorted(df.loc[bad, 'metric'].astype(str).unique()))})"
        )
        df = df.loc[~bad]
    if df.empty:
        raise DataError("no usable score rows", path=where, hint="need finite values of metrics with a known direction")
    df["metric_key"] = _metric_key(df)
    overall = df.loc[df["category"] == ""].copy()
    per_class = df.loc[df["category"] != ""].copy()
    dup = overall.duplicated(["system_id", "metric_key"])
    if dup.any():
        raise DataError(
            f"{int(dup.sum())} duplicate overall score row(s), "
            f"e.g. {overall.loc[dup, ['system_id', 'metric_key']].iloc[0].tolist()}",
            path=where,
            hint="one row per system, metric, embedding and reference set",
        )
    return Scores(
        overall=overall.reset_index(drop=True), per_class=per_class.reset_index(drop=True), source=None, notes=notes
    )


def load_scores(path: str | os.PathLike) -> Scores:
    df = read_table(path, "scores", SCORES_REQUIRED)
    scores = check_scores(df, path=path)
    scores.source = InputFile("scores", os.fspath(path), sha256_file(path), int(len(df)))
    return scores


def check_item_scores(df: pd.DataFrame, *, path: str | os.PathLike | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Per-item scores with each metric's direction; unknown directions and non-finite values left
    out with a note."""
    check_columns(df, "item_scores", path or "item_scores", ITEM_SCORES_REQUIRED)
    df = df.copy()
    notes: list[str] = []
    if "embedding" not in df.columns:
        df["embedding"] = ""
    df["system_id"] = df["system_id"].astype(str)
    df["clip_id"] = df["clip_id"].astype(str)
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df["direction"] = [metric_direction(m, d) for m, d in zip(df["metric"], _declared(df))]
    unknown = sorted(df.loc[df["direction"].isna(), "metric"].astype(str).unique())
    if unknown:
        notes.append(f"item metric(s) {', '.join(unknown)} left out: direction unknown (add a higher_is_better column)")
    bad = ~np.isfinite(df["value"].to_numpy(dtype=float))
    if bad.any():
        notes.append(f"{int(bad.sum())} item score row(s) with a missing or non-finite value left out")
    df = df.loc[df["direction"].notna() & ~bad]
    if "reference_set" not in df.columns:
        df["reference_set"] = ""
    df["metric_key"] = _metric_key(df) if not df.empty else pd.Series(dtype=str)
    return df.reset_index(drop=True), notes


def load_item_scores(path: str | os.PathLike) -> tuple[pd.DataFrame, InputFile, list[str]]:
    df = read_table(path, "item_scores", ITEM_SCORES_REQUIRED)
    checked, notes = check_item_scores(df, path=path)
    return checked, InputFile("item_scores", os.fspath(path), sha256_file(path), int(len(checked))), notes


def match_systems(
    ratings: pd.DataFrame, systems_scored: set[str], *, path: str | os.PathLike | None = None
) -> tuple[list[str], list[str]]:
    """Systems rated and scored; a note about the rest. No overlap at all is an error."""
    rated = set(ratings.loc[ratings["role"] == RATING_ROLES[0], "system_id"].unique())  # sonification marks
    both = sorted(rated & systems_scored)
    notes = []
    if not both:
        raise DataError(
            "no system_id in the scores table matches the rated systems "
            f"(ratings e.g. {sorted(rated)[:2]}, scores e.g. {sorted(systems_scored)[:2]})",
            path=path or "scores",
            hint="system_id must be the same text in both tables "
            "(encoder/variant/lr<lr>/e<epoch>/alignment/postprocess)",
        )
    only_rated = sorted(rated - systems_scored)
    only_scored = sorted(systems_scored - rated)
    if only_rated:
        notes.append(
            f"{len(only_rated)} rated system(s) have no score and are left out of the correlations: "
            f"{', '.join(only_rated[:5])}{' …' if len(only_rated) > 5 else ''}"
        )
    if only_scored:
        notes.append(
            f"{len(only_scored)} scored system(s) were not rated: "
            f"{', '.join(only_scored[:5])}{' …' if len(only_scored) > 5 else ''}"
        )
    return both, notes


# --- one entry for a table given as a DataFrame or as a path (the public report takes either) ---

CLIPS_REQUIRED = ["clip_id", "category"]


def frame_source(kind: str, df: pd.DataFrame) -> InputFile:
    """Provenance of a table given in memory: a content hash of its rows (pandas' row hashes)."""
    import hashlib

    try:
        digest = hashlib.sha256(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes()).hexdigest()
    except TypeError:  # unhashable cells (lists): the hash of the text form
        digest = hashlib.sha256(df.to_csv(index=False).encode()).hexdigest()
    return InputFile(kind=kind, path=f"<{kind} DataFrame>", sha256=digest, n_rows=int(len(df)))


def _frame(data, kind: str) -> pd.DataFrame | None:
    """``data`` itself when it is a DataFrame, None when it is a path; anything else is an error."""
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, (str, os.PathLike)):
        return None
    raise DataError(
        f"{kind} must be a pandas DataFrame or a path to a .csv/.parquet table, not {type(data).__name__}",
        path=kind,
        hint=f"see docs/results.md#tables: the {kind} columns",
    )


def read_ratings(
    data,
    *,
    scale_min: int | None = None,
    scale_max: int | None = None,
    duplicates: str | None = None,
    attributes: Sequence[str] | None = None,
) -> Ratings:
    """Checked ratings from a DataFrame or a table file (scale: given, else the table's, else 1–5;
    ``attributes``: the study's, else the catalogue's)."""
    df = _frame(data, "ratings")
    if df is None:
        return load_ratings(
            data, scale_min=scale_min, scale_max=scale_max, duplicates=duplicates, attributes=attributes
        )
    check_columns(df, "ratings", "ratings", RATINGS_REQUIRED)
    lo, hi, note = declared_scale(df, scale_min, scale_max)
    ratings = check_ratings(df, scale_min=lo, scale_max=hi, duplicates=duplicates, attributes=attributes)
    ratings.notes += [note] if note else []
    ratings.source = frame_source("ratings", df)
    return ratings


def read_scores(data) -> Scores:
    """Checked system-level scores from a DataFrame or a table file."""
    df = _frame(data, "scores")
    if df is None:
        return load_scores(data)
    scores = check_scores(df)
    scores.source = frame_source("scores", df)
    return scores


def read_item_scores(data) -> tuple[pd.DataFrame, InputFile, list[str]]:
    """Checked per-item scores, their provenance and notes, from a DataFrame or a table file."""
    df = _frame(data, "item_scores")
    if df is None:
        return load_item_scores(data)
    checked, notes = check_item_scores(df)
    return checked, frame_source("item_scores", df), notes


def read_clip_categories(data) -> tuple[pd.Series, InputFile, list[str]]:
    """clip_id → category from a clips table (DataFrame or file), its provenance, and a note naming
    the data set when the table says which."""
    df = _frame(data, "clips")
    source = None
    if df is None:
        df = read_table(data, "clips", CLIPS_REQUIRED)
        source = InputFile("clips", os.fspath(data), sha256_file(data), int(len(df)))
    check_columns(df, "clips", "clips" if source is None else source.path, CLIPS_REQUIRED)
    source = source or frame_source("clips", df)
    ids = df["clip_id"].astype(str)
    mapping = df.assign(clip_id=ids).drop_duplicates("clip_id").set_index("clip_id")["category"]
    notes = []
    if "dataset" in df.columns and df["dataset"].notna().any():  # the clips stage's data-set label
        notes.append(f"data source: {df['dataset'].dropna().iloc[0]} (per the clips table)")
    return mapping, source, notes
