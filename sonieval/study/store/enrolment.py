"""Crowd enrolment through the public link: a new rater per visit, within the cap, the rate limits
and one enrolment per platform participant, however many arrive at once."""

from __future__ import annotations

import time

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from sonieval.study.store.planning import Planning
from sonieval.study.store.records import EnrolmentRefused, StudyError, StudyInfo
from sonieval.study.store.schema import enrolments, page_log, plan, raters, screening_checks, studies
from sonieval.study.tokens import token_matches


class Enrolling(Planning):
    """Self-enrolment (:meth:`enrol`) and the places of the enrolment cap."""

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


_PARTICIPANT_FIELDS = ("participant_id", "platform_study_id", "platform_session_id", "assignment_id", "hit_id")


__all__ = ["Enrolling"]
