"""Storage, design and submission rules of the listening study (SQLite)."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest
from sqlalchemy.exc import IntegrityError
from study_helpers import make_folder_study

from sonieval.study.create import StudySettings
from sonieval.study.design import DesignConfig, Trial, assigned_trials, check_subset_balance, rater_plan
from sonieval.study.export import ratings_frame, screening_per_rater, write_ratings
from sonieval.study.session import AccessDenied, AdminSession, RaterSession
from sonieval.study.store import SCHEMA_VERSION, StudyError, StudyStore, SubmissionRefused
from sonieval.tables import RATINGS_COLUMNS, read_table


def _rate_all(session: RaterSession, mark: int = 3) -> int:
    n = 0
    while not (state := session.next_step()).finished:
        session.show(state)
        session.submit(state.step.position, {a: (state.trial.expected_mark or mark) for a in state.step.attributes})
        n += 1
    return n


def test_created_study_has_all_roles_and_blinded_files(small_study):
    store = StudyStore(small_study.url)
    trials = store.trials(small_study.study_id)
    roles = pd.Series([t.role for t in trials.values()]).value_counts().to_dict()
    # 2 clips x 2 systems, a reference and an anchor per clip, 1 attention check
    assert roles == {"sonification": 4, "reference": 2, "anchor": 2, "attention": 1}
    for t in trials.values():
        assert "sys" not in t.stimulus_file and "clip" not in t.stimulus_file  # opaque names
        assert (small_study.created.study_dir / "audio" / t.stimulus_file).is_file()
        assert (small_study.created.study_dir / "waveforms" / t.waveform_file).is_file()
    att = [t for t in trials.values() if t.role == "attention"][0]
    assert att.expected_mark == 2 and "set both marks to 2" in att.instruction
    assert len(small_study.tokens) == 2 and small_study.admin_token


def _wav_chunks(data: bytes) -> list[tuple[bytes, int]]:
    out, i = [], 12
    while i + 8 <= len(data):
        size = int.from_bytes(data[i + 4 : i + 8], "little")
        out.append((data[i : i + 4], size))
        i += 8 + size + (size & 1)
    return out


def test_one_format_per_study_and_no_two_files_share_bytes(tmp_path):
    """Blinding by the files themselves: a system of another rate, a longer and a shorter one are
    brought into one format (rate, 16-bit, the clip's length); every file's header is the same
    44 bytes for a clip (RIFF, fmt, data: nothing from the signal or the clock), and no two files
    share bytes, not even the original, its hidden reference and an attention check (the same
    signal, each with its own dither) or the familiarisation examples."""
    import hashlib

    import numpy as np
    import soundfile as sf
    from study_helpers import RATE, tone

    from sonieval.audio import read_audio, write_wav
    from sonieval.study.create import StudySettings, create_from_folders

    inputs = tmp_path / "in"
    for c in range(2):
        write_wav(inputs / "originals" / f"clip{c}.wav", tone(300 + 200 * c, 1.0), RATE)
        write_wav(inputs / "slow" / f"clip{c}.wav", tone(300 + 200 * c, 1.0, RATE // 2, noise=0.05), RATE // 2)
        write_wav(inputs / "long" / f"clip{c}.wav", tone(300 + 200 * c, 1.3, noise=0.05, seed=1), RATE)
        write_wav(inputs / "short" / f"clip{c}.wav", tone(300 + 200 * c, 0.7, noise=0.05, seed=2), RATE)
    write_wav(inputs / "originals" / "spare.wav", tone(250, 1.0, noise=0.05, seed=3), RATE)
    settings = StudySettings(study_id="fmt", attention_checks=4, min_listen_fraction=0.0, n_raters=1)
    systems = {name: inputs / name for name in ("slow", "long", "short")}
    created = create_from_folders(settings, inputs / "originals", systems, study_dir=tmp_path / "study", progress=False)
    store = StudyStore(created.storage)
    trials = list(store.trials("fmt").values())
    examples = store.study("fmt").familiarisation
    audio = created.study_dir / "audio"
    by_clip: dict[str, set[str]] = {}
    for t in trials:
        by_clip.setdefault(t.clip_id, set()).update({t.original_file, t.stimulus_file})
    by_clip["familiarisation"] = {e[k] for e in examples.values() for k in ("original_file", "stimulus_file")}
    names = set().union(*by_clip.values())
    assert (
        len(names) == 2 * (1 + 3 + 2) + 4 + 3
    )  # per clip: original, 3 systems, reference, anchor; 4 attention; 3 examples
    digests = {hashlib.sha256((audio / n).read_bytes()).hexdigest() for n in names}
    assert len(digests) == len(names)  # no two files share bytes
    for clip, files in by_clip.items():
        heads = {(audio / n).read_bytes()[:44] for n in files}
        assert len(heads) == 1, clip  # one header for the whole clip: it tells nothing but length and rate
        for n in files:
            info = sf.info(str(audio / n))
            assert (info.samplerate, info.subtype, info.channels) == (RATE, "PCM_16", 1), n
            assert [c for c, _ in _wav_chunks((audio / n).read_bytes())] == [b"fmt ", b"data"], n
    # the hidden reference and the attention checks: the original's signal, up to the dither
    for t in trials:
        if t.role in ("reference", "attention"):
            a, b = read_audio(audio / t.original_file)[0], read_audio(audio / t.stimulus_file)[0]
            assert np.max(np.abs(a - b)) <= 2.5 / 32768 and np.any(a != b)
    assert any("resampled" in n for n in created.notes) and any("trimmed" in n for n in created.notes)
    assert store.study("fmt").provenance["format"]["sample_rate"] == RATE


def test_anchor_is_lowpassed(small_study):
    import numpy as np

    from sonieval.audio import read_audio

    store = StudyStore(small_study.url)
    trials = store.trials(small_study.study_id)
    anchor = next(t for t in trials.values() if t.role == "anchor")
    a, rate, _ = read_audio(small_study.created.study_dir / "audio" / anchor.original_file)
    b, _, _ = read_audio(small_study.created.study_dir / "audio" / anchor.stimulus_file)
    # broadband noise makes the difference visible: energy above the cutoff is removed
    noisy = np.random.default_rng(0).standard_normal(rate).astype(np.float32) * 0.1
    from sonieval.study.stimuli import lowpass_anchor

    spec_in = np.abs(np.fft.rfft(noisy))
    spec_out = np.abs(np.fft.rfft(lowpass_anchor(noisy, rate, 3500.0)))
    freqs = np.fft.rfftfreq(len(noisy), 1 / rate)
    high = freqs > 5000
    assert spec_out[high].sum() < 0.01 * spec_in[high].sum()
    assert a.shape == b.shape


def test_rater_completes_study_and_marks_are_stored_once(small_study):
    store = StudyStore(small_study.url)
    session = RaterSession(store, small_study.study_id, small_study.tokens[0])
    pages = _rate_all(session)
    assert pages == 9  # joint mode: one page per trial
    df = ratings_frame(store, small_study.study_id)
    assert list(df.columns[: len(RATINGS_COLUMNS)]) == RATINGS_COLUMNS
    assert len(df) == 18 and not df.duplicated(["rater_id", "trial_id", "attribute"]).any()
    assert set(df["role"]) == {"sonification", "reference", "anchor", "attention"}
    assert df["attention_passed"].dropna().all()
    # resubmitting a finished page is idempotent: nothing new, first mark stands
    res = session.submit(0, {"visual": 5, "audio": 5})
    assert res.stored == 0 and res.already_stored == 2
    assert len(ratings_frame(store, small_study.study_id)) == 18


def test_resume_after_new_connection(small_study):
    store = StudyStore(small_study.url)
    s = RaterSession(store, small_study.study_id, small_study.tokens[0])
    for _ in range(3):
        st_ = s.next_step()
        s.show(st_)
        s.submit(st_.step.position, {"visual": 4, "audio": 4})
    store.close()
    again = RaterSession(StudyStore(small_study.url), small_study.study_id, small_study.tokens[0])
    state = again.next_step()
    assert state.done == 3 and state.step.position == 3


def test_orders_differ_per_rater_with_recorded_seed(small_study):
    store = StudyStore(small_study.url)
    plans = []
    for tok in small_study.tokens:
        r = store.rater_for_token(small_study.study_id, tok)
        plans.append([s.trial_id for s, _ in store.plan_of(r)])
        assert r.seed > 0
    assert sorted(plans[0]) == sorted(plans[1]) and plans[0] != plans[1]


def test_split_mode_blocks_counterbalanced(tmp_path):
    st = make_folder_study(tmp_path, mode="split")
    store = StudyStore(st.url)
    orders = []
    for tok in st.tokens:
        r = store.rater_for_token(st.study_id, tok)
        steps = [s for s, _ in store.plan_of(r)]
        assert all(len(s.attributes) == 1 for s in steps)
        n = len(steps) // 2
        assert {s.block for s in steps[:n]} != {s.block for s in steps[n:]}
        orders.append(r.block_order)
    assert orders == ["visual,audio", "audio,visual"]
    att = [t for t in store.trials(st.study_id).values() if t.role == "attention"][0]
    assert "set the mark to" in att.instruction


def test_subset_design_balanced_and_checked():
    trials = [Trial(f"t{i:02d}", f"c{i % 4}", "", f"s{i // 4}", "sonification") for i in range(12)]
    trials += [Trial(f"r{c}", f"c{c}", "", "hidden_reference", "reference") for c in range(4)]
    trials += [Trial("a9", "c0", "", "attention_check", "attention", expected_mark=2)]
    cfg = DesignConfig(design="subset", trials_per_rater=5, min_ratings_per_trial=2, seed=1)
    counts: dict[str, int] = {}
    for r in range(5):
        mine = assigned_trials(trials, cfg, r)
        son = [t for t in mine if t.role == "sonification"]
        assert len(son) == 5 and len({t.trial_id for t in son}) == 5
        assert any(t.role == "attention" for t in mine)
        assert {t.clip_id for t in mine if t.role == "reference"} == {t.clip_id for t in son}
        for t in son:
            counts[t.trial_id] = counts.get(t.trial_id, 0) + 1
        assert len(rater_plan(trials, cfg, r, seed=r)) == len(mine)
    assert min(counts.values()) >= 2 and max(counts.values()) - min(counts.values()) <= 1
    check_subset_balance(12, cfg, 5)
    with pytest.raises(Exception, match="raise study.n_raters to 5"):
        check_subset_balance(12, cfg, 4)


def test_schema_version_and_check_constraint(small_study):
    store = StudyStore(small_study.url)
    db = small_study.url.split("///", 1)[1]
    con = sqlite3.connect(db)
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    r = store.rater_for_token(small_study.study_id, small_study.tokens[0])
    base = dict(
        study_id=small_study.study_id,
        rater_id=r.rater_id,
        trial_id=next(iter(store.trials(small_study.study_id))),
        attribute="audio",
        scale_min=1,
        scale_max=5,
        position=0,
        seed=1,
        mode="joint",
        shown_at=None,
        submitted_at=0.0,
    )
    for bad in (0, 6):
        with pytest.raises(IntegrityError):
            store.raw_insert_rating({**base, "mark": bad})
    with pytest.raises(IntegrityError):  # the scale columns must be the study's
        store.raw_insert_rating({**base, "mark": 9, "scale_max": 10})
    assert con.execute("SELECT count(*) FROM ratings").fetchone()[0] == 0
    con.execute("UPDATE schema_version SET version = 99")
    con.commit()
    with pytest.raises(StudyError, match="schema version 99"):
        StudyStore(small_study.url)


@pytest.mark.parametrize("bad", [0, 6, -1, "3", "three", 2.5, True, None, float("nan")])
def test_bad_marks_refused_nothing_stored(small_study, bad):
    store = StudyStore(small_study.url)
    s = RaterSession(store, small_study.study_id, small_study.tokens[0])
    state = s.next_step()
    s.show(state)
    with pytest.raises(SubmissionRefused):
        s.submit(state.step.position, {"visual": bad, "audio": 3})
    assert len(ratings_frame(store, small_study.study_id)) == 0


def test_wrong_tokens_refused(small_study):
    store = StudyStore(small_study.url)
    guessed = "A" * 43
    for tok in (guessed, "", None, "../../etc/passwd", small_study.admin_token, small_study.tokens[0] + "x"):
        with pytest.raises(AccessDenied):
            RaterSession(store, small_study.study_id, tok)
    for tok in (guessed, small_study.tokens[0], None, "../../etc/passwd"):
        with pytest.raises(AccessDenied):
            AdminSession(store, small_study.study_id, tok)
    AdminSession(store, small_study.study_id, small_study.admin_token)
    # another study's token does not open this one
    with pytest.raises(AccessDenied):
        RaterSession(store, "other-study", small_study.tokens[0])


def test_rater_cannot_touch_other_raters_marks(small_study):
    store = StudyStore(small_study.url)
    a = RaterSession(store, small_study.study_id, small_study.tokens[0])
    b = RaterSession(store, small_study.study_id, small_study.tokens[1])
    sa = a.next_step()
    a.show(sa)
    a.submit(sa.step.position, {"visual": 1, "audio": 1})
    # b submitting "the same position" writes b's own row, never a's
    sb = b.next_step()
    b.show(sb)
    b.submit(sb.step.position, {"visual": 5, "audio": 5})
    df = ratings_frame(store, small_study.study_id)
    assert set(df[df.rater_id == a.rater.rater_id]["mark"]) == {1}
    assert set(df[df.rater_id == b.rater.rater_id]["mark"]) == {5}
    assert b.next_step().done == 1  # b sees only b's progress


def test_out_of_order_and_wrong_attributes_refused(small_study):
    store = StudyStore(small_study.url)
    s = RaterSession(store, small_study.study_id, small_study.tokens[0])
    with pytest.raises(SubmissionRefused, match="not the next page"):
        s.submit(3, {"visual": 3, "audio": 3})
    with pytest.raises(SubmissionRefused, match="asks for"):
        s.submit(0, {"visual": 3})
    with pytest.raises(SubmissionRefused, match="not a page"):
        s.submit(999, {"visual": 3, "audio": 3})
    assert len(ratings_frame(store, small_study.study_id)) == 0


def _played(**seconds) -> dict:
    """A player report (as :func:`sonieval.study.player.normalise_state` returns it)."""
    return {"listened_s": seconds, "n_switches": 3, "loop": {"enabled": True}, "min_listen_met": True}


def test_listening_rule_is_time_played_checked_against_time_on_page(tmp_path):
    from sonieval.study.store import listening, page_log

    now = [1000.0]
    st = make_folder_study(tmp_path, min_listen_fraction=1.0, seconds=0.5)
    store = StudyStore(st.url, clock=lambda: now[0])
    s = RaterSession(store, st.study_id, st.tokens[0])
    state = s.next_step()
    page = state.step.position
    with pytest.raises(SubmissionRefused, match="not shown yet"):
        s.submit(page, {"visual": 3, "audio": 3}, _played(A=0.5))
    s.show(state)
    now[0] += 30.0  # time on the page alone is not listening
    for report, left in (
        (None, 0.5),
        (_played(), 0.5),
        (_played(R=5.0, A=0.3), 0.2),
        ({"listened_s": {"A": "x"}}, 0.5),
    ):
        with pytest.raises(SubmissionRefused) as refused:
            s.submit(page, {"visual": 3, "audio": 3}, report)
        assert refused.value.reason == "listen" and refused.value.wait == pytest.approx(left), report
    # more played than the page has been open: not measured by the player
    with pytest.raises(SubmissionRefused) as refused:
        s.submit(page, {"visual": 3, "audio": 3}, _played(R=25.0, A=8.0))
    assert refused.value.reason == "implausible"
    assert s.submit(page, {"visual": 3, "audio": 3}, _played(R=1.25, A=0.499)).stored == 2  # within 50 ms
    heard = store.frame(listening, st.study_id).set_index("label")
    assert heard.loc["A", "listened_s"] == 0.499 and heard.loc["R", "listened_s"] == 1.25
    assert heard.loc["A", "trial_id"] == state.trial.trial_id and pd.isna(heard.loc["R", "trial_id"])
    log = store.frame(page_log, st.study_id).iloc[0]
    assert log["page_seconds"] == pytest.approx(30.0) and log["listened_total_s"] == pytest.approx(1.749)
    assert log["n_switches"] == 3 and log["loop_used"] == 1 and log["session"] == 1


def test_closed_study_refuses_marks(small_study):
    store = StudyStore(small_study.url)
    admin = AdminSession(store, small_study.study_id, small_study.admin_token)
    admin.set_open(False)
    s = RaterSession(store, small_study.study_id, small_study.tokens[0])
    state = s.next_step()
    s.show(state)
    with pytest.raises(SubmissionRefused, match="closed"):
        s.submit(state.step.position, {"visual": 3, "audio": 3})
    admin.set_open(True)
    assert s.submit(state.step.position, {"visual": 3, "audio": 3}).stored == 2


def test_export_csv_parquet_and_screening(small_study, tmp_path):
    store = StudyStore(small_study.url)
    _rate_all(RaterSession(store, small_study.study_id, small_study.tokens[0]), mark=1)
    csv, parquet, n = write_ratings(store, small_study.study_id, tmp_path / "out")
    assert n == 18
    for p in (csv, parquet):
        df = read_table(p, "ratings")
        assert len(df) == 18 and df["mark"].between(1, 5).all()
    scr = screening_per_rater(store, small_study.study_id)
    row = scr.iloc[0]
    assert row.reference_marks == 4 and row.reference_low == 4  # marked the hidden reference 1: flagged
    assert row.anchor_high == 0 and row.attention_failed == 0
    admin = AdminSession(store, small_study.study_id, small_study.admin_token)
    per_rater, per_trial = admin.progress()
    assert per_rater.set_index("rater_id").loc["r001", "pages_done"] == 9
    assert per_trial["n_audio"].fillna(0).sum() == 9
    assert per_trial["min_ratings_reached"].all()  # M = 1, one rater rated everything


def test_recreate_is_idempotent_and_conflicts_are_refused(tmp_path):
    st = make_folder_study(tmp_path)
    again = make_folder_study(tmp_path)  # same folders, same settings: nothing new
    assert again.created.admin_token is None and again.created.rater_tokens == []
    with pytest.raises(StudyError, match="different trials"):
        make_folder_study(tmp_path, attention_checks=3)
    assert st.created.n_trials == 9


def test_unreadable_audio_leaves_only_its_trial_out(tmp_path):
    from study_helpers import write_folders

    from sonieval.study.create import create_from_folders

    originals, systems = write_folders(tmp_path / "in")
    (systems["sysA"] / "clip1.wav").write_bytes(b"RIFF not really a wav")
    created = create_from_folders(
        StudySettings(study_id="s", attention_checks=0, min_listen_fraction=0),
        originals,
        systems,
        study_dir=tmp_path / "study",
        progress=False,
    )
    assert created.n_trials == 7  # 8 minus the broken one
    assert any("left out" in n and "sysA" in n for n in created.notes)


def test_unrated_study_can_be_replaced_rated_one_cannot(tmp_path):
    st = make_folder_study(tmp_path)
    replaced = make_folder_study(tmp_path, attention_checks=3, replace_unrated=True)
    assert replaced.created.admin_token and replaced.created.n_trials == 11
    assert any("replaced" in n for n in replaced.created.notes)
    store = StudyStore(st.url)
    assert store.rater_for_token(st.study_id, st.tokens[0]) is None  # old links dead
    s = RaterSession(store, st.study_id, replaced.tokens[0])
    state = s.next_step()
    s.show(state)
    s.submit(state.step.position, {"visual": 3, "audio": 3})
    with pytest.raises(StudyError, match="different trials"):
        make_folder_study(tmp_path, attention_checks=1, replace_unrated=True)


def test_submit_page_answers_every_outcome_in_one_plain_sentence(small_study):
    from sonieval.study import texts

    store = StudyStore(small_study.url)
    s = RaterSession(store, small_study.study_id, small_study.tokens[0])
    state = s.next_step()
    s.show(state)
    pos = state.step.position
    missing = s.submit_page(pos, {"visual": 3, "audio": None})
    assert (missing.saved, missing.move_on, missing.message) == (False, False, texts.MISSING_MARK)
    for bad in (7, 0, -1, 99, "3", 2.5):
        out = s.submit_page(pos, {"visual": bad, "audio": 3})
        assert not out.saved and not out.move_on and out.message == texts.refusal("invalid", 0, 1, 5)
    ok = s.submit_page(pos, {"visual": 3, "audio": 3})
    assert ok.saved and ok.move_on and ok.message is None
    again = s.submit_page(pos, {"visual": 1, "audio": 1})  # another window, other marks
    assert not again.saved and again.move_on and again.message == texts.ALREADY_RATED
    assert set(ratings_frame(store, small_study.study_id)["mark"]) == {3}  # the first marks stand
    ahead = s.submit_page(pos + 2, {"visual": 3, "audio": 3})
    assert ahead.move_on and "not the one to rate now" in ahead.message
    store.set_status(small_study.study_id, "closed")
    closed = s.submit_page(pos + 1, {"visual": 3, "audio": 3})
    assert not closed.saved and "closed" in closed.message
    for out in (missing, ok, again, ahead, closed):
        assert out.message is None or (
            out.message.count(". ") <= 1 and "/" not in out.message and "_" not in out.message
        )


def test_page_follows_the_page_the_browser_shows(small_study):
    store = StudyStore(small_study.url)
    s = RaterSession(store, small_study.study_id, small_study.tokens[0])
    first = s.next_step()
    s.show(first)
    s.submit(first.step.position, {"visual": 3, "audio": 3})
    nxt = s.next_step()
    assert nxt.step.position == 1
    stale = s.page("0")  # a browser still showing page 0 (rated meanwhile elsewhere)
    assert stale.stale and stale.step.position == 0 and stale.trial.trial_id == first.trial.trial_id
    for shown in (None, "1", "5", "-1", "abc", "1e3", "9" * 20, 3.5, True):
        page = s.page(shown)  # the next page, never a page ahead of it
        assert not page.stale and page.step.position == 1, shown


def test_the_next_page_names_the_page_after_it_and_its_sounds(small_study):
    """StepState.following (the player's prefetch hint): the next page still to rate after this one,
    its sounds the files that page's player will ask for; none after the last page."""
    store = StudyStore(small_study.url)
    s = RaterSession(store, small_study.study_id, small_study.tokens[0])
    seen = 0
    while not (state := s.next_step()).finished:
        after = state.following
        s.show(state)
        s.submit(state.step.position, {a: (state.trial.expected_mark or 3) for a in state.step.attributes})
        nxt = s.next_step()
        if nxt.finished:
            assert after is None and s.following_sounds(state) == []
            break
        assert after is not None and after.position == nxt.step.position
        assert s.following_sounds(state) == [sound.path for sound in s.sounds(nxt)]
        seen += 1
    assert seen == state.total - 1  # every page but the last named the one after it
