"""Listening copies: loudness-aligned, true-peak safe MP3s of a clip's original and its sonifications.

The decoded sonifications stay as decoded (32-bit float, above full scale where the codec put them) for
the metrics; what a person hears in the gallery is a copy made here, by the study's rules
(:mod:`sonieval.loudness`, ITU-R BS.1770-4 through pyloudnorm):

- **One level per row.** The original goes as loud as the study's target allows under the true-peak
  ceiling (:func:`~sonieval.loudness.clip_level`); every sonification of that clip is aligned to
  the level the original's copy measures (:func:`~sonieval.loudness.alignment_gain` with the clip's
  level), so switching within a row never jumps in level. One that cannot reach it under the ceiling is
  lowered alone (``true_peak``); a near-silent one is raised by at most the gain cap (``gain_cap``).
- **Measured on the copy.** Lossy coding moves peaks (up to +1.3 dB on real clips here) and its lowpass
  moves the loudness of noisy sounds, so both are measured on the decoded MP3 (true peak 4x oversampled,
  :func:`~sonieval.loudness.true_peak`); a copy over the ceiling or off its level is made again
  with the gain corrected (:func:`make_copy`).
- **Format** (:data:`COPY_FORMAT`): mono MP3, variable bitrate, at the source's 44.1 kHz; decodes to
  exactly the source's length (the LAME gapless header).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["COPY_FORMAT", "CopyFormat", "ListeningCopy", "copy_key", "make_copy", "row_level"]

COPY_VERSION = 1  # bump when a change here changes the bytes of a copy (keys of reused copies change with it)
TP_STEP_DB = 0.1  # extra lowering when the coded copy's true peak is over the ceiling
LOUDNESS_TOLERANCE_LU = (
    0.25  # a coded copy further than this from its aim is coded again (level steps under 1 dB go unheard)
)
MAX_TRIES = 6


@dataclass(frozen=True)
class CopyFormat:
    """How listening copies are coded (part of every copy's key)."""

    container: str = "MP3"
    sample_rate: int = 44_100
    # LAME's variable bitrate at libsndfile's compression level 0.3: about 75-95 kbit/s mono here, the spectrum
    # kept to LAME's 20 kHz lowpass (measured on ESC-50 clips, sonifications and white noise). Its average and
    # constant bitrates scale tonal sounds by -0.45 dB (measured), which would cost most copies a second coding.
    bitrate_mode: str = "VARIABLE"
    compression_level: float = 0.3

    @property
    def tag(self) -> str:
        return f"{self.container}-{self.sample_rate}-{self.bitrate_mode}{self.compression_level:g}-v{COPY_VERSION}"


COPY_FORMAT = CopyFormat()


@dataclass(frozen=True)
class ListeningCopy:
    """One coded copy and what it measures as decoded (what the browser plays)."""

    data: bytes  # the MP3 file
    samples: np.ndarray  # its decoded samples (for thumbnails and checks)
    sample_rate: int
    lufs: float | None  # integrated loudness of the decoded copy; None below the -70 LUFS gate
    true_peak_dbtp: float | None
    gain_db: float
    limited: str  # "" (reached), true_peak, gain_cap, clip, silent (sonieval.loudness)
    target_lufs: float

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate

    def record(self) -> dict:
        """The JSON-safe description kept in the gallery's cache and shown on the page."""
        out = {k: v for k, v in asdict(self).items() if k not in ("data", "samples")}
        return {**out, "seconds": round(self.seconds, 6), "bytes": len(self.data)}


def copy_key(source_sha256: str, level_lufs: float | None, spec, fmt: CopyFormat = COPY_FORMAT) -> str:
    """The content key of a copy: its source's bytes, the level it is aligned to, the loudness rules and
    the format. A copy whose key is unchanged is reused as it is."""
    level = None if level_lufs is None else round(float(level_lufs), 2)
    text = json.dumps([source_sha256, level, spec.tag, fmt.tag])
    return hashlib.sha256(text.encode()).hexdigest()


def _coded(samples: np.ndarray, rate: int, gain_db: float, fmt: CopyFormat) -> tuple[bytes, np.ndarray]:
    from sonieval.audio import decode_audio_bytes, encode_mp3

    scaled = (np.asarray(samples, dtype=np.float64) * 10.0 ** (gain_db / 20.0)).astype(np.float32)
    data = encode_mp3(scaled, rate, compression_level=fmt.compression_level, bitrate_mode=fmt.bitrate_mode)
    decoded, _ = decode_audio_bytes(data, what="listening copy")
    return data, decoded


@dataclass(frozen=True)
class _Try:
    gain_db: float
    data: bytes
    decoded: np.ndarray
    lufs: float
    peak_dbtp: float


def _next_gain(tries: list[_Try], aim: float, ceiling: float) -> float:
    """The next gain to code with: between the closest tries below and above the aim when there are both
    (linear in dB), else the last gain moved by what its copy missed; never past the ceiling's headroom.
    Coding does not move the loudness in step with the gain (measured here: on 1 s clips a 1 dB step moved a
    copy's loudness by 1.6 LU), so a copy can miss its aim by more than its gain was off."""
    last = tries[-1]
    below = [t for t in tries if t.lufs < aim]
    above = [t for t in tries if t.lufs > aim]
    if below and above:
        lo, hi = max(below, key=lambda t: t.lufs), min(above, key=lambda t: t.lufs)
        gain = lo.gain_db + (aim - lo.lufs) * (hi.gain_db - lo.gain_db) / (hi.lufs - lo.lufs)
    else:
        gain = last.gain_db + aim - last.lufs
    return min(gain, last.gain_db + ceiling - last.peak_dbtp - TP_STEP_DB)


def make_copy(
    samples: np.ndarray, rate: int, spec, level_lufs: float | None = None, fmt: CopyFormat = COPY_FORMAT
) -> ListeningCopy:
    """The listening copy of ``samples`` (at ``rate``, resampled to the format's rate): aligned to
    ``level_lufs`` (its row's level; None: the original of a row, aligned as far as the spec allows).

    The gain is set on the source, then checked on the decoded copy: a true peak over the ceiling lowers
    it, a loudness more than :data:`LOUDNESS_TOLERANCE_LU` off its aim moves it (within the ceiling; see
    :func:`_next_gain`), and the copy is coded again, at most :data:`MAX_TRIES` times; the try under the
    ceiling closest to its aim is kept."""
    from sonieval.audio import resample
    from sonieval.errors import AudioError
    from sonieval.loudness import (
        LIMITED_BY_TRUE_PEAK,
        LIMITED_WITH_CLIP,
        REACHED,
        alignment_gain,
        integrated_loudness,
        measure_stimulus,
        to_db,
        true_peak,
    )

    x = resample(samples, rate, fmt.sample_rate)
    gain_db, reason = alignment_gain(measure_stimulus(x, fmt.sample_rate), spec, level_lufs)
    aim = float(spec.target_lufs if level_lufs is None else level_lufs)
    steer = reason in (REACHED, LIMITED_WITH_CLIP)  # a copy held by its peak, the gain cap or silence: no aim
    tries: list[_Try] = []
    over: list[float] = []  # gains whose copies went over the ceiling
    for attempt in range(MAX_TRIES):
        data, decoded = _coded(x, fmt.sample_rate, gain_db, fmt)
        t = _Try(gain_db, data, decoded, integrated_loudness(decoded, fmt.sample_rate), to_db(true_peak(decoded)))
        if t.peak_dbtp > spec.ceiling_dbtp:  # coding raised the peak over the ceiling: lower, a little more each time
            over.append(gain_db)
            gain_db = gain_db + spec.ceiling_dbtp - t.peak_dbtp - TP_STEP_DB * (attempt + 1)
            reason = reason if steer else LIMITED_BY_TRUE_PEAK  # a steered copy's reason is settled below
            continue
        tries.append(t)
        if not steer or not math.isfinite(t.lufs) or abs(t.lufs - aim) <= LOUDNESS_TOLERANCE_LU:
            break
        if t.lufs < aim and t.peak_dbtp > spec.ceiling_dbtp - 2 * TP_STEP_DB:
            break  # too quiet, but its peak is at the ceiling already: as loud as it can be
        gain_db = _next_gain(tries, aim, spec.ceiling_dbtp)
    if not tries:
        raise AudioError(f"listening copy stays over {spec.ceiling_dbtp:g} dBTP after {MAX_TRIES} tries")
    best = min(tries, key=lambda t: abs(t.lufs - aim) if steer and math.isfinite(t.lufs) else 0.0)
    near_ceiling = best.peak_dbtp > spec.ceiling_dbtp - 2 * TP_STEP_DB or any(g > best.gain_db for g in over)
    if steer and best.lufs < aim - LOUDNESS_TOLERANCE_LU and near_ceiling:
        # it stops short of its aim because its peak reached the ceiling there, or a louder try went over it
        # (coding moves peaks by up to a dB or so, not in step with the gain)
        reason = LIMITED_BY_TRUE_PEAK
    return ListeningCopy(
        best.data,
        best.decoded,
        fmt.sample_rate,
        best.lufs if math.isfinite(best.lufs) else None,
        best.peak_dbtp if math.isfinite(best.peak_dbtp) else None,
        float(best.gain_db),
        reason,
        aim,
    )


def row_level(original: ListeningCopy | dict | None, spec) -> float:
    """The level a row's sonifications are aligned to: what its original's copy measures (the target
    when the original is silent or missing)."""
    lufs = original.lufs if isinstance(original, ListeningCopy) else (original or {}).get("lufs")
    return float(lufs) if lufs is not None else float(spec.target_lufs)
