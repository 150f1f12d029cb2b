"""What the rating pages say: the questions, the labelled scale ends, and every answer to a rater.

The reference work marked "from 1 to 5 (1 = very low quality / totally different from the
original, 5 = high quality)" for audio similarity and waveform-shape similarity (§3); the
same wording is used here, with "the same as the original" added to the top end.

A rater is never shown a traceback, a file path or an internal message: every refused or
failed action is answered with one of the plain sentences below, and the page stays usable.
"""

from __future__ import annotations

import math

QUESTIONS = {
    "visual": "Waveform: how similar is the shape of the sonification's waveform (bottom) to the original's (top)?",
    "audio": "Audio: how similar does the sonification sound to the original?",
}
LOW_END = "very low quality / totally different from the original"
HIGH_END = "high quality / the same as the original"
KEYBOARD_HINT = "Keyboard: Tab moves to a question, Space and the arrow keys choose a mark, Tab then Enter submits."


LOW_SHORT = "totally different"
HIGH_SHORT = "the same"


def scale_caption(scale_min: int, scale_max: int) -> str:
    return f"{scale_min} = {LOW_END}; {scale_max} = {HIGH_END}."


def mark_label(mark: int, scale_min: int, scale_max: int) -> str:
    """Short labels so the scale fits on one line; the full end labels are in the caption."""
    if mark == scale_min:
        return f"{mark} ({LOW_SHORT})"
    if mark == scale_max:
        return f"{mark} ({HIGH_SHORT})"
    return str(mark)


def block_intro(block: str) -> str:
    return {
        "joint": "Listen to both clips and look at their waveforms, then give both marks.",
        "visual": "This block is about the waveforms only: compare the two pictures.",
        "audio": "This block is about sound only: listen to both clips (waveforms are hidden).",
    }.get(block, "")


# ----------------------------------------------------------------------------- answers to a rater

MISSING_MARK = "Please choose a mark for every question before submitting."
ALREADY_RATED = ("This page had already been rated (perhaps in another window or tab), so the marks given first are kept. "
                 "Here is your next page.")
NOT_SAVED = "Your marks could not be saved just now, so please press Submit again."
PAGE_PROBLEM = "Something on this page could not be read and nothing was stored, so please choose your marks again."
RELOAD = "Something went wrong on our side, so please reload the page; every mark you submitted is saved."
UNAVAILABLE = "The study is not available right now, so please try again in a few minutes; every mark you submitted is saved."
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
        return f"Please listen to the sonification first (about {max(1, math.ceil(wait))} s left), then submit."
    return PAGE_PROBLEM
