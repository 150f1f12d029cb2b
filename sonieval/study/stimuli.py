"""The study's own audio files: copies under opaque names, the low anchor, safe serving.

Every stimulus a rater hears is re-written into ``<study_dir>/audio/<opaque>.wav`` when the
study is created (read and written through :mod:`sonieval.audio`): this drops any metadata
or file name that could reveal the system (blinding), checks that every file is readable
audio before anyone is invited, and lets the app serve audio *only* from that one folder
(:func:`study_file`), whatever a protocol entry or URL parameter says.

Every file is written in the study's one format (:class:`StudyFormat`: one sample rate, 16-bit
PCM with its own seeded dither, each clip's files as long as its original, :func:`fit_to_clip`),
so neither a header, a size, a rate nor a duration tells a system or the hidden reference apart,
and no two files share bytes.

The low anchor follows ITU-R BS.1534 (MUSHRA): the original low-pass filtered (default
3.5 kHz, 8th-order Butterworth applied forward and backward, so zero phase), or, with
``kind: noise``, the original plus white noise at ``snr_db``. Every file is then aligned in
loudness (:mod:`sonieval.study.loudness`) by the study's creation (:mod:`sonieval.study.create`).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sonieval.errors import DataError, SonievalError

AUDIO_SUBDIR = "audio"
WAVEFORM_SUBDIR = "waveforms"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")


class StudyFileError(SonievalError):
    """A path that is not one of the study's own files (path traversal, missing file)."""


def check_identifier(value: str, what: str) -> str:
    """Clip ids and system names become keys, never paths: refuse separators and '..'."""
    if not isinstance(value, str) or not value or value in (".", "..") or "\x00" in value:
        raise DataError(f"{what} {value!r} is empty or not a name", hint="use plain names")
    if "\\" in value or value.startswith("/") or ".." in value.split("/"):
        raise DataError(
            f"{what} {value!r} looks like a path", hint="names may not contain '..', '\\' or start with '/'"
        )
    return value


def contained(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """Resolve ``path`` (symlinks too) and require it to lie inside ``root``."""
    root_r = Path(root).resolve()
    p = Path(path)
    if not p.is_absolute():
        p = root_r / p
    resolved = p.resolve()
    if resolved != root_r and root_r not in resolved.parents:
        raise StudyFileError(f"{path} lies outside {root_r}", hint="the study only uses files inside its own folders")
    return resolved


def study_file(study_dir: str | os.PathLike, name: str, subdir: str = AUDIO_SUBDIR) -> Path:
    """The path of one of the study's own files, refusing anything else.

    ``name`` must be a bare file name (no folders), and the resolved path must stay inside
    ``<study_dir>/<subdir>`` (a symlink planted there pointing out is refused too).
    """
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or "/" in name:
        raise StudyFileError(f"{name!r} is not a study file name", hint="only the study's own files are served")
    root = Path(study_dir) / subdir
    path = contained(root / name, root)
    if not path.is_file():
        raise StudyFileError(f"{path}: study file missing", hint="recreate the study (sonieval study create)")
    return path


def opaque_name(study_id: str, key: str, suffix: str = ".wav") -> str:
    """A file name that reveals nothing about the system or clip (blinding)."""
    return hashlib.sha256(f"{study_id}\x00{key}".encode()).hexdigest()[:24] + suffix


# One format for every file a rater hears (originals, stimuli, familiarisation examples): one sample
# rate per study, 16-bit PCM, one length per clip. A stimulus of another rate is resampled, one of
# another length padded or trimmed with a short fade, so neither size, rate nor duration follows a
# system across pages. Each file is quantised with its own TPDF dither (seeded by its name): two
# files of the same samples (an original and its hidden reference, or an attention check) still
# differ in their bytes, so Streamlit, which serves media under a hash of the bytes, gives each its
# own URL, while the header (44 bytes: RIFF, fmt, data) depends on the length and rate alone.
STUDY_SUBTYPE = "PCM_16"
EDGE_FADE_S = 0.010  # the fade where a stimulus is trimmed or padded to its clip's length
DITHER = "TPDF, +-1 LSB, seeded by the file name"


@dataclass(frozen=True)
class StudyFormat:
    """The format of a study's files (stored with the study's provenance: "stated")."""

    sample_rate: int
    subtype: str = STUDY_SUBTYPE
    fade_s: float = EDGE_FADE_S

    @property
    def tag(self) -> str:
        """A short name of the format (part of file names: another format, other files)."""
        return f"{self.sample_rate}Hz-{self.subtype}-fade{self.fade_s * 1000:g}ms"

    def as_dict(self) -> dict:
        return {
            "sample_rate": self.sample_rate,
            "subtype": self.subtype,
            "dither": DITHER,
            "length": "every file of a clip as long as its original (at the study's rate)",
            "edge_fade_ms": self.fade_s * 1000,
        }


def study_rate(paths) -> int:
    """The study's sample rate: the rate most of the originals have (ties: the highest)."""
    from collections import Counter

    from sonieval.audio import audio_info

    rates = Counter()
    for path in paths:
        try:
            rates[audio_info(path).sample_rate] += 1
        except Exception:  # noqa: BLE001 - an unreadable original fails its trials later, with its message
            continue
    if not rates:
        return 44_100
    return max(rates, key=lambda r: (rates[r], r))


def fit_to_clip(samples: np.ndarray, n: int, rate: int, fade_s: float = EDGE_FADE_S) -> tuple[np.ndarray, str]:
    """``samples`` made exactly ``n`` long: trimmed, or padded with silence, after a half-Hann fade-out
    of ``fade_s`` over the last samples kept (no step where the sound is cut or ends early)."""
    m = len(samples)
    if m == n:
        return np.asarray(samples, dtype=np.float32), "none"
    kept = np.array(samples[: min(m, n)], dtype=np.float32)
    k = min(len(kept), max(1, int(round(fade_s * rate))))
    kept[len(kept) - k :] *= np.cos(0.5 * np.pi * (np.arange(1, k + 1) / k)).astype(np.float32) ** 2
    if m > n:
        return kept, "trimmed"
    return np.concatenate([kept, np.zeros(n - m, dtype=np.float32)]), "padded"


def quantise(samples: np.ndarray, seed: int) -> np.ndarray:
    """16-bit samples (int16) with TPDF dither of +-1 LSB drawn from ``seed``; read back as x / 32768."""
    x = np.asarray(samples, dtype=np.float64)
    rng = np.random.default_rng(seed)
    dither = rng.random(len(x)) - rng.random(len(x))
    return np.clip(np.round(x * 32768.0 + dither), -32768, 32767).astype(np.int16)


def file_seed(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"dither\x00{name}".encode()).digest()[:8], "big")


