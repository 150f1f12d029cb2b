"""The gallery page in Chromium, opened from the file system (file://, no server), as a user opens it:
every sound decodes to its length, every thumbnail loads, switching keeps the playhead (measured on the
audio the page renders), filters and sorting work, links open a system's column, and the page is usable
at 1280 x 800."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from gallery_helpers import TAP_JS, TAP_READ_JS, decode_floats, locate
from harness.browser import CHROMIUM_ARGS, chromium_path
from harness.parts import require_part

from sonieval.gallery import system_anchor

pytestmark = pytest.mark.browser

TOLERANCE_S = 0.020  # as the study's player: switching keeps the position within 20 ms
FADE_S = 0.005
TRAINED = "ast/LIN/lr0.01/e1/transpose/none"


@pytest.fixture(scope="module")
def browser():
    if chromium_path() is None:
        require_part("browser", "Chromium not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_part("browser", "playwright for Python not installed")
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            args=CHROMIUM_ARGS + ["--autoplay-policy=no-user-gesture-required"],
        )
        yield b
        b.close()


@pytest.fixture
def open_gallery(browser, built):
    pages = []

    def _open(fragment: str = "", url: str | None = None):
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url or (built.results / "gallery" / "index.html").resolve().as_uri() + fragment)
        if url is None:
            page.wait_for_function("() => window.sonievalGallery && document.querySelectorAll('#grid tbody tr').length")
        page.errors = errors
        pages.append(page)
        return page

    yield _open
    for p in pages:
        assert not p.errors, p.errors
        p.close()


def test_every_sound_decodes_to_its_length_and_every_thumbnail_loads(open_gallery):
    page = open_gallery()
    got = page.evaluate(
        """async () => {
      const g = window.sonievalGallery, out = [];
      const data = JSON.parse(document.getElementById('gallery-data').textContent);
      for (const clip of data.clips) for (const c of [clip.original, ...clip.cells]) {
        const b = await g.bufferOf(c.k);
        out.push([c.k, c.s, b.duration, b.length, b.sampleRate, b.getChannelData(0).some((v) => v !== 0)]);
      }
      return out;
    }"""
    )
    assert len(got) == 24
    for key, seconds, duration, length, rate, sounding in got:
        assert rate == 44_100 and length == round(seconds * rate), key  # exactly the source's samples
        assert duration == pytest.approx(seconds, abs=1e-4) and sounding, key
    images = page.locator("#grid img")
    assert images.count() == 24  # 3 rows x (original + 7 systems)
    for i in range(images.count()):
        img = images.nth(i)
        img.scroll_into_view_if_needed()
        page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=img.element_handle(), timeout=5000)
        assert img.evaluate("(img) => [img.naturalWidth, img.naturalHeight]") == [240, 94]


def _switch_run(page):
    """Play row 2 from its original, switch with keys (1, 3, 7, r), pause; return what the tap heard."""
    page.evaluate("() => window.sonievalGallery.activate(1, -1, {})")
    page.wait_for_function("() => window.sonievalGallery.engine !== null")
    page.evaluate(TAP_JS)
    segment = "() => [window.sonievalGallery.engine.segCtx, window.sonievalGallery.engine.segPos]"
    page.locator("#grid-wrap").focus()
    page.keyboard.press("Space")
    started = page.evaluate(segment)  # the audio-clock time and position the transport started from
    for key in ["1", "3", "7", "r"]:
        page.wait_for_timeout(300)
        page.keyboard.press(key)
    page.wait_for_timeout(300)
    assert page.evaluate(segment) == started  # switching never restarted the transport
    stop_at = page.evaluate("() => window.sonievalGallery.ctx.currentTime")  # the pause fades out after this
    page.keyboard.press("Space")
    page.wait_for_timeout(100)
    return {**page.evaluate(TAP_READ_JS), "segCtx": started[0], "segPos": started[1], "stopAt": stop_at}


@pytest.fixture
def served(built):
    """The results folder over local HTTP: the audio tap is an AudioWorklet, whose module a file:// page
    cannot load (an opaque origin); the page itself works the same from either."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(built.results)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/gallery/index.html"
    server.shutdown()
    server.server_close()


def test_switching_keeps_the_playhead(open_gallery, served):
    page = open_gallery(url=served)
    page.wait_for_function("() => window.sonievalGallery && document.querySelectorAll('#grid tbody tr').length")
    got = _switch_run(page)
    sr = int(got["sr"])
    x = decode_floats(got["tap"])
    t = np.concatenate([(f + np.arange(n)) / sr for f, n in zip(got["frames"], got["sizes"])])
    sounds = [decode_floats(s) for s in got["sounds"]]
    switches = got["switches"]
    assert [s["index"] for s in switches] == [1, 3, 7, 0]
    seg_ctx, seg_pos = got["segCtx"], got["segPos"]
    # which sound is selected at each moment, and the moments to leave out (start fade, crossfades)
    chosen = np.zeros(len(t), dtype=int)
    usable = (t >= seg_ctx + FADE_S + 0.003) & (t < got["stopAt"]) & (x != 0)
    for sw in switches:
        chosen[t >= sw["audible"]] = sw["index"]
        usable &= ~((t >= min(sw["at"], sw["audible"]) - 0.003) & (t < sw["audible"] + FADE_S + 0.003))
    block, errors, heard = 512, [], []
    for start in range(0, len(t) - block, block):
        if not usable[start : start + block].all() or len(set(chosen[start : start + block])) != 1:
            continue
        i = chosen[start]
        expected = round((seg_pos + t[start] - seg_ctx) * sr)  # where the transport says the playhead is
        offset, corr = locate(x[start : start + block], sounds[i], expected, search=int(TOLERANCE_S * sr))
        # the sound heard is the chosen one: at that moment it fits far better than any other of the row
        fits = [locate(x[start : start + block], s, expected, search=int(0.001 * sr))[1] for s in sounds]
        heard.append((i, corr, int(np.argmax(fits)), sorted(fits)[-2]))
        errors.append((offset - expected) / sr)
    assert len(errors) >= 20
    # what is heard is exactly the chosen sound's samples (fit 1.0); another sound of the row fits worse
    wrong = [(k, h) for k, h in enumerate(heard) if not (h[1] > 0.999 and h[2] == h[0] and h[3] < 0.99)]
    assert not wrong, (wrong, len(heard), switches)
    print(f"{len(errors)} blocks; heard position - transport position: max {np.abs(errors).max() * 1e3:.3f} ms")
    assert np.abs(errors).max() < 0.001  # after every switch the new sound goes on at the same moment
    assert {h[0] for h in heard} == {0, 1, 3, 7}


