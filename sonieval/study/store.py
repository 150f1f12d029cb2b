"""Durable storage of a listening study (SQLAlchemy 2 Core).

SQLite file by default (embedded, zero setup): WAL journal so readers never block the writer,
a 30 s busy timeout so concurrent submissions wait instead of failing, ``synchronous=FULL``
so a committed mark survives a power cut. PostgreSQL by URL (``postgresql+psycopg://...``;
a plain ``postgresql://`` URL is given the psycopg 3 driver) for deployments with many raters.

Tables (schema version :data:`SCHEMA_VERSION`, recorded in ``schema_version``):

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
  even if the Python validation (:func:`validate_mark`) were bypassed.

Added for issue 14 without a schema-version change (older databases get them empty; a study
without a ``study_options`` row reads as the defaults of :class:`~sonieval.study.options.StudyOptions`):

- ``study_options``: one JSON row per study (title, rating scale, sessions, enrolment, headphone check).
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

Every mark is committed in its own transaction when submitted: a refreshed page, a closed tab
or a restarted server loses nothing already submitted. A SQLite database (and its -wal and -shm
files) is readable by its owner only (0600; an older one is made so when opened).
"""

from __future__ import annotations

import json
import math
import numbers
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
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
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError

from sonieval.errors import SonievalError
from sonieval.study.design import DesignConfig, PlanStep, Trial, page_labels, rater_plan, rater_seed
from sonieval.study.options import StudyOptions
from sonieval.study.tokens import hash_token, new_token, token_matches
from sonieval.tables import RATING_ATTRIBUTES, RATING_ROLES

SCHEMA_VERSION = 1


def _sql_list(values) -> str:
    """``'a', 'b'``: the allowed values of a CHECK constraint, from the one list in sonieval.tables."""
    return ", ".join(f"'{v}'" for v in values)


class StudyError(SonievalError):
    """A study-level problem: bad storage URL, unknown study, refused submission."""


class SubmissionRefused(StudyError):
    """A mark that is not stored (invalid, out of order, study closed, not listened yet).

    ``reason`` says which, so the app can answer the rater in one plain sentence
    (:func:`sonieval.study.texts.refusal`): ``closed``, ``invalid`` (a mark that is not an
    integer on the scale), ``not_next`` (a page other than the rater's next one), ``listen``
    (a stimulus not played long enough yet; ``wait`` holds the seconds still to play),
    ``implausible`` (more listening time reported than the page has been open) or ``request``
    (a malformed submission: unknown page, other attributes).
    """

    def __init__(self, message: str, *, reason: str = "request", wait: float = 0.0, **kw):
        super().__init__(message, **kw)
        self.reason = reason
        self.wait = wait


class EnrolmentRefused(StudyError):
    """A public enrolment that issues no rater link; ``reason``: ``disabled`` (no such link),
    ``closed``, ``full`` (the cap is reached), ``rate`` (too many enrolments just now, or from
    one address) or ``duplicate`` (this platform participant id is already enrolled)."""

    def __init__(self, message: str, *, reason: str, **kw):
        super().__init__(message, **kw)
        self.reason = reason