def lowpass_anchor(samples: np.ndarray, rate: int, cutoff_hz: float) -> np.ndarray:
    """Low-pass filtered copy (8th-order Butterworth, zero phase) as in BS.1534's 3.5 kHz anchor."""
    from scipy.signal import butter, sosfiltfilt

    nyquist = rate / 2
    if cutoff_hz >= nyquist:
        raise DataError(
            f"study.anchor.cutoff_hz {cutoff_hz:g} Hz is not below the Nyquist frequency ({nyquist:g} Hz)",
            hint="choose a lower cutoff",
        )
    sos = butter(8, cutoff_hz, btype="lowpass", fs=rate, output="sos")
    # sosfiltfilt needs more samples than its padding; very short clips fall back to one pass.
    if len(samples) > 3 * (2 * len(sos) + 1):
        out = sosfiltfilt(sos, samples)
    else:
        from scipy.signal import sosfilt

        out = sosfilt(sos, samples)
    return np.asarray(out, dtype=np.float32)


def noise_anchor(samples: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """The original plus white Gaussian noise at ``snr_db`` relative to the clip's power."""
    rng = np.random.default_rng(seed)
    power = float(np.mean(np.square(samples, dtype=np.float64)))
    if power == 0.0:
        power = 1e-4  # a silent clip still gets an audibly degraded anchor
    noise = rng.standard_normal(len(samples)) * np.sqrt(power / (10 ** (snr_db / 10)))
    return np.asarray(samples + noise, dtype=np.float32)


def anchor_samples(samples: np.ndarray, rate: int, kind: str, cutoff_hz: float, snr_db: float, seed: int) -> np.ndarray:
    """The low anchor of an original (before loudness alignment, which the caller applies)."""
    if kind == "lowpass":
        return lowpass_anchor(samples, rate, cutoff_hz)
    if kind == "noise":
        return noise_anchor(samples, snr_db, seed)
    raise DataError(f"unknown anchor kind {kind!r}", hint="use 'lowpass' or 'noise'")  # the schema allows only the two


def write_stimulus(dest: Path, samples: np.ndarray, rate: int) -> float:
    """Write one of the study's files (16-bit, dithered by its name, atomically); returns its seconds.

    Written as int16, so the bytes are the quantised samples exactly (libsndfile's own float to
    int16 conversion scales by 32767 and is not the inverse of its reading)."""
    import soundfile as sf

    from sonieval.audio import to_float32_audio
    from sonieval.files import atomic_path

    x = to_float32_audio(samples, what=f"audio for {dest}")
    with atomic_path(Path(dest)) as tmp:
        sf.write(str(tmp), quantise(x, file_seed(Path(dest).name)), int(rate), subtype=STUDY_SUBTYPE, format="WAV")
    return len(x) / rate
