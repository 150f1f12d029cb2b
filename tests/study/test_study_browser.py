"""A real browser (Debian's Chromium via Playwright) against `streamlit run` on localhost."""

from __future__ import annotations

import contextlib

import pytest
from harness.browser import MarkTamperer, RaterDriver, chromium_path, headless_chromium, shows_internals
from harness.parts import require_part
from study_helpers import make_folder_study

from sonieval.study import texts
from sonieval.study.export import ratings_frame
from sonieval.study.server import launch, rater_link, wait_until_up
from sonieval.study.store import StudyStore


def _require_browser() -> None:
    if chromium_path() is None:
        require_part("browser", "Chromium not installed (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        require_part("browser", "playwright for Python not installed")


class _Server:
    """`streamlit run` for a study on a fixed port, restartable (the port stays the same)."""

    def __init__(self, study, log):
        self.study, self.log = study, log
        self.proc, self.base = launch(study.url, study.study_id, log_path=log)
        self.port = int(self.base.rsplit(":", 1)[1])
        wait_until_up(self.base, self.proc)

    def restart(self) -> None:
        self.stop()
        self.proc, self.base = launch(self.study.url, self.study.study_id, port=self.port, log_path=self.log)
        wait_until_up(self.base, self.proc)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


@contextlib.contextmanager
def _served(study, tmp_path):
    _require_browser()
    server = _Server(study, tmp_path / "server.log")
    try:
        yield server
    finally:
        server.stop()


def _marks(study):
    return ratings_frame(StudyStore(study.url), study.study_id)


@pytest.mark.browser
@pytest.mark.slow
def test_browser_rater_completes_with_reload_and_server_restart(small_study, tmp_path):
    _require_browser()
    log = tmp_path / "server.log"
    proc, base = launch(small_study.url, small_study.study_id, log_path=log)
    port = int(base.rsplit(":", 1)[1])
    try:
        wait_until_up(base, proc)
        with headless_chromium() as browser:
            page = browser.new_page()
            rater = RaterDriver(page, rater_link(base, small_study.tokens[0]))
            assert rater.open() == "familiarisation"
            rater.familiarise()
            assert rater.position() == (1, 9)
            rater.rate()
            rater.rate(keyboard=True)  # keys only: Space/arrows choose, Tab, Enter submits
            # listen to A on page 3, then reload: the page resumes with the listening already done
            rater.wait_rendered(3)
            frame = rater.player_frame()
            frame.locator("#stimulus-1").click()
            frame.locator("#play").click()
            frame.wait_for_function(
                "() => { const s = window.abPlayer.state(); return !s.playing && s.listened_s.A > 0.25; }"
            )
            before = frame.evaluate("() => window.abPlayer.state().listened_s")
            page.reload()
            assert rater.wait_any() == "page" and rater.position() == (3, 9)
            rater.wait_rendered(3)
            after = rater.player_frame().evaluate("() => window.abPlayer.state().listened_s")
            assert after["A"] == pytest.approx(before["A"], abs=0.002) and after["R"] == before["R"], (before, after)
            rater.rate()
            # kill the server mid-study and start a fresh one on the same port
            proc.kill()
            proc.wait(timeout=10)
            proc, base = launch(small_study.url, small_study.study_id, port=port, log_path=log)
            wait_until_up(base, proc)
            assert rater.open() == "page" and rater.position() == (4, 9)
            while True:
                number, total = rater.position()
                rater.rate()
                if number == total:
                    break
            assert "Thank you!" in page.inner_text("body")
    finally:
        proc.kill()
        proc.wait(timeout=10)
    df = ratings_frame(StudyStore(small_study.url), small_study.study_id)
    assert len(df) == 18  # 9 pages x 2 attributes
    assert not df.duplicated(["rater_id", "trial_id", "attribute"]).any()
    assert sorted(df["position"].unique()) == list(range(9))
    assert df["attention_passed"].dropna().all()
    assert (df.loc[df["position"] == 2, "listened_s"] > 0.25).all()  # page 3's listening survived the reload


@pytest.mark.browser
@pytest.mark.slow
def test_browser_tampered_marks_get_one_plain_sentence_and_the_page_stays_usable(small_study, tmp_path):
    """Marks 7, 0, -1, 99 sent as integers (a type the radio never sends) or as option text."""
    sentences = (texts.PAGE_PROBLEM, texts.MISSING_MARK, texts.refusal("invalid", 0, 1, 5))
    with _served(small_study, tmp_path) as server, headless_chromium() as browser:
        page = browser.new_page()
        tamper = MarkTamperer(page)
        rater = RaterDriver(page, rater_link(server.base, small_study.tokens[0]))
        assert rater.open() == "familiarisation"
        rater.familiarise()
        for value, as_text in ((7, False), (0, False), (-1, False), (99, False), (7, True)):
            tamper.value, tamper.as_text = value, as_text
            before = tamper.rewritten
            rater.choose_and_submit(3)
            rater._wait("() => !!document.querySelector('[data-testid=\"stAlert\"]')", timeout=rater.timeout_ms)
            body = rater.wait_text("Page 1 of 9")
            assert tamper.rewritten > before, "the tampering did not happen"
            shown = [s for s in sentences if s in body]
            assert len(shown) == 1, (value, as_text, body[:400])
            assert not shows_internals(page), body[:800]
            assert rater.position() == (1, 9)
            assert _marks(small_study).empty
            page.reload()  # a fresh page, as a rater would after a message
            assert rater.wait_any() == "page"
        tamper.value = None
        rater.rate(4)  # the page still works: the real marks are stored
        assert rater.position() == (2, 9)
    df = _marks(small_study)
    assert len(df) == 2 and set(df["mark"]) == {4}


@pytest.mark.browser
@pytest.mark.slow
def test_browser_no_silent_drop_after_restart_or_from_a_second_browser(small_study, tmp_path):
    with _served(small_study, tmp_path) as server, headless_chromium() as browser:
        # 1. the server restarts between the page load and the first submit: that submit is stored
        first = RaterDriver(browser.new_page(), rater_link(server.base, small_study.tokens[0]))
        assert first.open() == "familiarisation"
        first.familiarise()
        server.restart()
        first.rate(2)
        assert first.position() == (2, 9)
        assert len(_marks(small_study)) == 2
        # 2. a second browser on the same link, same page; the first one submits, then the second
        second = RaterDriver(browser.new_context().new_page(), rater_link(server.base, small_study.tokens[0]))
        assert second.open() == "page" and second.position() == (2, 9)
        first.rate(4)
        second.choose_and_submit(5)
        body = second.wait_text(texts.ALREADY_RATED)
        assert "Page 3 of 9" in body and not shows_internals(second.page)
        second.wait_rendered(3)
        assert second.position() == (3, 9)
    df = _marks(small_study)
    assert len(df) == 4 and sorted(df["mark"]) == [2, 2, 4, 4]  # the first marks of page 2 stand


def _served_audio(page, n_players: int) -> list:
    """The audio the page's ``n_players`` players load, fetched as the browser would: [(samples, rate),
    ...] in page order (each player: R, then its stimuli)."""
    import io
    from urllib.parse import urljoin

    import soundfile as sf

    out = []
    page.wait_for_function(
        "(n) => document.querySelectorAll('iframe[src*=\"sonieval.study.player\"]').length === n", arg=n_players
    )
    for _ in range(100):
        frames = [f for f in page.frames if "sonieval.study.player" in f.url and not f.is_detached()]
        if len(frames) == n_players:
            break
        page.wait_for_timeout(100)
    for frame in frames:
        frame.wait_for_function("() => window.abPlayer && window.abPlayer.engine !== null")
        for url in frame.evaluate("() => window.abPlayer.args.stimuli.map(s => s.url)"):
            x, rate = sf.read(io.BytesIO(page.request.get(urljoin(page.url, url)).body()), dtype="float32")
            out.append((x, rate))
    return out


@pytest.mark.browser
@pytest.mark.slow
def test_browser_serves_loudness_aligned_audio_and_a_familiarisation_that_spans_the_scale(small_study, tmp_path):
    from sonieval.audio import resample
    from sonieval.metrics.items import logmel_l1
    from sonieval.study.loudness import CEILING_DBTP, measure

    with _served(small_study, tmp_path) as server, headless_chromium() as browser:
        page = browser.new_page()
        rater = RaterDriver(page, rater_link(server.base, small_study.tokens[0]))
        assert rater.open() == "familiarisation"
        (low_orig, rate), (low_stim, _), (high_orig, _), (high_stim, _) = _served_audio(page, 2)
        at16 = [resample(x, rate, 16_000) for x in (low_orig, low_stim, high_orig, high_stim)]
        low, high = logmel_l1(at16[1], at16[0]), logmel_l1(at16[3], at16[2])
        assert high < 0.05 and low > 1.0, (low, high)  # "near 5" is the original (up to its dither); "near 1" far
        examples = set(_player_urls(page))
        rater.familiarise()
        for _ in range(3):  # original and stimulus of each page: one loudness, under the ceiling
            assert not examples & set(_player_urls(page)), "an example's file reappears on a rating page"
            levels = [measure(x, r) for x, r in _served_audio(page, 1)]
            assert len(levels) == 2
            assert abs(levels[0][0] - levels[1][0]) < 0.5, levels
            assert max(tp for _, tp in levels) <= CEILING_DBTP + 1e-6
            rater.rate(3)


def _player_urls(page) -> list[str]:
    """The sound URLs of every player on the page."""
    return [
        url
        for f in page.frames
        if "sonieval.study.player" in f.url
        for url in f.evaluate(
            "() => window.abPlayer && window.abPlayer.args ? window.abPlayer.args.stimuli.map((s) => s.url) : []"
        )
    ]


_MEDIA_FETCHES_JS = """() => performance.getEntriesByType('resource').map((e) => new URL(e.name).pathname)
  .filter((p) => p.includes('/media/'))"""


@pytest.mark.browser
@pytest.mark.slow
def test_browser_one_player_frame_serves_every_page_and_decodes_the_next_page_ahead(tmp_path):
    """The rating pages share one player frame (no new frame to load per page) that decodes the next
    page's sounds while the rater works: the next page's sounds are fetched once, before its submit;
    the new page starts from zero listening, a submit before listening is refused there (the last
    page's listening does not count), and the export holds each page's own listening."""
    study = make_folder_study(
        tmp_path, min_listen_fraction=1.0, seconds=1.0, familiarisation=False, n_clips=2, n_systems=1
    )
    with _served(study, tmp_path) as server, headless_chromium() as browser:
        page = browser.new_page()
        rater = RaterDriver(page, rater_link(server.base, study.tokens[0]))
        assert rater.open() == "page"
        rater.wait_rendered(1)
        frame = rater.player_frame()
        frame.evaluate("() => { window.__keptFrame = true; }")
        first = frame.evaluate("() => window.abPlayer.args.stimuli.map((s) => s.url)")
        frame.wait_for_function("() => (window.abPlayer.prefetched || []).length > 0")
        ahead = frame.evaluate("() => window.abPlayer.prefetched")
        assert frame.evaluate("() => window.abPlayer.state().page") == "page-0"
        rater.rate()  # listens to every sound, submits, waits for page 2
        rater.wait_rendered(2)
        frame = rater.player_frame()
        assert frame.evaluate("() => window.__keptFrame === true"), "page 2 got a new player frame"
        assert frame.evaluate("() => window.abPlayer.generation") == 2
        second = frame.evaluate("() => window.abPlayer.args.stimuli.map((s) => s.url)")
        assert set(second) <= set(first) | set(ahead), "page 2 asks for sounds page 1 did not prefetch"
        fetched = frame.evaluate(_MEDIA_FETCHES_JS)
        for url in second:
            assert fetched.count(url) == 1, (url, fetched)  # fetched once, while page 1 was shown
        state = frame.evaluate("() => window.abPlayer.state()")
        assert state["page"] == "page-1" and set(state["listened_s"].values()) == {0}
        rater.choose_and_submit(3)  # at once: page 1's listening must not open page 2's rule
        rater._wait("() => !!document.querySelector('[data-testid=\"stAlert\"]')", timeout=rater.timeout_ms)
        body = rater.wait_text("Page 2 of")
        assert "listen to every sound long enough first" in body
        rater.rate()  # now listened: stored
        assert rater.position()[0] == 3
    df = _marks(study)
    heard = df.drop_duplicates("position").set_index("position")["listened_s"]
    assert list(heard.index) == [0, 1]
    assert (heard >= 1.0).all() and (heard < 1.8).all(), heard  # each page its own ~1 s, none summed