# The listening rule's tolerances: the player reports times rounded to 1 ms and a stimulus may end a
# few ms before its nominal duration (fades); a browser's audio clock and the server's clock agree
# to far better than the slack allowed for "played longer than the page was open".
LISTEN_TOLERANCE_S = 0.05
PLAUSIBLE_SLACK_S = 1.0
PLAUSIBLE_SLACK_FRACTION = 0.02


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
    CheckConstraint(f"attribute IN ({_sql_list(RATING_ATTRIBUTES)})", name="ck_ratings_attribute"),
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
_STUDY_TABLES = (
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


# ----------------------------------------------------------------------------- engine


def normalise_url(url: str) -> str:
    """Give plain ``postgresql://`` URLs the psycopg 3 driver (psycopg2 is not installed)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def redact_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<storage URL>"


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the pragmas/pool settings the study needs."""
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StudyError(
            f"storage URL {url!r} is not a database URL",
            hint="use sqlite:///path/study.sqlite or postgresql+psycopg://user@host/db",
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        db = parsed.database
        if not db or db == ":memory:":
            raise StudyError(
                "storage: an in-memory SQLite database would lose every mark", hint="use sqlite:///path/study.sqlite"
            )
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        owner_only(Path(db))
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=25, max_overflow=10
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if backend == "postgresql":
        try:
            return create_engine(url, pool_size=25, max_overflow=10, pool_pre_ping=True)
        except ModuleNotFoundError as exc:
            raise StudyError(
                f"storage: PostgreSQL driver missing ({exc.name})", hint="pip install 'psycopg[binary]'"
            ) from None
    raise StudyError(
        f"storage URL backend {backend!r} is not supported", hint="use sqlite:/// or postgresql+psycopg://"
    )


def owner_only(path: Path) -> None:
    """Create ``path`` readable by its owner only (0600), or make an existing one so: the study's
    database holds platform ids and token hashes. SQLite gives its -wal and -shm files the mode of
    the database file."""
    import os

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if extra.exists() and extra.stat().st_mode & 0o077:
                os.chmod(extra, 0o600)
    except OSError:  # another user's file (a shared folder): leave it as it is, SQLite says if it cannot open it
        pass


def validate_mark(value: object, scale_min: int, scale_max: int, *, what: str = "mark") -> int:
    """An integer mark within the scale, or :class:`SubmissionRefused` (text, bools, 3.5, NaN...)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if (
            isinstance(value, numbers.Real)
            and not isinstance(value, bool)
            and math.isfinite(float(value))
            and float(value).is_integer()
        ):
            value = int(value)  # 3.0 from a JSON client is the mark 3
        else:
            raise SubmissionRefused(
                f"{what}: {value!r} is not a whole number",
                hint=f"give an integer from {scale_min} to {scale_max}",
                reason="invalid",
            )
    mark = int(value)
    if not scale_min <= mark <= scale_max:
        raise SubmissionRefused(
            f"{what}: {mark} is outside the scale",
            hint=f"give an integer from {scale_min} to {scale_max}",
            reason="invalid",
        )
    return mark


@dataclass(frozen=True)
class StudyInfo:
    study_id: str
    mode: str
    attributes: tuple[str, ...]
    design: str
    trials_per_rater: int | None
    min_ratings_per_trial: int
    scale_min: int
    scale_max: int
    seed: int
    study_dir: Path
    status: str
    min_listen_fraction: float
    familiarisation: dict
    provenance: dict
    options: StudyOptions = StudyOptions()

    @property
    def title(self) -> str:
        return self.options.title or self.study_id

    @property
    def config(self) -> DesignConfig:
        return DesignConfig(
            self.mode, self.attributes, self.design, self.trials_per_rater, self.min_ratings_per_trial, self.seed
        )


@dataclass(frozen=True)
class Rater:
    study_id: str
    rater_id: str
    rater_index: int
    seed: int
    block_order: str
    familiarised_at: float | None


def _rater_of(row) -> Rater:
    """A rater from its database row (a SQLAlchemy mapping)."""
    return Rater(*(row[f.name] for f in fields(Rater)))


@dataclass(frozen=True)
class StepState:
    """A rater's next page: the step, its trial and how far the rater is."""

    step: PlanStep | None
    trial: Trial | None
    done: int
    total: int
    shown_at: float | None = None
    stale: bool = False  # a page already rated, still on a browser's screen (its submit gets an answer)
    trials: tuple[Trial, ...] = ()  # every trial of the page (multi mode: several)
    following: PlanStep | None = None  # the page after this one, if the rater goes on (a prefetch hint)

    @property
    def finished(self) -> bool:
        return self.step is None


@dataclass(frozen=True)
class SubmitResult:
    stored: int
    already_stored: int


class StudyStore:
    """All reads and writes of a study database. The app goes through :mod:`sonieval.study.session`."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time):
        self.url = normalise_url(url)
        self.engine = make_engine(self.url)
        self.clock = clock
        self._trial_cache: dict[str, dict[str, Trial]] = {}
        try:
            metadata.create_all(self.engine, checkfirst=True)
            self._check_schema_version()
        except OperationalError as exc:
            raise StudyError(
                f"storage {redact_url(self.url)}: cannot open the database ({exc.orig})",
                hint="check the URL, the server and the permissions",
            ) from None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> StudyStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_schema_version(self) -> None:
        with self.engine.begin() as conn:
            found = conn.execute(select(func.max(schema_version.c.version))).scalar()
            if found is None:
                try:
                    conn.execute(
                        self._insert(schema_version)
                        .values(version=SCHEMA_VERSION, applied_at=self.clock())
                        .on_conflict_do_nothing()
                    )
                except IntegrityError:
                    pass
            elif found != SCHEMA_VERSION:
                raise StudyError(
                    f"storage {redact_url(self.url)}: schema version {found}, this sonieval reads version {SCHEMA_VERSION}",
                    hint="use the sonieval version that created the study, or export and recreate it",
                )

    def _insert(self, table: Table):
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    # ------------------------------------------------------------------ studies

    def study(self, study_id: str) -> StudyInfo:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(studies, study_options.c.options)
                    .select_from(studies.outerjoin(study_options))
                    .where(studies.c.study_id == study_id)
                )
                .mappings()
                .first()
            )
        if row is None:
            raise StudyError(
                f"study {study_id!r} not found in {redact_url(self.url)}",
                hint="create it with sonieval study create (or serve)",
            )
        return StudyInfo(
            row["study_id"],
            row["mode"],
            tuple(row["attributes"].split(",")),
            row["design"],
            row["trials_per_rater"],
            row["min_ratings_per_trial"],
            row["scale_min"],
            row["scale_max"],
            row["seed"],
            Path(row["study_dir"]),
            row["status"],
            row["min_listen_fraction"],
            json.loads(row["familiarisation"]),
            json.loads(row["provenance"]),
            StudyOptions.from_json(row["options"]),
        )

    def has_study(self, study_id: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(studies.c.study_id).where(studies.c.study_id == study_id)).first() is not None

    def create_study(
        self,
        study_id: str,
        config: DesignConfig,
        *,
        scale_min: int,
        scale_max: int,
        study_dir: Path,
        trials_list: list[Trial],
        familiarisation: dict,
        provenance: dict,
        min_listen_fraction: float,
        file_levels: dict[str, dict] | None = None,
        replace_unrated: bool = False,
        options: StudyOptions | None = None,
    ) -> str | None:
        """Store a new study and return its admin token; ``None`` if it exists with the same trials.

        A study that exists with *different* trials (or the same trials over other files, e.g.
        aligned to another loudness), or in another mode or on another scale, is refused, since
        its marks refer to those; with ``replace_unrated`` a study that has no mark yet is
        replaced instead (its old links stop working). ``file_levels`` maps a study file name to
        its :class:`~sonieval.study.loudness.Level` fields. The options of an existing study are
        updated (its enrolment key, completion code and headphone salt are kept).
        """
        signature = _trial_signature(trials_list)
        if self.has_study(study_id):
            info = self.study(study_id)
            same_design = (info.mode, info.attributes, info.scale_min, info.scale_max) == (
                config.mode,
                tuple(config.attributes),
                scale_min,
                scale_max,
            )
            if _trial_signature(self.trials(study_id).values()) == signature and same_design:
                if options is not None:
                    self.set_options(study_id, _keep_secrets(options, info.options))
                return None
            if not (replace_unrated and self.count_marks(study_id) == 0):
                what = (
                    "different trials" if same_design else f"mode {info.mode}, scale {info.scale_min}-{info.scale_max}"
                )
                raise StudyError(
                    f"study {study_id!r} already exists in {redact_url(self.url)} with {what}",
                    hint="choose another study.study_id, or export and remove the old study first",
                )
            self.delete_study(study_id)
        token = new_token()
        now = self.clock()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    studies.insert().values(
                        study_id=study_id,
                        mode=config.mode,
                        attributes=",".join(config.attributes),
                        design=config.design,
                        trials_per_rater=config.trials_per_rater,
                        min_ratings_per_trial=config.min_ratings_per_trial,
                        scale_min=scale_min,
                        scale_max=scale_max,
                        seed=config.seed,
                        study_dir=str(Path(study_dir).resolve()),
                        status="open",
                        admin_token_hash=hash_token(token),
                        min_listen_fraction=float(min_listen_fraction),
                        familiarisation=json.dumps(familiarisation),
                        provenance=json.dumps(provenance, default=str),
                        created_at=now,
                    )
                )
                conn.execute(
                    study_options.insert().values(study_id=study_id, options=(options or StudyOptions()).to_json())
                )
                conn.execute(trials.insert(), [{**t.as_row(), "study_id": study_id} for t in trials_list])
                if file_levels:
                    conn.execute(
                        levels.insert(),
                        [{**_level_row(lv), "study_id": study_id, "file": f} for f, lv in sorted(file_levels.items())],
                    )
        except IntegrityError as exc:
            if "ck_studies_mode" in str(exc.orig):  # a database made before mode multi existed
                raise StudyError(
                    f"storage {redact_url(self.url)} predates study mode {config.mode!r}",
                    hint="use a new storage file or database for this study",
                ) from None
            raise
        return token

    def set_options(self, study_id: str, options: StudyOptions) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(study_options).where(study_options.c.study_id == study_id).values(options=options.to_json())
            )
            if done.rowcount == 0:
                conn.execute(study_options.insert().values(study_id=study_id, options=options.to_json()))

    def count_marks(self, study_id: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(select(func.count()).select_from(ratings).where(ratings.c.study_id == study_id)).scalar()
                or 0
            )

    def delete_study(self, study_id: str) -> None:
        """Remove a study and everything of it (children first: portable without cascades)."""
        with self.engine.begin() as conn:
            for table in _STUDY_TABLES:
                conn.execute(table.delete().where(table.c.study_id == study_id))
        self._trial_cache.pop(study_id, None)

    def set_status(self, study_id: str, status: str) -> None:
        if status not in ("open", "closed"):
            raise StudyError(f"study status {status!r} is not open or closed")
        with self.engine.begin() as conn:
            conn.execute(update(studies).where(studies.c.study_id == study_id).values(status=status))

    def rotate_admin_token(self, study_id: str) -> str:
        token = new_token()
        self.study(study_id)
        with self.engine.begin() as conn:
            conn.execute(
                update(studies).where(studies.c.study_id == study_id).values(admin_token_hash=hash_token(token))
            )
        return token

    def rotate_enrolment_key(self, study_id: str) -> str:
        """A new public enrolment key (the old link stops working); only its hash is stored."""
        from dataclasses import replace

        info = self.study(study_id)
        if not info.options.enrolment.enabled:
            raise StudyError(
                f"study {study_id!r} has no public enrolment", hint="set study.enrolment.enabled: true in the protocol"
            )
        key = new_token()
        self.set_options(
            study_id, replace(info.options, enrolment=replace(info.options.enrolment, key_hash=hash_token(key)))
        )
        return key

    def admin_ok(self, study_id: str, token: object) -> bool:
        with self.engine.connect() as conn:
            stored = conn.execute(select(studies.c.admin_token_hash).where(studies.c.study_id == study_id)).scalar()
        return token_matches(token, stored)

    def trials(self, study_id: str) -> dict[str, Trial]:
        cached = self._trial_cache.get(study_id)
        if cached is not None:
            return cached
        with self.engine.connect() as conn:
            rows = (
                conn.execute(select(trials).where(trials.c.study_id == study_id).order_by(trials.c.trial_id))
                .mappings()
                .all()
            )
        out = {}
        for r in rows:
            d = {k: r[k] for k in r.keys() if k != "study_id"}
            out[r["trial_id"]] = Trial(**d)
        if out:  # trials never change once a study exists
            self._trial_cache[study_id] = out
        return out

    # ------------------------------------------------------------------ raters

    def _add_rater(self, conn, info: StudyInfo, trial_list: list[Trial], index: int) -> tuple[str, str]:
        """Insert rater number ``index`` and their plan; returns (rater_id, token). Raises IntegrityError
        when another process took the index meanwhile."""
        rater_id = f"r{index + 1:03d}"
        seed = rater_seed(info.seed, rater_id)
        steps = rater_plan(trial_list, info.config, index, seed)
        blocks: list[str] = []
        for s in steps:
            if s.block not in blocks:
                blocks.append(s.block)
        token = new_token()
        conn.execute(
            raters.insert().values(
                study_id=info.study_id,
                rater_id=rater_id,
                token_hash=hash_token(token),
                rater_index=index,
                seed=seed,
                block_order=",".join(blocks),
                created_at=self.clock(),
                familiarised_at=None,
            )
        )
        conn.execute(
            plan.insert(),
            [
                {
                    "study_id": info.study_id,
                    "rater_id": rater_id,
                    "position": s.position,
                    "trial_id": s.trial_id,
                    "attributes": ",".join(s.attributes),
                    "block": s.block,
                    "shown_at": None,
                }
                for s in steps
            ],
        )
        multi = [
            {"study_id": info.study_id, "rater_id": rater_id, "position": s.position, "slot": k, "trial_id": t}
            for s in steps
            if s.block == "multi"
            for k, t in enumerate(s.trial_ids)
        ]
        if multi:
            conn.execute(page_trials.insert(), multi)
        return rater_id, token

    def _count_raters(self, conn, study_id: str) -> int:
        return int(
            conn.execute(select(func.count()).select_from(raters).where(raters.c.study_id == study_id)).scalar() or 0
        )

    def invite(self, study_id: str, n: int) -> list[tuple[str, str]]:
        """Mint ``n`` raters with their plans; returns (rater_id, token) pairs (tokens shown once)."""
        if n < 1:
            raise StudyError(f"cannot invite {n} raters", hint="give a positive number")
        info = self.study(study_id)
        trial_list = list(self.trials(study_id).values())
        out = []
        for _ in range(n):
            for _attempt in range(5):  # another process inviting at the same time takes the same index
                try:
                    with self.engine.begin() as conn:
                        out.append(self._add_rater(conn, info, trial_list, self._count_raters(conn, study_id)))
                    break
                except IntegrityError:
                    continue
            else:
                raise StudyError(
                    f"study {study_id!r}: could not allocate a rater id (concurrent invites)", hint="retry"
                )
        return out

    def enrol(
        self, study_id: str, key: object, participant: dict, ip_hash: str, *, screened: bool = False
    ) -> tuple[str, str]:
        """Self-enrolment through the public link: a new rater; returns (rater_id, token).

        One transaction per enrolment that first writes the study's row (an UPDATE that changes
        nothing), which makes concurrent enrolments wait for each other on SQLite and PostgreSQL
        alike, so the cap, the rate limits and the one-enrolment-per-participant rule hold exactly
        however many raters arrive at once. Refusals raise :class:`EnrolmentRefused`; ``screened``:
        the caller recognised this browser or address as one screened out before (reason
        ``screened``, after the cap and the rate limits).
        """
        info = self.study(study_id)
        opts = info.options.enrolment
        if not opts.enabled or not token_matches(key, opts.key_hash):
            raise EnrolmentRefused("this enrolment link is not valid", reason="disabled")
        if info.status != "open":
            raise EnrolmentRefused(f"study {study_id!r} is closed", reason="closed")
        trial_list = list(self.trials(study_id).values())
        for _attempt in range(50):
            try:
                with self.engine.begin() as conn:
                    conn.execute(update(studies).where(studies.c.study_id == study_id).values(status=studies.c.status))
                    self._check_enrolment(conn, info, participant, ip_hash, screened)
                    rater_id, token = self._add_rater(conn, info, trial_list, self._count_raters(conn, study_id))
                    conn.execute(
                        enrolments.insert().values(
                            study_id=study_id,
                            rater_id=rater_id,
                            ip_hash=ip_hash,
                            enrolled_at=self.clock(),
                            **{k: participant.get(k) for k in _PARTICIPANT_FIELDS},
                            platform=participant.get("platform") or "",
                        )
                    )
                return rater_id, token
            except (IntegrityError, OperationalError):  # a writer slipped in between (SQLite snapshot): retry
                time.sleep(0.005 + 0.02 * (_attempt % 5))
        raise StudyError(f"study {study_id!r}: enrolment did not get through (storage busy)", hint="retry")

    def _check_enrolment(self, conn, info: StudyInfo, participant: dict, ip_hash: str, screened: bool) -> None:
        opts, sid, now = info.options.enrolment, info.study_id, self.clock()
        pid = participant.get("participant_id")
        if pid:
            dup = conn.execute(
                select(enrolments.c.rater_id).where(
                    enrolments.c.study_id == sid,
                    enrolments.c.platform == (participant.get("platform") or ""),
                    enrolments.c.participant_id == pid,
                )
            ).first()
            if dup is not None:
                raise EnrolmentRefused("this participant id is already enrolled", reason="duplicate")
        if self._places_held(conn, info, now) >= opts.cap:
            raise EnrolmentRefused(f"the study has its {opts.cap} raters", reason="full")

        def since(seconds: float, *where) -> int:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(enrolments)
                    .where(enrolments.c.study_id == sid, enrolments.c.enrolled_at > now - seconds, *where)
                ).scalar()
                or 0
            )

        if (
            since(60.0) >= opts.max_per_minute
            or since(3600.0, enrolments.c.ip_hash == ip_hash) >= opts.max_per_ip_per_hour
        ):
            raise EnrolmentRefused("too many enrolments just now", reason="rate")
        if screened:
            raise EnrolmentRefused("this browser or address was screened out before", reason="screened")

    def _places_held(self, conn, info: StudyInfo, now: float) -> int:
        """Places of the cap taken: raters who finished, or who are neither screened out nor inactive
        for ``release_after_minutes`` (active = their last enrolment, check, page shown or submitted)."""
        sid, opts = info.study_id, info.options.enrolment
        who = {
            r.rater_id: max(r.created_at, r.familiarised_at or 0.0)
            for r in conn.execute(
                select(raters.c.rater_id, raters.c.created_at, raters.c.familiarised_at).where(raters.c.study_id == sid)
            )
        }
        pages = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                select(plan.c.rater_id, func.count(), func.max(plan.c.shown_at))
                .where(plan.c.study_id == sid)
                .group_by(plan.c.rater_id)
            )
        }
        submitted = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                select(page_log.c.rater_id, func.count(), func.max(page_log.c.submitted_at))
                .where(page_log.c.study_id == sid)
                .group_by(page_log.c.rater_id)
            )
        }
        checks = {
            r[0]: (bool(r[1]), r[2])
            for r in conn.execute(
                select(screening_checks.c.rater_id, screening_checks.c.passed, screening_checks.c.finished_at).where(
                    screening_checks.c.study_id == sid
                )
            )
        }
        stop_on_fail = info.options.headphones.enabled and info.options.headphones.on_fail == "stop"
        timeout = None if opts.release_after_minutes is None else 60.0 * opts.release_after_minutes
        held = 0
        for rid, active in who.items():
            planned, last_shown = pages.get(rid, (0, None))
            done, last_page = submitted.get(rid, (0, None))
            passed, checked_at = checks.get(rid, (True, None))
            if planned and done >= planned:
                held += 1  # finished
            elif stop_on_fail and not passed:
                continue  # screened out: never a completed rater, never a place
            elif timeout is None or now - max(active, last_page or 0.0, last_shown or 0.0, checked_at or 0.0) < timeout:
                held += 1
        return held

    def screened_out_since(self, study_id: str, since: float) -> list[tuple[str, str | None]]:
        """(rater id, enrolment address hash) of raters whose headphone check failed after ``since``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(screening_checks.c.rater_id, enrolments.c.ip_hash)
                .select_from(
                    screening_checks.outerjoin(
                        enrolments,
                        (enrolments.c.study_id == screening_checks.c.study_id)
                        & (enrolments.c.rater_id == screening_checks.c.rater_id),
                    )
                )
                .where(
                    screening_checks.c.study_id == study_id,
                    screening_checks.c.passed == 0,
                    screening_checks.c.finished_at > since,
                )
            ).all()
        return [(r[0], r[1]) for r in rows]

    def rater_for_token(self, study_id: str, token: object) -> Rater | None:
        """The rater whose token this is, or None (wrong, guessed or malformed tokens alike)."""
        from sonieval.study.tokens import looks_like_token

        if not looks_like_token(token):
            return None
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(raters).where(raters.c.study_id == study_id, raters.c.token_hash == hash_token(token))  # type: ignore[arg-type]
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        return _rater_of(row)

    def rater_by_id(self, study_id: str, rater_id: str) -> Rater:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(raters).where(raters.c.study_id == study_id, raters.c.rater_id == rater_id))
                .mappings()
                .first()
            )
        if row is None:
            raise StudyError(f"rater {rater_id!r} not in study {study_id!r}")
        return _rater_of(row)

    def set_familiarised(self, rater: Rater) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(raters)
                .where(
                    raters.c.study_id == rater.study_id,
                    raters.c.rater_id == rater.rater_id,
                    raters.c.familiarised_at.is_(None),
                )
                .values(familiarised_at=self.clock())
            )

    def plan_of(self, rater: Rater) -> list[tuple[PlanStep, float | None]]:
        where = (plan.c.study_id == rater.study_id, plan.c.rater_id == rater.rater_id)
        with self.engine.connect() as conn:
            rows = conn.execute(select(plan).where(*where).order_by(plan.c.position)).mappings().all()
            slots: dict[int, list[str]] = {}
            if any(r["block"] == "multi" for r in rows):
                for pos, tid in conn.execute(
                    select(page_trials.c.position, page_trials.c.trial_id)
                    .where(page_trials.c.study_id == rater.study_id, page_trials.c.rater_id == rater.rater_id)
                    .order_by(page_trials.c.position, page_trials.c.slot)
                ):
                    slots.setdefault(pos, []).append(tid)
        return [
            (
                PlanStep(
                    r["position"],
                    r["trial_id"],
                    tuple(r["attributes"].split(",")),
                    r["block"],
                    tuple(slots.get(r["position"], ())),
                ),
                r["shown_at"],
            )
            for r in rows
        ]

    def marked(self, rater: Rater) -> set[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(ratings.c.trial_id, ratings.c.attribute).where(
                    ratings.c.study_id == rater.study_id, ratings.c.rater_id == rater.rater_id
                )
            ).all()
        return {(r[0], r[1]) for r in rows}

    def step_state(
        self, rater: Rater, step: PlanStep, shown_at: float | None, done: int, total: int, **kw
    ) -> StepState:
        by_id = self.trials(rater.study_id)
        page = tuple(by_id[t] for t in step.trial_ids)
        return StepState(step, page[0], done, total, shown_at, trials=page, **kw)

    def next_step(self, rater: Rater) -> StepState:
        """The first page of the rater's plan with a mark not yet given (resume point)."""
        steps = self.plan_of(rater)
        done_marks = self.marked(rater)
        done = 0
        for i, (step, shown_at) in enumerate(steps):
            if _page_done(step, done_marks):
                done += 1
                continue
            following = next((s for s, _ in steps[i + 1 :] if not _page_done(s, done_marks)), None)
            return self.step_state(rater, step, shown_at, done, len(steps), following=following)
        return StepState(None, None, done, len(steps))

    def mark_shown(self, rater: Rater, position: int, known: float | None = None) -> float:
        """Record when a page was first shown (kept across reloads); returns that time.

        Read first: a page shown before needs no write (on SQLite every UPDATE takes the database's
        write lock, even one that changes no row, and a crowd reloads pages all the time).
        ``known``: the time the caller already read with the plan (no read needed)."""
        if known is not None:
            return float(known)
        key = (plan.c.study_id == rater.study_id, plan.c.rater_id == rater.rater_id, plan.c.position == position)
        with self.engine.connect() as conn:
            shown = conn.execute(select(plan.c.shown_at).where(*key)).scalar()
        if shown is not None:
            return float(shown)
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(
                update(plan)
                .where(
                    plan.c.study_id == rater.study_id,
                    plan.c.rater_id == rater.rater_id,
                    plan.c.position == position,
                    plan.c.shown_at.is_(None),
                )
                .values(shown_at=now)
            )
            shown = conn.execute(
                select(plan.c.shown_at).where(
                    plan.c.study_id == rater.study_id, plan.c.rater_id == rater.rater_id, plan.c.position == position
                )
            ).scalar()
        return float(shown) if shown is not None else now

    # ------------------------------------------------------------------ submitting a page

    def submit(
        self, rater: Rater, position: int, marks: dict[str, object], player: Mapping[str, Any] | None = None
    ) -> SubmitResult:
        """Validate and store the marks of one page, in one transaction; idempotent.

        ``marks``: ``{attribute: mark}`` for a page of one trial, ``{trial_id: {attribute: mark}}``
        for a multi-stimulus page. ``player``: what the page's A/B player reported
        (:func:`sonieval.study.player.normalise_state`: ``listened_s`` per sound label, switches,
        loop); the listening time per sound is stored with the marks.

        Refused (nothing stored): closed study, unknown position, a page after the rater's next
        one, marks other than the page's, marks that are not integers within the scale, and
        audio marks before every stimulus of the page was played for ``min_listen_fraction`` of
        its duration, or with more listening reported than the page has been open
        (:meth:`check_listening`). A page already marked is accepted and changes nothing (the
        first mark stands).
        """
        info = self.study(rater.study_id)
        if info.status != "open":
            raise SubmissionRefused(
                f"study {info.study_id!r} is closed", hint="the study's organiser can reopen it", reason="closed"
            )
        if not isinstance(marks, dict):
            raise SubmissionRefused("marks must be a mapping of attribute to mark")
        steps = self.plan_of(rater)
        if (
            isinstance(position, bool)
            or not isinstance(position, numbers.Integral)
            or not 0 <= int(position) < len(steps)
        ):
            raise SubmissionRefused(f"position {position!r} is not a page of this rater's plan")
        step, shown_at = steps[int(position)]
        cells = _page_cells(step, marks, info)
        done_marks = self.marked(rater)
        if all(cell in done_marks for cell in cells):
            return SubmitResult(0, len(cells))
        next_position = next((s.position for s, _ in steps if not _page_done(s, done_marks)), None)
        if next_position != step.position:
            raise SubmissionRefused(f"page {position} is not the next page", hint="reload the page", reason="not_next")
        now = self.clock()
        heard = _listened(step, player)
        self.check_listening(info, step, shown_at, heard, now)
        rows = [
            {
                "study_id": rater.study_id,
                "rater_id": rater.rater_id,
                "trial_id": t,
                "attribute": a,
                "mark": m,
                "scale_min": info.scale_min,
                "scale_max": info.scale_max,
                "position": step.position,
                "seed": rater.seed,
                "mode": info.mode,
                "shown_at": shown_at,
                "submitted_at": now,
            }
            for (t, a), m in cells.items()
        ]
        stored = 0
        try:
            with self.engine.begin() as conn:
                for row in rows:
                    # RETURNING names the rows actually inserted (rowcount is not reliable for
                    # ON CONFLICT DO NOTHING across drivers).
                    res = conn.execute(
                        self._insert(ratings)
                        .values(**row)
                        .on_conflict_do_nothing(index_elements=["study_id", "rater_id", "trial_id", "attribute"])
                        .returning(ratings.c.attribute)
                    )
                    stored += len(res.fetchall())
                if stored:
                    session = self._count_page_in_session(
                        conn, rater, info, shown_at, now, last=next_position == steps[-1][0].position
                    )
                    self._log_page(conn, rater, step, session, shown_at, now, heard, player)
        except IntegrityError as exc:  # the CHECK constraint: only reachable if validation is bypassed
            raise SubmissionRefused(f"the database refused the mark ({exc.orig})", reason="invalid") from None
        return SubmitResult(stored, len(rows) - stored)

    def check_listening(
        self, info: StudyInfo, step: PlanStep, shown_at: float | None, heard: dict[str, float] | None, now: float
    ) -> None:
        """The listening rule of an audio page (refuses with reason ``listen`` or ``implausible``).

        Every stimulus of the page (not the open reference) must have been played for
        ``min_listen_fraction`` x its duration, as the player measured it; and all the time
        played on the page together may not exceed the time since the page was first shown
        (plus :data:`PLAUSIBLE_SLACK_S` and :data:`PLAUSIBLE_SLACK_FRACTION`): the player plays
        one sound at a time, so a larger claim did not come from it.
        """
        if "audio" not in step.attributes or info.min_listen_fraction <= 0:
            return
        if shown_at is None:
            raise SubmissionRefused("the page was not shown yet", hint="reload the page and listen", reason="not_next")
        heard = heard or {}
        shortfall = self.listening_shortfall(info, step, heard)
        if shortfall > 0:
            raise SubmissionRefused(
                f"please listen to every sound first ({shortfall:.1f} s left)",
                hint="play them, then submit",
                reason="listen",
                wait=shortfall,
            )
        elapsed = max(0.0, now - shown_at)
        if sum(heard.values()) > elapsed * (1 + PLAUSIBLE_SLACK_FRACTION) + PLAUSIBLE_SLACK_S:
            raise SubmissionRefused(
                f"{sum(heard.values()):.1f} s of listening reported on a page open for {elapsed:.1f} s",
                hint="play the sounds again, then submit",
                reason="implausible",
            )

    def listening_shortfall(self, info: StudyInfo, step: PlanStep, heard: Mapping[str, float]) -> float:
        """Seconds still to play on an audio page: per stimulus, what it lacks of its minimum."""
        if "audio" not in step.attributes or info.min_listen_fraction <= 0:
            return 0.0
        by_id = self.trials(info.study_id)
        short = 0.0
        for label, tid in page_labels(step):
            if tid is not None:
                need = info.min_listen_fraction * by_id[tid].stimulus_seconds
                lack = need - float(heard.get(label, 0.0))
                short += lack if lack > LISTEN_TOLERANCE_S else 0.0
        return short

    def _log_page(
        self,
        conn,
        rater: Rater,
        step: PlanStep,
        session: int,
        shown_at: float | None,
        now: float,
        heard: dict[str, float] | None,
        player: Mapping[str, Any] | None,
    ) -> None:
        key = {"study_id": rater.study_id, "rater_id": rater.rater_id, "position": step.position}
        reported = bool(player) and heard is not None
        loop = (player or {}).get("loop") or {}
        conn.execute(
            self._insert(page_log)
            .values(
                **key,
                session=session,
                shown_at=shown_at,
                submitted_at=now,
                page_seconds=(now - shown_at) if shown_at is not None else None,
                listened_total_s=round(sum(heard.values()), 3) if reported else None,
                n_switches=int((player or {}).get("n_switches") or 0) if reported else None,
                loop_used=int(bool(loop.get("enabled"))) if reported else None,
            )
            .on_conflict_do_nothing(index_elements=["study_id", "rater_id", "position"])
        )
        if reported:
            trial_of = dict(page_labels(step))
            for label, seconds in heard.items():
                conn.execute(
                    self._insert(listening)
                    .values(**key, label=label, trial_id=trial_of[label], listened_s=seconds)
                    .on_conflict_do_nothing(index_elements=["study_id", "rater_id", "position", "label"])
                )

    # ------------------------------------------------------------------ sessions

    def sessions_of(self, rater: Rater) -> list[dict]:
        with self.engine.connect() as conn:
            rows = (
                conn.execute(
                    select(rater_sessions)
                    .where(rater_sessions.c.study_id == rater.study_id, rater_sessions.c.rater_id == rater.rater_id)
                    .order_by(rater_sessions.c.session)
                )
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]

    def start_session(self, rater: Rater, at: float | None = None) -> int:
        """Open the rater's next session (none is open); returns its number. A second call while
        one is open (a double click) returns the open one."""
        at = self.clock() if at is None else at
        with self.engine.begin() as conn:
            return self._open_session(conn, rater, at)

    def _open_session(self, conn, rater: Rater, at: float) -> int:
        where = (rater_sessions.c.study_id == rater.study_id, rater_sessions.c.rater_id == rater.rater_id)
        current = conn.execute(
            select(rater_sessions.c.session).where(*where, rater_sessions.c.ended_at.is_(None))
        ).scalar()
        if current is not None:
            return int(current)
        last = conn.execute(select(func.max(rater_sessions.c.session)).where(*where)).scalar() or 0
        conn.execute(
            self._insert(rater_sessions)
            .values(
                study_id=rater.study_id,
                rater_id=rater.rater_id,
                session=last + 1,
                started_at=at,
                ended_at=None,
                pages=0,
                ended_by=None,
            )
            .on_conflict_do_nothing(index_elements=["study_id", "rater_id", "session"])
        )
        return int(last + 1)

    def close_idle_session(self, rater: Rater, idle_s: float) -> bool:
        """End an open session whose last activity lies ``idle_s`` or more in the past ("left"),
        at that activity's time; returns True when one was ended."""
        now = self.clock()
        with self.engine.begin() as conn:
            open_row = (
                conn.execute(
                    select(rater_sessions).where(
                        rater_sessions.c.study_id == rater.study_id,
                        rater_sessions.c.rater_id == rater.rater_id,
                        rater_sessions.c.ended_at.is_(None),
                    )
                )
                .mappings()
                .first()
            )
            if open_row is None:
                return False
            last_page = conn.execute(
                select(func.max(page_log.c.submitted_at)).where(
                    page_log.c.study_id == rater.study_id,
                    page_log.c.rater_id == rater.rater_id,
                    page_log.c.session == open_row["session"],
                )
            ).scalar()
            last = max(float(open_row["started_at"]), float(last_page or 0.0))
            if now - last < idle_s:
                return False
            conn.execute(
                update(rater_sessions)
                .where(
                    rater_sessions.c.study_id == rater.study_id,
                    rater_sessions.c.rater_id == rater.rater_id,
                    rater_sessions.c.session == open_row["session"],
                    rater_sessions.c.ended_at.is_(None),
                )
                .values(ended_at=last, ended_by="left")
            )
        return True

    def _count_page_in_session(
        self, conn, rater: Rater, info: StudyInfo, shown_at: float | None, now: float, *, last: bool
    ) -> int:
        """Count a submitted page in the rater's open session (opened if none) and end the session when
        its pages or minutes are used up, or the study is finished; returns the session number."""
        number = self._open_session(conn, rater, shown_at if shown_at is not None else now)
        key = (
            rater_sessions.c.study_id == rater.study_id,
            rater_sessions.c.rater_id == rater.rater_id,
            rater_sessions.c.session == number,
        )
        conn.execute(update(rater_sessions).where(*key).values(pages=rater_sessions.c.pages + 1))
        row = conn.execute(select(rater_sessions.c.pages, rater_sessions.c.started_at).where(*key)).one()
        rule = info.options.sessions
        ended_by = (
            "finished"
            if last
            else "pages"
            if rule.pages and row.pages >= rule.pages
            else "minutes"
            if rule.minutes and now - row.started_at >= 60.0 * rule.minutes
            else None
        )
        if ended_by:
            conn.execute(
                update(rater_sessions)
                .where(*key, rater_sessions.c.ended_at.is_(None))
                .values(ended_at=now, ended_by=ended_by)
            )
        return number

    # ------------------------------------------------------------------ screening checks

    def record_check(self, rater: Rater, record: Mapping[str, Any], started_at: float | None = None) -> bool:
        """Store a check's result (first one stands); returns True when this call stored it."""
        cols = ("check", "n_trials", "n_correct", "pass_min", "responses", "answers", "seed")
        row = {
            "study_id": rater.study_id,
            "rater_id": rater.rater_id,
            **{c: record[c] for c in cols},
            "passed": int(bool(record["passed"])),
            "started_at": started_at,
            "finished_at": self.clock(),
        }
        with self.engine.begin() as conn:
            res = conn.execute(
                self._insert(screening_checks)
                .values(**row)
                .on_conflict_do_nothing(index_elements=["study_id", "rater_id", "check"])
                .returning(screening_checks.c.check)
            )
            return bool(res.fetchall())

    def check_of(self, rater: Rater, check: str) -> dict | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(screening_checks).where(
                        screening_checks.c.study_id == rater.study_id,
                        screening_checks.c.rater_id == rater.rater_id,
                        screening_checks.c.check == check,
                    )
                )
                .mappings()
                .first()
            )
        return dict(row) if row is not None else None

    # ------------------------------------------------------------------ admin reads

    def frame(self, table: Table, study_id: str) -> pd.DataFrame:
        with self.engine.connect() as conn:
            rows = conn.execute(select(table).where(table.c.study_id == study_id)).mappings().all()
        return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in table.columns])

    def raw_insert_rating(self, row: dict) -> None:
        """Insert a ratings row bypassing validation (tests of the CHECK constraint only)."""
        with self.engine.begin() as conn:
            conn.execute(ratings.insert().values(**row))


