"""Makers of bad audio files for the foundation tests (imported by test modules)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

RATE = 44_100


def _sine(seconds: float, rate: int = RATE, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def write_bad_audio(kind: str, path: Path) -> None:
    """Write one kind of bad (or non-conforming) audio file at ``path``.

    soundfile is used directly here (not sonieval.audio) because the point is to fabricate files
    that sonieval.audio would refuse to write.
    """
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "truncated":
        sf.write(str(path), _sine(5.0), RATE, subtype="PCM_16")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("this is not audio, just text in a file named .wav\n")
    elif kind == "zero_length":
        path.write_bytes(b"")
    elif kind == "stereo_48k":
        sf.write(str(path), _sine(5.0, rate=48_000, channels=2), 48_000, subtype="PCM_16")
    elif kind == "8bit":
        sf.write(str(path), _sine(5.0), RATE, subtype="PCM_U8")
    elif kind == "float_nan":
        x = _sine(5.0).astype(np.float32)
        x[1000:1010] = np.nan
        sf.write(str(path), x, RATE, subtype="FLOAT")
    elif kind == "1s":
        sf.write(str(path), _sine(1.0), RATE, subtype="PCM_16")
    elif kind == "12s":
        sf.write(str(path), _sine(12.0), RATE, subtype="PCM_16")
    else:
        raise ValueError(kind)
