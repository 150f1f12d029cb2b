"""What a rater and an admin may do, each behind their token (the app's only entry point).

Every call takes the presented token, never a rater id: a rater can only read their own
progress and submit their own marks, and a wrong, guessed or another study's token gets the
same answer as no token (``None`` / :class:`AccessDenied`), so the app reveals nothing.

**The listening rule.** The page's A/B player (:mod:`sonieval.study.player`) measures how long
each sound was actually played (audio-clock time with that sound selected) and its report
arrives with the submit. The server decides (:meth:`StudyStore.check_listening`): every stimulus
of a page with sound (an attribute that plays it, as ``audio`` does) must have been played for
``min_listen_fraction`` x its duration, and the time played on the page together may not exceed
the time since the page was first shown (the player plays one sound at a time, so a larger claim
was not measured by it). The browser's countdown is a display of the same rule; its "reached"
flag is never trusted. The listening time per sound is stored and exported. Its limit: it proves the sounds were played, not that
someone listened; the hidden reference, the anchor, the attention checks and the headphone
check (screened in the admin view and the report) catch raters who do not.

**Sessions.** A study may be split into sessions of N pages or M minutes
(:class:`sonieval.study.options.Sessions`): when one ends the rater is offered a break and can
close the tab and come back later with the same link; a rater away longer than
``idle_minutes`` starts a new session on return. Every session's start, end, pages and why it
ended are stored (the admin view shows where raters stop).

**Crowd enrolment.** :func:`enrol` turns a visit of the public link (``?enrol=KEY`` plus the
platform's ``PROLIFIC_PID``/``STUDY_ID``/``SESSION_ID`` or ``workerId``/``assignmentId``/``hitId``)
into a personal rater token; the network address is kept only as an HMAC keyed with the
study's own secret (``<study folder>/secret.key``), enough to rate-limit, not to recover it.
Behind trusted proxies the address is the one the outermost of them added (:func:`client_address`).
After a screen-out the same browser (a first-party marker cookie, :func:`browser_marker`) and the
same address cannot enrol again for ``reenrol_block_hours``; a place of the cap is held only by
raters who finished or are still active (:meth:`StudyStore._places_held`); completion codes can be
one per rater (:func:`rater_code`).
"""

from __future__ import annotations

import hashlib
import hmac
import numbers
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sonieval.study import texts
from sonieval.study.design import PlanStep, Trial, page_labels
from sonieval.study.stimuli import AUDIO_SUBDIR, WAVEFORM_SUBDIR, study_file
from sonieval.study.store import (
    EnrolmentRefused,
    Rater,
    StepState,
    StudyError,
    StudyInfo,
    StudyStore,
    SubmissionRefused,
    SubmitResult,
)


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


@dataclass(frozen=True)
class PageSound:
    """One sound of a page's player: its label, file, trial (None: the open reference) and
    whether it counts towards the listening rule."""

    label: str
    path: Path
    trial_id: str | None
    required: bool


