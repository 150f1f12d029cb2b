"""A small, deterministic, clearly labelled synthetic clip set in the official ESC-50 layout.

Used by the demo and the tests when no ESC-50 copy is given (``data.esc50: auto`` without
``$SONIEVAL_ESC50``, or ``data.esc50: synthetic``). It is *not* ESC-50: every category is named
``synthetic_*``, the folder holds a ``SYNTHETIC.txt`` marker, and :func:`sonieval.data.esc50.open_esc50`
labels it ``SYNTHETIC`` so every output downstream can say so.

Each class is a different kind of sound, so that class structure exists for the later stages to find:
steady tones, linear chirps, noise bursts, click trains and amplitude-modulated tones. Parameters
vary per clip from a seeded generator, so the set is identical on every machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sonieval.audio import CODEC_RATE, write_wav
from sonieval.files import write_text_atomic

SYNTHETIC_MARKER = "SYNTHETIC.txt"
SYNTHETIC_CATEGORIES = (
    "synthetic_tone",
    "synthetic_chirp",
    "synthetic_noise_burst",
    "synthetic_clicks",
    "synthetic_am_tone",
)
# src_file ids far above the official ones (< 600000) so they can never be mistaken for ESC-50's.
_SRC_BASE = 900_000


def _fade(n: int, rate: int, seconds: float = 0.01) -> np.ndarray:
    """Short raised-cosine fades so that clips do not start or end with a click."""
    k = max(1, int(rate * seconds))
    env = np.ones(n, dtype=np.float64)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, k))
    env[:k] = ramp
    env[-k:] = ramp[::-1]
    return env


def synthesize_clip(category: str, rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """One clip of the given synthetic category (float64 in [-1, 1])."""
    t = np.arange(n) / rate
    if category == "synthetic_tone":
        f = rng.uniform(220, 880)
        x = np.sin(2 * np.pi * f * t) + 0.3 * np.sin(2 * np.pi * 2 * f * t)
    elif category == "synthetic_chirp":
        f0, f1 = rng.uniform(200, 600), rng.uniform(2000, 6000)
        phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1]))
        x = np.sin(phase)
    elif category == "synthetic_noise_burst":
        x = np.zeros(n)
        burst = int(rng.uniform(0.2, 0.5) * rate)
        for start in rng.choice(n - burst, size=int(rng.integers(3, 7)), replace=False):
            x[start : start + burst] += rng.standard_normal(burst) * _fade(burst, rate)
    elif category == "synthetic_clicks":
        x = np.zeros(n)
        period = int(rate / rng.uniform(2, 12))
        width = int(0.002 * rate)
        for start in range(int(rng.integers(0, period)), n - width, period):
            x[start : start + width] += np.hanning(width) * rng.uniform(0.5, 1.0)
    elif category == "synthetic_am_tone":
        fc, fm = rng.uniform(500, 2000), rng.uniform(2, 8)
        x = (0.5 + 0.5 * np.sin(2 * np.pi * fm * t)) * np.sin(2 * np.pi * fc * t)
    else:
        raise ValueError(f"unknown synthetic category {category!r}")
    x = x * _fade(n, rate)
    peak = np.max(np.abs(x)) or 1.0
    return 0.8 * x / peak


def make_synthetic_esc50(
    folder: str | os.PathLike,
    *,
    n_classes: int = len(SYNTHETIC_CATEGORIES),
    clips_per_class: int = 8,
    seconds: float = 5.0,
    seed: int = 0,
) -> Path:
    """Write the synthetic clip set under ``folder`` (``meta/esc50.csv``, ``audio/*.wav``); returns ``folder``.

    Filenames follow the official pattern ``{fold}-{src_file}-{take}-{target}.wav``; clip ``i`` of a
    class goes to fold ``1 + i % 5``. Reuses an existing set made with the same parameters
    (the marker file records them), so calling it twice costs nothing.
    """
    import pandas as pd

    if not 1 <= n_classes <= len(SYNTHETIC_CATEGORIES):
        raise ValueError(f"n_classes must be 1..{len(SYNTHETIC_CATEGORIES)}")
    folder = Path(folder)
    params = f"n_classes={n_classes} clips_per_class={clips_per_class} seconds={seconds} seed={seed} rate={CODEC_RATE}"
    marker = folder / SYNTHETIC_MARKER
    if marker.is_file() and params in marker.read_text(encoding="utf-8") and (folder / "meta" / "esc50.csv").is_file():
        return folder
    n = int(round(seconds * CODEC_RATE))
    rows = []
    for target, category in enumerate(SYNTHETIC_CATEGORIES[:n_classes]):
        for i in range(clips_per_class):
            rng = np.random.default_rng([seed, target, i])
            fold = 1 + i % 5
            src = _SRC_BASE + target * 1000 + i
            filename = f"{fold}-{src}-A-{target}.wav"
            write_wav(folder / "audio" / filename, synthesize_clip(category, rng, n, CODEC_RATE), CODEC_RATE)
            rows.append(
                {
                    "filename": filename,
                    "fold": fold,
                    "target": target,
                    "category": category,
                    "esc10": False,
                    "src_file": src,
                    "take": "A",
                }
            )
    meta = pd.DataFrame(rows).sort_values("filename")
    write_text_atomic(folder / "meta" / "esc50.csv", meta.to_csv(index=False))
    write_text_atomic(
        marker,
        "SYNTHETIC clip set made by sonieval (sonieval.data.synthetic). NOT ESC-50: no result computed on it\n"
        f"says anything about ESC-50 or real sounds. Parameters: {params}\n",
    )
    return folder
