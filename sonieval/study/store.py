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

Every mark is committed in its own transaction when submitted: a refreshed page, a closed tab
or a restarted server loses nothing already submitted.
"""

from __future__ import annotations

import json
import math
import numbers
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
from sqlalchemy import (
    CheckConstraint, Column, Float, ForeignKeyConstraint, Integer, MetaData, String, Table, Text,
    UniqueConstraint, create_engine, event, func, select, update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError

from sonieval.errors import SonievalError
from sonieval.study.design import DesignConfig, PlanStep, Trial, rater_plan, rater_seed
from sonieval.study.tokens import hash_token, new_token, token_matches

SCHEMA_VERSION = 1
ROLES = ("sonification", "reference", "anchor", "attention")
ATTRIBUTES = ("visual", "audio")


class StudyError(SonievalError):
    """A study-level problem: bad storage URL, unknown study, refused submission."""


class SubmissionRefused(StudyError):
    """A mark that is not stored (invalid, out of order, study closed, not listened yet).

    ``reason`` says which, so the app can answer the rater in one plain sentence
    (:func:`sonieval.study.texts.refusal`): ``closed``, ``invalid`` (a mark that is not an
    integer on the scale), ``not_next`` (a page other than the rater's next one), ``listen``
    (too early for an audio mark; ``wait`` holds the seconds left) or ``request`` (a malformed
    submission: unknown page, other attributes).
    """

    def __init__(self, message: str, *, reason: str = "request", wait: float = 0.0, **kw):
        super().__init__(message, **kw)
        self.reason = reason
        self.wait = wait


metadata = MetaData()

schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Float, nullable=False),
)

studies = Table(
    "studies", metadata,
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
    CheckConstraint("mode IN ('joint', 'split')", name="ck_studies_mode"),
    CheckConstraint("status IN ('open', 'closed')", name="ck_studies_status"),
    CheckConstraint("scale_max > scale_min", name="ck_studies_scale"),
)

trials = Table(
    "trials", metadata,
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
    CheckConstraint("role IN ('sonification', 'reference', 'anchor', 'attention')", name="ck_trials_role"),
)

raters = Table(
    "raters", metadata,
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
    "plan", metadata,
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
    "levels", metadata,
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
    "ratings", metadata,
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
    CheckConstraint("attribute IN ('visual', 'audio')", name="ck_ratings_attribute"),
    ForeignKeyConstraint(["study_id", "scale_min", "scale_max"], ["studies.study_id", "studies.scale_min", "studies.scale_max"], ondelete="CASCADE"),
    ForeignKeyConstraint(["study_id", "rater_id"], ["raters.study_id", "raters.rater_id"], ondelete="CASCADE"),
    ForeignKeyConstraint(["study_id", "trial_id"], ["trials.study_id", "trials.trial_id"], ondelete="CASCADE"),
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
        raise StudyError(f"storage URL {url!r} is not a database URL", hint="use sqlite:///path/study.sqlite or postgresql+psycopg://user@host/db") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        db = parsed.database
        if not db or db == ":memory:":
            raise StudyError("storage: an in-memory SQLite database would lose every mark", hint="use sqlite:///path/study.sqlite")
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=25, max_overflow=10)

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
            raise StudyError(f"storage: PostgreSQL driver missing ({exc.name})", hint="pip install 'psycopg[binary]'") from None
    raise StudyError(f"storage URL backend {backend!r} is not supported", hint="use sqlite:/// or postgresql+psycopg://")


def validate_mark(value: object, scale_min: int, scale_max: int, *, what: str = "mark") -> int:
    """An integer mark within the scale, or :class:`SubmissionRefused` (text, bools, 3.5, NaN...)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)) and float(value).is_integer():
            value = int(value)  # 3.0 from a JSON client is the mark 3
        else:
            raise SubmissionRefused(f"{what}: {value!r} is not a whole number", hint=f"give an integer from {scale_min} to {scale_max}",
                                    reason="invalid")
    mark = int(value)
    if not scale_min <= mark <= scale_max:
        raise SubmissionRefused(f"{what}: {mark} is outside the scale", hint=f"give an integer from {scale_min} to {scale_max}",
                                reason="invalid")
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

    @property
    def config(self) -> DesignConfig:
        return DesignConfig(self.mode, self.attributes, self.design, self.trials_per_rater, self.min_ratings_per_trial, self.seed)


@dataclass(frozen=True)
class Rater:
    study_id: str
    rater_id: str
    rater_index: int
    seed: int
    block_order: str
    familiarised_at: float | None


