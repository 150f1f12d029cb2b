"""The ratings table (docs/results.md#tables) and the admin view's progress and screening tables.

``ratings_frame`` joins every stored mark with its trial and rater, so the export carries
the full design: the contract columns (``RATINGS_COLUMNS``) plus the sonification's ``control`` (``none``, ``untrained``,
``shuffled``, ``ceiling``; empty for the hidden reference, anchor and attention checks), category, block, the
attention check's expected mark and whether it was met, the stimulus duration, the times the
page was shown and submitted, the scale and the study's provenance (sonieval version,
design, where the stimuli came from), and the loudness alignment of the stimulus and of its
original (:data:`LEVEL_COLUMNS`: loudness measured before alignment, gain applied, loudness
and true peak after, the level aimed at and why a file stayed below the target; empty for a
study made before loudness alignment existed), and how the page was used
(:data:`PAGE_COLUMNS`: the session, seconds on the page, seconds the trial's own stimulus and the
original R were played as the A/B player measured them, the page's total, switches, loop) and
the rater's headphone check (:data:`CHECK_COLUMNS`). Platform participant ids are not in the
ratings table (it is often shared); they are in the per-rater table (:func:`progress_per_rater`,
``raters.csv``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from sonieval.results_layout import StudyLayout
from sonieval.study.store import (
    StudyStore,
    enrolments,
    levels,
    listening,
    page_log,
    page_trials,
    plan,
    rater_sessions,
    raters,
    ratings,
    screening_checks,
    trials,
)
from sonieval.tables import RATINGS_COLUMNS, control_of, write_table

EXTRA_COLUMNS = [
    "control",
    "category",
    "block",
    "page_label",
    "page_slot",
    "page_conditions",
    "rater_index",
    "block_order",
    "expected_mark",
    "attention_passed",
    "scale_min",
    "scale_max",
    "shown_at",
    "response_seconds",
    "stimulus_seconds",
    "design",
    "trials_per_rater",
    "min_listen_fraction",
    "stimuli_source",
    "sonieval_version",
]
_LEVEL_FIELDS = ("lufs_measured", "gain_db", "lufs", "true_peak_dbtp", "target_lufs", "limited")
LEVEL_COLUMNS = ["loudness_target_lufs"] + [f"{who}_{f}" for who in ("stimulus", "original") for f in _LEVEL_FIELDS]
EXTRA_COLUMNS += LEVEL_COLUMNS
PAGE_COLUMNS = [
    "session",
    "page_seconds",
    "listened_s",
    "listened_original_s",
    "page_listened_total_s",
    "page_switches",
    "page_loop_used",
]
CHECK_COLUMNS = ["headphone_passed", "headphone_correct", "headphone_trials"]
EXTRA_COLUMNS += PAGE_COLUMNS + CHECK_COLUMNS


def _utc(seconds: pd.Series) -> pd.Series:
    return pd.to_datetime(seconds.astype("float64"), unit="s", utc=True)


def ratings_frame(store: StudyStore, study_id: str) -> pd.DataFrame:
    """Every stored mark of the study with its design columns (see the module docstring)."""
    from sonieval import __version__

    info = store.study(study_id)
    r = store.frame(ratings, study_id)
    t = store.frame(trials, study_id)[
        [
            "trial_id",
            "clip_id",
            "category",
            "system_id",
            "role",
            "expected_mark",
            "stimulus_seconds",
            "stimulus_file",
            "original_file",
        ]
    ]
    t = _with_levels(t, store.frame(levels, study_id))
    p = store.frame(plan, study_id)[["rater_id", "position", "block"]]
    who = store.frame(raters, study_id)[["rater_id", "rater_index", "block_order"]]
    df = (
        r.merge(t, on="trial_id", how="left")
        .merge(p, on=["rater_id", "position"], how="left")
        .merge(who, on="rater_id", how="left")
    )
    df = df.merge(page_slots(store, study_id), on=["rater_id", "position", "trial_id"], how="left")
    df = _with_pages(df, store, study_id)
    df["study_id"] = study_id
    df["response_seconds"] = (df["submitted_at"] - df["shown_at"]).astype("float64")
    df["submitted_at"] = _utc(df["submitted_at"])
    df["shown_at"] = _utc(df["shown_at"])
    expected = pd.to_numeric(df["expected_mark"], errors="coerce")
    df["expected_mark"] = expected.astype("Int64")
    df["attention_passed"] = pd.Series(
        np.where(df["role"] == "attention", df["mark"] == expected, pd.NA), dtype="boolean"
    )
    df["design"] = info.design
    df["trials_per_rater"] = info.trials_per_rater
    df["min_listen_fraction"] = info.min_listen_fraction
    df["stimuli_source"] = json.dumps(info.provenance.get("source", {}), default=str)
    df["sonieval_version"] = __version__
    df["loudness_target_lufs"] = info.provenance.get("loudness", {}).get("target_lufs")
    df["mark"] = df["mark"].astype("int64")
    df["control"] = pd.Series(
        [control_of(s) if role == "sonification" else None for s, role in zip(df["system_id"], df["role"])],
        index=df.index,
        dtype="string",
    )
    df = df[RATINGS_COLUMNS + EXTRA_COLUMNS]
    return df.sort_values(["rater_id", "position", "attribute"]).reset_index(drop=True)


def page_slots(store: StudyStore, study_id: str) -> pd.DataFrame:
    """Where each trial sat on each rater's page: ``page_label`` (the letter it had: A on a page of
    one stimulus, A, B, ... on a multi-stimulus page, in the rater's order), ``page_slot`` (its place
    from the left, 1-based) and ``page_conditions`` (the stimuli on that page), so position effects
    can be analysed. One row per (rater, page, trial) the raters were given."""
    from sonieval.study.design import CONDITION_LABELS

    p = store.frame(plan, study_id)
    multi = store.frame(page_trials, study_id)[["rater_id", "position", "slot", "trial_id"]]
    single = p[p["block"] != "multi"][["rater_id", "position", "trial_id"]].assign(slot=0)
    out = pd.concat([single, multi], ignore_index=True)
    out["page_label"] = [CONDITION_LABELS[int(k)] for k in out["slot"]]
    out["page_slot"] = (out["slot"].astype("int64") + 1).astype("Int64")
    sizes = out.groupby(["rater_id", "position"])["trial_id"].transform("size")
    out["page_conditions"] = sizes.astype("Int64")
    return out[["rater_id", "position", "trial_id", "page_label", "page_slot", "page_conditions"]]


def _with_pages(df: pd.DataFrame, store: StudyStore, study_id: str) -> pd.DataFrame:
    """Add the page's session, time and listening (:data:`PAGE_COLUMNS`) and the headphone check."""
    log = store.frame(page_log, study_id).rename(
        columns={
            "listened_total_s": "page_listened_total_s",
            "n_switches": "page_switches",
            "loop_used": "page_loop_used",
        }
    )
    df = df.merge(
        log[
            [
                "rater_id",
                "position",
                "session",
                "page_seconds",
                "page_listened_total_s",
                "page_switches",
                "page_loop_used",
            ]
        ],
        on=["rater_id", "position"],
        how="left",
    )
    heard = store.frame(listening, study_id)
    own = heard[heard["trial_id"].notna()][["rater_id", "position", "trial_id", "listened_s"]]
    original = heard[heard["label"] == "R"][["rater_id", "position", "listened_s"]].rename(
        columns={"listened_s": "listened_original_s"}
    )
    df = df.merge(own, on=["rater_id", "position", "trial_id"], how="left").merge(
        original, on=["rater_id", "position"], how="left"
    )
    checks = store.frame(screening_checks, study_id)
    checks = checks.rename(
        columns={"passed": "headphone_passed", "n_correct": "headphone_correct", "n_trials": "headphone_trials"}
    )
    df = df.merge(checks[["rater_id", *CHECK_COLUMNS]], on="rater_id", how="left")
    df["headphone_passed"] = df["headphone_passed"].astype("boolean")
    for col in ("session", "page_switches", "page_loop_used", "headphone_correct", "headphone_trials"):
        df[col] = pd.to_numeric(df[col]).astype("Int64")
    return df


