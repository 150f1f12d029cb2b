"""Crowd enrolment, sessions and multi-stimulus pages below the browser (store and session layer)."""

from __future__ import annotations

import hashlib
import stat
import threading

import pytest
from study_helpers import make_folder_study

from sonieval.study.options import Enrolment, Sessions
from sonieval.study.session import RaterSession, address_hash, enrol, participant_from
from sonieval.study.store import EnrolmentRefused, StudyStore, SubmissionRefused, enrolments, raters


def _crowd(tmp_path, **enrolment):
    opts = dict(enabled=True, max_per_minute=1000, max_per_ip_per_hour=1000)
    opts.update(enrolment)
    cap = opts.pop("cap", 3)
    return make_folder_study(
        tmp_path, n_raters=cap, n_clips=1, n_systems=1, familiarisation=False, enrolment=Enrolment(**opts)
    )


def test_platform_ids_are_read_and_checked():
    assert participant_from({"PROLIFIC_PID": "abc123", "STUDY_ID": "s1", "SESSION_ID": "x-9"}) == {
        "platform": "prolific",
        "participant_id": "abc123",
        "platform_study_id": "s1",
        "platform_session_id": "x-9",
    }
    assert participant_from({"workerId": "W1", "assignmentId": "A1", "hitId": "H1"})["assignment_id"] == "A1"
    assert participant_from({"enrol": "k"}) == {"platform": "", "participant_id": None}
    for params, reason in (
        ({"PROLIFIC_PID": "{{%PROLIFIC_PID%}}"}, "bad_id"),
        ({"PROLIFIC_PID": ""}, "bad_id"),
        ({"workerId": "W1", "assignmentId": "ASSIGNMENT_ID_NOT_AVAILABLE"}, "preview"),
        ({"workerId": "W1; DROP TABLE"}, "bad_id"),
        ({"PROLIFIC_PID": "x" * 65}, "bad_id"),
    ):
        with pytest.raises(EnrolmentRefused) as refused:
            participant_from(params)
        assert refused.value.reason == reason, params


