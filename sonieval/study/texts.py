"""What the rating pages say: the questions and the labelled scale ends of the reference work.

The reference work marked "from 1 to 5 (1 = very low quality / totally different from the
original, 5 = high quality)" for audio similarity and waveform-shape similarity (§3); the
same wording is used here, with "the same as the original" added to the top end.
"""

from __future__ import annotations

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