def _with_levels(trial_frame: pd.DataFrame, level_frame: pd.DataFrame) -> pd.DataFrame:
    """Add the level columns of each trial's stimulus file and original file."""
    lv = level_frame[["file", *_LEVEL_FIELDS]]
    for who in ("stimulus", "original"):
        renamed = lv.rename(columns={"file": f"{who}_file", **{f: f"{who}_{f}" for f in _LEVEL_FIELDS}})
        trial_frame = trial_frame.merge(renamed, on=f"{who}_file", how="left")
    return trial_frame


def write_ratings(store: StudyStore, study_id: str, out_dir: str | os.PathLike) -> tuple[Path, Path, int]:
    """Write ``ratings.csv`` and ``ratings.parquet`` (atomically) into ``out_dir``, and beside them
    ``raters.csv`` and ``sessions.csv`` (per-rater progress with platform ids; every session)."""
    from sonieval.files import atomic_path

    df = ratings_frame(store, study_id)
    out = Path(out_dir)
    parquet = write_table(df, StudyLayout(out).ratings_table, "ratings")
    csv = write_table(df, StudyLayout(out).ratings_csv, "ratings")
    for name, frame in (
        ("raters.csv", progress_per_rater(store, study_id)),
        ("sessions.csv", sessions_frame(store, study_id)),
    ):
        with atomic_path(out / name) as tmp:
            frame.to_csv(tmp, index=False)
            os.chmod(tmp, 0o600)  # platform ids and completion codes: the owner's only
    return csv, parquet, len(df)


