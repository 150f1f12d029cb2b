"""The ratings table (DESIGN.md §3) and the admin view's progress and screening tables.

``ratings_frame`` joins every stored mark with its trial and rater, so the export carries
the full design: the contract columns (``RATINGS_COLUMNS``) plus category, block, the
attention check's expected mark and whether it was met, the stimulus duration, the times the
page was shown and submitted, the scale and the study's provenance (sonieval version,
design, where the stimuli came from), and the loudness alignment of the stimulus and of its
original (:data:`LEVEL_COLUMNS`: loudness measured before alignment, gain applied, loudness
and true peak after, the level aimed at and why a file stayed below the target; empty for a
study made before loudness alignment existed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from sonieval.study.store import StudyStore, levels, plan, ratings, raters, trials
from sonieval.tables import RATINGS_COLUMNS, write_table

EXTRA_COLUMNS = [
    "category", "block", "rater_index", "block_order", "expected_mark", "attention_passed", "scale_min", "scale_max",
    "shown_at", "response_seconds", "stimulus_seconds", "design", "trials_per_rater", "min_listen_fraction",
    "stimuli_source", "sonieval_version",
]
_LEVEL_FIELDS = ("lufs_measured", "gain_db", "lufs", "true_peak_dbtp", "target_lufs", "limited")
LEVEL_COLUMNS = ["loudness_target_lufs"] + [f"{who}_{f}" for who in ("stimulus", "original") for f in _LEVEL_FIELDS]
EXTRA_COLUMNS += LEVEL_COLUMNS


def _utc(seconds: pd.Series) -> pd.Series:
    return pd.to_datetime(seconds.astype("float64"), unit="s", utc=True)


def ratings_frame(store: StudyStore, study_id: str) -> pd.DataFrame:
    """Every stored mark of the study with its design columns (see the module docstring)."""
    from sonieval import __version__

    info = store.study(study_id)
    r = store.frame(ratings, study_id)
    t = store.frame(trials, study_id)[["trial_id", "clip_id", "category", "system_id", "role", "expected_mark", "stimulus_seconds",
                                       "stimulus_file", "original_file"]]
    t = _with_levels(t, store.frame(levels, study_id))
    p = store.frame(plan, study_id)[["rater_id", "position", "block"]]
    who = store.frame(raters, study_id)[["rater_id", "rater_index", "block_order"]]
    df = r.merge(t, on="trial_id", how="left").merge(p, on=["rater_id", "position"], how="left").merge(who, on="rater_id", how="left")
    df["study_id"] = study_id
    df["response_seconds"] = (df["submitted_at"] - df["shown_at"]).astype("float64")
    df["submitted_at"] = _utc(df["submitted_at"])
    df["shown_at"] = _utc(df["shown_at"])
    expected = pd.to_numeric(df["expected_mark"], errors="coerce")
    df["expected_mark"] = expected.astype("Int64")
    df["attention_passed"] = pd.Series(np.where(df["role"] == "attention", df["mark"] == expected, pd.NA), dtype="boolean")
    df["design"] = info.design
    df["trials_per_rater"] = info.trials_per_rater
    df["min_listen_fraction"] = info.min_listen_fraction
    df["stimuli_source"] = json.dumps(info.provenance.get("source", {}), default=str)
    df["sonieval_version"] = __version__
    df["loudness_target_lufs"] = info.provenance.get("loudness", {}).get("target_lufs")
    df["mark"] = df["mark"].astype("int64")
    df = df[RATINGS_COLUMNS + EXTRA_COLUMNS]
    return df.sort_values(["rater_id", "position", "attribute"]).reset_index(drop=True)


def _with_levels(trial_frame: pd.DataFrame, level_frame: pd.DataFrame) -> pd.DataFrame:
    """Add the level columns of each trial's stimulus file and original file."""
    lv = level_frame[["file", *_LEVEL_FIELDS]]
    for who in ("stimulus", "original"):
        renamed = lv.rename(columns={"file": f"{who}_file", **{f: f"{who}_{f}" for f in _LEVEL_FIELDS}})
        trial_frame = trial_frame.merge(renamed, on=f"{who}_file", how="left")
    return trial_frame


def write_ratings(store: StudyStore, study_id: str, out_dir: str | os.PathLike) -> tuple[Path, Path, int]:
    """Write ``ratings.csv`` and ``ratings.parquet`` (atomically) into ``out_dir``."""
    df = ratings_frame(store, study_id)
    out = Path(out_dir)
    parquet = write_table(df, out / "ratings.parquet", "ratings")
    csv = write_table(df, out / "ratings.csv", "ratings")
    return csv, parquet, len(df)


