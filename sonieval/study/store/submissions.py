"""Submitting a page: its marks validated and stored in one transaction (idempotent: the first mark
stands), the listening rule, and the page's log (time on the page, listening per sound)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from sqlalchemy.exc import IntegrityError

from sonieval.study.design import PlanStep, page_labels
from sonieval.study.store.planning import Planning, page_done
from sonieval.study.store.records import Rater, StudyInfo, SubmissionRefused, SubmitResult, validate_mark
from sonieval.study.store.schema import listening, page_log, ratings
from sonieval.study.store.sessions import RaterSessions

# The listening rule's tolerances: the player reports times rounded to 1 ms and a stimulus may end a
# few ms before its nominal duration (fades); a browser's audio clock and the server's clock agree
# to far better than the slack allowed for "played longer than the page was open".
LISTEN_TOLERANCE_S = 0.05
PLAUSIBLE_SLACK_S = 1.0
PLAUSIBLE_SLACK_FRACTION = 0.02


class Submissions(Planning, RaterSessions):
    """A rater's submitted pages."""

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
        marks of a page with sound before every stimulus of the page was played for ``min_listen_fraction`` of
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
        next_position = next((s.position for s, _ in steps if not page_done(s, done_marks)), None)
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
        """The listening rule of a page with sound (refuses with reason ``listen`` or ``implausible``).

        Every stimulus of the page (not the open reference) must have been played for
        ``min_listen_fraction`` x its duration, as the player measured it; and all the time
        played on the page together may not exceed the time since the page was first shown
        (plus :data:`PLAUSIBLE_SLACK_S` and :data:`PLAUSIBLE_SLACK_FRACTION`): the player plays
        one sound at a time, so a larger claim did not come from it.
        """
        if not info.with_sound(step.attributes) or info.min_listen_fraction <= 0:
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
        """Seconds still to play on a page with sound: per stimulus, what it lacks of its minimum."""
        if not info.with_sound(step.attributes) or info.min_listen_fraction <= 0:
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

    def raw_insert_rating(self, row: dict) -> None:
        """Insert a ratings row bypassing validation (tests of the CHECK constraint only)."""
        with self.engine.begin() as conn:
            conn.execute(ratings.insert().values(**row))


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


__all__ = ["Submissions", "LISTEN_TOLERANCE_S", "PLAUSIBLE_SLACK_S", "PLAUSIBLE_SLACK_FRACTION"]
