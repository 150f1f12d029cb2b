"""Thumbnails: a cell's mel spectrogram above its waveform, one small palette PNG.

Every thumbnail of a row is drawn on the row's scales (:class:`RowScale`), taken from the row's
original as heard (its listening copy): colour 0 dB = the original's loudest mel bin, :data:`RANGE_DB`
below it black; waveform ±1 = the original's peak. A cell that is louder than its original saturates
(its brightest bins and peaks clip in the picture, never in the sound). The copies are loudness-aligned,
so the pictures of a row compare as the sounds do.

Drawn with numpy into an 8-bit palette image (PIL, which matplotlib installs): a few milliseconds each,
where a matplotlib figure per cell takes tens.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np

__all__ = ["HEIGHT", "RANGE_DB", "THUMB_VERSION", "WIDTH", "RowScale", "mel_db", "render_thumbnail", "row_scale"]

THUMB_VERSION = 1  # bump when the picture changes (part of each thumbnail's key)
WIDTH = 240  # pixels across the whole clip
MEL_BANDS = 64  # one pixel row each
WAVE_HEIGHT = 30
HEIGHT = MEL_BANDS + WAVE_HEIGHT
RANGE_DB = 80.0
N_FFT = 2048
_COLOURS = 252  # palette entries for the spectrogram; the rest: background, waveform, its centre line
_BG, _WAVE, _MID = 252, 253, 254


@dataclass(frozen=True)
class RowScale:
    """The scales every picture of a row is drawn on."""

    top_db: float  # the row original's loudest mel bin (dB of power)
    peak: float  # the row original's largest absolute sample

    @property
    def tag(self) -> str:
        return f"{self.top_db:.1f}dB/{self.peak:.4f}/{WIDTH}x{HEIGHT}/{RANGE_DB:g}/v{THUMB_VERSION}"


@functools.lru_cache(maxsize=4)
def _mel_basis(rate: int) -> np.ndarray:
    from librosa.filters import mel

    return mel(sr=rate, n_fft=N_FFT, n_mels=MEL_BANDS).astype(np.float32)


def mel_db(samples: np.ndarray, rate: int) -> np.ndarray:
    """[MEL_BANDS, WIDTH] mel power in dB, high bands first: one Hann-windowed frame of N_FFT samples
    centred on each column (librosa's mel filters; the frames by hand, as only WIDTH of them are needed)."""
    x = np.asarray(samples, dtype=np.float32)
    centres = ((np.arange(WIDTH) + 0.5) * len(x) / WIDTH).astype(int)
    padded = np.pad(x, (N_FFT // 2, N_FFT // 2))
    frames = padded[centres[:, None] + np.arange(N_FFT)[None, :]] * np.hanning(N_FFT).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return 10.0 * np.log10(np.maximum(_mel_basis(rate) @ power.T, 1e-12))[::-1]


def row_scale(original: np.ndarray, rate: int) -> RowScale:
    """A row's scales, from its original's copy (digital silence: a scale that leaves the picture dark)."""
    peak = float(np.max(np.abs(original))) if len(original) else 0.0
    return RowScale(float(mel_db(original, rate).max()) if peak > 0 else -100.0, peak if peak > 0 else 1.0)


def _palette() -> list[int]:
    from matplotlib import colormaps

    lut = (colormaps["magma"](np.linspace(0, 1, _COLOURS))[:, :3] * 255).round().astype(int)
    extra = [(24, 24, 28), (150, 200, 255), (80, 80, 90)]
    return [int(v) for rgb in [*lut.tolist(), *extra] for v in rgb] + [0, 0, 0]  # 256 entries


def _waveform(samples: np.ndarray, peak: float) -> np.ndarray:
    """[WAVE_HEIGHT, WIDTH] palette indices: each column filled between its span's minimum and maximum."""
    img = np.full((WAVE_HEIGHT, WIDTH), _BG, dtype=np.uint8)
    img[WAVE_HEIGHT // 2, :] = _MID
    x = np.clip(np.asarray(samples, dtype=np.float64) / peak, -1.0, 1.0)
    edges = np.linspace(0, len(x), WIDTH + 1).astype(int)
    half = (WAVE_HEIGHT - 1) / 2.0
    for c, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        if b <= a:
            continue
        lo, hi = float(x[a:b].min()), float(x[a:b].max())
        top, bottom = int(round(half - hi * half)), int(round(half - lo * half))
        img[top : bottom + 1, c] = _WAVE
    return img


def render_thumbnail(samples: np.ndarray, rate: int, scale: RowScale) -> bytes:
    """The PNG of one cell: mel spectrogram (on the row's colour scale) above the waveform."""
    from PIL import Image

    db = mel_db(samples, rate)
    level = np.clip((db - (scale.top_db - RANGE_DB)) / RANGE_DB, 0.0, 1.0)
    spec = np.round(level * (_COLOURS - 1)).astype(np.uint8)
    img = Image.fromarray(np.vstack([spec, _waveform(samples, scale.peak)]), mode="P")
    img.putpalette(_palette())
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()