def progress_per_rater(store: StudyStore, study_id: str) -> pd.DataFrame:
    p = store.frame(plan, study_id)
    r = store.frame(ratings, study_id)
    who = store.frame(raters, study_id)
    rows = []
    for rater in who.itertuples(index=False):
        mine = p[p["rater_id"] == rater.rater_id]
        marks = r[r["rater_id"] == rater.rater_id]
        done_pairs = set(zip(marks["trial_id"], marks["attribute"]))
        pages_done = sum(all((tr, a) in done_pairs for a in attrs.split(",")) for tr, attrs in zip(mine["trial_id"], mine["attributes"]))
        rows.append({
            "rater_id": rater.rater_id, "invited_at": _utc(pd.Series([rater.created_at]))[0],
            "familiarised": rater.familiarised_at is not None and not pd.isna(rater.familiarised_at),
            "pages_done": pages_done, "pages": len(mine), "marks": len(marks),
            "last_submitted_at": _utc(pd.Series([marks["submitted_at"].max()]))[0] if len(marks) else pd.NaT,
            "block_order": rater.block_order,
        })
    return pd.DataFrame(rows, columns=["rater_id", "invited_at", "familiarised", "pages_done", "pages", "marks", "last_submitted_at", "block_order"])


def progress_per_trial(store: StudyStore, study_id: str) -> pd.DataFrame:
    t = store.frame(trials, study_id)[["trial_id", "role", "system_id", "clip_id"]]
    r = store.frame(ratings, study_id)
    p = store.frame(plan, study_id)
    assigned = p.groupby("trial_id")["rater_id"].nunique().rename("raters_assigned")
    counts = r.pivot_table(index="trial_id", columns="attribute", values="mark", aggfunc="count") if len(r) else pd.DataFrame()
    counts = counts.add_prefix("n_") if len(counts) else counts
    means = r.pivot_table(index="trial_id", columns="attribute", values="mark", aggfunc="mean") if len(r) else pd.DataFrame()
    means = means.add_prefix("mean_") if len(means) else means
    out = t.set_index("trial_id").join(assigned).join(counts).join(means)
    out["raters_assigned"] = out["raters_assigned"].fillna(0).astype(int)
    # M (min_ratings_per_trial) is planned for sonification trials: flag those still short of it.
    info = store.study(study_id)
    n_cols = [c for c in out.columns if c.startswith("n_")]
    fewest = out[n_cols].fillna(0).min(axis=1) if n_cols else pd.Series(0, index=out.index)
    out["min_ratings_reached"] = (fewest >= info.min_ratings_per_trial) | (out["role"] != "sonification")
    return out.reset_index()


def screening_per_rater(store: StudyStore, study_id: str, *, reference_max_mark: int = 3, anchor_min_mark: int = 4) -> pd.DataFrame:
    """Per rater: hidden-reference and anchor marks and attention checks (raw counts, no verdict).

    ``reference_low`` counts hidden-reference marks ≤ ``reference_max_mark`` and ``anchor_high``
    anchor marks ≥ ``anchor_min_mark`` (the report's screening thresholds, ReportSpec); the
    decision to exclude a rater is the report's (sonieval.stats), not the app's.
    """
    df = ratings_frame(store, study_id)
    rows = []
    for rater_id, g in df.groupby("rater_id"):
        ref = g[g["role"] == "reference"]["mark"]
        anc = g[g["role"] == "anchor"]["mark"]
        att = g[g["role"] == "attention"]
        rows.append({
            "rater_id": rater_id,
            "reference_marks": len(ref), "reference_mean": float(ref.mean()) if len(ref) else np.nan,
            "reference_low": int((ref <= reference_max_mark).sum()),
            "anchor_marks": len(anc), "anchor_mean": float(anc.mean()) if len(anc) else np.nan,
            "anchor_high": int((anc >= anchor_min_mark).sum()),
            "attention_checks": len(att), "attention_failed": int((~att["attention_passed"].astype(bool)).sum()),
        })
    return pd.DataFrame(rows, columns=[
        "rater_id", "reference_marks", "reference_mean", "reference_low", "anchor_marks", "anchor_mean", "anchor_high",
        "attention_checks", "attention_failed",
    ])
