"""Post-processing of decoded sonifications (thesis §4.4 "Reconstructed audio rescaling").

Every function takes the decoded audio ``decoded`` and the original clip ``original`` (both
1-D float arrays at the codec rate, the same length) and returns a new float32 array. A
protocol names a post-processing as one step or a chain of steps joined by ``+``, applied
left to right (``minmax+squared`` = min-max rescale, then squared filtering, as in the
thesis, which filtered *after* the min-max rescale).

Steps and their definitions:

- ``none``: the raw decoder output.
- ``peak``: divide by the peak magnitude, so the peak hits exactly ±1.
- ``minmax``: affine map of [min, max] of the decode onto [min, max] of the original clip
  (the thesis's choice: "min and max are the minimum and maximum values of the input audio
  sample").
- ``squared``: the thesis's "squared filtering" ("exponent 2"), defined here as the
  sign-preserving power ``x·|x|``. The thesis only says "elevate each value ... to a certain
  number"; the plain ``x²`` would rectify the waveform (every sample ≥ 0: a DC offset and
  doubled frequencies), and its other tried exponent √2 is undefined for negative samples,
  so a sign-preserving power is the reading that keeps an audio waveform.
- ``threshold<p>``: samples with ``|x| < p/100 · max|x|`` are set to 0 (thesis: 5, 7, 10,
  15, 25 %; magnitude, so negative half-waves are treated like positive ones).
- ``wiener``: ``scipy.signal.wiener`` with its default 3-sample window.
- ``embedding_rescale``: not an audio step. The thesis also tried rescaling at the
  *embedding* level, min-max rescaling the encoder's embedding onto the original clip's
  audio range before the gate (it judged min-max better than [-1, 1] there and then
  discarded the method). The sonify stage applies :func:`rescale_embedding` before the gate
  and decodes that separately; here the step is a no-op, so ``embedding_rescale+minmax``
  means: rescaled embedding → gate → decode → min-max. It must be the first step of a chain.

Silent or constant input never divides by zero: ``peak`` and ``threshold`` leave all-zero
audio unchanged, ``minmax`` maps a constant decode to the middle of the original's range
(it cannot span it), ``wiener`` leaves constant audio unchanged. A non-finite result is an
error, never written.
"""

from __future__ import annotations

import numpy as np

from sonieval.errors import SonievalError
from sonieval.protocol import THRESHOLD_PREFIX, validate_postprocess

EMBEDDING_RESCALE = "embedding_rescale"
# Below this range or peak a signal is treated as silent/constant (float32 resolution near 0
# is far finer, but a decode this small is inaudible and dividing by it only amplifies noise).
_SILENT = 1e-12


def _as_audio(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def peak_normalize(decoded: np.ndarray) -> np.ndarray:
    """Scale so that max |x| = 1 (all-zero audio stays zero)."""
    x = _as_audio(decoded)
    peak = np.max(np.abs(x)) if x.size else 0.0
    if peak < _SILENT:
        return np.zeros_like(x)
    return x / peak


def minmax_to_original(decoded: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Affinely map the decode's [min, max] onto the original's [min, max]."""
    x, o = _as_audio(decoded), _as_audio(original)
    lo, hi = float(np.min(o)), float(np.max(o))
    xlo, xhi = float(np.min(x)), float(np.max(x))
    if xhi - xlo < _SILENT:
        return np.full_like(x, (lo + hi) / 2.0)
    return (x - xlo) / (xhi - xlo) * (hi - lo) + lo


def squared_filter(decoded: np.ndarray, exponent: float = 2.0) -> np.ndarray:
    """Sign-preserving power ``sign(x)·|x|^exponent`` (exponent 2: ``x·|x|``)."""
    x = _as_audio(decoded)
    return np.sign(x) * np.abs(x) ** exponent


def threshold_filter(decoded: np.ndarray, percent: float) -> np.ndarray:
    """Zero every sample whose magnitude is below ``percent`` % of the peak magnitude."""
    x = _as_audio(decoded)
    peak = np.max(np.abs(x)) if x.size else 0.0
    if peak < _SILENT:
        return x.copy()
    out = x.copy()
    out[np.abs(x) < percent / 100.0 * peak] = 0.0
    return out


def wiener_filter(decoded: np.ndarray) -> np.ndarray:
    """``scipy.signal.wiener`` (3-sample window); constant audio is returned unchanged.

    scipy divides by the local variance's mean, which is 0/0 for constant input.
    """
    from scipy.signal import wiener

    x = _as_audio(decoded)
    if x.size == 0 or np.ptp(x) < _SILENT:
        return x.copy()
    # Runs of equal samples have local variance 0: scipy computes 0/0 there and then replaces
    # it by the local mean (its lVar < noise branch); only the warning is silenced.
    with np.errstate(invalid="ignore", divide="ignore"):
        return wiener(x)


def rescale_embedding(embedding: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Min-max rescale an embedding (any shape) onto the original clip's audio range (thesis §4.4)."""
    e = np.asarray(embedding, dtype=np.float32)
    o = _as_audio(original)
    lo, hi = float(np.min(o)), float(np.max(o))
    elo, ehi = float(np.min(e)), float(np.max(e))
    if ehi - elo < _SILENT:
        return np.full_like(e, (lo + hi) / 2.0)
    return ((e - elo) / (ehi - elo) * (hi - lo) + lo).astype(np.float32)


def chain_steps(name: str) -> list[str]:
    """Split and check a post-processing name; ``embedding_rescale`` may only come first."""
    try:
        validate_postprocess(name)
    except ValueError as exc:
        raise SonievalError(f"sonify.postprocess: {exc}") from None
    steps = name.split("+")
    if EMBEDDING_RESCALE in steps[1:]:
        raise SonievalError(
            f"sonify.postprocess: {name!r}: {EMBEDDING_RESCALE} acts before the gate, so it must be the first step",
            hint=f"write e.g. '{EMBEDDING_RESCALE}+minmax'",
        )
    return steps


def needs_embedding_rescale(name: str) -> bool:
    """True when the chain starts at the embedding level (a separate decode)."""
    return chain_steps(name)[0] == EMBEDDING_RESCALE


def apply_postprocess(name: str, decoded: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Apply a post-processing chain (e.g. ``"minmax+squared"``) to one decoded clip; float32 out."""
    steps = chain_steps(name)
    x = _as_audio(decoded)
    o = _as_audio(original)
    if x.shape != o.shape:
        raise SonievalError(f"post-processing {name!r}: decoded audio has {x.size} samples, original {o.size}")
    for step in steps:
        if step in ("none", EMBEDDING_RESCALE):
            continue
        if step == "peak":
            x = peak_normalize(x)
        elif step == "minmax":
            x = minmax_to_original(x, o)
        elif step == "squared":
            x = squared_filter(x)
        elif step == "wiener":
            x = wiener_filter(x)
        elif step.startswith(THRESHOLD_PREFIX):
            x = threshold_filter(x, float(step[len(THRESHOLD_PREFIX) :]))
        else:  # validate_postprocess knows every step; this is a programming error
            raise AssertionError(f"unhandled post-processing step {step!r}")
    if not np.all(np.isfinite(x)):
        raise SonievalError(f"post-processing {name!r} produced non-finite samples", hint="report this as a bug")
    return x.astype(np.float32)
