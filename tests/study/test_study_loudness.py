"""Loudness alignment of study stimuli and the measured familiarisation examples."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from study_helpers import RATE, measured_files, tone

from sonieval.audio import read_audio, write_wav
from sonieval.study.create import StudySettings, create_from_folders
from sonieval.study.export import LEVEL_COLUMNS, ratings_frame
from sonieval.study.loudness import (
    CEILING_DBTP,
    TARGET_LUFS,
    LevelSpec,
    align_loudness,
    integrated_loudness,
    to_db,
    true_peak,
)
from sonieval.study.session import RaterSession
from sonieval.study.stimuli import lowpass_anchor
from sonieval.study.store import StudyStore

SECONDS = 1.0


def _noise(scale: float, seed: int, seconds: float = SECONDS) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(int(seconds * RATE))).astype(np.float32)


def _square(freq: float, amplitude: float, seconds: float = SECONDS) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sign(np.sin(2 * np.pi * freq * t))).astype(np.float32)


def _clicks(amplitude: float = 0.9, seconds: float = SECONDS) -> np.ndarray:
    x = np.zeros(int(seconds * RATE), dtype=np.float32)
    x[:: RATE // 4] = amplitude
    return x


def _write(folder: Path, clips: dict[str, np.ndarray]) -> Path:
    for cid, x in clips.items():
        write_wav(folder / f"{cid}.wav", x, RATE, subtype="FLOAT")  # float: a "too loud" file keeps its peaks > 1
    return folder


def _create(tmp_path: Path, originals: dict, systems: dict[str, dict], **settings):
    orig = _write(tmp_path / "in" / "originals", originals)
    folders = {name: _write(tmp_path / "in" / name, clips) for name, clips in systems.items()}
    defaults = dict(study_id="loud", attention_checks=2, min_listen_fraction=0.0, n_raters=1)
    defaults.update(settings)
    return create_from_folders(StudySettings(**defaults), orig, folders, study_dir=tmp_path / "study", progress=False)


# ----------------------------------------------------------------------------- the measures


def test_bs1770_reference_tone_and_true_peak():
    """A full-scale 997 Hz sine reads -3.01 LUFS (BS.1770); an fs/4 sine at 45 deg hides 3 dB between samples."""
    rate = 48_000
    t = np.arange(rate * 2) / rate
    assert integrated_loudness(np.sin(2 * np.pi * 997 * t), rate) == pytest.approx(-3.01, abs=0.05)
    x = np.sin(2 * np.pi * (rate / 4) * t + np.pi / 4)
    assert np.max(np.abs(x)) == pytest.approx(math.sqrt(0.5), abs=1e-6)  # sample peak -3 dBFS ...
    assert to_db(true_peak(x)) == pytest.approx(0.0, abs=0.2)  # ... true peak 0 dBTP (FIR ripple: +0.12 here)
    assert integrated_loudness(np.zeros(rate), rate) == -math.inf
    assert math.isfinite(integrated_loudness(tone(300, 0.3), RATE))  # shorter than one 400 ms block


def test_single_stimulus_alignment_and_its_limits():
    spec = LevelSpec()
    loud, lv = align_loudness(_noise(0.5, 0), RATE, spec)
    assert lv.limited == "" and lv.lufs == pytest.approx(TARGET_LUFS, abs=0.01) and lv.gain_db < -10
    clicks, lv = align_loudness(_clicks(), RATE, spec)
    assert lv.limited == "true_peak" and lv.lufs < TARGET_LUFS - 1 and lv.true_peak_dbtp <= CEILING_DBTP
    silent, lv = align_loudness(np.zeros(RATE, np.float32), RATE, spec)
    assert lv.limited == "silent" and lv.gain_db == 0 and lv.lufs is None and not np.any(silent)
    faint, lv = align_loudness(_noise(1e-6, 1), RATE, spec)  # below the -70 LUFS gate
    assert lv.limited == "gain_cap" and lv.gain_db == spec.max_gain_db and np.all(np.isfinite(faint))


# ----------------------------------------------------------------------------- a whole study


@pytest.fixture(scope="module")
def aligned_study(tmp_path_factory):
    """Five clips (a tone, a square wave, quiet noise, a soft tone, clicks) and two systems far off in level."""
    originals = {
        "c0": tone(300, SECONDS),
        "c1": _square(200, 0.99),
        "c2": _noise(0.02, 2),
        "c3": 0.4 * tone(1000, SECONDS),
        "c4": _clicks(),
    }
    loud = {c: _noise(0.5, 10 + i) for i, c in enumerate(originals)}  # ~ -9 LUFS, peaks beyond 1
    loud["c0"] = _clicks(0.99)  # one peaky sonification: it cannot reach the target under the ceiling
    systems = {
        "loud": loud,
        "quiet": {c: 0.03 * x for c, x in originals.items()},
    }  # -30 dB (two need more than the gain cap)
    return _create(tmp_path_factory.mktemp("aligned"), originals, systems)


def _levels(created):
    from sonieval.study.store import levels

    with StudyStore(created.storage) as store:
        return store.frame(levels, created.study_id)


def test_study_stimuli_share_one_loudness_without_clipping(aligned_study):
    created = aligned_study
    files = measured_files(created)
    assert set(files["role"]) == {"original", "sonification", "reference", "anchor", "attention"}
    # per role: the median at the target, and no file anywhere above the true-peak ceiling
    medians = files.groupby("role")["lufs"].median()
    assert (medians - TARGET_LUFS).abs().max() <= 0.5, medians
    assert files["true_peak_dbtp"].max() <= CEILING_DBTP + 1e-6
    assert files["sample_peak"].max() <= 10 ** (CEILING_DBTP / 20)
    # control: the inputs differed widely, and the square wave's low-pass anchor overshoots full scale
    df = _levels(created)
    assert df["lufs_measured"].max() - df["lufs_measured"].min() > 30
    assert np.max(np.abs(lowpass_anchor(_square(200, 0.99), RATE, 3500.0))) > 1.0
    assert df["gain_db"].map(math.isfinite).all() and not df[["gain_db", "lufs", "true_peak_dbtp"]].isna().any().any()
    # within a clip the original, its hidden reference and every stimulus not stopped short by
    # its own peak or the gain cap share one level: the impulsive original c4 cannot reach the
    # target, so its whole clip is lowered with it (no level cue to the hidden reference) ...
    files["limited"] = files["file"].map(dict(zip(df["file"], df["limited"])))
    original_like = files["role"].isin(["original", "reference", "attention"])
    same = files[original_like | ~files["limited"].isin(["true_peak", "gain_cap"])]
    spread = same.groupby("clip_id")["lufs"].agg(lambda v: v.max() - v.min())
    assert spread.max() <= 0.1, spread
    c4 = files[files.clip_id == "c4"]
    assert c4["lufs"].max() < TARGET_LUFS - 1
    assert set(c4.loc[original_like, "limited"]) == {"true_peak"} and "clip" in set(c4["limited"])
    # ... while one peaky sonification is lowered alone and does not pull its clip down
    c0 = files[files.clip_id == "c0"].set_index("system_id")
    assert c0.loc["loud", "limited"] == "true_peak" and c0.loc["loud", "lufs"] < TARGET_LUFS - 1
    assert abs(files.loc[(files.clip_id == "c0") & original_like, "lufs"] - TARGET_LUFS).max() < 0.05
    assert "c2" in set(files.loc[files["limited"] == "gain_cap", "clip_id"])  # the quiet system's faint noise
    text = "\n".join(created.warnings)
    assert (
        "original c4" in text
        and "loud/c0" in text
        and "true peak" in text
        and "quiet/c2" in text
        and "near-silent" in text
    )


def test_levels_appear_in_the_ratings_export(aligned_study):
    created = aligned_study
    with StudyStore(created.storage) as store:
        session = RaterSession(store, created.study_id, created.rater_tokens[0][1])
        while not (state := session.next_step()).finished:
            session.show(state)
            session.submit(state.step.position, {a: state.trial.expected_mark or 3 for a in state.step.attributes})
        df = ratings_frame(store, created.study_id)
    assert set(LEVEL_COLUMNS) <= set(df.columns)
    assert (df["loudness_target_lufs"] == TARGET_LUFS).all()
    assert df["stimulus_lufs"].notna().all() and df["original_lufs"].notna().all()
    reached = df[df["stimulus_limited"] == ""]
    assert len(reached) > len(df) / 2 and (reached["stimulus_lufs"] - TARGET_LUFS).abs().max() < 0.05
    loud = df[(df.system_id == "loud") & (df.clip_id != "c0")]
    # the loud noise was turned down by its measured excess over its clip's level
    assert (
        loud["stimulus_gain_db"] - (loud["stimulus_target_lufs"] - loud["stimulus_lufs_measured"])
    ).abs().max() < 1e-6
    assert (loud["stimulus_gain_db"] < -10).all()
    # the hidden reference carries its original's level (the same signal; each file its own dither)
    ref = df[df.role == "reference"]
    assert (ref["stimulus_lufs"] - ref["original_lufs"]).abs().max() < 1e-3 and (
        ref["stimulus_gain_db"] == ref["original_gain_db"]
    ).all()


def test_silent_and_near_silent_stimuli_are_capped_and_reported(tmp_path):
    originals = {"c0": tone(300, SECONDS), "c1": tone(500, SECONDS)}
    broken = {"c0": np.zeros(int(SECONDS * RATE), np.float32), "c1": _noise(1e-6, 3)}
    created = _create(
        tmp_path,
        originals,
        {"broken": broken, "ok": {c: x + _noise(0.01, 4) for c, x in originals.items()}},
        attention_checks=0,
    )
    levels = _levels(created)
    by_limit = levels.groupby("limited")["gain_db"].agg(list).to_dict()
    assert by_limit["silent"] == [0.0] and by_limit["gain_cap"] == [30.0]
    assert levels["gain_db"].map(math.isfinite).all()
    text = "\n".join(created.warnings)
    assert "near-silent" in text and "broken/c1" in text and "silent" in text and "broken/c0" in text
    files = measured_files(created)
    healthy = files[~files["system_id"].eq("broken")]
    assert (healthy["lufs"] - TARGET_LUFS).abs().max() < 0.05  # the broken system does not pull its clips down
    for name in files["file"]:
        x, _, _ = read_audio(created.study_dir / "audio" / name)
        assert np.all(np.isfinite(x))


def test_other_loudness_settings_give_other_files(tmp_path):
    """A study's files never change under it: another target writes other files (and is another study)."""
    from sonieval.study.store import StudyError

    originals = {"c0": tone(300, SECONDS)}
    a = _create(tmp_path, originals, {"s": {"c0": _noise(0.1, 1)}}, attention_checks=0)
    with pytest.raises(StudyError, match="different trials"):
        _create(tmp_path, originals, {"s": {"c0": _noise(0.1, 1)}}, attention_checks=0, loudness_lufs=-30.0)
    b = _create(
        tmp_path, originals, {"s": {"c0": _noise(0.1, 1)}}, attention_checks=0, loudness_lufs=-30.0, study_id="other"
    )
    assert b.admin_token and a.admin_token
    files = measured_files(b)
    assert (files["lufs"] - (-30.0)).abs().max() < 0.05


