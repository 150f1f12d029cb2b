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


# ----------------------------------------------------------------------------- crowd integrity (issue 21)


def test_the_address_is_the_one_the_trusted_proxy_added(tmp_path):
    """Behind a proxy the client controls every X-Forwarded-For entry left of the one the proxy
    appended: forged entries must neither be taken nor help past the per-address limit."""
    from sonieval.study.session import client_address

    xff = {"X-Forwarded-For": "198.51.100.7, 127.0.0.1"}  # forged entry, then the proxy's (the real client)
    assert client_address("127.0.0.1", xff, True) == "127.0.0.1"
    forged_list = {"x-forwarded-for": "1.2.3.4, 5.6.7.8, 203.0.113.9"}  # a list sent by the client, then the real one
    assert client_address("10.0.0.2", forged_list, True) == "203.0.113.9"
    assert client_address("10.0.0.3", forged_list, True, hops=2) == "5.6.7.8"  # two proxies: the outer one's entry
    assert client_address("10.0.0.2", {"X-Forwarded-For": "203.0.113.9"}, True, hops=2) == "10.0.0.2"  # not via both
    assert client_address("10.0.0.2", forged_list, False) == "10.0.0.2"  # proxy headers not trusted: the connection
    study = _crowd(tmp_path, cap=20, max_per_ip_per_hour=2, trust_proxy_headers=True)
    store = StudyStore(study.url)
    outcomes = []
    for i in range(4):  # one client, a new forged entry each time, through one proxy
        headers = {"X-Forwarded-For": f"198.51.100.{i}, 203.0.113.50"}
        try:
            enrol(store, study.study_id, {"enrol": study.created.enrol_key}, "127.0.0.1", headers)
            outcomes.append("ok")
        except EnrolmentRefused as exc:
            outcomes.append(exc.reason)
    assert outcomes == ["ok", "ok", "rate", "rate"]


def _screened_study(tmp_path, **enrolment):
    from sonieval.study.options import Headphones

    opts = dict(enabled=True, max_per_minute=1000, max_per_ip_per_hour=1000)
    opts.update(enrolment)
    cap = opts.pop("cap", 10)
    return make_folder_study(
        tmp_path,
        n_raters=cap,
        n_clips=1,
        n_systems=1,
        familiarisation=False,
        headphones=Headphones(True, "stop"),
        enrolment=Enrolment(**opts),
    )


def _fail_check(store, study, token):
    s = RaterSession(store, study.study_id, token)
    _, trials, _ = s.headphone_plan()
    assert s.submit_headphone([t.answer % 3 + 1 for t in trials]).saved and s.screened_out
    return s


def test_reenrolment_after_a_screen_out_is_refused_from_the_same_browser_or_address(tmp_path):
    from sonieval.study.session import marker_cookie

    now = [10_000.0]
    study = _screened_study(tmp_path, reenrol_block_hours=2.0)
    store = StudyStore(study.url, clock=lambda: now[0])
    key = study.created.enrol_key

    def join(pid: str, ip: str, cookies=None) -> str:
        try:
            enrol(store, study.study_id, {"enrol": key, "PROLIFIC_PID": pid}, ip, cookies=cookies)
            return "ok"
        except EnrolmentRefused as exc:
            return exc.reason

    token = enrol(store, study.study_id, {"enrol": key, "PROLIFIC_PID": "real1"}, "192.0.2.10")
    name, marker, keep_s = _fail_check(store, study, token).browser_marker()
    assert name == marker_cookie(study.study_id) and keep_s == 2 * 3600 and len(marker) == 32
    assert join("madeup1", "192.0.2.10") == "screened"  # same address, no cookie
    assert join("madeup2", "192.0.2.99", {name: marker}) == "screened"  # same browser, another address
    assert join("madeup3", "192.0.2.99", {name: "0" * 32}) == "ok"  # another browser and address
    now[0] += 2 * 3600 + 1  # the block lasts reenrol_block_hours
    assert join("madeup4", "192.0.2.10", {name: marker}) == "ok"
    open_study = _screened_study(tmp_path / "noblock", reenrol_block_hours=0.0)
    store2 = StudyStore(open_study.url)
    t = enrol(store2, open_study.study_id, {"enrol": open_study.created.enrol_key}, "192.0.2.10")
    assert _fail_check(store2, open_study, t).browser_marker() is None
    enrol(store2, open_study.study_id, {"enrol": open_study.created.enrol_key}, "192.0.2.10")  # no block: admitted


