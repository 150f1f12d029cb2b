"""Per-item scores: one sonification against its own original clip.

The reference work scored each sonification against its original one clip at a time with FAD/KAD
over one embedding per clip, and got NaN, -inf and 1e30 (docs/architecture.md#what-the-reference-work-got-wrong):
a Gaussian or a kernel mean cannot be estimated from one vector. The measures here are defined for one pair of clips:

- ``frame_kad``: KAD (x100, unbiased MMD^2) between the two clips' *frames* of a frame-level
  embedding, sigma = median pairwise distance of the original's frames; needs >= 2 frames each.
- ``embedding_cosine``: cosine distance ``1 - cos`` between the clips' mean-pooled embeddings,
  each centred across its dimensions (i.e. ``1 - Pearson r``), so that a constant offset such as
  log-mel's log floor does not dominate.
- ``logmel_l1``: mean absolute difference of the 64-band log-mel spectrograms
  (:class:`~sonieval.metrics.embeddings.LogMelEmbedding` parameters), frame by frame.
- ``mrstft``: multi-resolution STFT distance (Yamamoto et al., "Parallel WaveGAN", ICASSP 2020,
  eqs. 4-6): spectral convergence + mean |log magnitude difference|, averaged over the
  (n_fft, hop, window) resolutions (1024, 120, 600), (2048, 240, 1200), (512, 50, 240).
- ``envelope_correlation``: Pearson correlation of the two amplitude envelopes (RMS over 20 ms
  windows, 10 ms hop): a proxy for how alike the waveforms *look* (the "visual" mark).

and the what-is-kept measures of :mod:`sonieval.metrics.attributes` (pitch, loudness, spectral
envelope, brightness, onsets).

Each measure is declared once in the measure catalogue (:mod:`sonieval.measures`: name, title,
direction, unit, whether it needs an embedding) and its function is bound to that entry with
:func:`~sonieval.measures.item_measure`; :func:`score_item` dispatches through the catalogue. Audio is
compared at 16 kHz, the evaluated clip fitted (padded or trimmed) to the original's length. A measure
that is undefined for a pair (silent original, constant envelope, too few frames, no voiced frames)
raises :class:`ItemScoreError` instead of returning NaN.
"""

from __future__ import annotations

import math

import numpy as np

from sonieval.logmel import LogMel
from sonieval.logmel import logmel_l1 as _logmel_l1
from sonieval.measures import (
    ItemScoreError,
    check_item_measures,
    get_measure,
    item_function,
    item_measure,
    item_measure_names,
)

# the what-is-kept measures bind themselves to the catalogue when their module is imported
from sonieval.metrics import attributes as _attributes  # noqa: F401

__all__ = [
    "ITEM_METRICS",
    "ITEM_METRIC_DIRECTION",
    "EMBEDDING_ITEM_METRICS",
    "ItemScoreError",
    "check_item_metrics",
    "score_item",
    "frame_kad",
    "embedding_cosine",
    "logmel_l1",
    "mrstft",
    "envelope_correlation",
    "amplitude_envelope",
    "time_lag",
]

# The built-in per-item measures as the catalogue declares them (sonieval.measures; measures registered
# later are read from the catalogue itself by score_item and the score stage).
ITEM_METRICS = item_measure_names()
ITEM_METRIC_DIRECTION = {n: get_measure(n).direction for n in ITEM_METRICS}
# Measures computed from the embedding's frames (the others from the audio).
EMBEDDING_ITEM_METRICS = tuple(n for n in ITEM_METRICS if get_measure(n).needs_embedding)
MRSTFT_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))
ENVELOPE_WINDOW = 320  # 20 ms at 16 kHz
ENVELOPE_HOP = 160  # 10 ms at 16 kHz
_EPS = 1e-7


def check_item_metrics(names: list[str]) -> list[str]:
    """``names`` if each is a per-item measure of the catalogue; else one line naming the first that is not."""
    return check_item_measures(names)


@item_measure("frame_kad")
def frame_kad(evaluated_frames: np.ndarray, original_frames: np.ndarray) -> float:
    from sonieval.metrics.distances import MetricError, kernel_audio_distance

    try:
        return kernel_audio_distance(original_frames, evaluated_frames).value
    except MetricError as exc:
        raise ItemScoreError(f"frame_kad: {exc.problem}", hint=exc.hint) from None


@item_measure("embedding_cosine")
def embedding_cosine(evaluated_frames: np.ndarray, original_frames: np.ndarray) -> float:
    a = np.asarray(evaluated_frames, dtype=np.float64).reshape(-1, np.shape(evaluated_frames)[-1]).mean(0)
    b = np.asarray(original_frames, dtype=np.float64).reshape(-1, np.shape(original_frames)[-1]).mean(0)
    if a.shape != b.shape:
        raise ItemScoreError(f"embedding_cosine: dimensions differ ({a.shape[0]} vs {b.shape[0]})")
    # centred across dimensions: a constant offset (log-mel's log floor) would otherwise dominate
    a, b = a - a.mean(), b - b.mean()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        raise ItemScoreError("embedding_cosine: a mean embedding is constant across dimensions; cosine is undefined")
    return float(1.0 - np.clip(a @ b / (na * nb), -1.0, 1.0))


