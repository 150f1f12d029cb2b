"""What the rating pages say around the questions, and every answer to a rater.

The questions themselves and what their scale's ends mean are the study's attributes'
(:mod:`sonieval.rating_attributes`: the reference work's wording for ``visual`` and ``audio``, or
the protocol's own); the functions below put them on the page.

A rater is never shown a traceback, a file path or an internal message: every refused or
failed action is answered with one of the plain sentences below, and the page stays usable.
"""

from __future__ import annotations

import math

# The similarity scale's ends: the familiarisation examples are its ends (the anchor, the hidden reference).
from sonieval.rating_attributes import HIGH_END, HIGH_SHORT, LOW_END, LOW_SHORT

KEYBOARD_HINT = (
    "Keyboard: in the player, Space plays and pauses, the key on a sound's button switches to it at the same "
    "moment (r: the original R; 1-9 or the sound's letter), L loops, S stops; Tab moves to a question, Space and "
    "the arrow keys choose a mark, Tab then Enter submits."
)
PLAYER_HINT = "R is the original (key r). Switching keeps the playhead, so you can compare the same moment."


def scale_caption(scale_min: int, scale_max: int, low: str = LOW_END, high: str = HIGH_END) -> str:
    return f"{scale_min} = {low}; {scale_max} = {high}."


def page_scale_caption(attributes, scale_min: int, scale_max: int) -> str:
    """The caption under a page's questions: what the ends mean, once when its attributes
    (:class:`~sonieval.rating_attributes.RatingAttribute`) share them, else per question (its short form)."""
    ends = list(dict.fromkeys(a.ends for a in attributes))
    if len(ends) == 1:
        return scale_caption(scale_min, scale_max, *ends[0])
    return " ".join(f"{a.short.capitalize()}: {scale_caption(scale_min, scale_max, *a.ends)}" for a in attributes)


def mark_label(mark: int, scale_min: int, scale_max: int, low: str = LOW_SHORT, high: str = HIGH_SHORT) -> str:
    """Short labels so the scale fits on one line (``low``, ``high``: the attribute's
    ``low_short``, ``high_short``); the full end labels are in the caption."""
    if mark == scale_min:
        return f"{mark} ({low})"
    if mark == scale_max:
        return f"{mark} ({high})"
    return str(mark)


def slider_label(mark: object, scale_min: int, scale_max: int, low: str = LOW_SHORT, high: str = HIGH_SHORT) -> str:
    """The 0-100 slider's labels: ``-`` until moved, the ends named (the full labels are in the caption)."""
    if mark is None or mark == UNRATED:
        return "not rated yet"
    return mark_label(int(mark), scale_min, scale_max, low, high)  # type: ignore[arg-type]


UNRATED = "-"


def block_intro(block: str, shows: tuple[str, ...] = (), n_marks: int = 2) -> str:
    """The line above a page's questions: by the page's ``block`` (``panel``: a rating panel), and
    for a page of one attribute or of a joint page by what it ``shows`` (waveform, sound)."""
    fixed = {
        "panel": (
            "Compare every sound (A, B, ...) with the original R: play, switch as often as you like (the key is on "
            "each button), then set every slider. Click a waveform to enlarge it."
        ),
        "multi": (
            "Every sound below (A, B, ...) is compared with the original R. Listen to each, switch as often as "
            "you like, then give every sound its marks."
        ),
    }
    if block in fixed:
        return fixed[block]
    marks = "both marks" if n_marks == 2 else "every mark" if n_marks > 2 else "the mark"
    if block == "joint":
        return {
            ("waveform",): f"Look at both waveforms, then give {marks}.",
            ("sound",): f"Listen to both clips, then give {marks}.",
        }.get(shows, f"Listen to both clips and look at their waveforms, then give {marks}.")
    return {  # a block of one attribute (split mode, or a study of one attribute)
        ("waveform",): "This block is about the waveforms only: compare the two pictures.",
        ("sound",): "This block is about sound only: listen to both clips (waveforms are hidden).",
        ("waveform", "sound"): "Listen to both clips and look at their waveforms, then give the mark.",
    }.get(shows, "")


# ----------------------------------------------------------------------------- answers to a rater

MISSING_MARK = "Please choose a mark for every question before submitting."
MISSING_ANSWER = "Please answer every question before submitting."
ALREADY_RATED = (
    "This page had already been rated (perhaps in another window or tab), so the marks given first are kept. "
    "Here is your next page."
)
NOT_SAVED = "Your marks could not be saved just now, so please press Submit again."
PAGE_PROBLEM = "Something on this page could not be read and nothing was stored, so please choose your marks again."
RELOAD = "Something went wrong on our side, so please reload the page; every mark you submitted is saved."
UNAVAILABLE = (
    "The study is not available right now, so please try again in a few minutes; every mark you submitted is saved."
)
BAD_LINK = "This link is not valid. Please use the exact link you were given."
NO_LINK = "This study needs the personal link you were given."
CLOSED = "This study is closed at the moment. Thank you for your interest."


def refusal(reason: str, wait: float, scale_min: int, scale_max: int) -> str:
    """The sentence for a refused submission (:class:`sonieval.study.store.SubmissionRefused` reasons)."""
    if reason == "closed":
        return "This study is closed at the moment, so your marks were not stored."
    if reason == "invalid":
        return f"That mark is not on the scale, so please choose a mark from {scale_min} to {scale_max}."
    if reason == "not_next":
        return "That page is not the one to rate now, so here is your next page."
    if reason == "listen":
        return f"Please listen to every sound long enough first (about {max(1, math.ceil(wait))} s left), then submit."
    if reason == "implausible":
        return "The listening time could not be confirmed, so please play the sounds again, then submit."
    return PAGE_PROBLEM


# ----------------------------------------------------------------------------- sessions, screening, enrolment


def break_text(session: int, planned: int | None) -> str:
    of = f" of about {planned}" if planned else ""
    return (
        f"Session {session}{of} is done. Take a break: you can close this tab and come back later with the same "
        "link, or go on now."
    )


LEFT_RETURN = "Welcome back: you go on where you stopped."
HEADPHONE_INTRO = (
    "Please put on headphones. First set a comfortable volume with the tone below. Then, on each of the six "
    "questions, play the sound once: it holds three tones. Which tone is the quietest?"
)
HEADPHONE_SCREENED_OUT = (
    "Thank you. This study needs headphones, and the check suggests they are not in use, so it ends here. "
    "Nothing is held against you."
)
PERSONAL_LINK = (
    "This page's address is your personal link: bookmark it (or copy it) to come back later and go on where "
    "you stopped."
)


def enrol_refusal(reason: str) -> str:
    """The sentence for a refused enrolment (:class:`sonieval.study.store.EnrolmentRefused` reasons)."""
    return {
        "full": "Thank you for your interest: this study has all the participants it needs.",
        "closed": CLOSED,
        "rate": "Many people are joining right now, so please try again in a few minutes.",
        "duplicate": (
            "You have already joined this study. Please go on with your personal link (the address shown after "
            "you joined, which you were asked to bookmark)."
        ),
        "preview": "Please accept the task first; then this page lets you join.",
        "bad_id": "The link you came from is incomplete. Please return to the recruiting site and open the study again.",
        "no_id": "Please open this study from the recruiting site's link, which names you as a participant.",
        "screened": "You have already taken part in this study from this browser or network, so it cannot be joined again.",
    }.get(reason, BAD_LINK)
