"""A crowd study in Chromium: public enrolment with platform ids, headphone check, sessions and breaks.

One served study (joint mode, the listening rule on, sessions of 2 pages, the headphone check
stopping raters who fail it, enrolment capped at 4 raters with a completion code and a return
address); each test enrols its own rater through the public link, as a crowd worker would.
"""

from __future__ import annotations

import stat
from urllib.parse import parse_qs, urlencode, urlparse

import pandas as pd
import pytest
from harness.browser import RaterDriver, chromium_path, headless_chromium, shows_internals
from harness.parts import require_part
from study_helpers import make_folder_study

from sonieval.study import texts
from sonieval.study.export import progress_per_rater, ratings_frame, sessions_frame
from sonieval.study.options import Enrolment, Headphones, Sessions
from sonieval.study.server import enrol_link, launch, wait_until_up
from sonieval.study.session import RaterSession
from sonieval.study.store import StudyStore, enrolments, page_log, screening_checks

RETURN = "https://app.prolific.example/submissions/complete?cc={code}"
PAGES = 4  # 1 clip x (1 system + reference + anchor) + 1 attention check


@pytest.fixture(scope="module")
def crowd(tmp_path_factory):
    if chromium_path() is None:
        require_part("browser", "Chromium not installed (apt-get install chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        require_part("browser", "playwright for Python not installed")
    tmp = tmp_path_factory.mktemp("crowd")
    study = make_folder_study(
        tmp,
        n_clips=1,
        n_systems=1,
        seconds=0.4,
        familiarisation=False,
        min_listen_fraction=1.0,
        n_raters=4,
        sessions=Sessions(pages=2),
        headphones=Headphones(True, "stop"),
        enrolment=Enrolment(
            enabled=True,
            max_per_ip_per_hour=50,
            completion_code="DONE42",
            completion_url=RETURN,
            screened_out_code="NOHEADPHONES",
        ),
    )
    proc, base = launch(study.url, study.study_id, log_path=tmp / "server.log")
    try:
        wait_until_up(base, proc)
        with headless_chromium() as browser:
            yield study, base, browser
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _answers(study, link: str, *, correct: bool) -> list[int]:
    token = parse_qs(urlparse(link).query)["rater"][0]
    _, trials, _ = RaterSession(StudyStore(study.url), study.study_id, token).headphone_plan()
    return [t.answer if correct else t.answer % 3 + 1 for t in trials]


def _enrol(study, base, browser, **ids) -> tuple[RaterDriver, str]:
    rater = RaterDriver(browser.new_context().new_page(), "")
    link = enrol_link(base, study.created.enrol_key) + ("&" + urlencode(ids) if ids else "")
    assert rater.enrol(link) == "headphone", rater.page.inner_text("body")[:300]
    personal = rater.current_link()
    assert "rater=" in personal and "enrol=" not in personal and texts.PERSONAL_LINK in rater.page.inner_text("body")
    return rater, personal


@pytest.mark.browser
@pytest.mark.slow
def test_enrolment_with_prolific_ids_to_completion_code(crowd):
    study, base, browser = crowd
    rater, link = _enrol(study, base, browser, PROLIFIC_PID="5f0c2b7e9a", STUDY_ID="study77", SESSION_ID="sess1")
    assert rater.answer_headphone_check(_answers(study, link, correct=True)) == "page"
    seen = []
    while (where := rater.wait_any()) != "done":
        if where == "break":
            seen.append("break")
            rater.take_break()
            continue
        number, total = rater.position()
        seen.append(number)
        rater.rate(3)
    assert seen == [1, 2, "break", 3, 4]
    rater.wait_text("DONE42")
    assert not shows_internals(rater.page)
    assert rater.page.get_by_role("link", name="Return to the recruiting site").get_attribute("href") == RETURN.format(
        code="DONE42"
    )
    store = StudyStore(study.url)
    e = store.frame(enrolments, study.study_id).set_index("participant_id").loc["5f0c2b7e9a"]
    assert (e["platform"], e["platform_study_id"], e["platform_session_id"]) == ("prolific", "study77", "sess1")
    assert len(e["ip_hash"]) == 64 and "127.0.0.1" not in e["ip_hash"]
    df = ratings_frame(store, study.study_id)
    mine = df[df["rater_id"] == e["rater_id"]]
    assert len(mine) == 2 * PAGES and not mine.duplicated(["trial_id", "attribute"]).any()
    # listening measured by the player, per stimulus, >= the rule (the stimulus' duration)
    assert (mine["listened_s"] >= mine["stimulus_seconds"] - 0.05).all() and mine["session"].tolist().count(2) == 4
    assert "participant_id" not in df.columns  # platform ids stay out of the (shareable) ratings table
    # the same participant cannot enrol twice
    again = RaterDriver(browser.new_context().new_page(), "")
    assert (
        again.enrol(enrol_link(base, study.created.enrol_key) + "&PROLIFIC_PID=5f0c2b7e9a&STUDY_ID=study77")
        == "refused"
    )
    assert texts.enrol_refusal("duplicate") in again.page.inner_text("body")


@pytest.mark.browser
@pytest.mark.slow
def test_break_leave_and_resume_from_the_same_link(crowd):
    study, base, browser = crowd
    rater, link = _enrol(study, base, browser, workerId="A1B2C3", assignmentId="3XYZ", hitId="H9")
    assert rater.answer_headphone_check(_answers(study, link, correct=True)) == "page"
    for _ in range(2):
        rater.rate(4)
    assert rater.wait_any() == "break"
    store = StudyStore(study.url)
    rid = store.frame(enrolments, study.study_id).set_index("participant_id").loc["A1B2C3", "rater_id"]
    status = progress_per_rater(store, study.study_id).set_index("rater_id").loc[rid, "status"]
    assert status == "on a break after session 1"
    rater.page.context.close()  # the rater leaves ...
    back = RaterDriver(browser.new_context().new_page(), link)  # ... and comes back later with the same link
    assert back.open() == "break" and "Session 1 of about 2 is done" in back.page.inner_text("body")
    back.take_break()
    assert back.position() == (3, PAGES)
    back.rate(4)
    sessions = sessions_frame(store, study.study_id)
    mine = sessions[sessions["rater_id"] == rid]
    assert mine[["session", "pages", "ended_by"]].values.tolist()[0] == [1, 2, "pages"]
    assert mine["session"].tolist() == [1, 2] and pd.isna(mine["ended_by"].iloc[1]) and mine["pages"].iloc[1] == 1
    log = store.frame(page_log, study.study_id)
    assert log[log["rater_id"] == rid].sort_values("position")["session"].tolist() == [1, 1, 2]
    assert (log["page_seconds"] > 0).all()
    assert progress_per_rater(store, study.study_id).set_index("rater_id").loc[rid, "status"] == "rating (session 2)"
    e = store.frame(enrolments, study.study_id).set_index("rater_id").loc[rid]
    assert (e["platform"], e["assignment_id"], e["hit_id"]) == ("mturk", "3XYZ", "H9")


@pytest.mark.browser
@pytest.mark.slow
def test_failed_headphone_check_stops_the_rater_and_the_cap_holds(crowd):
    study, base, browser = crowd
    rater, link = _enrol(study, base, browser, PROLIFIC_PID="loudspeakers1")
    assert rater.answer_headphone_check(_answers(study, link, correct=False)) == "done"
    body = rater.wait_text("NOHEADPHONES")
    assert texts.HEADPHONE_SCREENED_OUT in body and "DONE42" not in body
    assert rater.open() == "done"  # the same link stays at the end: no second try
    store = StudyStore(study.url)
    rid = store.frame(enrolments, study.study_id).set_index("participant_id").loc["loudspeakers1", "rater_id"]
    check = store.frame(screening_checks, study.study_id).set_index("rater_id").loc[rid]
    assert check["n_correct"] == 0 and not check["passed"] and check["check"] == "woods2017_antiphase"
    assert (
        progress_per_rater(store, study.study_id).set_index("rater_id").loc[rid, "status"]
        == "screened out (headphone check)"
    )
    # the same browser cannot come back under a made-up participant id: it keeps the study's marker
    from sonieval.study.session import browser_marker, marker_cookie

    kept = {c["name"]: c["value"] for c in rater.page.context.cookies()}
    assert kept.get(marker_cookie(study.study_id)) == browser_marker(study.created.study_dir, rid)
    again = RaterDriver(rater.page.context.new_page(), "")
    assert again.enrol(enrol_link(base, study.created.enrol_key) + "&PROLIFIC_PID=madeup7") == "refused"
    assert texts.enrol_refusal("screened") in again.page.inner_text("body")
    # fill the study up to its cap of 4 places (the screened-out rater holds none), then the public
    # link turns people away
    while len(store.frame(enrolments, study.study_id)) < 5:
        n = len(store.frame(enrolments, study.study_id))
        store.enrol(
            study.study_id, study.created.enrol_key, {"platform": "prolific", "participant_id": f"filler{n}"}, "0" * 64
        )
    late = RaterDriver(browser.new_context().new_page(), "")
    assert late.enrol(enrol_link(base, study.created.enrol_key) + "&PROLIFIC_PID=late1") == "refused"
    assert texts.enrol_refusal("full") in late.page.inner_text("body")
    assert len(store.frame(enrolments, study.study_id)) == 5
    secret = study.created.study_dir / "secret.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