class RaterSession:
    """A rater's view of the study, opened with their token."""

    def __init__(self, store: StudyStore, study_id: str, token: object, info: StudyInfo | None = None):
        """``info``: the study as the caller read it for this page view (saves reading it twice)."""
        rater = store.rater_for_token(study_id, token)
        if rater is None:
            raise AccessDenied("this link is not valid for the study", hint="use the exact link you were given")
        self.store = store
        self.study_id = study_id
        self.rater: Rater = rater
        self._info: StudyInfo | None = info if info is not None and info.study_id == study_id else None

    @property
    def info(self) -> StudyInfo:
        """The study as read once per session object (one per page view): what the page shows.
        Every rule the store applies reads the study afresh."""
        if self._info is None:
            self._info = self.store.study(self.study_id)
        return self._info

    @property
    def familiarised(self) -> bool:
        """Whether the rater has seen the examples (once set it stays set, so the row read with
        the token answers without another query)."""
        if not self.info.familiarisation or self.rater.familiarised_at is not None:
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
        return self.store.mark_shown(self.rater, state.step.position, known=state.shown_at)

    def files(self, state: StepState) -> PageFiles:
        assert state.trial is not None
        return trial_files(self.info, state.trial.original_file, state.trial.stimulus_file, state.trial.waveform_file)

    def waveform(self, state: StepState, trial=None) -> Path:
        """The waveform picture of the page's trial (or of ``trial``, one of a multi-stimulus page's)."""
        trial = trial or state.trial
        assert trial is not None
        return study_file(self.info.study_dir, trial.waveform_file, WAVEFORM_SUBDIR)

    def submit(self, position: int, marks: dict[str, object], player: Mapping[str, Any] | None = None) -> SubmitResult:
        return self.store.submit(self.rater, position, marks, player)

    # ------------------------------------------------------------------ the page's sounds

    def sounds(self, state: StepState) -> list[PageSound]:
        """The player's sounds: R (the original, not required), then the page's stimuli in order."""
        assert state.step is not None and state.trial is not None
        return self._page_sounds(state.step, {t.trial_id: t for t in state.trials})

    def following_sounds(self, state: StepState) -> list[Path]:
        """The sound files of the page after this one when it has a player (the player fetches and
        decodes them while the rater works on this page, so the next page is ready sooner); empty
        for the last page or a page without sounds."""
        step = state.following
        if step is None or not self.info.with_sound(step.attributes):
            return []
        return [sound.path for sound in self._page_sounds(step, self.store.trials(self.study_id))]

    def _page_sounds(self, step: PlanStep, trials: Mapping[str, Trial]) -> list[PageSound]:
        original = trials[step.trial_ids[0]].original_file
        out = []
        for label, tid in page_labels(step):
            name = original if tid is None else trials[tid].stimulus_file
            out.append(PageSound(label, study_file(self.info.study_dir, name), tid, tid is not None))
        return out

    def min_listen_s(self, state: StepState) -> float:
        """Seconds each stimulus must be played before a page with sound is marked (the player's countdown): the
        longest of the page's per-stimulus minimums, so the countdown never ends before the rule does."""
        info = self.info
        if state.step is None or not info.with_sound(state.step.attributes) or info.min_listen_fraction <= 0:
            return 0.0
        return max(info.min_listen_fraction * t.stimulus_seconds for t in state.trials)

    # ------------------------------------------------------------------ sessions and breaks

    def settle_sessions(self) -> None:
        """End a session the rater left (idle for ``idle_minutes``): they start a new one on return."""
        self.store.close_idle_session(self.rater, 60.0 * self.info.options.sessions.idle_minutes)

    def sessions(self) -> list[dict]:
        """The rater's sessions, oldest first (read afresh)."""
        return self.store.sessions_of(self.rater)

    def on_break(self, rows: list[dict] | None = None) -> dict | None:
        """The session just finished when the rater is due a break (none open, the last one ended by
        its pages or minutes), else None. ``rows``: :meth:`sessions` when the caller has read them."""
        rows = self.sessions() if rows is None else rows
        if not rows or rows[-1]["ended_at"] is None or rows[-1]["ended_by"] not in ("pages", "minutes"):
            return None
        return rows[-1]

    def continue_after_break(self) -> int:
        return self.store.start_session(self.rater)

    def session_number(self, rows: list[dict] | None = None) -> int:
        """The session this page counts in: the open one, or the next when the last one ended."""
        rows = self.sessions() if rows is None else rows
        if not rows:
            return 1
        return int(rows[-1]["session"]) + (1 if rows[-1]["ended_at"] is not None else 0)

    def open_session(self, rows: list[dict] | None = None) -> int:
        """Open the session this page counts in when none is open (a rater back after ``idle_minutes``
        or at the start), so what the page says is what is stored; returns its number. Call it when
        the rater is not on a break."""
        rows = self.sessions() if rows is None else rows
        if rows and rows[-1]["ended_at"] is None:
            return int(rows[-1]["session"])
        return self.store.start_session(self.rater)

    def sessions_planned(self, total: int) -> int | None:
        pages = self.info.options.sessions.pages
        return -(-total // pages) if pages else None

    # ------------------------------------------------------------------ headphone check

    @property
    def needs_headphone_check(self) -> bool:
        from sonieval.study.headphone import CHECK_NAME

        return self.info.options.headphones.enabled and self.store.check_of(self.rater, CHECK_NAME) is None

    @property
    def screened_out(self) -> bool:
        """A failed headphone check that stops the rater (``on_fail: stop``)."""
        from sonieval.study.headphone import CHECK_NAME

        hp = self.info.options.headphones
        if not hp.enabled or hp.on_fail != "stop":
            return False
        result = self.store.check_of(self.rater, CHECK_NAME)
        return result is not None and not result["passed"]

    def headphone_plan(self):
        """(calibration file, trials, their files) of this rater's headphone check."""
        from sonieval.study.headphone import DEFAULT_SPEC, plan_trials, stimulus_name

        salt = self.info.options.headphones.salt
        trials = plan_trials(self.rater.seed, DEFAULT_SPEC, salt)
        folder = self.info.study_dir
        calibration = study_file(folder, stimulus_name(DEFAULT_SPEC, ("calibration",), salt), AUDIO_SUBDIR)
        return calibration, trials, [study_file(folder, t.audio_name, AUDIO_SUBDIR) for t in trials]

    def submit_headphone(self, responses: list[object], started_at: float | None = None) -> PageOutcome:
        """Score and store the check (the first result stands); a missing answer stores nothing."""
        from sonieval.study.headphone import score_responses

        if any(r is None for r in responses):
            return PageOutcome(False, False, texts.MISSING_ANSWER)
        _, trials, _ = self.headphone_plan()
        try:
            result = score_responses(trials, responses, seed=self.rater.seed)
        except Exception:  # noqa: BLE001 - a tampered answer: one plain sentence
            return PageOutcome(False, False, texts.PAGE_PROBLEM)
        self.store.record_check(self.rater, result.as_record(), started_at)
        return PageOutcome(True, True, None)

    # ------------------------------------------------------------------ the end

    def completion(self) -> tuple[str | None, str | None]:
        """(completion code, the platform's return address) shown at the end; screened-out raters
        get the screened-out code instead. With ``per_rater_codes`` each rater has their own code
        (:func:`rater_code`, listed in raters.csv), so a code cannot be claimed by another id."""
        enrol = self.info.options.enrolment
        if self.screened_out:
            code = enrol.screened_out_code
        elif enrol.per_rater_codes:
            code = rater_code(self.info.study_dir, self.rater.rater_id)
        else:
            code = enrol.completion_code
        return code, enrol.return_url(code)

    def browser_marker(self) -> tuple[str, str, float] | None:
        """(cookie name, value, seconds to keep it) of the first-party marker this rater's browser
        keeps, so that a re-enrolment after a screen-out is recognised; None when the study does not
        block re-enrolment."""
        enrol = self.info.options.enrolment
        if not enrol.enabled or enrol.reenrol_block_hours <= 0:
            return None
        return (
            marker_cookie(self.study_id),
            browser_marker(self.info.study_dir, self.rater.rater_id),
            3600.0 * enrol.reenrol_block_hours,
        )

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
        return self.store.step_state(self.rater, step, shown_at, nxt.done, nxt.total, stale=True)

    def submit_page(
        self, position: int, marks: dict[str, object], player: Mapping[str, Any] | None = None
    ) -> PageOutcome:
        """Submit one page's marks and say what happened in one plain sentence (:mod:`texts`).

        ``marks``: ``{attribute: mark}``, or ``{trial_id: {attribute: mark}}`` on a multi-stimulus
        page. Storage failures (a database that does not answer) are not caught here: the caller
        answers them with :data:`texts.NOT_SAVED` and keeps the page.
        """
        values = [m for v in marks.values() for m in (v.values() if isinstance(v, dict) else [v])] if marks else []
        if not values or any(m is None for m in values):
            return PageOutcome(False, False, texts.MISSING_MARK)
        try:
            result = self.submit(position, marks, player)
        except SubmissionRefused as exc:
            info = self.info
            return PageOutcome(
                False, exc.reason == "not_next", texts.refusal(exc.reason, exc.wait, info.scale_min, info.scale_max)
            )
        if result.stored == 0 and result.already_stored > 0:
            return PageOutcome(False, True, texts.ALREADY_RATED)
        return PageOutcome(True, True, None)


# ----------------------------------------------------------------------------- crowd enrolment

_PLATFORM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PLATFORM_PARAMS = {
    "prolific": {
        "PROLIFIC_PID": "participant_id",
        "STUDY_ID": "platform_study_id",
        "SESSION_ID": "platform_session_id",
    },
    "mturk": {"workerId": "participant_id", "assignmentId": "assignment_id", "hitId": "hit_id"},
}
MTURK_PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE"


def participant_from(params: Mapping[str, object]) -> dict:
    """The recruiting platform's ids from the enrolment URL's parameters (Prolific or MTurk style).

    Each value must be a plain id (letters, digits, ``_``, ``-``; at most 64): a link whose
    placeholders were never filled in (``{{%PROLIFIC_PID%}}``) or an MTurk preview is refused.
    """
    for platform, names in PLATFORM_PARAMS.items():
        key = next(iter(names))
        if key not in params:
            continue
        out: dict = {"platform": platform}
        for param, column in names.items():
            value = params.get(param)
            if value is None or value == "":
                out[column] = None
                continue
            if value == MTURK_PREVIEW:
                raise EnrolmentRefused("an MTurk preview cannot enrol", reason="preview")
            if not isinstance(value, str) or not _PLATFORM_ID.match(value):
                raise EnrolmentRefused(f"{param} is not a plain id", reason="bad_id")
            out[column] = value
        if not out.get("participant_id"):
            raise EnrolmentRefused(f"{key} is empty", reason="bad_id")
        return out
    return {"platform": "", "participant_id": None}


def study_secret(study_dir: Path) -> bytes:
    """The study's own secret (``secret.key``, owner-only), made on first use: the key of the
    address hashes. Kept out of the database, so a copy of the database cannot be used to test
    guessed addresses against the hashes."""
    path = Path(study_dir) / "secret.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    except FileExistsError:  # another process made it first
        pass
    return bytes.fromhex(path.read_text().strip())


def address_hash(study_dir: Path, address: object) -> str:
    """HMAC-SHA-256 of a network address with the study's secret (the address is never stored)."""
    text = address if isinstance(address, str) and address else "unknown"
    return hmac.new(study_secret(study_dir), text.encode(), hashlib.sha256).hexdigest()


def client_address(remote: object, headers: Mapping[str, str] | None, trust_proxy: bool, hops: int = 1) -> str:
    """The rater's address: the connection's, or behind ``hops`` trusted proxies the entry of
    X-Forwarded-For that the outermost of them added (the ``hops``-th from the right).

    Each proxy appends the address it received from, so the entries left of that one are
    whatever the client sent (forged at will) and are never used. A header with fewer entries
    than trusted hops did not come through them: the connection's address is used.
    """
    if trust_proxy and headers:
        forwarded = headers.get("X-Forwarded-For") or headers.get("x-forwarded-for") or ""
        chain = [part.strip() for part in forwarded.split(",") if part.strip()]
        if hops >= 1 and len(chain) >= hops:
            return chain[-hops]
    return remote if isinstance(remote, str) else "unknown"


def _keyed(study_dir: Path, purpose: str, text: str) -> str:
    return hmac.new(study_secret(study_dir), f"{purpose}\x00{text}".encode(), hashlib.sha256).hexdigest()


def marker_cookie(study_id: str) -> str:
    """The name of the study's first-party browser marker (a cookie of the study's own site)."""
    return "sonieval_" + hashlib.sha256(study_id.encode()).hexdigest()[:12]


def browser_marker(study_dir: Path, rater_id: str) -> str:
    """The marker a rater's browser keeps: keyed by the study's secret, so it names no one and
    cannot be made for another rater."""
    return _keyed(study_dir, "browser-marker", rater_id)[:32]


def rater_code(study_dir: Path, rater_id: str) -> str:
    """A rater's own completion code (``per_rater_codes``): 10 characters keyed by the study's secret."""
    return _keyed(study_dir, "completion-code", rater_id)[:10].upper()


def _screened_before(store: StudyStore, info: StudyInfo, ip_hash: str, cookies: Mapping[str, str] | None) -> bool:
    """Whether this browser (its marker) or this address (its hash) belongs to a rater screened out
    within the study's ``reenrol_block_hours``."""
    hours = info.options.enrolment.reenrol_block_hours
    if hours <= 0 or not info.options.headphones.enabled or info.options.headphones.on_fail != "stop":
        return False
    screened = store.screened_out_since(info.study_id, store.clock() - 3600.0 * hours)
    marker = (cookies or {}).get(marker_cookie(info.study_id))
    for rater_id, their_ip_hash in screened:
        if their_ip_hash == ip_hash or (
            marker and hmac.compare_digest(marker, browser_marker(info.study_dir, rater_id))
        ):
            return True
    return False


def enrol(
    store: StudyStore,
    study_id: str,
    params: Mapping[str, object],
    remote: object = None,
    headers: Mapping[str, str] | None = None,
    cookies: Mapping[str, str] | None = None,
) -> str:
    """A visit of the public enrolment link: a new rater's token, or :class:`EnrolmentRefused`.

    ``cookies``: the browser's cookies (its marker, :meth:`RaterSession.browser_marker`): a
    browser or an address screened out before is refused (reason ``screened``) for
    ``reenrol_block_hours``."""
    info = store.study(study_id)
    opts = info.options.enrolment
    if not opts.enabled:
        raise EnrolmentRefused("this study has no public enrolment", reason="disabled")
    participant = participant_from(params)
    if opts.require_participant_id and not participant.get("participant_id"):
        raise EnrolmentRefused("a participant id is required", reason="no_id")
    address = client_address(remote, headers, opts.trust_proxy_headers, opts.trusted_proxy_hops)
    ip_hash = address_hash(info.study_dir, address)
    screened = _screened_before(store, info, ip_hash, cookies)
    _, token = store.enrol(study_id, params.get("enrol"), participant, ip_hash, screened=screened)
    return token


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
            raise AccessDenied(
                "this admin link is not valid for the study", hint="use the admin link printed by sonieval study serve"
            )
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

    def where_raters_stop(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        from sonieval.study.export import sessions_frame, stops_frame

        return stops_frame(self.store, self.study_id), sessions_frame(self.store, self.study_id)

    def rotate_enrolment_key(self) -> str:
        return self.store.rotate_enrolment_key(self.study_id)