# ----------------------------------------------------------------------------- familiarisation


def _trials(created):
    with StudyStore(created.storage) as store:
        return list(store.trials(created.study_id).values()), store.study(created.study_id).familiarisation


def test_familiarisation_examples_come_from_a_clip_no_one_rates(tmp_path):
    """The examples are the anchor and the hidden reference of an unrated clip, in files of their own:
    never a rated system's output, never a file (or URL) of a rating page. Of two unrated clips the
    one whose anchor is far from its original is taken (a 3.5 kHz low-pass of a low tone sounds
    like the tone: it would teach the wrong end of the scale)."""
    from sonieval.study.familiarisation import distance

    originals = {"c0": tone(300, SECONDS), "c1": tone(400, SECONDS)}
    systems = {
        "near": {c: x + _noise(0.005, i) for i, (c, x) in enumerate(originals.items())},
        "far": {c: _noise(0.2, 20 + i) for i, c in enumerate(originals)},
    }
    spare = {"lowtone": tone(200, SECONDS), "bright": _noise(0.1, 40)}
    created = _create(tmp_path, {**originals, **spare}, systems, attention_checks=1)
    trials, examples = _trials(created)
    low, high = examples["low"], examples["high"]
    assert low["clip_id"] == high["clip_id"] == "bright" and {t.clip_id for t in trials} == {"c0", "c1"}
    assert (low["role"], high["role"], low["measure"]) == ("anchor", "reference", "logmel_l1")
    rating_files = {f for t in trials for f in (t.original_file, t.stimulus_file, t.waveform_file)}
    example_files = {e[k] for e in (low, high) for k in ("original_file", "stimulus_file", "waveform_file")}
    assert not example_files & rating_files and len({low["stimulus_file"], high["stimulus_file"]}) == 2
    # the two ends lie far apart on the measure (the hidden reference: the original up to the dither)
    assert high["distance"] < 0.05 and low["distance"] > 1.0
    audio = created.study_dir / "audio"
    x = {k: read_audio(audio / low[k])[0] for k in ("original_file", "stimulus_file")}
    assert distance(x["stimulus_file"], x["original_file"], RATE) == pytest.approx(low["distance"], rel=1e-6)
    # control: the unrated low tone's anchor is close to its original (why it was not taken)
    tone_low = lowpass_anchor(spare["lowtone"], RATE, 3500.0)
    assert distance(tone_low, spare["lowtone"], RATE) < 0.2 * low["distance"]


def test_no_familiarisation_examples_without_an_unrated_clip(tmp_path):
    originals = {"c0": tone(300, SECONDS)}
    created = _create(tmp_path, originals, {"s": {"c0": _noise(0.1, 1)}}, attention_checks=0)
    assert _trials(created)[1] == {}
    assert any("no familiarisation examples" in w for w in created.warnings)
