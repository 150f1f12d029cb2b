"""The A/B player's Python side: argument checks, the Streamlit component call, the reported state.

The browser reports what it measured (play state, playhead, listening time per stimulus); the
server must not take its word for the listening rule, so :func:`normalise_state` rebuilds the
state from the reported numbers alone (unknown labels dropped, negative or non-finite times set
to 0, the "minimum reached" flag recomputed) and :func:`listening_shortfall` is the rule itself.
"""

from __future__ import annotations

import math
import mimetypes
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sonieval.assets import AB_DIR
from sonieval.errors import SonievalError

FRONTEND_DIR = Path(__file__).resolve().parent / "frontend"
# The audio engine is not in FRONTEND_DIR: it lives with the ground floor's assets (the listening gallery
# loads it too). Streamlit serves a component's folder and nothing outside it (symlinks resolved), so the
# engine's folder is declared as a component of its own; index.html loads it from that component's URL,
# ../<ENGINE_COMPONENT_NAME>/engine.js (both are served under /component/<name>/).
ENGINE_COMPONENT = "ab_engine"
ENGINE_COMPONENT_NAME = f"{__name__}.{ENGINE_COMPONENT}"  # Streamlit names it after the declaring module
SWITCH_MODES = ("crossfade", "restart")
MAX_STIMULI = 13  # the reference and 12 conditions (BS.1534 practice); keys 1..9, then each one's letter
RESERVED_LETTERS = {"L", "S"}  # loop, stop
_AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}


class PlayerError(SonievalError):
    """An A/B player argument that is not valid."""