_PARTICIPANT_FIELDS = ("participant_id", "platform_study_id", "platform_session_id", "assignment_id", "hit_id")


def _page_done(step: PlanStep, done_marks: set[tuple[str, str]]) -> bool:
    return all((t, a) in done_marks for t in step.trial_ids for a in step.attributes)


def _page_cells(step: PlanStep, marks: dict, info: StudyInfo) -> dict[tuple[str, str], int]:
    """``{(trial_id, attribute): mark}`` of a submitted page, validated, or :class:`SubmissionRefused`."""
    ids = step.trial_ids
    if len(ids) == 1 and set(marks) == set(step.attributes):
        marks = {ids[0]: marks}
    if set(marks) != set(ids) or not all(
        isinstance(v, dict) and set(v) == set(step.attributes) for v in marks.values()
    ):
        got = ", ".join(map(str, marks)) or "nothing"
        raise SubmissionRefused(
            f"page {step.position} asks for {', '.join(step.attributes)} of {len(ids)} sound(s), got {got}"
        )
    return {
        (t, a): validate_mark(marks[t][a], info.scale_min, info.scale_max, what=f"{a} mark")
        for t in ids
        for a in step.attributes
    }


def _listened(step: PlanStep, player: Mapping[str, Any] | None) -> dict[str, float] | None:
    """Listening seconds per sound label of the page from a player report (None: no report)."""
    if not isinstance(player, Mapping) or not isinstance(player.get("listened_s"), Mapping):
        return None
    reported = player["listened_s"]
    out = {}
    for label, _ in page_labels(step):
        try:
            v = float(reported.get(label, 0.0))
        except (TypeError, ValueError):
            v = 0.0
        out[label] = round(v, 3) if math.isfinite(v) and v > 0 else 0.0
    return out