def test_places_of_the_cap_are_released_by_a_screen_out_and_by_inactivity(tmp_path):
    """Screened-out and abandoned raters no longer hold places; a finished one always does."""
    now = [50_000.0]
    study = _screened_study(tmp_path, cap=2, release_after_minutes=30.0, reenrol_block_hours=0.0)
    store = StudyStore(study.url, clock=lambda: now[0])
    key = study.created.enrol_key

    def join(ip: str) -> str | None:
        try:
            return enrol(store, study.study_id, {"enrol": key}, ip)
        except EnrolmentRefused as exc:
            assert exc.reason == "full"
            return None

    a, b = join("192.0.2.1"), join("192.0.2.2")
    assert a and b and join("192.0.2.3") is None
    _fail_check(store, study, a)  # a is screened out: its place is free at once
    c = join("192.0.2.4")
    assert c and join("192.0.2.5") is None
    s = RaterSession(store, study.study_id, c)  # c finishes the study
    _, trials, _ = s.headphone_plan()
    s.submit_headphone([t.answer for t in trials])
    while not (state := s.next_step()).finished:
        s.show(state)
        s.submit(
            state.step.position, {"visual": state.trial.expected_mark or 3, "audio": state.trial.expected_mark or 3}
        )
    now[0] += 29 * 60
    assert join("192.0.2.6") is None  # b was active 29 minutes ago: still holds its place
    now[0] += 2 * 60
    d = join("192.0.2.7")  # b inactive for 31 minutes: its place goes to d; c (finished) keeps its own
    assert d and join("192.0.2.8") is None
    from sonieval.study.export import progress_per_rater

    status = progress_per_rater(store, study.study_id, now=now[0]).set_index("rater_id")["status"]
    assert status["r001"] == "screened out (headphone check)" and status["r003"] == "finished"


def test_per_rater_completion_codes(tmp_path):
    from sonieval.study.export import write_ratings

    study = _screened_study(tmp_path, per_rater_codes=True, screened_out_code="NOHP", completion_code="SAME")
    store = StudyStore(study.url)
    key = study.created.enrol_key
    codes = []
    for i in range(2):
        s = RaterSession(store, study.study_id, enrol(store, study.study_id, {"enrol": key}, f"192.0.2.{i}"))
        _, trials, _ = s.headphone_plan()
        s.submit_headphone([t.answer for t in trials])
        while not (state := s.next_step()).finished:
            s.show(state)
            m = state.trial.expected_mark or 3
            s.submit(state.step.position, {"visual": m, "audio": m})
        codes.append(s.completion()[0])
    screened = _fail_check(store, study, enrol(store, study.study_id, {"enrol": key}, "192.0.2.9"))
    assert screened.completion()[0] == "NOHP"
    assert len(set(codes)) == 2 and "SAME" not in codes and all(len(c) == 10 for c in codes)
    write_ratings(store, study.study_id, tmp_path / "out")
    import pandas as pd

    listed = pd.read_csv(tmp_path / "out" / "raters.csv").set_index("rater_id")["completion_code"]
    assert listed.tolist() == [*codes, "NOHP"]
    assert stat.S_IMODE((tmp_path / "out" / "raters.csv").stat().st_mode) == 0o600


def test_database_and_server_log_are_owner_only(tmp_path):
    from sonieval.study.server import _private_log

    study = make_folder_study(tmp_path, n_clips=1, n_systems=1, familiarisation=False)
    db = study.created.study_dir / "study.sqlite"
    s = RaterSession(StudyStore(study.url), study.study_id, study.tokens[0])
    s.show(s.next_step())  # a write: the -wal and -shm files exist now
    for path in (db, db.with_name("study.sqlite-wal"), db.with_name("study.sqlite-shm")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    log = tmp_path / "server.log"
    with _private_log(log) as fh:
        fh.write(b"x\n")
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    old = tmp_path / "old.sqlite"  # a database made before (0644) is made owner-only when opened
    old.write_bytes(b"")
    old.chmod(0o644)
    StudyStore(f"sqlite:///{old}").close()
    assert stat.S_IMODE(old.stat().st_mode) == 0o600


def test_export_names_each_conditions_letter_and_admin_counts_every_trial(tmp_path):
    """Multi-stimulus pages: the export says which letter (and place) each condition had on the
    rater's page, and the admin's raters_assigned per trial agrees with the raters' pages."""
    from sonieval.study.design import page_labels
    from sonieval.study.export import progress_per_trial, ratings_frame

    study = make_folder_study(tmp_path, mode="multi", n_raters=3, familiarisation=False)
    store = StudyStore(study.url)
    expected: dict[str, int] = {}
    shown: dict[tuple[str, int, str], str] = {}
    for token in study.tokens:
        s = RaterSession(store, study.study_id, token)
        for step, _ in store.plan_of(s.rater):
            for label, tid in page_labels(step)[1:]:
                expected[tid] = expected.get(tid, 0) + 1
                shown[(s.rater.rater_id, step.position, tid)] = label
        while not (state := s.next_step()).finished:
            s.show(state)
            m = state.trial.expected_mark or 3
            s.submit(state.step.position, {t: {"visual": m, "audio": m} for t in state.step.trial_ids})
    per_trial = progress_per_trial(store, study.study_id).set_index("trial_id")["raters_assigned"]
    assert per_trial.to_dict() == expected and set(expected.values()) == {3}
    df = ratings_frame(store, study.study_id)
    got = {(r.rater_id, r.position, r.trial_id): r.page_label for r in df.itertuples()}
    assert got == shown and set(df["page_label"]) == set("ABCD")
    assert (df["page_slot"] == df["page_label"].map(lambda x: "ABCD".index(x) + 1)).all()
    assert set(df["page_conditions"]) == {1, 4}
