"""A study question beyond visual and audio (the rating-attribute catalogue and the protocol): on the
app's pages, under the listening rule, in the simulated ratings; and the database migration that lets a
study database created by the previous code store one (schema version 1 -> 2)."""

from __future__ import annotations

import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from study_helpers import make_folder_study
from test_study_app import _app, _players, _texts

from sonieval.errors import ProtocolError
from sonieval.protocol import parse_protocol
from sonieval.rating_attributes import RatingAttribute
from sonieval.stats.inputs import read_ratings
from sonieval.stats.simulate import simulate_ratings
from sonieval.study.design import DesignConfig, Trial
from sonieval.study.export import ratings_frame
from sonieval.study.session import RaterSession
from sonieval.study.store import SCHEMA_VERSION, StudyStore, SubmissionRefused

V1_DUMP = Path(__file__).parent / "data" / "study_v1.sql"
PLEASANT = RatingAttribute(
    "pleasant",
    "Pleasantness: how pleasant is the sonification to listen to?",
    low="very unpleasant",
    high="very pleasant",
)


def _rating(study_id: str, rater_id: str, trial_id: str, attribute: str) -> dict:
    return dict(
        study_id=study_id,
        rater_id=rater_id,
        trial_id=trial_id,
        attribute=attribute,
        mark=3,
        scale_min=1,
        scale_max=5,
        position=0,
        seed=1,
        mode="joint",
        shown_at=None,
        submitted_at=0.0,
    )


# ----------------------------------------------------------------------------- the migration


def test_a_version_1_sqlite_database_is_migrated_in_place_and_keeps_every_row(tmp_path):
    """A database the previous code created (tests/study/data/study_v1.sql) opens: its ratings table
    loses the visual/audio CHECK, keeps every row and every other constraint, and the study goes on."""
    db = tmp_path / "study.sqlite"
    con = sqlite3.connect(db)
    con.executescript(V1_DUMP.read_text(encoding="utf-8"))
    tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    before = {t: con.execute(f'SELECT * FROM "{t}" ORDER BY 1, 2').fetchall() for t in tables if t != "schema_version"}
    with pytest.raises(sqlite3.IntegrityError, match="ck_ratings_attribute"):  # what version 1 refused
        con.execute(
            "INSERT INTO ratings VALUES ('v1study', 'r002', 't0001', 'pleasant', 3, 1, 5, 0, 1, 'split', NULL, 0)"
        )
    con.close()

    url = f"sqlite:///{db}"
    with ThreadPoolExecutor(4) as pool:  # several processes may open it at once: one migrates
        stores = list(pool.map(lambda _: StudyStore(url), range(4)))
    store = stores[0]
    con = sqlite3.connect(db)
    assert (
        [v for (v,) in con.execute("SELECT version FROM schema_version ORDER BY version")]
        == [1, 2]
        == [1, SCHEMA_VERSION]
    )
    schema = con.execute("SELECT sql FROM sqlite_master WHERE name = 'ratings'").fetchone()[0]
    assert "ck_ratings_attribute" not in schema and "ck_ratings_mark_in_scale" in schema and "FOREIGN KEY" in schema
    assert {t: con.execute(f'SELECT * FROM "{t}" ORDER BY 1, 2').fetchall() for t in before} == before
    assert (
        con.execute("PRAGMA foreign_key_check").fetchall() == []
        and not con.execute("SELECT name FROM sqlite_master WHERE name = 'ratings_v1'").fetchall()
    )

    store.raw_insert_rating(_rating("v1study", "r002", "t0001", "pleasant"))  # no longer held to visual and audio
    with pytest.raises(IntegrityError):  # a mark off the study's scale is still refused by the database
        store.raw_insert_rating({**_rating("v1study", "r002", "t0002", "audio"), "mark": 9})
    rater = store.rater_by_id("v1study", "r001")
    state = store.next_step(rater)
    assert state.done == 3 and state.step.attributes == ("visual",)  # resumes where the rater stopped
    store.mark_shown(rater, state.step.position)
    assert store.submit(rater, state.step.position, {"visual": 5}).stored == 1
    assert len(ratings_frame(store, "v1study")) == 5
    StudyStore(url)  # opening again changes nothing
    assert [v for (v,) in con.execute("SELECT version FROM schema_version")] == [1, 2]


@pytest.mark.postgres
def test_a_version_1_postgres_database_is_migrated_in_place(tmp_path, temp_postgres):
    """On PostgreSQL the constraint is dropped (the tables are otherwise those of version 1)."""
    url = temp_postgres.database_url(f"v1_{uuid.uuid4().hex[:8]}")
    store = StudyStore(url)
    trial = Trial("t1", "c1", "dog", "sysA", "sonification", stimulus_seconds=1.0, source_key="k")
    store.create_study(
        "s",
        DesignConfig("joint", ("visual", "audio")),
        scale_min=1,
        scale_max=5,
        study_dir=tmp_path,
        trials_list=[trial],
        familiarisation={},
        provenance={},
        min_listen_fraction=0.0,
    )
    ((rater_id, _),) = store.invite("s", 1)
    with store.engine.begin() as conn:  # the database as the previous code created it
        conn.execute(
            text("ALTER TABLE ratings ADD CONSTRAINT ck_ratings_attribute CHECK (attribute IN ('visual', 'audio'))")
        )
        conn.execute(text("DELETE FROM schema_version"))
        conn.execute(text("INSERT INTO schema_version VALUES (1, 0)"))
    with pytest.raises(IntegrityError, match="ck_ratings_attribute"):
        store.raw_insert_rating(_rating("s", rater_id, "t1", "pleasant"))
    store.close()
    store = StudyStore(url)
    with store.engine.connect() as conn:
        assert [v for (v,) in conn.execute(text("SELECT version FROM schema_version ORDER BY version"))] == [1, 2]
        names = {r[0] for r in conn.execute(text("SELECT conname FROM pg_constraint WHERE contype = 'c'"))}
    assert "ck_ratings_attribute" not in names and "ck_ratings_mark_in_scale" in names
    store.raw_insert_rating(_rating("s", rater_id, "t1", "pleasant"))
    store.close()


