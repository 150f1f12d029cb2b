"""Raters submitting at once (20 invited; 50 self-enrolled): every mark stored exactly once (PostgreSQL and SQLite)."""

from __future__ import annotations

import threading
import uuid

import pytest
from harness.loadtest import mark_counts
from sqlalchemy import text
from study_helpers import make_folder_study

from sonieval.study.session import RaterSession
from sonieval.study.store import StudyStore

N_RATERS = 20


def _hammer(store: StudyStore, study_id: str, tokens: list[str]) -> list[BaseException]:
    """Each rater's thread submits every page twice (a double click), all threads at once."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(tokens))

    def rater(token: str) -> None:
        try:
            session = RaterSession(store, study_id, token)
            barrier.wait()
            while not (state := session.next_step()).finished:
                session.show(state)
                marks = {a: state.trial.expected_mark or (1 + (state.step.position % 5)) for a in state.step.attributes}
                first = session.submit(state.step.position, marks)
                again = session.submit(state.step.position, marks)
                assert first.stored == len(marks) and again.stored == 0
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=rater, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def _check_exactly_once(store: StudyStore, study_id: str) -> None:
    total, distinct, pages = mark_counts(store, study_id)
    assert total == distinct == pages * 2  # joint mode: two attributes per page


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_20_concurrent_raters(tmp_path, temp_postgres):
    url = temp_postgres.database_url(f"study_{uuid.uuid4().hex[:8]}")
    study = make_folder_study(tmp_path, storage=url, n_raters=N_RATERS)
    store = StudyStore(url)
    assert store.dialect == "postgresql"
    assert _hammer(store, study.study_id, study.tokens) == []
    _check_exactly_once(store, study.study_id)
    # the CHECK constraint exists in PostgreSQL too
    with store.engine.connect() as conn:
        names = {r[0] for r in conn.execute(text("SELECT conname FROM pg_constraint WHERE contype = 'c'"))}
    assert "ck_ratings_mark_in_scale" in names


@pytest.mark.slow
def test_sqlite_20_concurrent_raters(tmp_path):
    study = make_folder_study(tmp_path, n_raters=N_RATERS)
    store = StudyStore(study.url)
    assert _hammer(store, study.study_id, study.tokens) == []
    _check_exactly_once(store, study.study_id)


def _crowd_hammer(store: StudyStore, study, n_visitors: int) -> tuple[list[str], list[BaseException]]:
    """``n_visitors`` people open the public link at once (distinct Prolific ids); each one let in rates
    every page, submitting each twice (a double click) with the player's listening report."""
    from sonieval.study.session import enrol
    from sonieval.study.store import EnrolmentRefused

    outcomes: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_visitors)

    def visitor(i: int) -> None:
        try:
            barrier.wait()
            try:
                token = enrol(
                    store,
                    study.study_id,
                    {
                        "enrol": study.created.enrol_key,
                        "PROLIFIC_PID": f"pid{i:03d}",
                        "STUDY_ID": "S1",
                        "SESSION_ID": f"x{i}",
                    },
                    f"10.1.{i // 250}.{i % 250}",
                )
            except EnrolmentRefused as exc:
                outcomes.append(exc.reason)
                return
            outcomes.append("ok")
            session = RaterSession(store, study.study_id, token)
            while not (state := session.next_step()).finished:
                session.show(state)
                marks = {a: state.trial.expected_mark or 3 for a in state.step.attributes}
                heard = {"listened_s": {"R": 0.1, "A": state.trial.stimulus_seconds}, "n_switches": 1}
                first = session.submit(state.step.position, marks, heard)
                again = session.submit(state.step.position, marks, heard)
                assert first.stored == len(marks) and again.stored == 0
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(n_visitors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return outcomes, errors


@pytest.mark.slow
@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres), "sqlite"])
def test_50_concurrent_self_enrolled_raters_every_mark_exactly_once(tmp_path, backend, request):
    """Issue 14: >= 50 raters enrolling themselves at once, 5 more turned away by the cap."""
    from sonieval.study.options import Enrolment, Sessions
    from sonieval.study.store import enrolments, listening, page_log

    url = None
    if backend == "postgres":
        url = request.getfixturevalue("temp_postgres").database_url(f"crowd_{uuid.uuid4().hex[:8]}")
    study = make_folder_study(
        tmp_path,
        storage=url,
        n_raters=50,
        n_clips=1,
        n_systems=2,
        seconds=0.3,
        familiarisation=False,
        min_listen_fraction=1.0,
        sessions=Sessions(pages=2),
        enrolment=Enrolment(enabled=True, max_per_minute=1000, max_per_ip_per_hour=10),
    )
    store = StudyStore(study.url)
    outcomes, errors = _crowd_hammer(store, study, 55)
    assert errors == [] and outcomes.count("ok") == 50 and outcomes.count("full") == 5
    _check_exactly_once(store, study.study_id)
    pages = store.frame(page_log, study.study_id)
    assert len(pages) == 50 * 5 and not pages.duplicated(["rater_id", "position"]).any()
    heard = store.frame(listening, study.study_id)
    assert len(heard) == 2 * len(pages) and not heard.duplicated(["rater_id", "position", "label"]).any()
    assert store.frame(enrolments, study.study_id)["participant_id"].is_unique