def _keep_secrets(new: StudyOptions, old: StudyOptions) -> StudyOptions:
    """New options for an existing study, keeping what was minted for it (key, code, salt)."""
    from dataclasses import replace

    enrol = replace(
        new.enrolment,
        key_hash=old.enrolment.key_hash or new.enrolment.key_hash,
        completion_code=new.enrolment.completion_code or old.enrolment.completion_code,
    )
    heads = replace(new.headphones, salt=old.headphones.salt or new.headphones.salt)
    return replace(new, enrolment=enrol, headphones=heads)


def _trial_signature(trial_list) -> list[tuple[str, str, str, str]]:
    return sorted((t.trial_id, t.source_key, t.original_file, t.stimulus_file) for t in trial_list)


def _level_row(level: dict) -> dict:
    keys = ("lufs_measured", "gain_db", "lufs", "true_peak_dbtp", "target_lufs", "limited")
    return {k: level.get(k) for k in keys}


def open_store(url: str, **kw: Any) -> StudyStore:
    return StudyStore(url, **kw)


__all__ = [
    "SCHEMA_VERSION",
    "StudyStore",
    "StudyError",
    "SubmissionRefused",
    "EnrolmentRefused",
    "StudyInfo",
    "Rater",
    "StepState",
    "SubmitResult",
    "validate_mark",
    "make_engine",
    "normalise_url",
    "redact_url",
    "open_store",
]
