"""What a rater and an admin may do, each behind their token (the app's only entry point).

Every call takes the presented token, never a rater id: a rater can only read their own
progress and submit their own marks, and a wrong, guessed or another study's token gets the
same answer as no token (``None`` / :class:`AccessDenied`), so the app reveals nothing.

**The listening gate.** ``st.audio`` renders a plain HTML ``<audio>`` element and reports no
play events to Python, so "the sonification was played" cannot be observed directly without
a custom front-end component. The gate used instead is enforced on the server: an audio mark
is accepted only once ``min_listen_fraction`` × the stimulus' duration has passed since the
page was first shown (the time is stored, so reloading does not reset it and a client cannot
skip it by crafting requests). Its limit: it proves that enough time passed, not that the
rater pressed play or listened; the hidden reference, the anchor and the attention checks
(screened in the admin view and the report) catch raters who do not listen.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from sonieval.study import texts
from sonieval.study.stimuli import WAVEFORM_SUBDIR, study_file
from sonieval.study.store import Rater, StepState, StudyError, StudyInfo, StudyStore, SubmissionRefused, SubmitResult


class AccessDenied(StudyError):
    """A token that does not open this study (or this action)."""


@dataclass(frozen=True)
class PageOutcome:
    """What became of one submitted page, for the rater: stored or not, and one plain sentence."""

    saved: bool  # this submission's marks were stored now
    move_on: bool  # show the rater's next page
    message: str | None = None  # what to tell the rater (None: nothing)


@dataclass(frozen=True)
class PageFiles:
    """The files one page shows, resolved inside the study folder (never from user input)."""

    original: Path
    stimulus: Path
    waveform: Path


class RaterSession:
    """A rater's view of the study, opened with their token."""

    def __init__(self, store: StudyStore, study_id: str, token: object):
        rater = store.rater_for_token(study_id, token)
        if rater is None:
            raise AccessDenied("this link is not valid for the study", hint="use the exact link you were given")
        self.store = store
        self.study_id = study_id
        self.rater: Rater = rater

    @property
    def info(self) -> StudyInfo:
        return self.store.study(self.study_id)

    @property
    def familiarised(self) -> bool:
        if not self.info.familiarisation:
            return True
        return self._fresh().familiarised_at is not None

    def _fresh(self) -> Rater:
        return self.store.rater_by_id(self.study_id, self.rater.rater_id)

    def finish_familiarisation(self) -> None:
        self.store.set_familiarised(self.rater)

    def next_step(self) -> StepState:
        return self.store.next_step(self.rater)

    def show(self, state: StepState) -> float:
        """Record that the page is on screen (starts the listening gate); returns the first-shown time."""
        assert state.step is not None
        return self.store.mark_shown(self.rater, state.step.position)

    def files(self, state: StepState) -> PageFiles:
        assert state.trial is not None
        return trial_files(self.info, state.trial.original_file, state.trial.stimulus_file, state.trial.waveform_file)

    def submit(self, position: int, marks: dict[str, object]) -> SubmitResult:
        return self.store.submit(self.rater, position, marks)

    def page(self, shown: object = None) -> StepState:
        """The page to render now.

        ``shown`` is the page the rater's browser says it shows (kept in its URL, so it outlives
        a server restart or an expired session). A page at or behind the rater's next page is
        rendered again so that a submit made from it is answered (stored if it is the next page,
        "already rated" if another window rated it meanwhile); anything else gives the next page.
        """
        nxt = self.next_step()
        position = _as_position(shown)
        if position is None or (nxt.step is not None and position >= nxt.step.position):
            return nxt
        steps = self.store.plan_of(self.rater)
        if position >= len(steps):
            return nxt
        step, shown_at = steps[position]
        return replace(nxt, step=step, trial=self.store.trials(self.study_id)[step.trial_id], shown_at=shown_at, stale=True)

    def submit_page(self, position: int, marks: dict[str, object]) -> PageOutcome:
        """Submit one page's marks and say what happened in one plain sentence (:mod:`texts`).

        Storage failures (a database that does not answer) are not caught here: the caller
        answers them with :data:`texts.NOT_SAVED` and keeps the page.
        """
        if not marks or any(m is None for m in marks.values()):
            return PageOutcome(False, False, texts.MISSING_MARK)
        try:
            result = self.submit(position, marks)
        except SubmissionRefused as exc:
            info = self.info
            return PageOutcome(False, exc.reason == "not_next", texts.refusal(exc.reason, exc.wait, info.scale_min, info.scale_max))
        if result.stored == 0 and result.already_stored > 0:
            return PageOutcome(False, True, texts.ALREADY_RATED)
        return PageOutcome(True, True, None)

    def listen_wait(self, state: StepState, now: float) -> float:
        """Seconds left before an audio mark on this page is accepted (0 when none)."""
        if state.step is None or "audio" not in state.step.attributes or state.shown_at is None:
            return 0.0
        info = self.info
        return max(0.0, state.shown_at + info.min_listen_fraction * state.trial.stimulus_seconds - now)  # type: ignore[union-attr]


def _as_position(value: object) -> int | None:
    """A page number from a URL parameter, or None (anything else, tampered values included)."""
    if isinstance(value, str) and value.isdigit() and len(value) < 7:
        return int(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 0:
        return int(value)
    return None


def trial_files(info: StudyInfo, original: str, stimulus: str, waveform: str) -> PageFiles:
    return PageFiles(
        study_file(info.study_dir, original),
        study_file(info.study_dir, stimulus),
        study_file(info.study_dir, waveform, WAVEFORM_SUBDIR),
    )


class AdminSession:
    """The admin view's actions, each needing the admin token."""

    def __init__(self, store: StudyStore, study_id: str, token: object):
        if not store.has_study(study_id) or not store.admin_ok(study_id, token):
            raise AccessDenied("this admin link is not valid for the study", hint="use the admin link printed by sonieval study serve")
        self.store = store
        self.study_id = study_id

    @property
    def info(self) -> StudyInfo:
        return self.store.study(self.study_id)

    def set_open(self, is_open: bool) -> None:
        self.store.set_status(self.study_id, "open" if is_open else "closed")

    def invite(self, n: int) -> list[tuple[str, str]]:
        return self.store.invite(self.study_id, n)

    def ratings(self) -> pd.DataFrame:
        from sonieval.study.export import ratings_frame

        return ratings_frame(self.store, self.study_id)

    def progress(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        from sonieval.study.export import progress_per_rater, progress_per_trial

        return progress_per_rater(self.store, self.study_id), progress_per_trial(self.store, self.study_id)

    def screening(self) -> pd.DataFrame:
        from sonieval.study.export import screening_per_rater

        return screening_per_rater(self.store, self.study_id)
