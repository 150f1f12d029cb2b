"""Helpers of the A/B player browser tests: time-code stimuli, the test page's server, an audio tap.

Time-code stimuli: every sample of a stimulus says which stimulus it is and where in it it lies
(a linear ramp, one value range per stimulus), so the audio the browser actually renders can be
decoded back into (stimulus, playhead) and compared with the position the player claims.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from harness.browser import CHROMIUM_ARGS, chromium_path

from sonieval.assets import ENGINE_JS
from sonieval.audio import write_wav
from sonieval.study.server import app_path, free_port, streamlit_command, wait_until_up

PAGE = Path(__file__).resolve().parent / "pages" / "player_page.py"
RATE = 44_100
SECONDS = 4.0
# label -> (offset, sign): value = sign * (offset + SLOPE * t); ranges do not overlap
CODES = {"Original": (0.05, 1.0), "A": (0.5, 1.0), "B": (0.05, -1.0)}
SLOPE = 0.4 / SECONDS


def write_timecode_stimuli(folder: Path) -> dict[str, Path]:
    t = np.arange(int(SECONDS * RATE)) / RATE
    out = {}
    for label, (offset, sign) in CODES.items():
        # FLOAT: the browser decodes the exact values (16-bit would still resolve 0.3 ms)
        out[label] = write_wav(folder / f"{label}.wav", sign * (offset + SLOPE * t), RATE, subtype="FLOAT")
    return out


def decode_timecode(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label index into CODES or -1, position in seconds) for each rendered sample."""
    labels = np.full(len(values), -1)
    pos = np.full(len(values), np.nan)
    for i, (offset, sign) in enumerate(CODES.values()):
        u = sign * values
        p = (u - offset) / SLOPE
        ok = (u >= offset - 1e-6) & (u <= offset + 0.4 + 1e-6) & (labels < 0)
        labels[ok] = i
        pos[ok] = p[ok]
    return labels, pos