@dataclass(frozen=True)
class StepState:
    """A rater's next page: the step, its trial and how far the rater is."""

    step: PlanStep | None
    trial: Trial | None
    done: int
    total: int
    shown_at: float | None = None
    stale: bool = False  # a page already rated, still on a browser's screen (its submit gets an answer)

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
            raise StudyError(f"storage {redact_url(self.url)}: cannot open the database ({exc.orig})", hint="check the URL, the server and the permissions") from None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "StudyStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_schema_version(self) -> None:
        with self.engine.begin() as conn:
            found = conn.execute(select(func.max(schema_version.c.version))).scalar()
            if found is None:
                try:
                    conn.execute(self._insert(schema_version).values(version=SCHEMA_VERSION, applied_at=self.clock()).on_conflict_do_nothing())
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
            row = conn.execute(select(studies).where(studies.c.study_id == study_id)).mappings().first()
        if row is None:
            raise StudyError(f"study {study_id!r} not found in {redact_url(self.url)}", hint="create it with sonieval study create (or serve)")
        return StudyInfo(
            row["study_id"], row["mode"], tuple(row["attributes"].split(",")), row["design"], row["trials_per_rater"],
            row["min_ratings_per_trial"], row["scale_min"], row["scale_max"], row["seed"], Path(row["study_dir"]),
            row["status"], row["min_listen_fraction"], json.loads(row["familiarisation"]), json.loads(row["provenance"]),
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
    ) -> str | None:
        """Store a new study and return its admin token; ``None`` if it exists with the same trials.

        A study that exists with *different* trials (or the same trials over other files, e.g.
        aligned to another loudness) is refused, since its marks refer to those stimuli; with
        ``replace_unrated`` a study that has no mark yet is replaced instead (its old links stop
        working). ``file_levels`` maps a study file name to its :class:`~sonieval.study.loudness.Level`
        fields.
        """
        signature = _trial_signature(trials_list)
        if self.has_study(study_id):
            existing = _trial_signature(self.trials(study_id).values())
            if existing == signature:
                return None
            if not (replace_unrated and self.count_marks(study_id) == 0):
                raise StudyError(
                    f"study {study_id!r} already exists in {redact_url(self.url)} with different trials",
                    hint="choose another study.study_id, or export and remove the old study first",
                )
            self.delete_study(study_id)
        token = new_token()
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(studies.insert().values(
                study_id=study_id, mode=config.mode, attributes=",".join(config.attributes), design=config.design,
                trials_per_rater=config.trials_per_rater, min_ratings_per_trial=config.min_ratings_per_trial,
                scale_min=scale_min, scale_max=scale_max, seed=config.seed, study_dir=str(Path(study_dir).resolve()),
                status="open", admin_token_hash=hash_token(token), min_listen_fraction=float(min_listen_fraction),
                familiarisation=json.dumps(familiarisation), provenance=json.dumps(provenance, default=str), created_at=now,
            ))
            conn.execute(trials.insert(), [{**t.as_row(), "study_id": study_id} for t in trials_list])
            if file_levels:
                conn.execute(levels.insert(), [{**_level_row(lv), "study_id": study_id, "file": f} for f, lv in sorted(file_levels.items())])
        return token

    def count_marks(self, study_id: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(ratings).where(ratings.c.study_id == study_id)).scalar() or 0)

    def delete_study(self, study_id: str) -> None:
        """Remove a study and everything of it (children first: portable without cascades)."""
        with self.engine.begin() as conn:
            for table in (ratings, levels, plan, raters, trials, studies):
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
            conn.execute(update(studies).where(studies.c.study_id == study_id).values(admin_token_hash=hash_token(token)))
        return token

    def admin_ok(self, study_id: str, token: object) -> bool:
        with self.engine.connect() as conn:
            stored = conn.execute(select(studies.c.admin_token_hash).where(studies.c.study_id == study_id)).scalar()
        return token_matches(token, stored)

    def trials(self, study_id: str) -> dict[str, Trial]:
        cached = self._trial_cache.get(study_id)
        if cached is not None:
            return cached
        with self.engine.connect() as conn:
            rows = conn.execute(select(trials).where(trials.c.study_id == study_id).order_by(trials.c.trial_id)).mappings().all()
        out = {}
        for r in rows:
            d = {k: r[k] for k in r.keys() if k != "study_id"}
            out[r["trial_id"]] = Trial(**d)
        if out:  # trials never change once a study exists
            self._trial_cache[study_id] = out
        return out

    # ------------------------------------------------------------------ raters

    def invite(self, study_id: str, n: int) -> list[tuple[str, str]]:
        """Mint ``n`` raters with their plans; returns (rater_id, token) pairs (tokens shown once)."""
        if n < 1:
            raise StudyError(f"cannot invite {n} raters", hint="give a positive number")
        info = self.study(study_id)
        trial_list = list(self.trials(study_id).values())
        out = []
        for _ in range(n):
            for _attempt in range(5):  # another process inviting at the same time takes the same index
                with self.engine.connect() as conn:
                    index = conn.execute(select(func.count()).select_from(raters).where(raters.c.study_id == study_id)).scalar() or 0
                rater_id = f"r{index + 1:03d}"
                seed = rater_seed(info.seed, rater_id)
                steps = rater_plan(trial_list, info.config, index, seed)
                blocks = []
                for s in steps:
                    if s.block not in blocks:
                        blocks.append(s.block)
                token = new_token()
                try:
                    with self.engine.begin() as conn:
                        conn.execute(raters.insert().values(
                            study_id=study_id, rater_id=rater_id, token_hash=hash_token(token), rater_index=index,
                            seed=seed, block_order=",".join(blocks), created_at=self.clock(), familiarised_at=None,
                        ))
                        conn.execute(plan.insert(), [
                            {"study_id": study_id, "rater_id": rater_id, "position": s.position, "trial_id": s.trial_id,
                             "attributes": ",".join(s.attributes), "block": s.block, "shown_at": None}
                            for s in steps
                        ])
                    break
                except IntegrityError:
                    continue
            else:
                raise StudyError(f"study {study_id!r}: could not allocate a rater id (concurrent invites)", hint="retry")
            out.append((rater_id, token))
        return out

    def rater_for_token(self, study_id: str, token: object) -> Rater | None:
        """The rater whose token this is, or None (wrong, guessed or malformed tokens alike)."""
        from sonieval.study.tokens import looks_like_token

        if not looks_like_token(token):
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(raters).where(raters.c.study_id == study_id, raters.c.token_hash == hash_token(token))  # type: ignore[arg-type]
            ).mappings().first()
        if row is None:
            return None
        return Rater(row["study_id"], row["rater_id"], row["rater_index"], row["seed"], row["block_order"], row["familiarised_at"])

    def rater_by_id(self, study_id: str, rater_id: str) -> Rater:
        with self.engine.connect() as conn:
            row = conn.execute(select(raters).where(raters.c.study_id == study_id, raters.c.rater_id == rater_id)).mappings().first()
        if row is None:
            raise StudyError(f"rater {rater_id!r} not in study {study_id!r}")
        return Rater(row["study_id"], row["rater_id"], row["rater_index"], row["seed"], row["block_order"], row["familiarised_at"])

    def set_familiarised(self, rater: Rater) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(raters).where(
                raters.c.study_id == rater.study_id, raters.c.rater_id == rater.rater_id, raters.c.familiarised_at.is_(None)
            ).values(familiarised_at=self.clock()))

    def plan_of(self, rater: Rater) -> list[tuple[PlanStep, float | None]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(plan).where(plan.c.study_id == rater.study_id, plan.c.rater_id == rater.rater_id).order_by(plan.c.position)).mappings().all()
        return [(PlanStep(r["position"], r["trial_id"], tuple(r["attributes"].split(",")), r["block"]), r["shown_at"]) for r in rows]

    def marked(self, rater: Rater) -> set[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(ratings.c.trial_id, ratings.c.attribute).where(
                ratings.c.study_id == rater.study_id, ratings.c.rater_id == rater.rater_id)).all()
        return {(r[0], r[1]) for r in rows}

    def next_step(self, rater: Rater) -> StepState:
        """The first page of the rater's plan with an attribute not yet marked (resume point)."""
        steps = self.plan_of(rater)
        done_marks = self.marked(rater)
        done = 0
        for step, shown_at in steps:
            if all((step.trial_id, a) in done_marks for a in step.attributes):
                done += 1
                continue
            trial = self.trials(rater.study_id)[step.trial_id]
            return StepState(step, trial, done, len(steps), shown_at)
        return StepState(None, None, done, len(steps))

    def mark_shown(self, rater: Rater, position: int) -> float:
        """Record when a page was first shown (kept across reloads); returns that time."""
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(update(plan).where(
                plan.c.study_id == rater.study_id, plan.c.rater_id == rater.rater_id, plan.c.position == position,
                plan.c.shown_at.is_(None),
            ).values(shown_at=now))
            shown = conn.execute(select(plan.c.shown_at).where(
                plan.c.study_id == rater.study_id, plan.c.rater_id == rater.rater_id, plan.c.position == position)).scalar()
        return float(shown) if shown is not None else now

    def submit(self, rater: Rater, position: int, marks: dict[str, object]) -> SubmitResult:
        """Validate and store the marks of one page, in one transaction; idempotent.

        Refused (nothing stored): closed study, unknown position, a page after the rater's
        next one, attributes other than the page's, marks that are not integers within the
        scale, and audio marks sent before ``min_listen_fraction`` of the stimulus' duration
        has passed since the page was first shown. A page already marked is accepted and
        changes nothing (the first mark stands).
        """
        info = self.study(rater.study_id)
        if info.status != "open":
            raise SubmissionRefused(f"study {info.study_id!r} is closed", hint="the study's organiser can reopen it", reason="closed")
        if not isinstance(marks, dict):
            raise SubmissionRefused("marks must be a mapping of attribute to mark")
        steps = self.plan_of(rater)
        if isinstance(position, bool) or not isinstance(position, numbers.Integral) or not 0 <= int(position) < len(steps):
            raise SubmissionRefused(f"position {position!r} is not a page of this rater's plan")
        step, shown_at = steps[int(position)]
        if set(marks) != set(step.attributes):
            raise SubmissionRefused(
                f"page {position} asks for {', '.join(step.attributes)}, got {', '.join(map(str, marks)) or 'nothing'}"
            )
        clean = {a: validate_mark(marks[a], info.scale_min, info.scale_max, what=f"{a} mark") for a in step.attributes}
        done_marks = self.marked(rater)
        if all((step.trial_id, a) in done_marks for a in step.attributes):
            return SubmitResult(0, len(step.attributes))
        next_position = next((s.position for s, _ in steps if any((s.trial_id, a) not in done_marks for a in s.attributes)), None)
        if next_position != step.position:
            raise SubmissionRefused(f"page {position} is not the next page", hint="reload the page", reason="not_next")
        trial = self.trials(rater.study_id)[step.trial_id]
        now = self.clock()
        if "audio" in step.attributes and info.min_listen_fraction > 0:
            if shown_at is None:
                raise SubmissionRefused("the page was not shown yet", hint="reload the page and listen to the sonification",
                                        reason="not_next")
            wait = shown_at + info.min_listen_fraction * trial.stimulus_seconds - now
            if wait > 0:
                raise SubmissionRefused(
                    f"please listen to the sonification first ({wait:.1f} s left)", hint="play it, then submit", reason="listen", wait=wait,
                )
        rows = [
            {"study_id": rater.study_id, "rater_id": rater.rater_id, "trial_id": step.trial_id, "attribute": a,
             "mark": m, "scale_min": info.scale_min, "scale_max": info.scale_max, "position": step.position,
             "seed": rater.seed, "mode": info.mode, "shown_at": shown_at, "submitted_at": now}
            for a, m in clean.items()
        ]
        stored = 0
        try:
            with self.engine.begin() as conn:
                for row in rows:
                    # RETURNING names the rows actually inserted (rowcount is not reliable for
                    # ON CONFLICT DO NOTHING across drivers).
                    res = conn.execute(self._insert(ratings).values(**row).on_conflict_do_nothing(
                        index_elements=["study_id", "rater_id", "trial_id", "attribute"]).returning(ratings.c.attribute))
                    stored += len(res.fetchall())
        except IntegrityError as exc:  # the CHECK constraint: only reachable if validation is bypassed
            raise SubmissionRefused(f"the database refused the mark ({exc.orig})", reason="invalid") from None
        return SubmitResult(stored, len(rows) - stored)

    # ------------------------------------------------------------------ admin reads

    def frame(self, table: Table, study_id: str) -> pd.DataFrame:
        with self.engine.connect() as conn:
            rows = conn.execute(select(table).where(table.c.study_id == study_id)).mappings().all()
        return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in table.columns])

    def raw_insert_rating(self, row: dict) -> None:
        """Insert a ratings row bypassing validation (tests of the CHECK constraint only)."""
        with self.engine.begin() as conn:
            conn.execute(ratings.insert().values(**row))


def _trial_signature(trial_list) -> list[tuple[str, str, str, str]]:
    return sorted((t.trial_id, t.source_key, t.original_file, t.stimulus_file) for t in trial_list)


def _level_row(level: dict) -> dict:
    keys = ("lufs_measured", "gain_db", "lufs", "true_peak_dbtp", "target_lufs", "limited")
    return {k: level.get(k) for k in keys}


def open_store(url: str, **kw: Any) -> StudyStore:
    return StudyStore(url, **kw)


__all__ = [
    "SCHEMA_VERSION", "StudyStore", "StudyError", "SubmissionRefused", "StudyInfo", "Rater", "StepState",
    "SubmitResult", "validate_mark", "make_engine", "normalise_url", "redact_url", "open_store",
]
