"""Drive a rater through a served study in headless Chromium (Playwright for Python).

Used by the browser tests and the latency benchmark, and handy to smoke-test a deployment.
It drives an installed Chromium (Debian's ``/usr/bin/chromium`` or ``$SONIEVAL_CHROMIUM``):
Playwright is never asked to download a browser.

A page counts as *fully rendered* when the script run has finished (``stApp``'s
``data-test-script-state`` is ``notRunning``), its progress line names the expected page, no
element is still marked stale by Streamlit (``data-stale``), the mark widgets have loaded (they
are code-split and show as skeletons first), every waveform image has loaded and the page's A/B
player shows the new page (one player frame serves every rating page: its page generation has
moved on since the submit) and has fetched and decoded its sounds.

Latency as a rater sees it is measured inside the page (:data:`SUBMIT_CLOCK_JS`,
:data:`RENDERED_AT_JS`): from the submit's click or Enter key event to the first animation frame
in which the next page is fully rendered, on the page's own clock. The driver's own round trips
(Playwright's actionability checks and protocol messages) are not part of it.

:class:`RaterDriver` also plays the page's sounds through the player's own buttons until the
listening rule is met (:meth:`RaterDriver.listen`), answers the headphone check, takes a break
and enrols through a public link.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
_PAGE_RE = re.compile(r"Page (\d+) of (\d+)")
PLAYER_FRAME = "sonieval.study.player"
BREAK_TITLE = "time for a break"
HEADPHONE_TITLE = "headphone check"
_INSTRUCTION_RE = re.compile(r"set (?:both marks|the mark) to (\d+)")

_RENDERED_JS = """
(want) => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  const stale = document.querySelector('[data-stale="true"]');
  if (stale) return false;
  if (want === 'done') return document.body.innerText.includes('Thank you!');
  const p = document.querySelector('[data-testid="stProgress"]');
  if (!p || !p.innerText.includes(want)) return false;
  for (const img of document.querySelectorAll('img')) { if (!img.complete || img.naturalWidth === 0) return false; }
  // Widgets are code-split: until the radio chunk has loaded, the form shows skeletons. A
  // multi-stimulus page's marks are the player's own sliders (its rating panel).
  const form = document.querySelector('[data-testid="stForm"]');
  const panel = form && Array.from(form.querySelectorAll('iframe[src*="sonieval.study.player"]')).some((f) => {
    const p = f.contentWindow && f.contentWindow.abPlayer; return p && p.args && p.args.rating; });
  if (!form || (!panel && form.querySelectorAll('[data-testid="stRadioOption"], [data-testid="stSlider"]').length === 0)) return false;
  if (form.querySelector('[data-testid="stSkeleton"]')) return false;
  // The page's player: a new frame, or the kept frame showing a new page (the generation it showed
  // was marked before the submit), its sounds decoded.
  for (const f of document.querySelectorAll('iframe[src*="sonieval.study.player"]')) {
    const p = f.contentWindow && f.contentWindow.abPlayer;
    if (!p || (f.dataset.soniOld !== undefined && String(p.generation) === f.dataset.soniOld)) return false;
    if (p.engine === null && !(p.last && p.last.error)) return false;
  }
  return document.querySelector('[data-testid="stFormSubmitButton"] button') !== null;
}
"""
# Installed with ``page.add_init_script``: the page's clock reading at the last submit (a click
# on the form's submit button, or Enter in the form), in ``window.__soniSubmitAt``.
SUBMIT_CLOCK_JS = """
(() => {
  const mark = () => { window.__soniSubmitAt = performance.now(); };
  document.addEventListener('click', (e) => {
    if (e.target && e.target.closest && e.target.closest('[data-testid="stFormSubmitButton"]')) mark(); }, true);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && e.target && e.target.closest && e.target.closest('[data-testid="stForm"]')) mark(); }, true);
})();
"""
# For wait_for_function (polled on animation frames): false until the page ``want`` is fully
# rendered, then the milliseconds since the last submit on the page's clock.
RENDERED_AT_JS = (
    "(want) => { const ok = (" + _RENDERED_JS.strip() + ")(want); "
    "return ok ? Math.max(0, performance.now() - (window.__soniSubmitAt || performance.now())) + 1e-6 : false; }"
)
_PLAYERS_READY_JS = """
() => Array.from(document.querySelectorAll('iframe[src*="sonieval.study.player"]')).every((f) => {
  const p = f.contentWindow && f.contentWindow.abPlayer; return p && (p.engine !== null || (p.last && p.last.error)); })