@contextlib.contextmanager
def serve_player_page(folder: Path, log_path: Path) -> Iterator[str]:
    """``streamlit run`` the test page (the study server's flags) on a free port; yields its base URL."""
    port = free_port()
    cmd = [str(PAGE) if part == str(app_path()) else part for part in streamlit_command("127.0.0.1", port)]
    env = dict(os.environ, SONIEVAL_PLAYER_DIR=str(folder), MPLBACKEND="Agg")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, proc)
        yield base
    finally:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def audio_chromium() -> Iterator[object]:
    """Headless Chromium that may start audio without a click (the tests click or press keys anyway)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=CHROMIUM_ARGS + ["--autoplay-policy=no-user-gesture-required"],
        )
        try:
            yield browser
        finally:
            browser.close()


TAP_JS = """
async () => {
  const p = window.abPlayer, ctx = p.ctx;
  const code = `class Tap extends AudioWorkletProcessor {
    process(inputs) { const ch = inputs[0] && inputs[0][0]; if (ch) this.port.postMessage({f: currentFrame, d: ch.slice(0)}); return true; }
  }
  registerProcessor('sonieval-test-tap', Tap);`;
  await ctx.audioWorklet.addModule(URL.createObjectURL(new Blob([code], {type: 'application/javascript'})));
  const node = new AudioWorkletNode(ctx, 'sonieval-test-tap', {channelCount: 1, channelCountMode: 'explicit'});
  window.__tap = {frames: [], data: []};
  node.port.onmessage = (e) => { window.__tap.frames.push(e.data.f); window.__tap.data.push(e.data.d); };
  p.output.connect(node);
  const sink = ctx.createGain(); sink.gain.value = 0; node.connect(sink); sink.connect(ctx.destination);
  return ctx.sampleRate;
}
"""

# The rendered blocks as one base64 string of float32 (a JSON list of 10^5 numbers is slow to ship).
TAP_READ_JS = """
() => {
  const t = window.__tap, n = t.data.reduce((a, d) => a + d.length, 0), all = new Float32Array(n);
  let k = 0;
  for (const d of t.data) { all.set(d, k); k += d.length; }
  const bytes = new Uint8Array(all.buffer);
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return {f: t.frames, n: t.data.map((d) => d.length), b64: btoa(bin), sr: window.abPlayer.ctx.sampleRate};
}
"""


class PlayerPage:
    """One browser tab on the test page: the component's frame, keys, reported states, the audio tap."""

    def __init__(self, browser, base: str, folder: Path, log: str, *, reported_ready: bool = True, **params: object):
        from urllib.parse import urlencode

        self.folder, self.log = folder, log
        self.page = browser.new_page()
        self.page.goto(f"{base}/?{urlencode(dict(log=log, **params))}")
        self.frame = self._find_frame()
        self.frame.wait_for_function("window.abPlayer && window.abPlayer.engine !== null", timeout=30_000)
        if reported_ready:  # inside a form nothing is reported before the submit
            self.wait_state(lambda s: s["ready"])

    def _find_frame(self, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for frame in self.page.frames:
                if "/component/sonieval.study.player" in frame.url:
                    return frame
            self.page.wait_for_timeout(100)  # not time.sleep: Playwright handles frame events while it waits
        raise TimeoutError("the player's frame did not appear")

    def js(self, expr: str, arg: object = None):
        return self.frame.evaluate(expr, arg)

    def live(self) -> dict:
        """The state as the browser sees it now (not yet reported)."""
        return self.js("window.abPlayer.state()")

    def states(self) -> list[dict]:
        """Every state the Python page received, one per script run."""
        path = self.folder / f"{self.log}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_state(self, pred, timeout: float = 15.0) -> dict:
        """The first state reported to Python (newest first) that satisfies ``pred``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in reversed(self.states()):
                if pred(rec["state"]):
                    return rec["state"]
            self.page.wait_for_timeout(50)
        last = self.states()[-1]["state"] if self.states() else None
        raise TimeoutError(f"no reported state matched; last: {last}")

    def press(self, key: str) -> None:
        self.page.keyboard.press(key)  # goes to the focused element: focus_player() first

    def focus_player(self) -> None:
        self.frame.locator("#play").focus()

    def install_tap(self) -> int:
        return self.js(TAP_JS)

    def tap(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(audio-clock times, rendered samples of channel 0, sample rate) since the tap was installed."""
        got = self.js(TAP_READ_JS)
        sr = int(got["sr"])
        x = np.frombuffer(base64.b64decode(got["b64"]), dtype=np.float32).astype(np.float64)
        t = np.concatenate([(f + np.arange(n)) / sr for f, n in zip(got["f"], got["n"])])
        return t, x, sr

    def segment(self) -> tuple[float, float]:
        """The transport's current (audio-clock start, position at start)."""
        seg = self.js("() => [window.abPlayer.engine.segCtx, window.abPlayer.engine.segPos]")
        return float(seg[0]), float(seg[1])

    def wait(self, seconds: float) -> None:
        self.page.wait_for_timeout(seconds * 1000)

    def close(self) -> None:
        self.page.close()


# ---------------------------------------------------------------- the engine alone, rendered offline

# Runs the engine on an OfflineAudioContext: two sounds given as base64 float32 (or the same one
# twice), play from `start`, optional loop, switches at the given times (each at a render-quantum
# boundary, where the context is suspended); returns the rendered audio and the engine's timeline.
OFFLINE_RENDER_JS = """
async ({rate, seconds, sounds, mode, loop, start, switches}) => {
  const decode = (b64) => { const bin = atob(b64), u = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i); return new Float32Array(u.buffer); };
  const ctx = new OfflineAudioContext(1, Math.round(rate * seconds), rate);
  const buffers = sounds.map((b64) => { const x = decode(b64), b = ctx.createBuffer(1, x.length, rate);
    b.copyToChannel(x, 0); return b; });
  const engine = new SonievalAB.Engine(ctx, buffers, {mode: mode, fadeS: 0.005, horizonS: seconds + 1});
  if (loop) engine.setLoop(true, loop[0], loop[1]);
  engine.seek(start || 0);
  engine.play();
  const segment = [engine.segCtx, engine.segPos];
  const heard = [];
  for (const [at, index] of switches || []) {
    ctx.suspend(at).then(() => { heard.push([engine.select(index), engine.ctx.currentTime]); ctx.resume(); });
  }
  const out = await ctx.startRendering();
  const bytes = new Uint8Array(out.getChannelData(0).buffer);
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return {audio: btoa(bin), segment: segment, switches: heard};
}
"""


def render_offline(page, rate: int, seconds: float, sounds: list[np.ndarray], **options) -> dict:
    """Render the engine (engine.js, loaded into ``page``) on an OfflineAudioContext; returns the
    rendered samples (``audio``), the first segment's (audio-clock start, position) and, per switch,
    (the time the new sound is heard from, the context time of the switch)."""
    if not page.evaluate("() => !!window.SonievalAB"):
        page.add_script_tag(content=ENGINE_JS.read_text())
    b64 = [base64.b64encode(np.asarray(x, dtype=np.float32).tobytes()).decode() for x in sounds]
    got = page.evaluate(OFFLINE_RENDER_JS, dict(rate=rate, seconds=seconds, sounds=b64, **options))
    got["audio"] = np.frombuffer(base64.b64decode(got["audio"]), dtype=np.float32).astype(np.float64)
    return got
