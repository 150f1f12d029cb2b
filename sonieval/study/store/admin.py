"""The organiser's side of the store: a study's creation, options, status, tokens and removal, and
the admin view's queries."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from sonieval.study.design import DesignConfig, Trial
from sonieval.study.options import StudyOptions
from sonieval.study.store.connection import redact_url
from sonieval.study.store.core import StoreCore
from sonieval.study.store.records import StudyError
from sonieval.study.store.schema import (
    STUDY_TABLES,
    enrolments,
    levels,
    ratings,
    screening_checks,
    studies,
    study_options,
    trials,
)
from sonieval.study.tokens import hash_token, new_token, token_matches


class StudyAdmin(StoreCore):
    """Creating and running a study, for its organiser."""

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
            for table in STUDY_TABLES:
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


def _keep_secrets(new: StudyOptions, old: StudyOptions) -> StudyOptions:
    """New options for an existing study, keeping what was minted for it (key, code, salt)."""
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


__all__ = ["StudyAdmin"]
