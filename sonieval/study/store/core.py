"""The study store's base: the engine, the schema check on opening, and the reads every part needs
(a study, its trials)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from sqlalchemy import Table, select
from sqlalchemy.exc import OperationalError

from sonieval.study.design import Trial
from sonieval.study.options import StudyOptions
from sonieval.study.store.connection import make_engine, normalise_url, redact_url
from sonieval.study.store.migrations import ensure_schema
from sonieval.study.store.records import StudyError, StudyInfo
from sonieval.study.store.schema import dialect_insert, studies, study_options, trials


class StoreCore:
    """The engine and the reads of a study every part of :class:`~sonieval.study.store.StudyStore` uses."""

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time):
        self.url = normalise_url(url)
        self.engine = make_engine(self.url)
        self.clock = clock
        self._trial_cache: dict[str, dict[str, Trial]] = {}
        try:
            ensure_schema(self.engine, self.url, self.clock)
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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _insert(self, table: Table):
        return dialect_insert(self.dialect, table)

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


__all__ = ["StoreCore"]