def test_addresses_are_kept_only_as_a_keyed_hash(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    h = address_hash(a, "203.0.113.7")
    assert h == address_hash(a, "203.0.113.7") and h != address_hash(b, "203.0.113.7")  # each study its own key
    assert h != hashlib.sha256(b"203.0.113.7").hexdigest() and "203.0.113.7" not in h
    assert stat.S_IMODE((a / "secret.key").stat().st_mode) == 0o600


def test_enrolment_refuses_wrong_keys_duplicates_and_a_full_study(tmp_path):
    study = _crowd(tmp_path, cap=2)
    assert study.tokens == []  # with enrolment, n_raters is the cap: no personal links minted up front
    store = StudyStore(study.url)
    key = study.created.enrol_key
    with pytest.raises(EnrolmentRefused) as refused:
        enrol(store, study.study_id, {"enrol": "A" * 43, "PROLIFIC_PID": "p1"}, "198.51.100.1")
    assert refused.value.reason == "disabled"
    token = enrol(store, study.study_id, {"enrol": key, "PROLIFIC_PID": "p1", "STUDY_ID": "s"}, "198.51.100.1")
    assert RaterSession(store, study.study_id, token).rater.rater_id == "r001"
    for pid, reason in (("p1", "duplicate"), ("p2", None), ("p3", "full"), ("p1", "duplicate")):
        if reason is None:
            enrol(store, study.study_id, {"enrol": key, "PROLIFIC_PID": pid}, "198.51.100.2")
            continue
        with pytest.raises(EnrolmentRefused) as refused:
            enrol(store, study.study_id, {"enrol": key, "PROLIFIC_PID": pid}, "198.51.100.3")
        assert refused.value.reason == reason, pid
    rows = store.frame(enrolments, study.study_id)
    assert sorted(rows["participant_id"]) == ["p1", "p2"] and set(rows["ip_hash"].str.len()) == {64}


def test_enrolment_rate_limits_per_address_and_per_minute(tmp_path):
    now = [5000.0]
    study = _crowd(tmp_path, cap=20, max_per_ip_per_hour=2, max_per_minute=3)
    store = StudyStore(study.url, clock=lambda: now[0])
    key = study.created.enrol_key

    def join(ip: str) -> str | None:
        try:
            enrol(store, study.study_id, {"enrol": key}, ip)
            return None
        except EnrolmentRefused as exc:
            return exc.reason

    assert [join("192.0.2.1"), join("192.0.2.1"), join("192.0.2.1")] == [None, None, "rate"]  # 2 per address per hour
    assert [join("192.0.2.2"), join("192.0.2.3")] == [None, "rate"]  # 3 per minute in all
    now[0] += 61
    assert join("192.0.2.3") is None and join("192.0.2.1") == "rate"
    now[0] += 3600
    assert join("192.0.2.1") is None
    with pytest.raises(EnrolmentRefused) as refused:  # a participant id can be required
        s2 = make_folder_study(
            tmp_path / "req",
            n_raters=2,
            n_clips=1,
            n_systems=1,
            familiarisation=False,
            enrolment=Enrolment(enabled=True, require_participant_id=True),
        )
        enrol(StudyStore(s2.url), s2.study_id, {"enrol": s2.created.enrol_key}, "192.0.2.9")
    assert refused.value.reason == "no_id"


def test_concurrent_enrolments_hold_the_cap_and_one_per_participant(tmp_path):
    study = _crowd(tmp_path, cap=12)
    store = StudyStore(study.url)
    outcomes: list[str] = []
    barrier = threading.Barrier(24)

    def visit(i: int) -> None:
        pid = f"dup{i % 4}" if i < 8 else f"p{i}"  # 8 visits by 4 participants, 16 by distinct ones
        barrier.wait()
        try:
            enrol(store, study.study_id, {"enrol": study.created.enrol_key, "PROLIFIC_PID": pid}, f"10.0.0.{i}")
            outcomes.append("ok")
        except EnrolmentRefused as exc:
            outcomes.append(exc.reason)

    threads = [threading.Thread(target=visit, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert outcomes.count("ok") == 12 and len(outcomes) == 24
    rows = store.frame(enrolments, study.study_id)
    assert len(rows) == 12 == len(store.frame(raters, study.study_id)) and rows["participant_id"].is_unique
    assert sorted(store.frame(raters, study.study_id)["rater_index"]) == list(range(12))


def test_sessions_end_by_pages_minutes_finish_or_idle(tmp_path):
    now = [1000.0]
    study = make_folder_study(tmp_path, sessions=Sessions(pages=3, minutes=1.0, idle_minutes=10))
    store = StudyStore(study.url, clock=lambda: now[0])
    s = RaterSession(store, study.study_id, study.tokens[0])

    def rate(dt: float) -> None:
        state = s.next_step()
        s.show(state)
        now[0] += dt
        s.submit(state.step.position, {"visual": 3, "audio": 3})

    rate(10), rate(10)
    assert s.on_break() is None
    rate(10)  # third page: the session's pages are used up
    assert s.on_break()["ended_by"] == "pages" and s.continue_after_break() == 2
    rate(35), rate(35)  # 70 s > 1 minute: ends by time after two pages
    assert s.on_break()["ended_by"] == "minutes"
    s.continue_after_break()
    rate(5)
    now[0] += 11 * 60  # away longer than idle_minutes: the session is closed as "left" at the last submit
    s.settle_sessions()
    rows = store.sessions_of(s.rater)
    assert [(r["session"], r["pages"], r["ended_by"]) for r in rows] == [
        (1, 3, "pages"),
        (2, 2, "minutes"),
        (3, 1, "left"),
    ]
    assert rows[2]["ended_at"] == pytest.approx(now[0] - 11 * 60) and s.on_break() is None
    while not s.next_step().finished:
        rate(1)
    assert store.sessions_of(s.rater)[-1]["ended_by"] == "finished"


def test_multi_page_marks_every_condition_at_once(tmp_path):
    study = make_folder_study(tmp_path, mode="multi", min_listen_fraction=0.5, seconds=0.4)
    store = StudyStore(study.url)
    s = RaterSession(store, study.study_id, study.tokens[0])
    state = s.next_step()
    while len(state.step.trial_ids) == 1:  # an attention check: a page of its own
        s.show(state)
        s.submit(
            state.step.position,
            {"visual": state.trial.expected_mark, "audio": state.trial.expected_mark},
            {"listened_s": {"A": 0.2}},
        )
        state = s.next_step()
    s.show(state)
    ids = state.step.trial_ids
    assert len(ids) == 4 and {t.role for t in state.trials} == {"sonification", "reference", "anchor"}
    labels = [x.label for x in s.sounds(state)]
    assert labels == ["R", "A", "B", "C", "D"] and s.min_listen_s(state) == pytest.approx(0.2)
    marks = {t: {"visual": 2, "audio": 4} for t in ids}
    with pytest.raises(SubmissionRefused, match="asks for visual, audio of 4"):
        s.submit(state.step.position, {"visual": 2, "audio": 4}, {"listened_s": dict.fromkeys(labels, 0.2)})
    with pytest.raises(SubmissionRefused) as refused:  # D not played long enough
        s.submit(state.step.position, marks, {"listened_s": {"A": 0.2, "B": 0.2, "C": 0.2, "D": 0.05}})
    assert refused.value.reason == "listen" and refused.value.wait == pytest.approx(0.15)
    assert s.submit(state.step.position, marks, {"listened_s": dict.fromkeys(labels, 0.2)}).stored == 8
    assert s.submit(state.step.position, marks, {"listened_s": dict.fromkeys(labels, 0.2)}).stored == 0  # idempotent


@pytest.mark.slow
def test_protocol_raters_enrol_and_finish_a_served_study(tmp_path):
    """The load generator of the benchmark (harness.loadtest) does what a browser does:
    enrols through the public link, passes the break, rates with the listening rule on."""
    import asyncio

    from harness.loadtest import run_crowd

    from sonieval.study.export import ratings_frame
    from sonieval.study.server import launch, wait_until_up

    study = make_folder_study(
        tmp_path,
        n_clips=1,
        n_systems=1,
        seconds=0.4,
        min_listen_fraction=1.0,
        n_raters=3,
        sessions=Sessions(pages=2),
        enrolment=Enrolment(enabled=True, max_per_ip_per_hour=100),
    )
    proc, base = launch(study.url, study.study_id, log_path=tmp_path / "server.log")
    try:
        wait_until_up(base, proc)
        queries = [f"enrol={study.created.enrol_key}&PROLIFIC_PID=proto{i}" for i in range(3)]
        runs = asyncio.run(run_crowd(base, queries, think=(0.05, 0.2), arrival_s=0.5))
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert [r.error for r in runs] == [None] * 3 and [r.pages for r in runs] == [4] * 3
    # one script run per rating page (the player's reports wait in the form, the submit is a callback):
    # only the enrolment, the familiarisation and the break (once each per rater) rerun themselves
    assert [r.runs - r.requests for r in runs] == [3] * 3, [(r.runs, r.requests) for r in runs]
    df = ratings_frame(StudyStore(study.url), study.study_id)
    assert len(df) == 3 * 4 * 2 and not df.duplicated(["rater_id", "trial_id", "attribute"]).any()
    assert (df["listened_s"] >= df["stimulus_seconds"] - 0.05).all() and set(df["session"]) == {1, 2}
