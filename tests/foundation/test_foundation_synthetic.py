"""The built-in synthetic clip set: fixed bytes for a seed on any CPU, labelled SYNTHETIC, realistic levels
over a noise floor, a ground truth f0 that a pitch tracker confirms, balanced classes in ESC-50's folds."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from sonieval.data.esc50 import assign_splits, open_esc50, verify_esc50
from sonieval.data.synthetic import (
    F0_COLUMNS,
    PITCHED_CATEGORIES,
    SYNTHETIC_CATEGORIES,
    SYNTHETIC_MARKER,
    make_synthetic_esc50,
    read_synthetic_f0,
    synthesize_clip,
)

# sha256 of the 16-bit samples of clip 0 of these classes (seed 0, 5 s). A change here is a new set (every
# demo number changes with it); a platform that makes other bytes shows here.
PCM_SHA256 = {
    "synthetic_glide": "aea4fe77ebc0c5af8d6adb820d1a9acbb3279976913b3092584434e9e822633a",
    "synthetic_struck": "5e3b1f94ee0fbf47cdb76fa1eb864c3d2f05cace6417701ef23de9a7b1808095",
    "synthetic_noise_events": "8b07a86565d10b1a87225e041af538ff05c337ecd60ca41d8bb711d958096c49",
    "synthetic_clicks": "e3fd39176384b57a3515d994a77b7bd0edb606cf67c059f5ba73160224f38bae",
}


def pcm_sha256(category: str, index: int = 0, seed: int = 0) -> str:
    clip = synthesize_clip(category, SYNTHETIC_CATEGORIES.index(category), index, seed=seed)
    return hashlib.sha256(clip.pcm.astype("<i2").tobytes()).hexdigest()


def test_a_seed_gives_fixed_bytes_and_another_seed_or_clip_others():
    for category, expected in PCM_SHA256.items():
        assert pcm_sha256(category) == expected, category
    assert pcm_sha256("synthetic_glide", seed=1) != PCM_SHA256["synthetic_glide"]
    assert pcm_sha256("synthetic_glide", index=1) != PCM_SHA256["synthetic_glide"]


_HASH_CLIPS = (
    "import hashlib, numpy as np\n"
    "from sonieval.data.synthetic import SYNTHETIC_CATEGORIES as C, synthesize_clip\n"
    "h = hashlib.sha256()\n"
    "for c in ('synthetic_vibrato', 'synthetic_birdsong', 'synthetic_texture'):\n"
    "    clip = synthesize_clip(c, C.index(c), 0, seconds=2.0)\n"
    "    h.update(clip.pcm.tobytes())\n"
    "    h.update(b'' if clip.f0_hz is None else clip.f0_hz.tobytes())\n"
    "x = np.linspace(-40.0, 40.0, 100001)\n"
    "print(h.hexdigest(), hashlib.sha256(np.exp(x).tobytes()).hexdigest())\n"
)


def test_the_bytes_and_the_f0_do_not_depend_on_numpys_simd_kernels():
    """numpy runs exp/sin/log through kernels picked per CPU (AVX-512, AVX2, baseline) whose last bits
    differ; the clips and their f0 (float64, not rounded) must not. Every dispatched kernel this CPU
    offers is switched off in a second process and the results compared."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    found = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
    runs = []
    for disabled in ("", " ".join(found)):
        env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": disabled}
        out = subprocess.run([sys.executable, "-c", _HASH_CLIPS], env=env, capture_output=True, text=True, check=True)
        runs.append(out.stdout.split())
    assert runs[0][0] == runs[1][0]
    if any(f.startswith(("AVX512", "X86_V4")) for f in found):
        assert runs[0][1] != runs[1][1]  # the switch took effect: numpy's own exp changed its last bits


def as_float(pcm: np.ndarray) -> np.ndarray:
    return pcm.astype(np.float64) / 32767.0


def test_levels_are_realistic_nothing_clips_and_no_mel_band_is_at_the_codecs_floor():
    import librosa

    for target, category in enumerate(SYNTHETIC_CATEGORIES):
        for index in range(3):
            pcm = synthesize_clip(category, target, index).pcm
            x = as_float(pcm)
            rms_db = 20 * np.log10(np.sqrt(np.mean(x**2)))
            peak_db = 20 * np.log10(np.max(np.abs(x)))
            assert -30.05 <= rms_db <= -14.95 and peak_db <= -1.0, (category, index, rms_db, peak_db)
            # the mel codec's 64 bands (n_fft 2048, hop 512, HTK, to 22.05 kHz): every band of every frame
            # sounds (the noise floor), 20 dB above the codec's floor of 1e-8; the former set's tones sat
            # on a bare floor and the codec could not reconstruct them
            mel = librosa.feature.melspectrogram(
                y=x, sr=44100, n_fft=2048, hop_length=512, n_mels=64, htk=True, norm=None, fmax=22050, center=False
            )
            assert mel.min() > 1e-6, (category, index, mel.min())


