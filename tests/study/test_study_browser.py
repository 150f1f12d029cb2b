"""A real browser (Debian's Chromium via Playwright) against `streamlit run` on localhost."""

from __future__ import annotations

import pytest

from sonieval.study.browser import RaterDriver, chromium_path, headless_chromium
from sonieval.study.export import ratings_frame
from sonieval.study.server import launch, rater_link, wait_until_up
from sonieval.study.store import StudyStore
from sonieval.testing import require_part


@pytest.mark.browser
@pytest.mark.slow
def test_browser_rater_completes_with_reload_and_server_restart(small_study, tmp_path):
    if chromium_path() is None:
        require_part("browser", "Chromium not installed (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        require_part("browser", "playwright for Python not installed")
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
            # reload mid-way: resumes at the right page
            page.reload()
            assert rater.wait_any() == "page" and rater.position() == (3, 9)
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