# ----------------------------------------------------------------------------- the protocol, pages and rules


@pytest.mark.parametrize(
    "attributes, says",
    [
        (["visual", "pleasnt"], "[1] unknown attribute 'pleasnt'"),
        ([{"name": "pleasant"}], "a new attribute needs a question"),
        ([{"name": "pleasantness", "question": "?"}], "attribute name 'pleasantness' is not valid"),
        ([{"name": "pleasant", "question": "?", "shows": ["smell"]}], "shows ['smell'] is not valid"),
        ([{"name": "pleasant", "qestion": "?"}], "unknown key 'qestion'"),
        (["audio", {"name": "audio", "question": "?"}], "attribute 'audio' is asked twice"),
        ([{"name": "joint", "question": "?"}], "is taken by the study's pages"),
        ([{"name": f"question{k}", "question": "?"} for k in range(5)], "longer than 40 characters together"),
    ],
)
def test_the_protocol_refuses_a_bad_study_question_in_one_line(attributes, says):
    with pytest.raises(ProtocolError) as exc:
        parse_protocol({"name": "x", "study": {"attributes": attributes}}, "p.yaml")
    assert str(exc.value).startswith("p.yaml: study.attributes: ") and says in str(exc.value)
    assert "\n" not in str(exc.value)


def test_a_rating_panel_shows_one_pair_of_scale_ends():
    audio_and_pleasant = {
        "mode": "multi",
        "attributes": ["audio", {"name": "pleasant", "question": "?", "low": "ugly"}],
    }
    with pytest.raises(ProtocolError, match="one rating panel"):
        parse_protocol({"name": "x", "study": audio_and_pleasant}, "p.yaml")
    reworded = {"mode": "multi", "attributes": ["audio", {"name": "pleasant", "question": "How pleasant is it?"}]}
    assert [a.question for a in parse_protocol({"name": "x", "study": reworded}).study.rating_attributes][1] == (
        "How pleasant is it?"
    )


def test_the_app_page_asks_the_studys_question_with_its_wording_and_scale_ends(tmp_path, monkeypatch):
    study = make_folder_study(
        tmp_path,
        attributes=("visual", PLEASANT),
        familiarisation=False,
        attention_checks=0,
        n_raters=1,
        min_listen_fraction=1.0,
    )
    at = _app(monkeypatch, study, rater=study.tokens[0])
    assert [r.label for r in at.radio] == [
        "Waveform: how similar is the shape of the sonification's waveform (bottom) to the original's (top)?",
        PLEASANT.question,
    ]
    assert at.radio[1].options[0] == "1 (very unpleasant)" and at.radio[1].options[-1] == "5 (very pleasant)"
    assert at.radio[0].options[0] == "1 (totally different)"
    page = _texts(at)
    assert "Shape: 1 = very low quality" in page and "Pleasant: 1 = very unpleasant; 5 = very pleasant." in page
    assert len(at.get("image")) == 1 and len(_players(at)) == 1  # the waveform for visual, the player for pleasant
    for radio in at.radio:
        radio.set_value(2)
    at.button[0].click().run()  # no listening reported: the rule holds for the new question too
    assert "Please listen to every sound" in _texts(at)
    assert len(ratings_frame(StudyStore(study.url), study.study_id)) == 0


def test_a_question_that_shows_the_waveform_only_has_no_player_and_no_listening_rule(tmp_path):
    shape = RatingAttribute(
        "contour", "Contour: does the sonification keep the original's contour?", shows=["waveform"]
    )
    study = make_folder_study(tmp_path, attributes=(shape,), min_listen_fraction=1.0, attention_checks=0, n_raters=1)
    store = StudyStore(study.url)
    session = RaterSession(store, study.study_id, study.tokens[0])
    state = session.next_step()
    session.show(state)
    assert state.step.attributes == ("contour",) and state.step.block == "contour"
    assert session.min_listen_s(state) == 0.0 and not session.info.with_sound(state.step.attributes)
    assert session.submit(state.step.position, {"contour": 4}).stored == 1  # no player report needed
    with pytest.raises(SubmissionRefused, match="asks for contour"):
        session.submit(state.step.position + 1, {"visual": 4})
    assert set(ratings_frame(store, study.study_id)["attribute"]) == {"contour"}


def test_simulated_ratings_take_the_studys_attributes_and_the_report_inputs_check_them():
    ratings, _ = simulate_ratings(n_systems=2, n_raters=2, n_clips=2, attributes=("audio", "pleasant"), seed=1)
    assert set(ratings["attribute"]) == {"audio", "pleasant"}
    assert set(read_ratings(ratings, attributes=("audio", "pleasant")).table["attribute"]) == {"audio", "pleasant"}
    with pytest.raises(Exception, match=r"unknown value\(s\) \['pleasant'\]"):
        read_ratings(ratings)  # the catalogue alone does not know it
    default, _ = simulate_ratings(n_systems=2, n_raters=2, n_clips=2, seed=1)
    assert list(dict.fromkeys(default["attribute"])) == ["visual", "audio"]  # the catalogue's, as before