def _fit(evaluated: np.ndarray, original: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sonieval.audio import fit_length

    ev, _ = fit_length(np.asarray(evaluated, dtype=np.float32), len(original))
    return ev, np.asarray(original, dtype=np.float32)


@item_measure("logmel_l1")
def logmel_l1(evaluated: np.ndarray, original: np.ndarray) -> float:
    return _logmel_l1(evaluated, original)  # on the ground floor: the study's familiarisation uses it too


MAX_LAG_FRAMES = 50  # ±1 s at the log-mel's 50 frames per second


def time_lag(evaluated: np.ndarray, original: np.ndarray, max_lag: int = MAX_LAG_FRAMES) -> tuple[int, np.ndarray]:
    """Where in time a sonification sits relative to its original: the lag (in 20 ms log-mel frames,
    positive = the sonification is late) that maximises the correlation of the two clips' loudness
    curves (band-averaged log-mel per frame) over their overlap, searched over ±``max_lag``; and the
    correlation profile by lag.

    A gate whose alignment maps embedding time onto latent time correctly gives lag ≈ 0; a shifted
    time axis moves the peak, a reversed one moves or flattens it. A clip whose loudness hardly
    changes (stationary sound) carries no timing information (its profile is flat and its lag
    arbitrary): look at many clips."""
    ev, orig = _fit(evaluated, original)
    lm = LogMel()
    a, b = lm(ev).mean(axis=1), lm(orig).mean(axis=1)
    n = len(b)
    if n <= 2 * max_lag + 2:
        raise ItemScoreError(f"time_lag: clip too short for lags of ±{max_lag} frames")
    lags = np.arange(-max_lag, max_lag + 1)
    profile = np.array([_corr(a[max(0, k) : n + min(0, k)], b[max(0, -k) : n - max(0, k)]) for k in lags])
    if not np.isfinite(profile).any():
        raise ItemScoreError("time_lag: a loudness curve is constant; timing is undefined")
    return int(lags[int(np.nanargmax(profile))]), profile


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else float("nan")


@item_measure("mrstft")
def mrstft(evaluated: np.ndarray, original: np.ndarray) -> float:
    import torch

    ev, orig = _fit(evaluated, original)
    x, y = torch.from_numpy(ev), torch.from_numpy(orig)
    total = 0.0
    for n_fft, hop, win in MRSTFT_RESOLUTIONS:
        window = torch.hann_window(win)
        mx = torch.stft(x, n_fft, hop, win, window, center=True, pad_mode="constant", return_complex=True).abs()
        my = torch.stft(y, n_fft, hop, win, window, center=True, pad_mode="constant", return_complex=True).abs()
        ref_norm = float(torch.linalg.norm(my))
        if ref_norm == 0.0:
            raise ItemScoreError("mrstft: the original is silent; spectral convergence is undefined")
        sc = float(torch.linalg.norm(my - mx)) / ref_norm
        mag = float(torch.mean(torch.abs(torch.log(my.clamp(min=_EPS)) - torch.log(mx.clamp(min=_EPS)))))
        total += sc + mag
    return total / len(MRSTFT_RESOLUTIONS)


def amplitude_envelope(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float64)
    if len(x) < ENVELOPE_WINDOW:
        x = np.pad(x, (0, ENVELOPE_WINDOW - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, ENVELOPE_WINDOW)[::ENVELOPE_HOP]
    return np.sqrt(np.mean(frames * frames, axis=1))


@item_measure("envelope_correlation")
def envelope_correlation(evaluated: np.ndarray, original: np.ndarray) -> float:
    ev, orig = _fit(evaluated, original)
    a, b = amplitude_envelope(ev), amplitude_envelope(orig)
    if np.std(a) == 0 or np.std(b) == 0:
        which = "original" if np.std(b) == 0 else "evaluated clip"
        raise ItemScoreError(f"envelope_correlation: the {which}'s envelope is constant; correlation is undefined")
    r = float(np.corrcoef(a, b)[0, 1])
    if not math.isfinite(r):
        raise ItemScoreError("envelope_correlation: correlation is not finite")
    return r


def score_item(
    metrics: list[str],
    *,
    evaluated_audio: np.ndarray | None = None,
    original_audio: np.ndarray | None = None,
    evaluated_frames: np.ndarray | None = None,
    original_frames: np.ndarray | None = None,
) -> dict[str, float | ItemScoreError]:
    """Compute each requested measure; an undefined one is returned as its :class:`ItemScoreError`."""
    out: dict[str, float | ItemScoreError] = {}
    for name in check_item_metrics(list(metrics)):
        function = item_function(name)
        try:
            if get_measure(name).needs_embedding:
                if evaluated_frames is None or original_frames is None:
                    raise ItemScoreError(f"{name}: needs the embedding frames of both clips")
                out[name] = float(function(evaluated_frames, original_frames))
            else:
                if evaluated_audio is None or original_audio is None:
                    raise ItemScoreError(f"{name}: needs the audio of both clips")
                out[name] = float(function(evaluated_audio, original_audio))
        except ItemScoreError as exc:
            out[name] = exc
    return out
