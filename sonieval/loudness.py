"""Loudness alignment of what a listener hears: one programme loudness, a true-peak ceiling, no clipping.

The rules are the study's (its stimuli) and the listening gallery's (its copies), so they stand on the
ground floor, below both (``sonieval.study.loudness`` re-exports them where older code imports them).

ITU-R BS.1534 (MUSHRA) asks for stimuli of equal loudness: a rater who can tell the hidden
reference (or a sonification) by its level alone is not rating similarity. Every file the
study plays (originals, sonifications, hidden reference, anchor, attention checks) is scaled
to :data:`TARGET_LUFS` integrated loudness (ITU-R BS.1770-4, measured by ``pyloudnorm``),
unless that would push its true peak above the ceiling (:data:`CEILING_DBTP`) or need more than
:data:`MAX_GAIN_DB` of gain; such a stimulus is left quieter and the reason is recorded.

- **Loudness**: ``pyloudnorm.Meter`` (K-weighting, 400 ms blocks, 75 % overlap, absolute gate
  at -70 LUFS, relative gate -10 LU). A clip shorter than one 400 ms block is measured as one
  block of its own length (BS.1770 does not define loudness below 400 ms; this is our choice).
  A clip whose every block is below the absolute gate measures ``-inf`` (reported as silent).
- **True peak**: BS.1770-4 Annex 2 estimates the inter-sample peak after 4x oversampling;
  here ``scipy.signal.resample_poly`` (polyphase FIR, Kaiser window) does the oversampling, and
  the estimate is the larger of the sample peak and the oversampled peak.
- **Gain**: ``min(target - measured, MAX_GAIN_DB, ceiling - true_peak - margin)``; digital
  silence gets no gain. The gain cap keeps a near-silent stimulus from being raised into
  noise (a "gain explosion").
- **One level per clip, set by its original** (:func:`clip_level`): a rater compares every
  stimulus of a clip with that clip's original. If the original cannot reach the target under
  the ceiling (an impulsive clip: 13 % of ESC-50's clips have a peak-to-loudness ratio above
  the 25 dB that -26 LUFS / -1 dBTP allows), the whole clip (original, hidden reference,
  attention check, anchor, sonifications) is aligned to the level the original reaches;
  otherwise a quieter original and hidden reference would stand out among louder
  sonifications (the same holds for an original quieter than the target by more than the gain
  cap). A sonification or anchor that cannot reach its clip's level under the ceiling is
  lowered alone (recorded as ``true_peak``): it is then quieter than its original,
  which says nothing about which stimulus is the hidden reference, and one peaky system does
  not pull its clips' other stimuli down. Near-silent stimuli (gain capped) and silent ones
  are recorded as such.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

# -26 LUFS, not EBU R128's -23: a clip fits under the ceiling only if its peak-to-loudness ratio
# is at most target - ceiling; at -23 that is 22 dB, exceeded by 22.8 % of the 400 ESC-50 clips
# of fold 4 (measured here), at -26 it is 25 dB, exceeded by 13.0 %. (-26 is also the speech
# level of ITU-T P.56/P.800 listening tests.) The listener sets the playback volume anyway.
TARGET_LUFS = -26.0
CEILING_DBTP = -1.0  # EBU R128 maximum true peak
MAX_GAIN_DB = 30.0
OVERSAMPLE = 4
# Keeps the peak under the ceiling after the 16-bit rounding of originals (one step, 3e-5 of
# full scale, is 3e-4 dB at -1 dBFS): the written file, not the float copy, must respect it.
TP_MARGIN_DB = 0.01
BLOCK_SECONDS = 0.4

# Values of Level.limited: why a stimulus did not reach the target.
REACHED = ""
LIMITED_BY_TRUE_PEAK = "true_peak"
LIMITED_BY_GAIN_CAP = "gain_cap"
LIMITED_WITH_CLIP = "clip"  # lowered to its clip's level: its original could not reach the target
SILENT = "silent"


@dataclass(frozen=True)
class LevelSpec:
    """The loudness every stimulus is aligned to (recorded in the study's provenance)."""

    target_lufs: float = TARGET_LUFS
    ceiling_dbtp: float = CEILING_DBTP
    max_gain_db: float = MAX_GAIN_DB

    @property
    def tag(self) -> str:
        """A short name of the settings (part of file names: other settings, other files)."""
        return f"{self.target_lufs:g}LUFS{self.ceiling_dbtp:g}dBTP{self.max_gain_db:g}dB"

    def as_dict(self) -> dict:
        return {**asdict(self), "standard": "ITU-R BS.1770-4 (pyloudnorm)", "true_peak_oversampling": OVERSAMPLE}


@dataclass(frozen=True)
class Level:
    """What alignment did to one stimulus. ``None`` loudness = below the absolute gate (silent)."""

    lufs_measured: float | None
    gain_db: float
    lufs: float | None
    true_peak_dbtp: float | None
    limited: str = REACHED
    target_lufs: float | None = None  # the clip's level aimed at (the study target unless limited)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Level:
        return cls(
            d["lufs_measured"],
            d["gain_db"],
            d["lufs"],
            d["true_peak_dbtp"],
            d.get("limited", REACHED),
            d.get("target_lufs"),
        )


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def integrated_loudness(samples: np.ndarray, rate: int) -> float:
    """BS.1770 integrated loudness in LUFS of mono ``samples``; ``-inf`` when all blocks are gated."""
    import pyloudnorm

    x = np.asarray(samples, dtype=np.float64)
    if len(x) == 0 or not np.any(x):
        return -math.inf
    # pyloudnorm refuses clips shorter than a block; such a clip is one block of its own length
    # (minus half a sample, so that block * rate does not round above the length).
    block = BLOCK_SECONDS if len(x) >= BLOCK_SECONDS * rate + 1 else (len(x) - 0.5) / rate
    value = float(pyloudnorm.Meter(rate, block_size=block).integrated_loudness(x))
    return value if math.isfinite(value) else -math.inf


def true_peak(samples: np.ndarray, oversample: int = OVERSAMPLE) -> float:
    """Estimated true (inter-sample) peak, linear: max of the sample peak and the oversampled peak."""
    from scipy.signal import resample_poly

    x = np.asarray(samples, dtype=np.float64)
    if len(x) == 0:
        return 0.0
    peak = float(np.max(np.abs(x)))
    if len(x) > 1 and oversample > 1:
        peak = max(peak, float(np.max(np.abs(resample_poly(x, oversample, 1)))))
    return peak


def to_db(linear: float) -> float:
    return 20.0 * math.log10(linear) if linear > 0 else -math.inf


@dataclass(frozen=True)
class Measured:
    """A stimulus before alignment: integrated loudness (LUFS) and true peak (dBTP); -inf = silent."""

    lufs: float
    peak_dbtp: float


def clip_level(original: Measured | None, spec: LevelSpec) -> float:
    """The level every stimulus of a clip is aligned to: the level its original reaches (the target,
    unless its true peak or the gain cap stops it short); the target for a silent or unread original."""
    if original is None or not math.isfinite(original.lufs):
        return spec.target_lufs
    return original.lufs + alignment_gain(original, spec)[0]


def alignment_gain(m: Measured, spec: LevelSpec, clip: float | None = None) -> tuple[float, str]:
    """(gain in dB, why the stimulus stops short of the study target: "" when it does not).

    The stimulus goes as loud as its own limits allow, up to the target (its reason then is
    ``true_peak``, ``gain_cap`` or ""); if its clip's level ``clip`` is lower, it goes to that
    level instead (``clip``). A stimulus below the absolute gate (``lufs`` = -inf) that is not
    digitally silent gets the capped gain: it would need more.
    """
    if m.peak_dbtp == -math.inf:
        return 0.0, SILENT
    bounds = [
        (spec.ceiling_dbtp - m.peak_dbtp - TP_MARGIN_DB, LIMITED_BY_TRUE_PEAK),
        (spec.max_gain_db, LIMITED_BY_GAIN_CAP),
    ]
    if math.isfinite(m.lufs):
        bounds.insert(0, (spec.target_lufs - m.lufs, REACHED))  # first: wins a tie
    gain, reason = min(bounds, key=lambda b: b[0])
    if clip is not None and math.isfinite(m.lufs) and clip - m.lufs < gain - 1e-9:
        return float(clip - m.lufs), LIMITED_WITH_CLIP
    return float(gain), reason


def measure(samples: np.ndarray, rate: int) -> tuple[float, float]:
    """(integrated loudness in LUFS, true peak in dBTP); -inf for silence."""
    return integrated_loudness(samples, rate), to_db(true_peak(samples))


def measure_stimulus(samples: np.ndarray, rate: int) -> Measured:
    lufs, peak = measure(samples, rate)
    return Measured(lufs, peak)


def apply_gain(
    samples: np.ndarray, m: Measured, spec: LevelSpec, clip: float | None = None
) -> tuple[np.ndarray, float, str]:
    """Scale ``samples`` (measured as ``m``) as :func:`alignment_gain` says: (samples, gain dB, reason)."""
    gain_db, reason = alignment_gain(m, spec, clip)
    return (np.asarray(samples, dtype=np.float64) * 10.0 ** (gain_db / 20.0)).astype(np.float32), gain_db, reason


def level_after(written: np.ndarray, rate: int, m: Measured, gain_db: float, reason: str, target: float) -> Level:
    """The record of one aligned stimulus, measured on the samples its file holds (after 16-bit rounding)."""
    lufs, peak = measure(written, rate)
    if lufs == -math.inf and reason == REACHED:
        reason = SILENT
    return Level(_finite_or_none(m.lufs), gain_db, _finite_or_none(lufs), _finite_or_none(peak), reason, target)


def align_loudness(samples: np.ndarray, rate: int, spec: LevelSpec = LevelSpec()) -> tuple[np.ndarray, Level]:
    """One stimulus on its own: measure, scale towards the spec's target, measure again."""
    m = measure_stimulus(samples, rate)
    out, gain_db, reason = apply_gain(samples, m, spec)
    return out, level_after(out, rate, m, gain_db, reason, spec.target_lufs)


def describe_shortfalls(levels: dict[str, Level], spec: LevelSpec, *, limit: int = 5) -> list[str]:
    """Console lines for stimuli that did not reach the target (``levels``: name -> level)."""
    lines = []
    for reason, what in (
        (
            LIMITED_BY_TRUE_PEAK,
            f"kept below {spec.target_lufs:g} LUFS so that the true peak stays at or below {spec.ceiling_dbtp:g} dBTP",
        ),
        (LIMITED_WITH_CLIP, "lowered to the level of their clip (its original cannot reach the target)"),
        (
            LIMITED_BY_GAIN_CAP,
            f"near-silent: gain capped at +{spec.max_gain_db:g} dB, so they stay quieter than {spec.target_lufs:g} LUFS",
        ),
        (SILENT, "silent (below the -70 LUFS gate): left as they are"),
    ):
        hits = sorted(((n, lv) for n, lv in levels.items() if lv.limited == reason), key=lambda h: h[0])
        if not hits:
            continue
        examples = ", ".join(f"{n} ({_fmt(lv.lufs)})" for n, lv in hits[:limit])
        more = f" and {len(hits) - limit} more" if len(hits) > limit else ""
        lines.append(f"loudness: {len(hits)} stimulus file(s) {what}: {examples}{more}")
    return lines


def _fmt(lufs: float | None) -> str:
    return "silent" if lufs is None else f"{lufs:.1f} LUFS"


__all__ = [
    "TARGET_LUFS",
    "CEILING_DBTP",
    "MAX_GAIN_DB",
    "LevelSpec",
    "Level",
    "Measured",
    "integrated_loudness",
    "true_peak",
    "to_db",
    "measure",
    "measure_stimulus",
    "clip_level",
    "alignment_gain",
    "apply_gain",
    "level_after",
    "align_loudness",
    "describe_shortfalls",
]
