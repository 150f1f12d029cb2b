"""20 raters submitting at once: every mark stored exactly once (PostgreSQL and SQLite)."""

from __future__ import annotations

import threading
import uuid

import pytest
from sqlalchemy import text

from sonieval.study.session import RaterSession
from sonieval.study.store import StudyStore
from study_helpers import make_folder_study

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
    with store.engine.connect() as conn:
        total, distinct = conn.execute(text(
            "SELECT count(*), count(DISTINCT rater_id || '/' || trial_id || '/' || attribute) FROM ratings WHERE study_id = :s"
        ), {"s": study_id}).one()
        planned = conn.execute(text(
            "SELECT count(*) FROM plan WHERE study_id = :s"), {"s": study_id}).scalar()
    assert total == distinct == planned * 2  # joint mode: two attributes per page


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