def _shown_ids(page):
    return page.evaluate("() => Array.from(document.querySelectorAll('#grid th.sys .sysid')).map((e) => e.textContent)")


def _row_ids(page):
    return page.evaluate(
        "() => Array.from(document.querySelectorAll('#grid tbody .clipname')).map((e) => e.textContent)"
    )


def test_filters_choose_the_columns_and_rows_sort_by_a_measure_or_a_difference(open_gallery, built):
    page = open_gallery()
    assert len(_shown_ids(page)) == 7
    page.locator('#filters input[data-facet="control"][data-value="shuffled"]').uncheck()
    assert not [s for s in _shown_ids(page) if ".shuffled" in s] and len(_shown_ids(page)) == 5
    page.locator('#filters input[data-facet="alignment"][data-value="reshape"]').uncheck()
    # the ceiling is every group's upper reference: the alignment filter leaves it in
    assert _shown_ids(page) == [TRAINED, "ast/LIN.untrained/lr0.0/e0/transpose/none", "codec/mel/lr0.0/e0/none/codec"]
    page.locator('#filters fieldset[data-facet="control"] .all').click()  # every control again
    assert len(_shown_ids(page)) == 4
    items = pd.read_parquet(built.results / "scores" / "item_scores.parquet")
    mel = items[items["metric"] == "logmel_l1"].pivot(index="clip_id", columns="system_id", values="value")
    page.select_option("#focus", label=TRAINED)
    page.select_option("#sort", value="m:0")  # logmel_l1 of the focus system, best (lowest) first
    assert _row_ids(page) == list(mel[TRAINED].sort_values().index)
    page.select_option("#direction", value="worst")
    assert _row_ids(page) == list(mel[TRAINED].sort_values(ascending=False).index)
    page.select_option("#direction", value="best")
    page.select_option("#sort", value="d:0:shuffled")  # trained minus its shuffled control, best first
    diff = mel[TRAINED] - mel["ast/LIN.shuffled/lr0.01/e1/transpose/none"]
    assert _row_ids(page) == list(diff.sort_values().index)
    page.select_option("#sort", value="clip")
    assert _row_ids(page) == sorted(mel.index)


def test_a_leaderboard_link_opens_the_systems_column(open_gallery, built):
    board = open_gallery(url=(built.results / "scores" / "leaderboard.html").resolve().as_uri())
    shuffled = "ast/LIN.shuffled/lr0.01/e1/reshape/none"
    board.locator(f'a[href$="#{system_anchor(shuffled)}"]').first.click()
    board.wait_for_function("() => window.sonievalGallery && document.querySelector('th.sys.target')")
    assert board.evaluate("() => document.querySelector('th.sys.target .sysid').textContent") == shuffled
    assert board.evaluate("() => window.sonievalGallery.state.focus") == 1
    # a link to a system the filters hide shows it all the same
    page = open_gallery()
    page.locator('#filters input[data-facet="control"][data-value="shuffled"]').uncheck()
    page.evaluate(f"() => {{ location.hash = '{system_anchor(shuffled)}'; }}")
    page.wait_for_function("() => document.querySelector('th.sys.target')")
    assert shuffled in _shown_ids(page)


def test_the_page_is_usable_at_1280_by_800(open_gallery):
    page = open_gallery()
    page.locator("#grid tbody tr").nth(0).locator(".cell").nth(1).click()  # play the first system of row 1
    page.wait_for_function("() => window.sonievalGallery.engine && window.sonievalGallery.engine.playing")
    geometry = page.evaluate(
        """() => {
      const r = (sel) => { const b = document.querySelector(sel).getBoundingClientRect();
        return [b.left, b.top, b.right, b.bottom]; };
      return {page: [document.documentElement.scrollWidth, document.documentElement.scrollHeight],
              play: r('#play'), seek: r('#seek'), filters: r('#filters'), sort: r('#sort'),
              original: r('#grid tbody tr:nth-child(1) th .cell'), first: r('#grid tbody tr:nth-child(1) td .cell'),
              row2: r('#grid tbody tr:nth-child(2) td .cell'), wrap: r('#grid-wrap'),
              scroller: [document.getElementById('grid-wrap').scrollWidth, document.getElementById('grid-wrap').clientWidth]};
    }"""
    )
    assert geometry["page"] == [1280, 800]  # the page itself never scrolls: the grid does, inside
    for name in ("play", "seek", "filters", "sort", "original", "first", "row2"):
        left, top, right, bottom = geometry[name]
        assert 0 <= left and right <= 1280 and 0 <= top and bottom <= 800, (name, geometry[name])
    assert geometry["scroller"][0] > geometry["scroller"][1]  # 7 columns are wider than the screen: they scroll
    assert page.locator("#now").inner_text() == "test-08-2 · ast/LIN/lr0.01/e1/reshape/none"
