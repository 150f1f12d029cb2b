"""The study database's tables (SQLAlchemy 2 Core) and its schema version.

Tables (schema version :data:`SCHEMA_VERSION`, recorded in ``schema_version``;
:mod:`sonieval.study.store.migrations` brings an older database up to it):

- ``studies``: one row per study: design, scale, folder, status (open | closed), admin token hash.
- ``trials``: the study's (original, stimulus) pairs (:class:`sonieval.study.design.Trial`).
- ``raters``: rater id, token hash (unique), invitation index, seed, block order, familiarisation time.
- ``plan``: each rater's pages in order (position, trial, attributes) and when each was first shown.
- ``levels``: per study file (originals and stimuli), what loudness alignment did: loudness
  measured before (LUFS), gain applied (dB), loudness and true peak after, the level aimed at
  and why a file stayed below the target (:mod:`sonieval.study.loudness`). Added without a
  schema-version change: older databases get the table empty, older code ignores it.
- ``ratings``: one row per (study, rater, trial, attribute), the primary key, so a resubmission
  cannot create a second row; ``INSERT ... ON CONFLICT DO NOTHING`` makes it idempotent (the
  first mark stands). A CHECK constraint keeps ``mark`` within the row's scale, and a foreign
  key ties that scale to the study's, so a mark outside the scale is refused by the database
  even if the Python validation (:func:`~sonieval.study.store.records.validate_mark`) were
  bypassed. Which attributes a page takes is the rater's plan's (``plan.attributes``, checked on
  every submission); the attributes themselves come from the rating-attribute catalogue and the
  protocol (:mod:`sonieval.rating_attributes`), so a new one needs no schema change (version 1
  held them to visual and audio with a CHECK constraint; version 2 dropped it).

Added for issue 14 without a schema-version change (older databases get them empty; a study
without a ``study_options`` row reads as the defaults of :class:`~sonieval.study.options.StudyOptions`):

- ``study_options``: one JSON row per study (title, rating scale, sessions, enrolment, headphone
  check, and the definitions of the attributes it asks).
- ``page_trials``: the trials of each multi-stimulus page (``plan`` holds the page's first trial).
- ``page_log``: per submitted page: session, time shown and submitted, seconds on the page, total
  time played, switches between sounds, loop used.
- ``listening``: per submitted page and sound (R = the original, A, B, ... the stimuli): the
  seconds it was actually played, as the A/B player measured them.
- ``rater_sessions``: per rater and session: start, end, pages, and why it ended (``pages``,
  ``minutes``, ``finished``, ``left``).
- ``enrolments``: who enrolled through the public link: platform ids (Prolific, MTurk) and a
  keyed hash of the network address (never the address itself). A place of the enrolment cap is
  held by a rater who finished or is still active, never by one screened out (computed from the
  tables above, nothing stored).
- ``screening_checks``: per rater, the headphone check's score and responses.
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    Float,
    ForeignKeyConstraint,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from sonieval.tables import RATING_ROLES

SCHEMA_VERSION = 2


def _sql_list(values) -> str:
    """``'a', 'b'``: the allowed values of a CHECK constraint, from the one list in sonieval.tables."""
    return ", ".join(f"'{v}'" for v in values)


metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Float, nullable=False),
)

studies = Table(
    "studies",
    metadata,
    Column("study_id", String(200), primary_key=True),
    Column("mode", String(10), nullable=False),
    Column("attributes", String(40), nullable=False),
    Column("design", String(10), nullable=False),
    Column("trials_per_rater", Integer),
    Column("min_ratings_per_trial", Integer, nullable=False),
    Column("scale_min", Integer, nullable=False),
    Column("scale_max", Integer, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("study_dir", Text, nullable=False),
    Column("status", String(10), nullable=False),
    Column("admin_token_hash", String(64), nullable=False),
    Column("min_listen_fraction", Float, nullable=False),
    Column("familiarisation", Text, nullable=False),  # JSON: low/high example pairs (file names)
    Column("provenance", Text, nullable=False),  # JSON: where the stimuli came from, versions
    Column("created_at", Float, nullable=False),
    UniqueConstraint("study_id", "scale_min", "scale_max", name="uq_studies_scale"),
    CheckConstraint("mode IN ('joint', 'split', 'multi')", name="ck_studies_mode"),
    CheckConstraint("status IN ('open', 'closed')", name="ck_studies_status"),
    CheckConstraint("scale_max > scale_min", name="ck_studies_scale"),
)

trials = Table(
    "trials",
    metadata,
    Column("study_id", String(200), primary_key=True),
    Column("trial_id", String(40), primary_key=True),
    Column("clip_id", String(200), nullable=False),
    Column("category", String(200), nullable=False),
    Column("system_id", Text, nullable=False),
    Column("role", String(20), nullable=False),
    Column("original_file", String(200), nullable=False),
    Column("stimulus_file", String(200), nullable=False),
    Column("waveform_file", String(200), nullable=False),
    Column("stimulus_seconds", Float, nullable=False),
    Column("instruction", Text, nullable=False),
    Column("expected_mark", Integer),
    Column("source_key", Text, nullable=False),
    ForeignKeyConstraint(["study_id"], ["studies.study_id"], ondelete="CASCADE"),
    CheckConstraint(f"role IN ({_sql_list(RATING_ROLES)})", name="ck_trials_role"),
)

raters = Table(
    "raters",
    metadata,
    Column("study_id", String(200), primary_key=True),
    Column("rater_id", String(40), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("rater_index", Integer, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("block_order", String(40), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("familiarised_at", Float),
    UniqueConstraint("study_id", "rater_index", name="uq_raters_index"),
    ForeignKeyConstraint(["study_id"], ["studies.study_id"], ondelete="CASCADE"),
)

plan = Table(
    "plan",
    metadata,
    Column("study_id", String(200), primary_key=True),
    Column("rater_id", String(40), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("trial_id", String(40), nullable=False),
    Column("attributes", String(40), nullable=False),
    Column("block", String(10), nullable=False),
    Column("shown_at", Float),
    ForeignKeyConstraint(["study_id", "rater_id"], ["raters.study_id", "raters.rater_id"], ondelete="CASCADE"),
    ForeignKeyConstraint(["study_id", "trial_id"], ["trials.study_id", "trials.trial_id"], ondelete="CASCADE"),
)

levels = Table(
    "levels",
    metadata,
    Column("study_id", String(200), primary_key=True),
    Column("file", String(200), primary_key=True),
    Column("lufs_measured", Float),  # NULL: below the -70 LUFS gate (silent)
    Column("gain_db", Float, nullable=False),
    Column("lufs", Float),
    Column("true_peak_dbtp", Float),
    Column("target_lufs", Float),
    Column("limited", String(20), nullable=False),
    ForeignKeyConstraint(["study_id"], ["studies.study_id"], ondelete="CASCADE"),
)

ratings = Table(
    "ratings",
    metadata,
    Column("study_id", String(200), primary_key=True),
    Column("rater_id", String(40), primary_key=True),
    Column("trial_id", String(40), primary_key=True),
    Column("attribute", String(10), primary_key=True),
    Column("mark", Integer, nullable=False),
    Column("scale_min", Integer, nullable=False),
    Column("scale_max", Integer, nullable=False),
    Column("position", Integer, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("mode", String(10), nullable=False),
    Column("shown_at", Float),
    Column("submitted_at", Float, nullable=False),
    CheckConstraint("mark >= scale_min AND mark <= scale_max", name="ck_ratings_mark_in_scale"),
    ForeignKeyConstraint(
        ["study_id", "scale_min", "scale_max"],
        ["studies.study_id", "studies.scale_min", "studies.scale_max"],
        ondelete="CASCADE",
    ),
    ForeignKeyConstraint(["study_id", "rater_id"], ["raters.study_id", "raters.rater_id"], ondelete="CASCADE"),
    ForeignKeyConstraint(["study_id", "trial_id"], ["trials.study_id", "trials.trial_id"], ondelete="CASCADE"),
)

study_options = Table(
    "study_options",
    metadata,
    Column("study_id", String(200), primary_key=True),
    Column("options", Text, nullable=False),  # JSON of sonieval.study.options.StudyOptions
    ForeignKeyConstraint(["study_id"], ["studies.study_id"], ondelete="CASCADE"),
)

page_trials = Table(
    "page_trials",
    metadata,
    Column("study_id", String(200), primary_key=True),
    Column("rater_id", String(40), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("trial_id", String(40), nullable=False),
    ForeignKeyConstraint(["study_id", "rater_id"], ["raters.study_id", "raters.rater_id"], ondelete="CASCADE"),
)

page_log = Table(
    "page_log",
    metadata,
    Column("study_id", String(200), primary_key=True),
    Column("rater_id", String(40), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("session", Integer, nullable=False),
    Column("shown_at", Float),
    Column("submitted_at", Float, nullable=False),
    Column("page_seconds", Float),
    Column("listened_total_s", Float),  # NULL: no player on the page, or none reported
    Column("n_switches", Integer),
    Column("loop_used", Integer),
    ForeignKeyConstraint(["study_id", "rater_id"], ["raters.study_id", "raters.rater_id"], ondelete="CASCADE"),
)

listening = Table(
    "listening",
    metadata,
    Column("study_id", String(200), primary_key=True),
    Column("rater_id", String(40), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("label", String(4), primary_key=True),
    Column("trial_id", String(40)),  # NULL: the open reference (the original)
    Column("listened_s", Float, nullable=False),
    ForeignKeyConstraint(["study_id", "rater_id"], ["raters.study_id", "raters.rater_id"], ondelete="CASCADE"),
)

rater_sessions = Table(
    "rater_sessions",
    metadata,
    Column("study_id", String(200), primary_key=True),
    Column("rater_id", String(40), primary_key=True),
    Column("session", Integer, primary_key=True),
    Column("started_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("pages", Integer, nullable=False),
    Column("ended_by", String(10)),  # pages | minutes | finished | left
    ForeignKeyConstraint(["study_id", "rater_id"], ["raters.study_id", "raters.rater_id"], ondelete="CASCADE"),
)

enrolments = Table(
    "enrolments",
    metadata,
    Column("study_id", String(200), primary_key=True),
    Column("rater_id", String(40), primary_key=True),
    Column("platform", String(20), nullable=False),  # prolific | mturk | "" (none given)
    Column("participant_id", String(64)),
    Column("platform_study_id", String(64)),
    Column("platform_session_id", String(64)),
    Column("assignment_id", String(64)),
    Column("hit_id", String(64)),
    Column("ip_hash", String(64), nullable=False),
    Column("enrolled_at", Float, nullable=False),
    UniqueConstraint("study_id", "platform", "participant_id", name="uq_enrolments_participant"),
    ForeignKeyConstraint(["study_id", "rater_id"], ["raters.study_id", "raters.rater_id"], ondelete="CASCADE"),
)

screening_checks = Table(
    "screening_checks",
    metadata,
    Column("study_id", String(200), primary_key=True),
    Column("rater_id", String(40), primary_key=True),
    Column("check", String(40), primary_key=True),
    Column("n_trials", Integer, nullable=False),
    Column("n_correct", Integer, nullable=False),
    Column("pass_min", Integer, nullable=False),
    Column("passed", Integer, nullable=False),
    Column("responses", String(200), nullable=False),
    Column("answers", String(200), nullable=False),
    Column("seed", Integer, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float, nullable=False),
    ForeignKeyConstraint(["study_id", "rater_id"], ["raters.study_id", "raters.rater_id"], ondelete="CASCADE"),
)

# Children first: deleting in this order needs no cascade support.
STUDY_TABLES = (
    ratings,
    listening,
    page_log,
    page_trials,
    rater_sessions,
    enrolments,
    screening_checks,
    levels,
    plan,
    raters,
    study_options,
    trials,
    studies,
)


def dialect_insert(dialect: str, table: Table):
    """An INSERT with the dialect's ``ON CONFLICT`` clauses (``on_conflict_do_nothing``)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


__all__ = [
    "SCHEMA_VERSION",
    "STUDY_TABLES",
    "dialect_insert",
    "enrolments",
    "levels",
    "listening",
    "metadata",
    "page_log",
    "page_trials",
    "plan",
    "rater_sessions",
    "raters",
    "ratings",
    "schema_version",
    "screening_checks",
    "studies",
    "study_options",
    "trials",
]
