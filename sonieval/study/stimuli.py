"""The study's own audio files: copies under opaque names, the low anchor, safe serving.

Every stimulus a rater hears is re-written into ``<study_dir>/audio/<opaque>.wav`` when the
study is created (read and written through :mod:`sonieval.audio`): this drops any metadata
or file name that could reveal the system (blinding), checks that every file is readable
audio before anyone is invited, and lets the app serve audio *only* from that one folder
(:func:`study_file`), whatever a protocol entry or URL parameter says.

The low anchor follows ITU-R BS.1534 (MUSHRA): the original low-pass filtered (default
3.5 kHz, 8th-order Butterworth applied forward and backward, so zero phase), or, with
``kind: noise``, the original plus white noise at ``snr_db``. Every file is then aligned in
loudness (:mod:`sonieval.study.loudness`) by the study's creation (:mod:`sonieval.study.create`).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np

from sonieval.audio import write_wav
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


# Originals are written as 16-bit PCM and every stimulus (sonification, hidden reference, anchor,
# attention check) as 32-bit float. Streamlit serves media under a hash of the bytes, so a hidden
# reference written like its original would get the original's URL and give itself away; as float
# it has other bytes but the same samples (int16 / 32768 is exact in float32), and all stimuli
# share one format, so the format does not single it out either.
ORIGINAL_SUBTYPE = "PCM_16"
STIMULUS_SUBTYPE = "FLOAT"


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


def write_stimulus(dest: Path, samples: np.ndarray, rate: int, subtype: str = STIMULUS_SUBTYPE) -> float:
    """Write one of the study's files (atomically); returns its duration in seconds."""
    write_wav(dest, samples, rate, subtype=subtype)
    return len(samples) / rate