# what a crowd rater's enrolment recorded (platform ids from the link; never in the ratings table)
ENROLMENT_COLUMNS = (
    "platform",
    "participant_id",
    "platform_study_id",
    "platform_session_id",
    "assignment_id",
    "hit_id",
)
RATER_COLUMNS = [
    "rater_id",
    "status",
    "pages_done",
    "pages",
    "marks",
    "session",
    "sessions_ended",
    "familiarised",
    "headphone_passed",
    "median_page_seconds",
    "median_listened_s",
    "invited_at",
    "last_submitted_at",
    "block_order",
    *ENROLMENT_COLUMNS,
    "enrolled_at",
    "completion_code",
]


def progress_per_rater(store: StudyStore, study_id: str, *, now: float | None = None) -> pd.DataFrame:
    """One row per rater: where they are (:func:`rater_status`), sessions, time per page, listening,
    headphone check and, for self-enrolled raters, the platform's ids."""
    import time

    now = time.time() if now is None else now
    info = store.study(study_id)
    p, r, who = store.frame(plan, study_id), store.frame(ratings, study_id), store.frame(raters, study_id)
    log, sess = store.frame(page_log, study_id), store.frame(rater_sessions, study_id)
    checks, enrolled = store.frame(screening_checks, study_id), store.frame(enrolments, study_id).set_index("rater_id")
    pages_done = log.groupby("rater_id").size()
    rows = []
    for rater in who.itertuples(index=False):
        rid = rater.rater_id
        mine_log, mine_sess = log[log["rater_id"] == rid], sess[sess["rater_id"] == rid].sort_values("session")
        check = checks[checks["rater_id"] == rid]
        marks = r[r["rater_id"] == rid]
        row = {
            "rater_id": rid,
            "pages_done": int(pages_done.get(rid, 0)),
            "pages": int((p["rater_id"] == rid).sum()),
            "marks": len(marks),
            "session": int(mine_sess["session"].max()) if len(mine_sess) else 0,
            "sessions_ended": int(mine_sess["ended_at"].notna().sum()),
            "familiarised": rater.familiarised_at is not None and not pd.isna(rater.familiarised_at),
            "headphone_passed": bool(check["passed"].iloc[0]) if len(check) else pd.NA,
            "median_page_seconds": float(mine_log["page_seconds"].median()) if len(mine_log) else np.nan,
            "median_listened_s": float(mine_log["listened_total_s"].median())
            if mine_log["listened_total_s"].notna().any()
            else np.nan,
            "invited_at": _utc(pd.Series([rater.created_at]))[0],
            "last_submitted_at": _utc(pd.Series([marks["submitted_at"].max()]))[0] if len(marks) else pd.NaT,
            "block_order": rater.block_order,
        }
        row["status"] = rater_status(info, row, mine_sess, mine_log, check, now)
        row["completion_code"] = _completion_code(info, rid, row["status"])
        if rid in enrolled.index:
            e = enrolled.loc[rid]
            row.update({k: e[k] for k in ENROLMENT_COLUMNS})
            row["enrolled_at"] = _utc(pd.Series([e["enrolled_at"]]))[0]
        rows.append(row)
    out = pd.DataFrame(rows, columns=RATER_COLUMNS)
    out["headphone_passed"] = out["headphone_passed"].astype("boolean")
    return out