@pytest.mark.slow
def test_the_ground_truth_f0_is_what_a_pitch_tracker_hears():
    """pYIN (C2-C7 at 16 kHz, as the project's pitch measures) on one clip of each purely pitched class:
    where both say voiced, at least 90 % of the frames lie within 50 cents of the ground truth."""
    import librosa
    import soxr

    for category in ("synthetic_glide", "synthetic_vibrato", "synthetic_melody", "synthetic_engine"):
        clip = synthesize_clip(category, SYNTHETIC_CATEGORIES.index(category), 1)
        y = soxr.resample(as_float(clip.pcm).astype(np.float32), 44100, 16000)
        f0, voiced, _ = librosa.pyin(
            y, fmin=65.4, fmax=2093.0, sr=16000, frame_length=1024, hop_length=160, resolution=0.2
        )
        times = np.arange(f0.size) * 160 / 16000
        truth_times = np.arange(clip.f0_hz.size) * 512 / 44100
        truth = np.interp(times, truth_times, clip.f0_hz)
        truth_voiced = np.interp(times, truth_times, clip.voiced.astype(float)) > 0.5
        both = truth_voiced & voiced
        assert both.sum() >= 0.8 * truth_voiced.sum(), category  # pYIN hears the voice where it sounds
        cents = 1200 * np.abs(np.log2(f0[both] / truth[both]))
        assert np.mean(cents < 50) >= 0.9, (category, np.mean(cents < 50))


def test_the_set_is_balanced_in_esc50s_folds_labelled_synthetic_with_an_f0_table(tmp_path):
    root = make_synthetic_esc50(tmp_path / "set", seconds=0.2)  # every class and clip, 0.2 s each
    ds = open_esc50(root)
    assert ds.synthetic and ds.label.startswith("SYNTHETIC clip set (not ESC-50)")
    assert "NOT ESC-50" in (root / SYNTHETIC_MARKER).read_text(encoding="utf-8")
    clips = ds.clips
    assert len(SYNTHETIC_CATEGORIES) == 10 and all(c.startswith("synthetic_") for c in SYNTHETIC_CATEGORIES)
    assert len(clips) == 400 and set(clips["category"]) == set(SYNTHETIC_CATEGORIES)
    assert (clips.groupby(["category", "fold"]).size() == 8).all() and sorted(clips["fold"].unique()) == [1, 2, 3, 4, 5]
    assert (clips["target"] == clips["category"].map(SYNTHETIC_CATEGORIES.index)).all()
    splits = assign_splits(clips).groupby("category")["split"].value_counts().unstack()
    assert (splits["train"] == 32).all() and (splits["validation"] == 4).all() and (splits["test"] == 4).all()
    f0 = read_synthetic_f0(root)
    assert tuple(f0.columns) == F0_COLUMNS
    pitched = set(clips.loc[clips["category"].isin(PITCHED_CATEGORIES), "filename"])
    assert set(f0["filename"]) == pitched and len(pitched) == 240
    assert (f0.groupby("filename").size() == 18).all()  # ceil(0.2 s * 44100 / 512) frames
    assert (f0["f0_hz"] > 0).all() and 0.3 < f0["voiced"].mean() < 1.0


def test_a_set_is_reused_and_a_set_of_other_parameters_replaced(tmp_path):
    root = make_synthetic_esc50(tmp_path / "set", n_classes=2, clips_per_class=3)
    wav = root / "audio" / "1-900000-A-0.wav"
    stamp = wav.stat().st_mtime_ns
    make_synthetic_esc50(root, n_classes=2, clips_per_class=3)
    assert wav.stat().st_mtime_ns == stamp  # reused, not written again
    make_synthetic_esc50(root, n_classes=1, clips_per_class=2)
    assert sorted(p.name for p in (root / "audio").iterdir()) == ["1-900000-A-0.wav", "2-900001-A-0.wav"]
    assert verify_esc50(root, progress=False).ok
    assert "n_classes=1 clips_per_class=2" in (root / SYNTHETIC_MARKER).read_text(encoding="utf-8")
    assert pd.read_csv(root / "meta" / "esc50.csv")["category"].tolist() == ["synthetic_glide"] * 2
    assert set(read_synthetic_f0(root)["filename"]) == {"1-900000-A-0.wav", "2-900001-A-0.wav"}
