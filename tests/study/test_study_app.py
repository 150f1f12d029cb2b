"""The Streamlit app driven by streamlit.testing.v1.AppTest (in-process, no browser)."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest
from study_helpers import make_folder_study

from sonieval.study.export import ratings_frame
from sonieval.study.server import ENV_STORAGE, ENV_STUDY_ID, app_path
from sonieval.study.store import StudyStore


def _app(monkeypatch, study, **params) -> AppTest:
    monkeypatch.setenv(ENV_STORAGE, study.url)
    monkeypatch.setenv(ENV_STUDY_ID, study.study_id)
    at = AppTest.from_file(str(app_path()), default_timeout=30)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def _texts(at: AppTest) -> str:
    parts = [e.value for e in at.markdown] + [e.value for e in at.caption] + [e.value for e in at.title]
    parts += (
        [e.value for e in at.success]
        + [e.value for e in at.error]
        + [e.value for e in at.info]
        + [e.value for e in at.warning]
    )
    return "\n".join(map(str, parts))


def _players(at: AppTest) -> list[dict]:
    """The A/B players on the page: their arguments (labels, minimum listening time...)."""
    import json

    return [json.loads(p.proto.json_args) for p in at.get("component_instance")]


def _set_panel(at: AppTest, mark: int | None, **overrides) -> None:
    """On a rating panel (a multi-stimulus page's player) give every condition ``mark`` as the
    browser reports it: the player's value, stamped with its page (AppTest sets a component's value
    through its key)."""
    for element in at.get("component_instance"):
        args = json.loads(element.proto.json_args)
        if not args.get("rating"):
            continue
        attrs = [a["id"] for a in args["rating"]["attributes"]]
        marks = {s["label"]: dict.fromkeys(attrs, mark) for s in args["stimuli"] if not s["reference"]}
        for label, given in overrides.items():
            marks[label].update(given)
        at.session_state[element.key] = {"page": args["page"], "ready": True, "marks": marks, "listened_s": {}}


def _complete(at: AppTest, study) -> int:
    """Rate every page through the UI; returns the number of pages seen."""
    pages = 0
    while not at.success:
        assert not at.exception, at.exception
        progress = at.get("progress")[0].proto.text
        assert progress.startswith(f"Page {pages + 1} of ")
        instruction = [i.value for i in at.info]
        target = (
            2
            if any("set both marks to 2" in t or "set the mark to 2" in t for t in instruction)
            else 4
            if any("to 4" in t for t in instruction)
            else 3
        )
        for radio in at.radio:
            radio.set_value(target)
        _set_panel(at, target)
        at.button[0].click().run()
        pages += 1
        assert pages < 100
    assert not at.exception
    return pages


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["joint", "split", "multi"])
def test_app_full_flow(tmp_path, monkeypatch, mode):
    study = make_folder_study(tmp_path, mode=mode)
    at = _app(monkeypatch, study, rater=study.tokens[0])
    # familiarisation first: two example pairs, nothing stored
    assert "Before you start" in _texts(at)
    assert [[s["label"] for s in p["stimuli"]] for p in _players(at)] == [["R", "A"], ["R", "A"]] and len(
        at.get("image")
    ) == 2
    at.button[0].click().run()
    assert len(ratings_frame(StudyStore(study.url), study.study_id)) == 0
    first = _texts(at)
    if mode == "joint":
        assert len(at.radio) == 2 and len(_players(at)) == 1 and len(at.get("image")) == 1
        assert [(s["label"], s["required"]) for s in _players(at)[0]["stimuli"]] == [("R", False), ("A", True)]
    elif mode == "multi":  # a clip's 4 conditions on one page (or an attention check alone): the rating panel
        player = _players(at)[0]
        n = len(player["stimuli"]) - 1
        assert n in (1, 4) and not at.radio and not at.get("image")  # marks and waveforms are on the panel
        assert [s["label"] for s in player["stimuli"]] == ["R", *"ABCD"[:n]]
        assert [a["id"] for a in player["rating"]["attributes"]] == ["visual", "audio"]
        assert [bool(s.get("image")) for s in player["stimuli"]] == [False] + [True] * n  # waveform thumbnails
    else:  # split: one attribute per page; waveform hidden in the audio block, audio hidden in the visual block
        assert len(at.radio) == 1
        if "sound only" in first:
            assert len(at.get("image")) == 0 and len(_players(at)) == 1
        else:
            assert len(at.get("image")) == 1 and len(_players(at)) == 0
    assert "sys" not in first  # system names never shown
    pages = _complete(at, study)
    assert pages == {"joint": 9, "split": 18, "multi": 3}[mode]
    df = ratings_frame(StudyStore(study.url), study.study_id)
    assert len(df) == 18 and (df["mode"] == mode).all()
    assert df["attention_passed"].dropna().all()


def test_app_mushra_sliders_start_unrated(tmp_path, monkeypatch):
    study = make_folder_study(
        tmp_path,
        mode="multi",
        rating_scale="mushra",
        scale_min=0,
        scale_max=100,
        familiarisation=False,
        attention_checks=0,
        n_clips=1,
    )
    at = _app(monkeypatch, study, rater=study.tokens[0])
    player = _players(at)[0]
    assert player["rating"]["scale_min"] == 0 and player["rating"]["scale_max"] == 100
    assert sum(not s["reference"] for s in player["stimuli"]) * len(player["rating"]["attributes"]) == 8  # 4 x 2
    _set_panel(at, 64, D={"audio": None})  # one slider never touched: the player reports it unrated
    at.button[0].click().run()
    assert "choose a mark for every question" in _texts(at)  # an untouched slider is no mark
    _set_panel(at, 101)  # a tampered report: off the scale
    at.button[0].click().run()
    assert "That mark is not on the scale" in _texts(at)
    assert len(ratings_frame(StudyStore(study.url), study.study_id)) == 0
    _set_panel(at, 64)
    at.button[0].click().run()
    df = ratings_frame(StudyStore(study.url), study.study_id)
    assert len(df) == 8 and set(df["mark"]) == {64} and (df["scale_max"] == 100).all()
    assert at.success  # the only page: thank you


def test_app_missing_mark_and_resume(small_study, monkeypatch):
    at = _app(monkeypatch, small_study, rater=small_study.tokens[1])
    at.button[0].click().run()  # familiarisation done
    at.radio[0].set_value(3)
    at.button[0].click().run()  # second mark missing
    assert "choose a mark for every question" in _texts(at)
    assert len(ratings_frame(StudyStore(small_study.url), small_study.study_id)) == 0
    for r in at.radio:
        r.set_value(4)
    at.button[0].click().run()
    assert at.get("progress")[0].proto.text.startswith("Page 2 of 9")
    # a fresh page load (new session) resumes at page 2, familiarisation not shown again
    again = _app(monkeypatch, small_study, rater=small_study.tokens[1])
    assert again.get("progress")[0].proto.text.startswith("Page 2 of 9")


def test_app_listening_rule_needs_the_players_report(tmp_path, monkeypatch):
    """The page asks the player for the minimum; without its report (no browser here) nothing is stored."""
    study = make_folder_study(
        tmp_path, min_listen_fraction=1.0, seconds=3.0, familiarisation=False, n_clips=1, n_systems=1
    )
    at = _app(monkeypatch, study, rater=study.tokens[0])
    player = _players(at)[0]
    assert player["min_listen_s"] == pytest.approx(3.0) and "the player counts down" in _texts(at)
    for r in at.radio:
        r.set_value(3)
    at.button[0].click().run()
    assert "listen to every sound long enough first (about 3 s left)" in _texts(at)
    assert len(ratings_frame(StudyStore(study.url), study.study_id)) == 0


@pytest.mark.parametrize("params", [{}, {"rater": "A" * 43}, {"rater": "../../etc/passwd"}, {"admin": "A" * 43}])
def test_app_refuses_bad_links(small_study, monkeypatch, params):
    at = _app(monkeypatch, small_study, **params)
    assert not at.exception
    assert at.error and "not valid" in at.error[0].value or "personal link" in at.error[0].value
    assert not at.radio and not at.get("audio")


def test_app_rater_token_does_not_open_admin(small_study, monkeypatch):
    at = _app(monkeypatch, small_study, admin=small_study.tokens[0])
    assert at.error and "admin link is not valid" in at.error[0].value


def test_app_admin_view(small_study, monkeypatch):
    at = _app(monkeypatch, small_study, admin=small_study.admin_token)
    assert not at.exception
    assert at.title[0].value == f"{small_study.study_id}: admin"
    assert len(at.dataframe) >= 5  # per rater, per trial, where raters stop, sessions, screening
    per_rater = at.dataframe[0].value
    assert set(per_rater["status"]) == {"familiarisation"} and "median_listened_s" in per_rater.columns
    close = next(b for b in at.button if b.label == "Close the study")
    close.click().run()
    assert StudyStore(small_study.url).study(small_study.study_id).status == "closed"
    rater = _app(monkeypatch, small_study, rater=small_study.tokens[0])
    assert "closed" in _texts(rater)
    at = _app(monkeypatch, small_study, admin=small_study.admin_token)
    next(b for b in at.button if b.label == "Open the study").click().run()
    assert StudyStore(small_study.url).study(small_study.study_id).status == "open"
    n_before = len(
        StudyStore(small_study.url).frame(
            __import__("sonieval.study.store", fromlist=["raters"]).raters, small_study.study_id
        )
    )
    next(b for b in at.button if b.label == "Invite").click().run()
    assert "?rater=" in at.code[0].value
    assert (
        len(
            StudyStore(small_study.url).frame(
                __import__("sonieval.study.store", fromlist=["raters"]).raters, small_study.study_id
            )
        )
        == n_before + 1
    )


def test_the_session_caption_follows_the_stored_session(tmp_path, monkeypatch):
    """A rater back after idle_minutes starts session 2 (stored when the page is shown), and the page
    says so (it said "session 1" while the database began session 2)."""
    import sqlite3

    from sonieval.study.options import Sessions
    from sonieval.study.session import RaterSession

    study = make_folder_study(
        tmp_path, n_clips=1, n_systems=1, familiarisation=False, sessions=Sessions(idle_minutes=20)
    )
    at = _app(monkeypatch, study, rater=study.tokens[0])
    assert "· session 1" in _texts(at)
    for radio in at.radio:
        radio.set_value(3)
    at.button[0].click().run()
    assert "· session 1" in _texts(at) and at.get("progress")[0].proto.text.startswith("Page 2 of")
    con = sqlite3.connect(study.created.study_dir / "study.sqlite")  # the rater leaves for 25 minutes
    con.execute("UPDATE rater_sessions SET started_at = started_at - 1500")
    con.execute("UPDATE page_log SET submitted_at = submitted_at - 1500, shown_at = shown_at - 1500")
    con.commit()
    con.close()
    back = _app(monkeypatch, study, rater=study.tokens[0])
    store = StudyStore(study.url)
    rows = store.sessions_of(RaterSession(store, study.study_id, study.tokens[0]).rater)
    assert [(r["session"], r["ended_by"]) for r in rows] == [(1, "left"), (2, None)]
    assert "· session 2" in _texts(back) and "· session 1" not in _texts(back)