def _completion_code(info, rater_id: str, status: str) -> str | None:
    """The code this rater was shown at the end (None before the end): per rater, the study's, or
    the screened-out code."""
    from sonieval.study.session import rater_code

    enrol = info.options.enrolment
    if status.startswith("screened out"):
        return enrol.screened_out_code
    if status != "finished":
        return None
    return rater_code(info.study_dir, rater_id) if enrol.per_rater_codes else enrol.completion_code


def rater_status(info, row: dict, sessions: pd.DataFrame, pages: pd.DataFrame, check: pd.DataFrame, now: float) -> str:
    """Where a rater is: finished, screened out, in the headphone check or familiarisation, rating
    (session k), on a break after session k, or left (idle longer than the study's idle_minutes)."""
    if row["pages"] and row["pages_done"] >= row["pages"]:
        return "finished"
    hp = info.options.headphones
    if hp.enabled and len(check) and not bool(check["passed"].iloc[0]) and hp.on_fail == "stop":
        return "screened out (headphone check)"
    if hp.enabled and not len(check):
        return "not started" if not row["familiarised"] else "headphone check"
    if not row["familiarised"] and info.familiarisation:
        return "familiarisation"
    if not len(sessions):
        return "not started"
    last = sessions.iloc[-1]
    k = int(last["session"])
    if pd.isna(last["ended_at"]):
        active = max(
            [float(last["started_at"])] + pages.loc[pages["session"] == k, "submitted_at"].astype(float).tolist()
        )
        return (
            f"rating (session {k})"
            if now - active < 60.0 * info.options.sessions.idle_minutes
            else f"left in session {k}"
        )
    if last["ended_by"] in ("pages", "minutes"):
        return f"on a break after session {k}"
    return f"left in session {k}"


def stops_frame(store: StudyStore, study_id: str) -> pd.DataFrame:
    """Where raters who have not finished stop: by pages done, how many and in which state."""
    per = progress_per_rater(store, study_id)
    open_ = per[per["status"] != "finished"].copy()
    if open_.empty:
        return pd.DataFrame(columns=["pages_done", "raters", "states"])
    open_["state"] = open_["status"].str.replace(
        r" \(?session \d+\)?$| after session \d+$| in session \d+$", "", regex=True
    )
    grouped = open_.groupby("pages_done")
    return pd.DataFrame(
        {
            "pages_done": grouped.size().index,
            "raters": grouped.size().to_numpy(),
            "states": grouped["state"]
            .agg(lambda v: ", ".join(f"{n} {s}" for s, n in v.value_counts().items()))
            .to_numpy(),
        }
    )


def sessions_frame(store: StudyStore, study_id: str) -> pd.DataFrame:
    """Every rater session: start, end, minutes, pages, why it ended (pages, minutes, finished, left)."""
    sess = store.frame(rater_sessions, study_id).sort_values(["rater_id", "session"])
    sess["minutes"] = (sess["ended_at"].astype("float64") - sess["started_at"].astype("float64")) / 60.0
    sess["started_at"] = _utc(sess["started_at"])
    sess["ended_at"] = _utc(sess["ended_at"])
    return sess[["rater_id", "session", "started_at", "ended_at", "minutes", "pages", "ended_by"]].reset_index(
        drop=True
    )