"""
_MARK_PLAYERS_OLD_JS = """
() => { for (const f of document.querySelectorAll('iframe[src*="sonieval.study.player"]')) {
  const p = f.contentWindow && f.contentWindow.abPlayer; f.dataset.soniOld = String(p ? p.generation : -1); } }
"""


def chromium_path() -> str | None:
    for candidate in (os.environ.get("SONIEVAL_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@contextlib.contextmanager
def headless_chromium() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        from sonieval.errors import SonievalError

        raise SonievalError("Chromium not found", hint="apt-get install chromium, or set SONIEVAL_CHROMIUM")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class RaterDriver:
    """One rater's tab: open the link, pass familiarisation, rate pages, time each step."""

    def __init__(self, page, link: str, timeout_ms: float = 30_000):
        self.page = page
        self.link = link
        self.timeout_ms = timeout_ms
        page.add_init_script(SUBMIT_CLOCK_JS)  # before the first navigation: open() loads the page

    def open(self) -> str:
        """Load the link; returns 'familiarisation', 'page' or 'done'."""
        self.page.goto(self.link)
        return self.wait_any()

    def wait_any(self) -> str:
        """Wait for a settled page; returns 'familiarisation', 'headphone', 'break', 'page', 'done' or
        'refused' (a page that only answers with a message, e.g. a refused enrolment)."""
        self._wait(_SETTLED_JS, timeout=self.timeout_ms)
        return str(self.page.evaluate(_WHICH_PAGE_JS))

    def current_link(self) -> str:
        """The address the tab shows now (after enrolment: the rater's personal link)."""
        return self.page.url

    def enrol(self, link: str) -> str:
        """Open a public enrolment link; returns the page reached (see :meth:`wait_any`). When a
        personal link was issued, it becomes this driver's link."""
        self.page.goto(link)
        where = self.wait_any()
        if "rater=" in self.page.url:
            self.link = self.page.url
        return where

    def answer_headphone_check(self, answers: list[int]) -> str:
        """Choose ``answers[i]`` (1, 2 or 3) for question i + 1 and submit; returns the page reached."""
        groups = self.page.locator('[data-testid="stRadio"]')
        for k, answer in enumerate(answers):
            option = groups.nth(k).locator('[data-testid="stRadioOption"]').nth(answer - 1)
            for _attempt in range(20):
                option.click()
                if option.locator("input").is_checked():
                    break
                self.page.wait_for_timeout(100)
        self.page.get_by_role("button", name="Submit the answers").click()
        from sonieval.study.texts import MISSING_ANSWER

        self.page.wait_for_function(
            "(missing) => !document.body.innerText.includes('Submit the answers') "
            "|| document.body.innerText.includes(missing)",
            arg=MISSING_ANSWER,
            timeout=self.timeout_ms,
        )
        return self.wait_any()

    def take_break(self) -> None:
        """On the break page: go on with the next session."""
        # Streamlit draws a page element by element: wait for the progress bar before reading it.
        number = int(self.page.wait_for_function(_DONE_PAGES_JS, timeout=self.timeout_ms).json_value())
        self.page.get_by_role("button", name="Go on with the next session").click()
        self.wait_rendered(number + 1)

    def player_frame(self):
        """The page's A/B player frame (None on a page without one)."""
        for frame in self.page.frames:
            if PLAYER_FRAME in frame.url and frame.evaluate("() => !!(window.abPlayer && window.abPlayer.engine)"):
                return frame
        return None

    def listen(self, extra_s: float = 0.02) -> float:
        """Play each required sound of the page with the player's own buttons until its minimum
        listening time is reached; returns the seconds spent (0 without a player or minimum)."""
        start = time.perf_counter()
        self._wait(_PLAYERS_READY_JS, timeout=self.timeout_ms)
        frame = self.player_frame()
        if frame is None:
            return 0.0
        live = frame.evaluate("() => window.abPlayer.state()")
        need = float(live["min_listen_s"])
        if need <= 0:
            return 0.0
        heard = lambda label: frame.evaluate("(l) => window.abPlayer.state().listened_s[l]", label)  # noqa: E731
        for i, label in enumerate(list(live["listened_s"])[1:], start=1):  # R (the original) does not count
            while heard(label) < need:
                frame.locator("#stop").click()
                frame.locator(f"#stimulus-{i}").click()
                frame.locator("#play").click()
                frame.wait_for_function(
                    f"(l) => window.abPlayer.state().listened_s[l] >= {need + extra_s} "
                    "|| !window.abPlayer.state().playing",
                    arg=label,
                    timeout=self.timeout_ms,
                )
                if frame.evaluate("() => window.abPlayer.state().playing"):
                    frame.locator("#play").click()  # pause
        frame.wait_for_function("() => window.abPlayer.state().remaining_s <= 0", timeout=self.timeout_ms)
        return time.perf_counter() - start

    def familiarise(self) -> None:
        """Leave the familiarisation page. A click Streamlit has not wired up yet (a page still
        loading on a busy machine) is lost without a trace, so the button is pressed again while it
        is still there, as a person would."""
        button = self.page.get_by_role("button", name="I am ready")
        for attempt in range(3):
            button.click()
            try:
                self._wait(_RENDERED_JS, arg="Page 1 of", timeout=self.timeout_ms // 3)
                return
            except TimeoutError:
                if attempt == 2 or not button.is_visible():
                    raise

    def position(self) -> tuple[int, int]:
        """(page number, pages) as shown in the progress line."""
        m = _PAGE_RE.search(self.page.locator('[data-testid="stProgress"]').inner_text())
        if not m:
            raise RuntimeError("no progress line on the page")
        return int(m.group(1)), int(m.group(2))

    def wait_rendered(self, page_number: int | None) -> None:
        want = "done" if page_number is None else f"Page {page_number} of"
        self._wait(_RENDERED_JS, arg=want, timeout=self.timeout_ms)

    def wait_rendered_ms(self, page_number: int | None) -> float:
        """Wait for page ``page_number`` (None: the thank-you page) fully rendered; returns the
        milliseconds from the last submit to the first frame that showed it, on the page's clock."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        want = "done" if page_number is None else f"Page {page_number} of"
        try:
            return float(self.page.wait_for_function(RENDERED_AT_JS, arg=want, timeout=self.timeout_ms).json_value())
        except PlaywrightTimeout:
            raise self._timeout_error() from None

    def _wait(self, js: str, **kw) -> None:
        """wait_for_function, with what the page showed when it times out (for diagnosis)."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            self.page.wait_for_function(js, **kw)
        except PlaywrightTimeout:
            raise self._timeout_error() from None

    def _timeout_error(self) -> TimeoutError:
        try:
            body = self.page.inner_text("body", timeout=2000)[:300].replace("\n", " | ")
        except Exception:  # noqa: BLE001 - the diagnosis must not hide the timeout
            body = "<unreadable>"
        return TimeoutError(f"page did not reach the expected state; it shows: {body!r}")

    def _target_mark(self, mark: int) -> int:
        alerts = " ".join(self.page.locator('[data-testid="stAlert"]').all_inner_texts())
        m = _INSTRUCTION_RE.search(alerts)
        return int(m.group(1)) if m else mark

    def rate(self, mark: int = 3, *, keyboard: bool = False, listen: bool = True) -> float:
        """Mark the current page (obeying an attention check), submit, wait for the next page.

        With ``keyboard`` the page is operated with keys only: Space and the arrow keys choose
        each mark, Tab moves on, Enter on the submit button submits. Returns seconds from the
        submit (click or Enter) to the next page fully rendered.
        """
        number, total = self.position()
        if listen:
            self.listen()
        start = self.choose_and_submit(mark, keyboard=keyboard)
        self.wait_next(number, total)
        return time.perf_counter() - start

    def wait_next(self, number: int, total: int) -> None:
        """After a submit on page ``number``: the next page rendered, or the break or thank-you page."""
        self._wait(
            "([want, last]) => { const t = document.body.innerText; const app = document.querySelector('[data-testid=\"stApp\"]');"
            " return app && app.getAttribute('data-test-script-state') === 'notRunning' && !document.querySelector('[data-stale=\"true\"]')"
            " && (t.includes(want) || t.toLowerCase().includes('time for a break') || (last && t.includes('Thank you!'))); }",
            arg=[f"Page {number + 1} of", number == total],
            timeout=self.timeout_ms,
        )
        if self.page.evaluate(_WHICH_PAGE_JS) == "page":
            self.wait_rendered(number + 1)

    def choose_and_submit(self, mark: int = 3, *, keyboard: bool = False) -> float:
        """Choose ``mark`` (or what an attention check asks) for every question and submit.

        Does not wait for the answer; returns the ``time.perf_counter()`` of the submit.
        """
        number, _ = self.position()
        target = self._target_mark(mark)
        sliders = self.page.locator('[data-testid="stForm"] [data-testid="stSlider"] input[type="range"]')
        for k in range(sliders.count()):
            self._set_slider(sliders.nth(k), target)
        groups = self.page.locator('[data-testid="stRadio"]')
        for k in range(groups.count()):
            inputs = groups.nth(k).locator("input")
            if keyboard:
                if k == 0:
                    inputs.first.focus()
                else:
                    self.page.keyboard.press("Tab")
                self.page.keyboard.press("Space")
                for _ in range(target - 1):
                    self.page.keyboard.press("ArrowRight")
                if not inputs.nth(target - 1).is_checked():
                    raise RuntimeError(f"keyboard selection of mark {target} failed on page {number}")
                continue
            option = groups.nth(k).locator('[data-testid="stRadioOption"]').nth(target - 1)
            # Under load a click can land before React has wired the handlers: check, retry.
            for _attempt in range(20):
                option.click()
                if option.locator("input").is_checked():
                    break
                self.page.wait_for_timeout(100)
            else:
                raise TimeoutError(f"mark {target} could not be selected on page {number}")
        for frame in self._panel_frames():
            marks = frame.locator("input.mark")
            for k in range(marks.count()):
                self._set_panel_slider(frame, marks.nth(k), target, wait=False)
            frame.wait_for_function(
                "(v) => Array.from(document.querySelectorAll('input.mark')).every((s) => !s.classList.contains('unset') && +s.value === v)",
                arg=target,
                timeout=self.timeout_ms,
            )
        start = time.perf_counter()
        self.page.evaluate(_MARK_PLAYERS_OLD_JS)
        if keyboard:
            self.page.keyboard.press("Tab")
            focused = self.page.evaluate("document.activeElement && document.activeElement.innerText || ''")
            if "Submit" not in focused:
                raise RuntimeError(f"Tab after the last mark focused {focused!r}, not the submit button")
            start = time.perf_counter()
            self.page.keyboard.press("Enter")
        else:
            self.page.locator('[data-testid="stFormSubmitButton"] button').click()
        return start

    def _panel_frames(self) -> list:
        """The player frames of the page that hold a rating panel (a multi-stimulus page's marks)."""
        return [
            f
            for f in self.page.frames
            if PLAYER_FRAME in f.url
            and f.evaluate("() => !!(window.abPlayer && window.abPlayer.args && window.abPlayer.args.rating)")
        ]

    def _set_panel_slider(self, frame, slider, target: int, wait: bool = True) -> None:
        """One of the panel's vertical sliders moved with keys only: Home, then Page Up and the arrow
        keys until it holds ``target`` (the first key press also rates it)."""
        slider.focus()
        self.page.keyboard.press("Home")
        now = int(slider.get_attribute("min") or 0)
        for _ in range(300):
            if now == target:
                break
            self.page.keyboard.press("PageUp" if target - now >= 10 else "ArrowUp" if target > now else "ArrowDown")
            now = int(float(slider.input_value()))
        if not wait:
            return
        frame.wait_for_function(
            "([id, v]) => { const s = document.getElementById(id); return s && !s.classList.contains('unset') && +s.value === v; }",
            arg=[slider.get_attribute("id"), target],
            timeout=self.timeout_ms,
        )

    def _set_slider(self, thumb, target: int, scale_min: int = 0) -> None:
        """A 0-100 select-slider (its first stop is "not rated yet") moved with keys only: Home, then
        Page Up and the arrow keys until it shows ``target``."""
        thumb.focus()
        self.page.keyboard.press("Home")
        want = target - scale_min + 1  # stop index: 0 is "not rated yet"
        for _ in range(300):
            now = int(float(thumb.input_value()))
            if now == want:
                break
            self.page.keyboard.press("PageUp" if want - now >= 10 else "ArrowRight" if want > now else "ArrowLeft")
        shown = thumb.get_attribute("aria-valuetext") or ""
        if not shown.split(" ")[0] == str(target):
            raise RuntimeError(f"slider did not reach {target}: {shown!r}")

    def wait_text(self, text: str) -> str:
        """Wait until the script has finished and the page shows ``text``; returns the page's text."""
        self._wait(
            "(want) => { const app = document.querySelector('[data-testid=\"stApp\"]');"
            " return app && app.getAttribute('data-test-script-state') === 'notRunning'"
            " && !document.querySelector('[data-stale=\"true\"]') && document.body.innerText.includes(want); }",
            arg=text,
            timeout=self.timeout_ms,
        )
        return self.page.inner_text("body")


_SETTLED_JS = """
() => { const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning' || document.querySelector('[data-stale="true"]')) return false;
  const t = document.body.innerText, low = t.toLowerCase();
  if (t.includes('Before you start') || t.includes('Thank you!') || low.includes('time for a break')) return true;
  if (low.includes('headphone check') && document.querySelector('[data-testid="stRadioOption"]')) return true;
  const panel = Array.from(document.querySelectorAll('[data-testid="stForm"] iframe[src*="sonieval.study.player"]')).some((f) => {
    const p = f.contentWindow && f.contentWindow.abPlayer; return p && p.args && p.args.rating && p.engine; });
  if (document.querySelector('[data-testid="stProgress"]') && (panel || document.querySelector('[data-testid="stForm"] [data-testid="stRadioOption"], [data-testid="stForm"] [data-testid="stSlider"]'))
      && document.querySelector('[data-testid="stFormSubmitButton"] button')) return true;
  return !!document.querySelector('[data-testid="stAlert"]') && !document.querySelector('[data-testid="stForm"]');
}
"""
_WHICH_PAGE_JS = """
() => { const t = document.body.innerText, low = t.toLowerCase();
  if (t.includes('Before you start')) return 'familiarisation';
  if (t.includes('Thank you!')) return 'done';
  if (low.includes('time for a break')) return 'break';
  if (low.includes('headphone check') && document.querySelector('[data-testid="stRadioOption"]')) return 'headphone';
  if (document.querySelector('[data-testid="stProgress"]') && document.querySelector('[data-testid="stForm"]')) return 'page';
  return 'refused';
}
"""
_DONE_PAGES_JS = """
() => { const bar = document.querySelector('[data-testid="stProgress"]');
        const m = bar && bar.innerText.match(/(\\d+) of (\\d+) pages rated/); return m ? String(+m[1]) : null; }
"""


# What a page must never show a rater: Streamlit's exception box, a traceback, a source path.
# The source path is this checkout's own folder, wherever it is installed.
INTERNALS_RE = re.compile(
    r"Traceback|File \"|\.py\b|/site-packages/|Error:|" + re.escape(str(Path(__file__).resolve().parents[2]))
)


def shows_internals(page) -> bool:
    """True when the page shows an exception box or text that looks like a traceback or a path."""
    if page.locator('[data-testid="stException"]').count():
        return True
    return bool(INTERNALS_RE.search(page.inner_text("body")))


class MarkTamperer:
    """Rewrites the marks a page sends (websocket, Streamlit's protobuf) into a given value.

    Installed on a Playwright page before it opens the study; while ``value`` is not None,
    every rerun message's mark widgets (keys containing ``mark-``) carry ``value`` instead
    of the chosen option: as an integer (``int_value``, a type the radio never sends) or, with
    ``as_text``, as the option text. Used to check what a rater sees when marks are tampered with.
    """

    def __init__(self, page):
        self.value: int | None = None
        self.as_text = False
        self.rewritten = 0
        page.route_web_socket("**/_stcore/stream", self._route)

    def _route(self, ws) -> None:
        server = ws.connect_to_server()
        ws.on_message(lambda message: server.send(self._rewrite(message)))
        server.on_message(lambda message: ws.send(message))

    def _rewrite(self, message):
        if self.value is None or not isinstance(message, (bytes, bytearray)):
            return message
        from streamlit.proto.BackMsg_pb2 import BackMsg

        msg = BackMsg()
        msg.ParseFromString(bytes(message))
        if not msg.HasField("rerun_script"):
            return message
        marks = [w for w in msg.rerun_script.widget_states.widgets if "mark-" in w.id]
        for w in marks:
            if self.as_text:
                w.string_value = str(self.value)
            else:
                w.int_value = self.value
        if not marks:
            return message
        self.rewritten += 1
        return msg.SerializeToString()
