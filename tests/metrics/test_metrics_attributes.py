"""What is kept: the attribute measures are exact on signals whose f0, onsets and envelopes are known, and a
measure that is undefined for a clip says why and is left out (recorded with its reason, never 0 or NaN alone)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sonieval.audio import ENCODER_RATE, write_wav
from sonieval.measures import ATTRIBUTES, ItemScoreError
from sonieval.metrics import attributes as A
from sonieval.metrics.controls import item_summary
from sonieval.metrics.items import score_item
from sonieval.metrics.scoring import AudioSet, audio_item_rows

SR = ENCODER_RATE
T = np.arange(3 * SR) / SR
PITCH = ["raw_pitch_accuracy", "raw_chroma_accuracy", "voicing_recall", "voicing_false_alarm"]
WHAT_IS_KEPT = [*PITCH, "loudness_correlation", "mfcc_correlation", "centroid_distance", "onset_f1"]
RNG = np.random.default_rng(0)


def harmonic(f0, on=(0.5, 2.5), level=0.5) -> np.ndarray:
    """A two-harmonic tone of f0 (Hz, or an array per sample) between ``on`` seconds, silence around it."""
    f0 = np.broadcast_to(np.asarray(f0, float), T.shape)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = np.where((T >= on[0]) & (T < on[1]), level * (np.sin(phase) + 0.4 * np.sin(2 * phase)), 0.0)
    return x.astype(np.float32)


def cents(f, c):
    return f * 2 ** (c / 1200)


def clicks(times) -> np.ndarray:
    x = np.zeros(T.size, np.float32)
    burst = np.hanning(80) * RNG.standard_normal(80)
    for t in times:
        i = int(round(t * SR))
        x[i : i + 80] += burst
    return x


def scores(evaluated, original, names=WHAT_IS_KEPT):
    return score_item(names, evaluated_audio=evaluated, original_audio=original)


def test_pitch_accuracy_is_exact_on_tones_of_known_f0():
    original = harmonic(220.0)
    same = scores(harmonic(220.0), original, PITCH)
    assert same == {
        "raw_pitch_accuracy": 1.0,
        "raw_chroma_accuracy": 1.0,
        "voicing_recall": 1.0,
        "voicing_false_alarm": 0.0,
    }
    assert scores(harmonic(cents(220.0, 30)), original, PITCH[:2]) == {
        "raw_pitch_accuracy": 1.0,
        "raw_chroma_accuracy": 1.0,
    }
    assert scores(harmonic(cents(220.0, 80)), original, PITCH[:2]) == {
        "raw_pitch_accuracy": 0.0,
        "raw_chroma_accuracy": 0.0,
    }
    octave = scores(harmonic(440.0), original, PITCH[:2])  # an octave error: wrong pitch, right chroma
    assert octave == {"raw_pitch_accuracy": 0.0, "raw_chroma_accuracy": 1.0}
    # a step 220 -> 330 Hz half way through the tone: a sonification that stays at 220 Hz is right on half
    # the voiced frames (the frames of both clips are the same 10 ms grid)
    step = harmonic(np.where(T < 1.5, 220.0, 330.0))
    half = scores(harmonic(220.0), step, ["raw_pitch_accuracy"])["raw_pitch_accuracy"]
    assert half == pytest.approx(0.5, abs=0.03)
    # voicing: a sonification voiced over the whole clip (the tone without its silences) false-alarms on
    # the original's silent second (1 s of its 3 s) and recalls every voiced frame
    voicing = scores(harmonic(220.0, on=(0.0, 3.0)), original, ["voicing_recall", "voicing_false_alarm"])
    assert voicing["voicing_recall"] == 1.0 and voicing["voicing_false_alarm"] > 0.9


def test_onset_f_measure_counts_onsets_within_50_ms():
    times = [0.3, 0.8, 1.4, 2.0, 2.6]
    original = clicks(times)
    np.testing.assert_allclose(A.onset_times(original), times, atol=0.011)  # one 10 ms frame
    for shift, expected in ((0.0, 1.0), (0.03, 1.0), (-0.04, 1.0), (0.08, 0.0)):
        got = scores(clicks([t + shift for t in times]), original, ["onset_f1"])["onset_f1"]
        assert got == expected, (shift, got)
    # two of five found, nothing extra: precision 1, recall 0.4, F = 2 * 0.4 / 1.4
    assert scores(clicks(times[:2]), original, ["onset_f1"])["onset_f1"] == pytest.approx(0.8 / 1.4)


def test_loudness_spectral_envelope_and_brightness_on_known_changes():
    from scipy.signal import butter, sosfiltfilt

    ramp = 10 ** np.linspace(-2.0, 0.0, T.size)  # a level rising 40 dB at a steady rate (linear in dB)
    noise = RNG.standard_normal(T.size)
    original = (noise * ramp).astype(np.float32)
    same = scores(original, original, ["loudness_correlation", "mfcc_correlation", "centroid_distance"])
    assert same == {"loudness_correlation": 1.0, "mfcc_correlation": 1.0, "centroid_distance": 0.0}
    quiet = scores(0.01 * original, original, ["loudness_correlation", "centroid_distance"])
    # level-invariant (to rounding: float32 samples scaled by 0.01)
    assert quiet["loudness_correlation"] == pytest.approx(1.0, abs=1e-9)
    assert quiet["centroid_distance"] == pytest.approx(0.0, abs=1e-6)
    reversed_level = (noise * ramp[::-1]).astype(np.float32)
    assert scores(reversed_level, original, ["loudness_correlation"])["loudness_correlation"] < -0.9
    # a low-passed copy is darker: its centroid falls by more than an octave
    sos = butter(6, 800, fs=SR, output="sos")
    dark = sosfiltfilt(sos, original).astype(np.float32)
    assert scores(dark, original, ["centroid_distance"])["centroid_distance"] > 1.0
    # the spectral envelope moves from dark to bright half way: a copy that follows it correlates, one
    # that stays dark does not
    moving = np.where(T < 1.5, sosfiltfilt(sos, noise), noise).astype(np.float32)
    follows = np.where(T < 1.5, sosfiltfilt(sos, noise[::-1]), noise[::-1]).astype(np.float32)
    stays = sosfiltfilt(sos, noise[::-1]).astype(np.float32)
    mfcc = [scores(x, moving, ["mfcc_correlation"])["mfcc_correlation"] for x in (follows, stays)]
    assert mfcc[0] > 0.8 and abs(mfcc[1]) < 0.3, mfcc


def test_undefined_measures_say_why():
    silent = np.zeros(T.size, np.float32)
    for name, got in scores(harmonic(220.0), silent, [m for m in WHAT_IS_KEPT if m != "voicing_false_alarm"]).items():
        assert isinstance(got, ItemScoreError), (name, got)
        assert any(w in str(got) for w in ("silent", "voiced frames", "no onsets")), str(got)
    noise = (0.3 * RNG.standard_normal(T.size)).astype(np.float32)
    unpitched = scores(harmonic(220.0), noise, PITCH[:3])
    assert all(isinstance(v, ItemScoreError) and "voiced frames" in str(v) for v in unpitched.values()), unpitched
    constant = scores(silent, noise, ["loudness_correlation"])["loudness_correlation"]
    assert isinstance(constant, ItemScoreError) and "sonification" in str(constant)


def test_the_score_stage_records_the_reason_and_counts_the_clip_out(tmp_path):
    """An undefined measure is a row with no value and its reason; the summary says n defined of n."""
    pitched, unpitched = harmonic(220.0), (0.3 * RNG.standard_normal(T.size)).astype(np.float32)
    paths = {}
    for name, x in (("a", pitched), ("b", unpitched), ("a_son", harmonic(221.0)), ("b_son", unpitched)):
        paths[name] = str(write_wav(tmp_path / f"{name}.wav", x, SR, "FLOAT"))
    system = AudioSet("sys", [paths["a_son"], paths["b_son"]], ["a", "b"], originals=[paths["a"], paths["b"]])
    rows = pd.DataFrame(audio_item_rows(system, ["raw_pitch_accuracy"]))
    by_clip = rows.set_index("clip_id")
    assert by_clip.loc["a", "value"] == 1.0 and pd.isna(by_clip.loc["a", "error"])
    assert np.isnan(by_clip.loc["b", "value"]) and "voiced frames" in by_clip.loc["b", "error"]
    assert set(rows["direction"]) == {"higher"} and set(rows["embedding"]) == {"waveform-16k"}
    (summary,) = item_summary(rows, n_boot=0).to_dict("records")
    assert (summary["n"], summary["n_items"], summary["value"]) == (1, 2, 1.0)
    assert summary["undefined"].startswith("1 of 2 left out") and "voiced frames" in summary["undefined"]


def test_every_attribute_is_decided_by_a_what_is_kept_measure():
    assert set(ATTRIBUTES) == {"pitch", "loudness", "spectral_envelope", "brightness", "onsets"}
    assert {a.measure for a in ATTRIBUTES.values()} <= set(WHAT_IS_KEPT)