def progress_per_trial(store: StudyStore, study_id: str) -> pd.DataFrame:
    t = store.frame(trials, study_id)[["trial_id", "role", "system_id", "clip_id"]]
    r = store.frame(ratings, study_id)
    # every trial of every page (a multi-stimulus page holds several; plan names only its first)
    pages = page_slots(store, study_id)
    assigned = pages.groupby("trial_id")["rater_id"].nunique().rename("raters_assigned")
    counts = (
        r.pivot_table(index="trial_id", columns="attribute", values="mark", aggfunc="count")
        if len(r)
        else pd.DataFrame()
    )
    means = (
        r.pivot_table(index="trial_id", columns="attribute", values="mark", aggfunc="mean")
        if len(r)
        else pd.DataFrame()
    )
    # n_<attribute>, mean_<attribute> for every attribute the study asks, marked yet or not
    info = store.study(study_id)
    counts, means = (f.reindex(columns=list(info.attributes)) for f in (counts, means))
    out = t.set_index("trial_id").join(assigned).join(counts.add_prefix("n_")).join(means.add_prefix("mean_"))
    out["raters_assigned"] = out["raters_assigned"].fillna(0).astype(int)
    # M (min_ratings_per_trial) is planned for sonification trials: flag those still short of it.
    n_cols = [c for c in out.columns if c.startswith("n_")]
    fewest = out[n_cols].fillna(0).min(axis=1) if n_cols else pd.Series(0, index=out.index)
    out["min_ratings_reached"] = (fewest >= info.min_ratings_per_trial) | (out["role"] != "sonification")
    return out.reset_index()


def screening_per_rater(
    store: StudyStore, study_id: str, *, reference_max_mark: int | None = None, anchor_min_mark: int | None = None
) -> pd.DataFrame:
    """Per rater: hidden-reference and anchor marks, attention checks, headphone check (raw counts, no verdict).

    ``reference_low`` counts hidden-reference marks ≤ ``reference_max_mark`` and ``anchor_high``
    anchor marks ≥ ``anchor_min_mark``; by default the report's screening thresholds on this
    study's scale (:meth:`sonieval.screening_rules.ScreeningRules.for_scale`: 3 and 4 on 1–5,
    BS.1534's 90 on 0–100). The decision to exclude a rater is the report's (sonieval.stats), not
    the app's.
    """
    from sonieval.screening_rules import ScreeningRules

    info = store.study(study_id)
    rules = ScreeningRules().for_scale(info.scale_min, info.scale_max)
    reference_max_mark = rules.hidden_reference_max_mark if reference_max_mark is None else reference_max_mark
    anchor_min_mark = rules.anchor_min_mark if anchor_min_mark is None else anchor_min_mark
    df = ratings_frame(store, study_id)
    rows = []
    for rater_id, g in df.groupby("rater_id"):
        ref = g[g["role"] == "reference"]["mark"]
        anc = g[g["role"] == "anchor"]["mark"]
        att = g[g["role"] == "attention"]
        rows.append(
            {
                "rater_id": rater_id,
                "reference_marks": len(ref),
                "reference_mean": float(ref.mean()) if len(ref) else np.nan,
                "reference_low": int((ref <= reference_max_mark).sum()),
                "anchor_marks": len(anc),
                "anchor_mean": float(anc.mean()) if len(anc) else np.nan,
                "anchor_high": int((anc >= anchor_min_mark).sum()),
                "attention_checks": len(att),
                "attention_failed": int((~att["attention_passed"].astype(bool)).sum()),
                "headphone_passed": g["headphone_passed"].iloc[0],
                "headphone_correct": g["headphone_correct"].iloc[0],
            }
        )
    out = pd.DataFrame(
        rows,
        columns=[
            "rater_id",
            "reference_marks",
            "reference_mean",
            "reference_low",
            "anchor_marks",
            "anchor_mean",
            "anchor_high",
            "attention_checks",
            "attention_failed",
            "headphone_passed",
            "headphone_correct",
        ],
    )
    out["headphone_passed"] = out["headphone_passed"].astype("boolean")
    return out
