"""A rater's sessions (start, pages, end and why it ended) and their screening checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select, update

from sonieval.study.store.core import StoreCore
from sonieval.study.store.records import Rater, StudyInfo
from sonieval.study.store.schema import page_log, rater_sessions, screening_checks


class RaterSessions(StoreCore):
    """Sessions and breaks, and the headphone check's result."""

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


__all__ = ["RaterSessions"]
