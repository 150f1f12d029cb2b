"""sonieval.audio: resampling quality, mix-down, length policy, atomic and NaN-safe writing."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sonieval import audio
from sonieval.audio import CODEC_RATE, ENCODER_RATE, fit_length, load_clip, read_audio, resample, write_wav
from sonieval.errors import AudioError


def _peak_frequency(x: np.ndarray, rate: int) -> float:
    """Peak of a Hann-windowed spectrum, refined by parabolic interpolation of the log magnitude."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(spec))
    a, b, c = np.log(spec[k - 1 : k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * rate / len(x)


def test_resample_keeps_frequency_and_amplitude():
    t = np.arange(CODEC_RATE * 2) / CODEC_RATE
    x = (0.7 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    y = resample(x, CODEC_RATE, ENCODER_RATE)
    assert y.dtype == np.float32 and len(y) == 2 * ENCODER_RATE
    assert _peak_frequency(y, ENCODER_RATE) == pytest.approx(1000.0, abs=0.5)
    core = y[ENCODER_RATE // 4 : -ENCODER_RATE // 4]  # away from the filter's edge transients
    assert np.sqrt(np.mean(core**2)) == pytest.approx(0.7 / np.sqrt(2), rel=2e-3)
    assert np.max(np.abs(core)) == pytest.approx(0.7, rel=5e-3)


def test_resample_removes_content_above_new_nyquist():
    t = np.arange(CODEC_RATE) / CODEC_RATE
    x = np.sin(2 * np.pi * 12_000.0 * t).astype(np.float32)  # above 8 kHz: must not alias into the band
    y = resample(x, CODEC_RATE, ENCODER_RATE)
    assert np.sqrt(np.mean(y[2000:-2000] ** 2)) < 1e-3


def test_mono_mix_down_averages_channels(tmp_path):
    t = np.arange(CODEC_RATE) / CODEC_RATE
    s = np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.stack([0.5 * s, 0.25 * s], axis=1), CODEC_RATE, subtype="FLOAT")
    mono, rate, info = read_audio(path)
    assert info.channels == 2 and rate == CODEC_RATE and mono.ndim == 1
    np.testing.assert_allclose(mono, 0.375 * s, atol=1e-6)


def test_load_clip_records_what_was_done(tmp_path):
    path = tmp_path / "short48k.wav"
    sf.write(str(path), np.zeros((48_000 * 2, 2), dtype=np.float32) + 0.1, 48_000, subtype="PCM_16")
    clip = load_clip(path, CODEC_RATE, 5.0)
    assert clip.samples.shape == (5 * CODEC_RATE,) and clip.sample_rate == CODEC_RATE
    assert clip.notes == {
        "source_rate": 48_000,
        "source_channels": 2,
        "source_subtype": "PCM_16",
        "source_seconds": 2.0,
        "length_action": "padded",
        "resampled": True,
        "mixed_down": True,
    }
    assert np.all(clip.samples[-CODEC_RATE:] == 0)  # right-padded with zeros


def test_fit_length_policies():
    x = np.arange(10, dtype=np.float32)
    assert fit_length(x, 10)[1] == "none"
    y, action = fit_length(x, 6)
    assert action == "trimmed" and list(y) == [0, 1, 2, 3, 4, 5]
    y, action = fit_length(x, 12)
    assert action == "padded" and list(y[-2:]) == [0, 0]
    with pytest.raises(AudioError, match="has 10 samples, expected exactly 12"):
        fit_length(x, 12, "strict", path="clip.wav")


def test_write_wav_refuses_nan(tmp_path):
    target = tmp_path / "out.wav"
    x = np.zeros(100, dtype=np.float32)
    x[5] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        write_wav(target, x, CODEC_RATE)
    assert list(tmp_path.iterdir()) == []


def test_write_wav_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.wav"
    write_wav(target, np.full(1000, 0.25, dtype=np.float32), CODEC_RATE)
    before = target.read_bytes()

    real_write = sf.SoundFile.write

    def dying_write(self, data):  # writes half a file, then the process "dies"
        real_write(self, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(sf.SoundFile, "write", dying_write)
    with pytest.raises(OSError, match="disk full"):
        write_wav(target, np.full(5000, 0.5, dtype=np.float32), CODEC_RATE)
    assert target.read_bytes() == before  # the old file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no partial temp file left
    monkeypatch.setattr(sf.SoundFile, "write", real_write)
    write_wav(target, np.full(5000, 0.5, dtype=np.float32), CODEC_RATE)
    assert sf.info(str(target)).frames == 5000


def test_write_then_read_round_trip(tmp_path):
    x = (0.5 * np.sin(np.linspace(0, 100, CODEC_RATE))).astype(np.float32)
    path = write_wav(tmp_path / "a.wav", x, CODEC_RATE)
    y, rate, info = read_audio(path)
    assert rate == CODEC_RATE and info.subtype == "PCM_16"
    np.testing.assert_allclose(y, x, atol=1 / 32768 + 1e-6)


def test_too_short_fragment_is_refused(tmp_path):
    path = tmp_path / "blip.wav"
    sf.write(str(path), np.zeros(100, dtype=np.float32), CODEC_RATE)
    with pytest.raises(AudioError, match="too short to be a clip"):
        load_clip(path, CODEC_RATE)
    assert audio.MIN_SECONDS > 100 / CODEC_RATE


def test_written_bytes_depend_on_the_samples_alone(tmp_path):
    """No PEAK chunk (peak value + time of writing): two writes a second apart are byte-identical,
    and a float WAV's header does not reveal its peak."""
    import time

    x = (0.25 * np.sin(np.linspace(0, 300, 4410))).astype(np.float32)
    for subtype in ("FLOAT", "PCM_16"):
        first = write_wav(tmp_path / f"a_{subtype}.wav", x, CODEC_RATE, subtype=subtype).read_bytes()
        time.sleep(1.1)  # libsndfile's PEAK chunk would carry the second of writing
        second = write_wav(tmp_path / f"b_{subtype}.wav", x, CODEC_RATE, subtype=subtype).read_bytes()
        assert first == second and b"PEAK" not in first
        y, _, _ = read_audio(tmp_path / f"a_{subtype}.wav")
        assert np.allclose(y, x, atol=1 / 32768 + 1e-6)
    left = write_wav(tmp_path / "loud.wav", 3 * x, CODEC_RATE, subtype="FLOAT").read_bytes()
    quiet = write_wav(tmp_path / "quiet.wav", x, CODEC_RATE, subtype="FLOAT").read_bytes()
    data = left.index(b"data")
    assert left[:data] == quiet[:data]  # the header says nothing about the level
