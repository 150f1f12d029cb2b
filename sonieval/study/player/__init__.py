"""An A/B(/C…) listening player: one transport, instant switching at the same playhead (Web Audio).

A Streamlit custom component (``components.v1.declare_component(path=...)``) whose frontend is
static files in ``frontend/`` (HTML, CSS, plain JavaScript speaking Streamlit's component
protocol by ``postMessage``), so nothing is built at install time. The audio engine,
``sonieval/assets/ab/engine.js`` (served to the frame as a component of its own, see
``component.ENGINE_COMPONENT``), does not depend on Streamlit and drives the listening gallery too:
the browser decodes every stimulus up front; switching crossfades (5 ms, equal power: cos/sin)
between gain nodes of sources started together, so the new stimulus continues at the same
playhead; a region can be looped, with the level faded out and in around each wrap (no click);
keys that match the labels: the reference (``reference: True``) is ``r``, the others 1–9 in order
or their own letter; Space, L, S, [ ], arrows. It reports play state, playhead and the listening
time of each stimulus (audio-clock time actually played, not time on the page) and shows a
countdown until the minimum listening time is reached; with a ``page`` it keeps that page's
listening time in the tab's session storage, so a reload does not lose it. One frame can serve
many pages (one ``key``, a new ``page`` each time: no frame to load, and the sounds named in
``prefetch`` already decoded); its reports carry the page they are about. With ``rating`` it is a
rating panel (the MUSHRA layout): each stimulus's button, thumbnail and vertical slider(s) side
by side under the transport, the marks in the report.

    from sonieval.study.player import ab_player
    state = ab_player([{"label": "R", "path": orig, "required": False, "reference": True},
                       {"label": "A", "path": stim}], key="player", page=trial_id, min_listen_s=5,
                      prefetch=[next_orig, next_stim])
    state["listened_s"], state["min_listen_met"]
"""

from sonieval.study.player.component import (
    FRONTEND_DIR,
    SWITCH_MODES,
    PlayerError,
    ab_player,
    check_rating,
    check_stimuli,
    empty_state,
    listening_shortfall,
    media_url,
    normalise_state,
)

__all__ = [
    "ab_player",
    "PlayerError",
    "check_stimuli",
    "check_rating",
    "empty_state",
    "normalise_state",
    "listening_shortfall",
    "media_url",
    "FRONTEND_DIR",
    "SWITCH_MODES",
]
