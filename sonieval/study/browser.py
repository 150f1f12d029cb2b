"""Drive a rater through a served study in headless Chromium (Playwright for Python).

Used by the browser tests and the latency benchmark, and handy to smoke-test a deployment.
It drives an installed Chromium (Debian's ``/usr/bin/chromium`` or ``$SONIEVAL_CHROMIUM``):
Playwright is never asked to download a browser.

A page counts as *fully rendered* when the script run has finished (``stApp``'s
``data-test-script-state`` is ``notRunning``), its progress line names the expected page, no
element is still marked stale by Streamlit (``data-stale``), the mark widgets have loaded (they
are code-split and show as skeletons first) and every waveform image has loaded.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Iterator

CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
_PAGE_RE = re.compile(r"Page (\d+) of (\d+)")
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
  // Widgets are code-split: until the radio chunk has loaded, the form shows skeletons.
  const form = document.querySelector('[data-testid="stForm"]');
  if (!form || form.querySelectorAll('[data-testid="stRadioOption"]').length === 0) return false;
  if (form.querySelector('[data-testid="stSkeleton"]')) return false;
  return document.querySelector('[data-testid="stFormSubmitButton"] button') !== null;
}
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

    def open(self) -> str:
        """Load the link; returns 'familiarisation', 'page' or 'done'."""
        self.page.goto(self.link)
        return self.wait_any()

    def wait_any(self) -> str:
        self._wait(
            "() => document.querySelector('[data-testid=\"stApp\"][data-test-script-state=\"notRunning\"]')"
            " && !document.querySelector('[data-stale=\"true\"]') && (document.body.innerText.includes('Before you start')"
            " || document.body.innerText.includes('Thank you!') || (document.querySelector('[data-testid=\"stProgress\"]')"
            " && document.querySelector('[data-testid=\"stForm\"] [data-testid=\"stRadioOption\"]')"
            " && document.querySelector('[data-testid=\"stFormSubmitButton\"] button')))",
            timeout=self.timeout_ms,
        )
        text = self.page.inner_text("body")
        if "Before you start" in text:
            return "familiarisation"
        if "Thank you!" in text:
            return "done"
        return "page"

    def familiarise(self) -> None:
        self.page.get_by_role("button", name="I am ready").click()
        self.wait_rendered(1)

    def position(self) -> tuple[int, int]:
        """(page number, pages) as shown in the progress line."""
        m = _PAGE_RE.search(self.page.locator('[data-testid="stProgress"]').inner_text())
        if not m:
            raise RuntimeError("no progress line on the page")
        return int(m.group(1)), int(m.group(2))

    def wait_rendered(self, page_number: int | None) -> None:
        want = "done" if page_number is None else f"Page {page_number} of"
        self._wait(_RENDERED_JS, arg=want, timeout=self.timeout_ms)

    def _wait(self, js: str, **kw) -> None:
        """wait_for_function, with what the page showed when it times out (for diagnosis)."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            self.page.wait_for_function(js, **kw)
        except PlaywrightTimeout:
            try:
                body = self.page.inner_text("body", timeout=2000)[:300].replace("\n", " | ")
            except Exception:  # noqa: BLE001 - the diagnosis must not hide the timeout
                body = "<unreadable>"
            raise TimeoutError(f"page did not reach the expected state; it shows: {body!r}") from None

    def _target_mark(self, mark: int) -> int:
        alerts = " ".join(self.page.locator('[data-testid="stAlert"]').all_inner_texts())
        m = _INSTRUCTION_RE.search(alerts)
        return int(m.group(1)) if m else mark

    def rate(self, mark: int = 3, *, keyboard: bool = False) -> float:
        """Mark the current page (obeying an attention check), submit, wait for the next page.

        With ``keyboard`` the page is operated with keys only: Space and the arrow keys choose
        each mark, Tab moves on, Enter on the submit button submits. Returns seconds from the
        submit (click or Enter) to the next page fully rendered.
        """
        number, total = self.position()
        start = self.choose_and_submit(mark, keyboard=keyboard)
        self.wait_rendered(number + 1 if number < total else None)
        return time.perf_counter() - start

    def choose_and_submit(self, mark: int = 3, *, keyboard: bool = False) -> float:
        """Choose ``mark`` (or what an attention check asks) for every question and submit.

        Does not wait for the answer; returns the ``time.perf_counter()`` of the submit.
        """
        number, _ = self.position()
        target = self._target_mark(mark)
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
        start = time.perf_counter()
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

    def wait_text(self, text: str) -> str:
        """Wait until the script has finished and the page shows ``text``; returns the page's text."""
        self._wait(
            "(want) => { const app = document.querySelector('[data-testid=\"stApp\"]');"
            " return app && app.getAttribute('data-test-script-state') === 'notRunning'"
            " && !document.querySelector('[data-stale=\"true\"]') && document.body.innerText.includes(want); }",
            arg=text, timeout=self.timeout_ms,
        )
        return self.page.inner_text("body")


# What a page must never show a rater: Streamlit's exception box, a traceback, a source path.
INTERNALS_RE = re.compile(r"Traceback|File \"|\.py\b|/site-packages/|/work/|Error:")


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
