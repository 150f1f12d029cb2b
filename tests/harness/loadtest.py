"""Many raters on one machine: Streamlit-protocol clients that do what a rater's browser does, minus drawing.

A headless Chromium tab per rater costs a CPU core's worth of rendering for every few raters,
so 50 of them on the machine that also serves the study measure the browsers, not the server.
:class:`ProtocolRater` speaks the app's own websocket protocol instead (the ``BackMsg`` /
``ForwardMsg`` protobufs of the installed Streamlit): it opens the link, reads each page the
server sends (progress line, mark widgets, player, images), fetches the page's media as a
browser would (each sound once: the player keeps what it decoded, and fetches the next page's
sounds ahead, so a rater fetches those too), waits a think time, then submits the marks, the
player's report (stamped with the page it is about, as the player does) and the form's
submit exactly as the browser sends them (captured from Chromium: a radio's value is its option's
text, the player's a JSON string, the submit button a trigger). The server cannot tell
it from a browser, so a crowd of these loads the server as a crowd of raters would; the time a
rater waits is measured alongside by a few real Chromium raters (:mod:`harness.browser`).

Used by ``bench/bench_study.py``; handy for load-testing a deployment (``ws://`` or ``wss://``).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urljoin

_PAGE_RE = re.compile(r"Page (\d+) of (\d+)")
_INSTRUCTION_RE = re.compile(r"set (?:both marks|the mark) to (\d+)")


@dataclass
class PageView:
    """What one script run showed: the parts a rater acts on."""

    query_string: str = ""
    texts: list[str] = field(default_factory=list)
    radios: list[tuple[str, list[str]]] = field(default_factory=list)  # (widget id, options)
    players: list[tuple[str, dict]] = field(default_factory=list)  # (widget id, arguments)
    buttons: list[tuple[str, str, bool]] = field(default_factory=list)  # (widget id, label, form submitter)
    media: list[str] = field(default_factory=list)  # images
    sounds: list[str] = field(default_factory=list)  # the players' sounds and the next page's (prefetch)

    @property
    def text(self) -> str:
        return "\n".join(self.texts)

    @property
    def position(self) -> tuple[int, int] | None:
        m = _PAGE_RE.search(self.text)
        return (int(m.group(1)), int(m.group(2))) if m else None

    @property
    def kind(self) -> str:
        if "Thank you!" in self.text:
            return "done"
        if "Before you start" in self.text:
            return "familiarisation"
        if "time for a break" in self.text.lower():
            return "break"
        return "page" if self.position and (self.radios or any(a.get("rating") for _, a in self.players)) else "other"


@dataclass
class RaterRun:
    """One protocol rater's outcome: submit -> next page delivered (script finished), per page."""

    latencies: list[float] = field(default_factory=list)
    pages: int = 0
    requests: int = 0  # script runs the rater asked for (opening the link, each click or submit)
    runs: int = 0  # script runs the server started for this rater (more than requests: a page reran itself)
    error: str | None = None