def check_stimuli(stimuli: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validate the stimuli: 1..13 dicts with a unique ``label`` and a ``url`` or an existing ``path``.

    ``required`` (default True) says whether the stimulus counts towards the minimum listening time;
    ``reference`` (at most one) marks the open reference (key ``r``, not rated; the others are keys
    1..9 in order, or their letter); ``image`` (a url or an existing path) is the stimulus's picture
    on a rating panel (a thumbnail that enlarges).
    """
    if not isinstance(stimuli, (list, tuple)) or not 1 <= len(stimuli) <= MAX_STIMULI:
        raise PlayerError(f"ab_player: stimuli must be a list of 1 to {MAX_STIMULI} items", hint="one dict per sound")
    out, seen = [], set()
    for i, item in enumerate(stimuli):
        where = f"ab_player: stimuli[{i}]"
        if not isinstance(item, Mapping):
            raise PlayerError(f"{where} is not a dict", hint="give {'label': ..., 'url': ...}")
        label = item.get("label")
        if not isinstance(label, str) or not label.strip() or len(label) > 40:
            raise PlayerError(f"{where}: label must be a non-empty string of at most 40 characters")
        if label.upper() in RESERVED_LETTERS:
            raise PlayerError(f"{where}: label {label!r} is a reserved key", hint="L toggles the loop and S stops")
        if label in seen:
            raise PlayerError(f"{where}: label {label!r} appears twice", hint="labels name the buttons and must differ")
        seen.add(label)
        url, path = item.get("url"), item.get("path")
        if (url is None) == (path is None):
            raise PlayerError(f"{where} ({label}): give exactly one of url and path")
        if url is not None and (not isinstance(url, str) or not url):
            raise PlayerError(f"{where} ({label}): url must be a non-empty string")
        if path is not None and not Path(path).is_file():
            raise PlayerError(f"{where} ({label}): audio file not found", hint="check the path")
        entry = {"label": label, "required": bool(item.get("required", True))}
        if item.get("reference"):
            entry["reference"] = True
        entry["url" if url is not None else "path"] = url if url is not None else Path(path)
        image = item.get("image")  # a str is a url, a Path a file
        if image is not None:
            if not isinstance(image, (str, os.PathLike)) or (
                isinstance(image, os.PathLike) and not Path(image).is_file()
            ):
                raise PlayerError(
                    f"{where} ({label}): image not found", hint="give a url (str) or an existing file (Path)"
                )
            entry["image"] = image
        out.append(entry)
    if sum(e.get("reference", False) for e in out) > 1:
        raise PlayerError("ab_player: more than one stimulus is marked reference", hint="mark the open reference only")
    if any(e.get("reference") for e in out) and any(e["label"].upper() == "R" and not e.get("reference") for e in out):
        raise PlayerError(
            "ab_player: label 'R' is the reference's key", hint="label the reference R, or rename the other"
        )
    return out


def check_rating(rating: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A rating panel's options: ``scale_min`` < ``scale_max`` (integers), ``attributes`` (1 or 2 of
    ``{"id", "label", "short"}``) and the labels of the scale's ends (``low``, ``high``)."""
    if rating is None:
        return None
    try:
        lo, hi = int(rating["scale_min"]), int(rating["scale_max"])
        attrs = [
            {"id": str(a["id"]), "label": str(a["label"]), "short": str(a.get("short", a["label"]))}
            for a in rating["attributes"]
        ]
    except (KeyError, TypeError, ValueError):
        raise PlayerError("ab_player: rating needs scale_min, scale_max and attributes [{id, label}]") from None
    if lo >= hi or not 1 <= len(attrs) <= 2:
        raise PlayerError("ab_player: rating needs scale_min < scale_max and one or two attributes")
    return {
        "scale_min": lo,
        "scale_max": hi,
        "attributes": attrs,
        "low": str(rating.get("low", "")),
        "high": str(rating.get("high", "")),
    }


def _mark(value: Any, lo: int, hi: int) -> int | None:
    """A reported mark as the server reads it: an integer (or 3.0), else None (not rated). Its range
    is checked where the marks are stored (a value off the scale is refused there, with a sentence)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value) if float(value).is_integer() else None


def check_options(
    min_listen_s: float,
    loop_region: Sequence[float] | None,
    switch_mode: str,
    crossfade_ms: float,
    report_every_s: float,
) -> None:
    if not (isinstance(min_listen_s, (int, float)) and math.isfinite(min_listen_s) and min_listen_s >= 0):
        raise PlayerError(f"ab_player: min_listen_s={min_listen_s!r} must be a number >= 0")
    if switch_mode not in SWITCH_MODES:
        raise PlayerError(f"ab_player: switch_mode={switch_mode!r}", hint=f"use one of {SWITCH_MODES}")
    if not 0 < crossfade_ms <= 50:
        raise PlayerError(f"ab_player: crossfade_ms={crossfade_ms!r} must lie in (0, 50]")
    if report_every_s < 0:
        raise PlayerError(f"ab_player: report_every_s={report_every_s!r} must be >= 0 (0: report on events only)")
    if loop_region is not None:
        ok = (
            isinstance(loop_region, (list, tuple))
            and len(loop_region) == 2
            and all(isinstance(x, (int, float)) and math.isfinite(x) for x in loop_region)
        )
        if not ok or not 0 <= loop_region[0] < loop_region[1]:
            raise PlayerError(f"ab_player: loop_region={loop_region!r} must be (start_s, end_s) with 0 <= start < end")


def media_url(path: str | os.PathLike, coordinates: str) -> str:
    """Serve a local audio file the way ``st.audio`` does (Streamlit's media file manager); returns its URL.

    The URL names the file by a hash of its bytes, so it reveals nothing about the stimulus. It is
    kept alive as long as the script registers it on every run under the same ``coordinates``.
    """
    from streamlit import config, runtime

    if not runtime.exists():
        raise PlayerError(
            "ab_player: a path needs a running Streamlit server", hint="pass url= instead, or use streamlit run"
        )
    suffix = Path(path).suffix.lower()
    mimetype = _AUDIO_TYPES.get(suffix) or mimetypes.guess_type(str(path))[0] or "application/octet-stream"
    url = runtime.get_instance().media_file_mgr.add(str(path), mimetype, coordinates)
    base = (config.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}{url}" if base and url.startswith("/") else url


def empty_state(
    labels: Sequence[str], min_listen_s: float = 0.0, required: Sequence[bool] | None = None, page: str | None = None
) -> dict[str, Any]:
    """The state before the browser has reported anything."""
    return normalise_state(None, labels, min_listen_s=min_listen_s, required=required, page=page)


def _seconds(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) and v > 0 else 0.0


def listening_shortfall(listened_s: Mapping[str, float], min_listen_s: float, required: Mapping[str, bool]) -> float:
    """Seconds still to listen: the sum over required stimuli of what each lacks of ``min_listen_s``."""
    return sum(max(0.0, min_listen_s - _seconds(listened_s.get(label, 0.0))) for label, req in required.items() if req)


def normalise_state(
    raw: Any,
    labels: Sequence[str],
    *,
    min_listen_s: float = 0.0,
    required: Sequence[bool] | None = None,
    page: str | None = None,
    rating: Mapping[str, Any] | None = None,
    rated: Sequence[str] = (),
) -> dict[str, Any]:
    """The player's reported value, reduced to known fields with server-side checks.

    ``listened_s`` holds every label (0 when unreported); ``remaining_s`` and ``min_listen_met``
    are recomputed here from ``listened_s`` and ``min_listen_s``, whatever the browser said.
    With ``page``, a report about another page (the last one a reused player showed) counts as
    nothing reported yet. With ``rating`` (a rating panel) ``marks`` holds every ``rated`` label's
    mark per attribute (None: not rated yet, or not a whole number).
    """
    raw = raw if isinstance(raw, Mapping) else {}
    if page is not None and raw.get("page") != page:
        raw = {}
    req = dict(zip(labels, required if required is not None else [True] * len(labels)))
    reported = raw.get("listened_s") if isinstance(raw.get("listened_s"), Mapping) else {}
    listened = {label: round(_seconds(reported.get(label)), 3) for label in labels}
    shortfall = listening_shortfall(listened, min_listen_s, req)
    loop = raw.get("loop") if isinstance(raw.get("loop"), Mapping) else {}
    selected = raw.get("selected") if raw.get("selected") in labels else (labels[0] if labels else None)
    return {
        "ready": bool(raw.get("ready", False)),
        "error": str(raw["error"]) if raw.get("error") else None,
        "event": str(raw.get("event", "none")),
        "seq": int(_seconds(raw.get("seq"))),
        "playing": bool(raw.get("playing", False)),
        "selected": selected,
        "position_s": round(_seconds(raw.get("position_s")), 3),
        "duration_s": round(_seconds(raw.get("duration_s")), 3),
        "listened_s": listened,
        "min_listen_s": float(min_listen_s),
        "remaining_s": round(shortfall, 3),
        "min_listen_met": shortfall <= 0,
        "loop": {
            "enabled": bool(loop.get("enabled", False)),
            "start_s": round(_seconds(loop.get("start_s")), 3),
            "end_s": round(_seconds(loop.get("end_s")), 3),
        },
        "n_switches": int(_seconds(raw.get("n_switches"))),
        "last_switch": dict(raw["last_switch"]) if isinstance(raw.get("last_switch"), Mapping) else None,
        "switch_mode": raw.get("switch_mode") if raw.get("switch_mode") in SWITCH_MODES else None,
        "context_time": round(_seconds(raw.get("context_time")), 3),
        "page": page if page is not None else (str(raw["page"]) if raw.get("page") is not None else None),
        "marks": _marks(raw.get("marks"), rating, rated),
    }


def _marks(raw: Any, rating: Mapping[str, Any] | None, rated: Sequence[str]) -> dict[str, dict[str, int | None]]:
    if not rating:
        return {}
    raw = raw if isinstance(raw, Mapping) else {}
    lo, hi = int(rating["scale_min"]), int(rating["scale_max"])
    out = {}
    for label in rated:
        given = raw.get(label) if isinstance(raw.get(label), Mapping) else {}
        out[label] = {a["id"]: _mark(given.get(a["id"]), lo, hi) for a in rating["attributes"]}
    return out


def ab_player(
    stimuli: Sequence[Mapping[str, Any]],
    *,
    key: str,
    loop_region: Sequence[float] | None = None,
    min_listen_s: float = 0.0,
    switch_mode: str = "crossfade",
    crossfade_ms: float = 5.0,
    report_every_s: float = 1.0,
    initial_listened_s: Mapping[str, float] | None = None,
    page: str | None = None,
    prefetch: Sequence[str | os.PathLike] = (),
    rating: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Show the A/B player and return its last reported state (see :func:`normalise_state`).

    ``stimuli``: ``[{"label": "Original", "url": ..., "required": False}, {"label": "A", "path": ...}]``
    (a ``path`` is served through Streamlit's media file manager). ``key`` names the player: a new
    key gives a fresh frame. ``page`` names what the player shows: a player kept under one key
    across pages (no new frame to load: the next page is ready sooner) gets a new ``page`` with
    each page, starts afresh (listening time, switches, loop) and stamps its reports with it, so
    that a report about the last page never counts for this one. ``prefetch`` names the sound
    files (paths) of the page likely to come next: once this page's sounds are ready the player
    fetches and decodes them in the background and keeps them, so that page starts without
    waiting for its audio. The browser reports on
    every action (play, pause, stop, switch, seek, loop), when the minimum listening time is
    reached and, while playing, every ``report_every_s`` seconds (0: events only). Each report
    reruns the script unless the player sits inside an ``st.form`` (then the last state arrives
    with the form's submit) or an ``st.fragment`` (then only the fragment reruns).
    ``initial_listened_s`` carries listening time over into the player; with a ``page`` the
    browser also keeps the page's listening time (and marks) in the tab's session storage, so a
    reload of the same page does not lose it. ``rating`` turns the stimulus buttons into a rating
    panel (:func:`check_rating`): each stimulus but the reference gets a vertical slider per
    attribute under its button (and its ``image`` as a thumbnail), side by side (the MUSHRA
    layout); the marks arrive in the state's ``marks``.
    """
    import streamlit.components.v1 as components

    items = check_stimuli(stimuli)
    check_options(min_listen_s, loop_region, switch_mode, crossfade_ms, report_every_s)
    panel = check_rating(rating)
    labels = [s["label"] for s in items]
    required = [s["required"] for s in items]
    args = []
    for i, s in enumerate(items):
        url = s["url"] if "url" in s else media_url(s["path"], f"sonieval.ab_player.{key}.{i}")
        arg = {"label": s["label"], "url": url, "required": s["required"], "reference": s.get("reference", False)}
        if "image" in s:
            image = s["image"]
            arg["image"] = image if isinstance(image, str) else media_url(image, f"sonieval.ab_player.{key}.img.{i}")
        args.append(arg)
    ahead = [media_url(path, f"sonieval.ab_player.{key}.next.{i}") for i, path in enumerate(prefetch)]
    initial = {k: _seconds(v) for k, v in (initial_listened_s or {}).items() if k in labels}
    # Declared on every call: the registry lives in the running server, which may not have existed
    # when this module was imported (components are registered only inside a script run).
    components.declare_component(ENGINE_COMPONENT, path=str(AB_DIR))  # serves engine.js (see ENGINE_COMPONENT)
    component = components.declare_component("ab_player", path=str(FRONTEND_DIR))
    raw = component(
        stimuli=args,
        loop_region=list(loop_region) if loop_region is not None else None,
        min_listen_s=float(min_listen_s),
        switch_mode=switch_mode,
        crossfade_ms=float(crossfade_ms),
        report_every_s=float(report_every_s),
        initial_listened_s=initial,
        page=page,
        prefetch=ahead,
        rating=panel,
        key=key,
        default=None,
    )
    rated = [s["label"] for s in items if not s.get("reference")]
    return normalise_state(
        raw, labels, min_listen_s=min_listen_s, required=required, page=page, rating=panel, rated=rated
    )