class ProtocolRater:
    """One rater speaking Streamlit's websocket protocol (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        query: str,
        *,
        think: tuple[float, float] = (3.0, 7.0),
        seed: int = 0,
        fetch_media: bool = True,
        timeout: float = 180.0,
    ):
        self.base = base_url.rstrip("/")
        self.query = query
        self.think = think
        self.rng = random.Random(seed)
        self.fetch_media = fetch_media
        self.timeout = timeout
        self.page_script_hash = ""
        self.out = RaterRun()
        self.sounds_fetched: set[str] = set()  # the player's decoded sounds: each fetched once

    async def run(self) -> RaterRun:
        import websockets

        out = self.out = RaterRun()
        uri = self.base.replace("http://", "ws://").replace("https://", "wss://") + "/_stcore/stream"
        try:
            async with websockets.connect(
                uri, subprotocols=["streamlit"], max_size=None, open_timeout=self.timeout
            ) as ws:
                view = await self._rerun(ws, {})
                while view.kind != "done":
                    await self._fetch(view)
                    if view.kind == "page":
                        await asyncio.sleep(self.rng.uniform(*self.think))
                        start, before = time.perf_counter(), view.position
                        view = await self._rerun(ws, self._marks(view))
                        if view.position == before:  # refused: the page answered with a sentence
                            raise RuntimeError(f"page {before} was not taken: {view.text[:160]!r}")
                        out.latencies.append(time.perf_counter() - start)
                        out.pages += 1
                    elif view.kind in ("familiarisation", "break"):
                        view = await self._rerun(ws, self._press(view))
                    else:
                        raise RuntimeError(f"unexpected page: {view.text[:200]!r}")
        except Exception as exc:  # noqa: BLE001 - reported per rater by the caller
            out.error = f"{type(exc).__name__}: {exc}"
        return out

    # ------------------------------------------------------------------ protocol

    async def _rerun(self, ws, widgets: dict[str, dict]) -> PageView:
        """Send one rerun with ``widgets`` ({id: {field: value}}) and read until the run ends."""
        from streamlit.proto.BackMsg_pb2 import BackMsg

        self.out.requests += 1
        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = self.query
        state.page_script_hash = self.page_script_hash
        for wid, value in widgets.items():
            w = state.widget_states.widgets.add()
            w.id = wid
            for name, v in value.items():
                setattr(w, name, v)
        state.context_info.timezone = "UTC"
        state.context_info.locale = "en-US"
        state.context_info.url = self.base + "/"
        await ws.send(msg.SerializeToString())
        return await asyncio.wait_for(self._read(ws), self.timeout)

    async def _read(self, ws) -> PageView:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        view = PageView(query_string=self.query)
        while True:
            f = ForwardMsg()
            f.ParseFromString(await ws.recv())
            kind = f.WhichOneof("type")
            if kind == "new_session":
                self.out.runs += 1
                self.page_script_hash = f.new_session.page_script_hash or self.page_script_hash
                view = PageView(query_string=self.query)  # a rerun (st.rerun) starts the page afresh
            elif kind == "page_info_changed":
                self.query = view.query_string = f.page_info_changed.query_string
            elif kind == "delta" and f.delta.WhichOneof("type") == "new_element":
                _collect(view, f.delta.new_element)
            elif kind == "script_finished" and f.script_finished != ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                return view

    def _marks(self, view: PageView) -> dict[str, dict]:
        m = _INSTRUCTION_RE.search(view.text)
        widgets: dict[str, dict] = {}
        for wid, options in view.radios:
            target = int(m.group(1)) - 1 if m else self.rng.randrange(len(options))  # attention checks obeyed
            widgets[wid] = {"string_value": options[target]}
        for wid, args in view.players:
            labels = [s["label"] for s in args.get("stimuli", [])]
            need = float(args.get("min_listen_s", 0.0))
            rating = args.get("rating")  # a multi-stimulus page: the marks are the player's own sliders
            marks = {}
            if rating:
                lo, hi = int(rating["scale_min"]), int(rating["scale_max"])
                for s in args["stimuli"]:
                    if not s.get("reference"):
                        mark = int(m.group(1)) if m else self.rng.randint(lo, hi)
                        marks[s["label"]] = {a["id"]: mark for a in rating["attributes"]}
            widgets[wid] = {
                "json_value": json.dumps(
                    {
                        "marks": marks,
                        "v": 1,
                        "seq": 1,
                        "event": "pause",
                        "ready": True,
                        "playing": False,
                        "selected": labels[-1] if labels else None,
                        "listened_s": {lb: (0.0 if lb == "R" else need) for lb in labels},
                        "page": args.get("page"),
                        "n_switches": 1,
                        "loop": {"enabled": False, "start_s": 0, "end_s": 0},
                    }
                )
            }
        submit = next(wid for wid, _, is_submit in view.buttons if is_submit)
        widgets[submit] = {"trigger_value": True}
        return widgets

    def _press(self, view: PageView) -> dict[str, dict]:
        return {view.buttons[0][0]: {"trigger_value": True}}

    async def _fetch(self, view: PageView) -> None:
        """Fetch the page's media as the browser would, in parallel: the images, and the sounds
        (this page's and the next page's) the player has not fetched before."""
        sounds = [u for u in view.sounds if u not in self.sounds_fetched]
        self.sounds_fetched.update(sounds)
        urls = view.media + list(dict.fromkeys(sounds))
        if not self.fetch_media or not urls:
            return
        loop = asyncio.get_running_loop()

        def get(url: str) -> int:
            with urllib.request.urlopen(urljoin(self.base + "/", url), timeout=self.timeout) as r:
                return len(r.read())

        await asyncio.gather(*(loop.run_in_executor(None, get, u) for u in urls))


def _collect(view: PageView, element) -> None:
    kind = element.WhichOneof("type")
    part = getattr(element, kind)
    if kind == "progress":
        view.texts.append(part.text)
    elif kind in ("markdown", "alert", "heading"):
        view.texts.append(part.body)
    elif kind == "radio":
        view.radios.append((part.id, list(part.options)))
    elif kind == "button":
        view.buttons.append((part.id, part.label, bool(part.is_form_submitter)))
    elif kind == "component_instance":
        args = json.loads(part.json_args or "{}")
        view.players.append((part.id, args))
        view.sounds += [s["url"] for s in args.get("stimuli", []) if s.get("url")] + list(args.get("prefetch") or [])
    elif kind == "imgs":
        view.media += [img.url for img in part.imgs]


async def run_crowd(
    base_url: str,
    queries: list[str],
    *,
    think: tuple[float, float] = (3.0, 7.0),
    arrival_s: float = 5.0,
    fetch_media: bool = True,
) -> list[RaterRun]:
    """Start one :class:`ProtocolRater` per query string (arrivals spread over ``arrival_s``) and
    wait for all of them."""

    async def one(i: int, query: str) -> RaterRun:
        await asyncio.sleep(arrival_s * i / max(len(queries), 1))
        return await ProtocolRater(base_url, query, think=think, seed=i, fetch_media=fetch_media).run()

    return list(await asyncio.gather(*(one(i, q) for i, q in enumerate(queries))))


def mark_counts(store, study_id: str) -> tuple[int, int, int]:
    """(marks stored, distinct (rater, trial, attribute), pages planned) of a study: after a load
    test every mark is stored exactly once when the first two equal the pages times the attributes."""
    from sqlalchemy import text

    with store.engine.connect() as conn:
        total, distinct = conn.execute(
            text(
                "SELECT count(*), count(DISTINCT rater_id || '/' || trial_id || '/' || attribute) FROM ratings WHERE study_id = :s"
            ),
            {"s": study_id},
        ).one()
        planned = conn.execute(text("SELECT count(*) FROM plan WHERE study_id = :s"), {"s": study_id}).scalar()
    return int(total), int(distinct), int(planned)


__all__ = ["ProtocolRater", "PageView", "RaterRun", "mark_counts", "run_crowd"]
