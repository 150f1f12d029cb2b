"""The one place that reads, resamples, pads and writes audio.

- Reading: anything soundfile (libsndfile) reads (WAV, FLAC, OGG, ...), mixed down to mono,
  as float32. torchaudio is not used: the registry's build is CUDA-linked
  (docs/architecture.md#dependencies-and-the-platform).
- Resampling: soxr at "VHQ" quality (a polyphase resampler with a steep, linear-phase filter),
  to 16 kHz for the encoders and 44.1 kHz for the codec.
- Length policy: clips are made exactly ``seconds`` long. ``pad_or_trim`` right-pads with zeros
  or trims the end and records what was done; ``strict`` refuses other lengths.
- Writing: WAV, atomically (temporary file then rename).

Every problem is one :class:`~sonieval.errors.AudioError` line naming the file.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from sonieval.errors import AudioError
from sonieval.files import atomic_path

ENCODER_RATE = 16_000
CODEC_RATE = 44_100
CLIP_SECONDS = 5.0
LengthPolicy = Literal["pad_or_trim", "strict"]
# Shorter than this is not a clip but a fragment: refuse rather than pad 95 % zeros.
MIN_SECONDS = 0.05


@dataclass
class AudioInfo:
    """What the file was, before any conversion (recorded in the run ledger)."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    subtype: str
    format: str

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


@dataclass
class Clip:
    """A mono float32 clip at ``sample_rate``, with what was done to it."""

    samples: np.ndarray
    sample_rate: int
    info: AudioInfo
    length_action: str = "none"  # none | padded | trimmed
    original_seconds: float = 0.0

    @property
    def notes(self) -> dict[str, object]:
        return {
            "source_rate": self.info.sample_rate,
            "source_channels": self.info.channels,
            "source_subtype": self.info.subtype,
            "source_seconds": round(self.original_seconds, 6),
            "length_action": self.length_action,
            "resampled": self.info.sample_rate != self.sample_rate,
            "mixed_down": self.info.channels > 1,
        }


def _check_wav_truncation(path: Path) -> None:
    """libsndfile silently reads what is there from a truncated WAV; we refuse it instead."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
                return
            size = path.stat().st_size
            endian = "<" if head[:4] == b"RIFF" else ">"
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                chunk = fh.read(8)
                cid, clen = chunk[:4], struct.unpack(endian + "I", chunk[4:8])[0]
                if cid == b"data":
                    available = size - (pos + 8)
                    if clen != 0xFFFFFFFF and clen > available:
                        raise AudioError(
                            f"truncated WAV: header promises {clen} data bytes, file holds {available}",
                            path=path,
                            hint="re-export or re-download the file",
                        )
                    return
                pos += 8 + clen + (clen & 1)
    except OSError as exc:
        raise AudioError(f"cannot read file: {exc.strerror}", path=path) from None


def audio_info(path: str | os.PathLike) -> AudioInfo:
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioError("file not found", path=path)
    if path.is_dir():
        raise AudioError("is a folder, not an audio file", path=path)
    if path.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)", path=path, hint="re-export or re-download the file")
    _check_wav_truncation(path)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError
        reason = str(exc).split(":")[-1].strip() or type(exc).__name__
        raise AudioError(
            f"not a readable audio file ({reason})", path=path, hint="expected WAV, FLAC or OGG that libsndfile reads"
        ) from None
    if info.frames <= 0:
        raise AudioError("contains no audio frames", path=path)
    return AudioInfo(str(path), int(info.samplerate), int(info.channels), int(info.frames), info.subtype, info.format)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """High-quality resampling (soxr VHQ) along the last axis; float32 out."""
    import soxr

    if from_rate == to_rate:
        return np.asarray(samples, dtype=np.float32)
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 1:
        return soxr.resample(x, from_rate, to_rate, quality="VHQ").astype(np.float32, copy=False)
    flat = x.reshape(-1, x.shape[-1])
    # soxr takes [frames, channels]
    out = soxr.resample(flat.T, from_rate, to_rate, quality="VHQ").T
    return np.ascontiguousarray(out.reshape(*x.shape[:-1], out.shape[-1]), dtype=np.float32)


def read_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int, AudioInfo]:
    """Read a file as mono float32 (channels averaged), resampled to ``sample_rate`` if given."""
    import soundfile as sf

    info = audio_info(path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"cannot decode audio ({exc})", path=path) from None
    if data.shape[0] == 0:
        raise AudioError("contains no audio frames", path=path)
    if not np.all(np.isfinite(data)):
        bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise AudioError(f"contains {bad} NaN or infinite sample(s)", path=path, hint="fix or remove the file")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sample_rate is not None and rate != sample_rate:
        mono = resample(mono, rate, sample_rate)
        rate = sample_rate
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate), info


def fit_length(
    samples: np.ndarray, n: int, policy: LengthPolicy = "pad_or_trim", *, path: str | os.PathLike | None = None
) -> tuple[np.ndarray, str]:
    """Right-pad with zeros or trim the end to ``n`` samples; returns (samples, action)."""
    m = samples.shape[-1]
    if m == n:
        return samples, "none"
    if policy == "strict":
        raise AudioError(
            f"has {m} samples, expected exactly {n}", path=path, hint="use length_policy 'pad_or_trim' to pad/trim"
        )
    if m > n:
        return samples[..., :n], "trimmed"
    pad = [(0, 0)] * (samples.ndim - 1) + [(0, n - m)]
    return np.pad(samples, pad), "padded"


def load_clip(
    path: str | os.PathLike,
    sample_rate: int,
    seconds: float = CLIP_SECONDS,
    policy: LengthPolicy = "pad_or_trim",
) -> Clip:
    """Read, mix down, resample and fit a clip to exactly ``seconds`` at ``sample_rate``."""
    samples, rate, info = read_audio(path, sample_rate)
    original_seconds = info.seconds
    if original_seconds < MIN_SECONDS:
        raise AudioError(f"only {original_seconds * 1000:.1f} ms long; too short to be a clip", path=path)
    n = int(round(seconds * sample_rate))
    fitted, action = fit_length(samples, n, policy, path=path)
    return Clip(fitted, rate, info, action, original_seconds)


def to_float32_audio(samples: np.ndarray, *, what: str = "audio") -> np.ndarray:
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise AudioError(f"{what} must be one channel of samples, got shape {tuple(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{what} contains NaN or infinite samples; refusing to write it")
    return x


def write_wav(
    path: str | os.PathLike, samples: np.ndarray, sample_rate: int, subtype: Literal["PCM_16", "FLOAT"] = "PCM_16"
) -> Path:
    """Write mono audio as WAV, atomically. PCM_16 clips to [-1, 1] (say so by choosing FLOAT).

    The bytes depend on the samples alone: no ``PEAK`` chunk, no time of writing."""
    x = to_float32_audio(samples, what=f"audio for {path}")
    if subtype == "PCM_16":
        x = np.clip(x, -1.0, 1.0)
    path = Path(path)
    with atomic_path(path) as tmp:
        _write_without_peak_chunk(tmp, x, sample_rate, subtype)
    return path


# libsndfile's sf_command code that switches the PEAK chunk off (sndfile.h, SFC_SET_ADD_PEAK_CHUNK).
_SFC_SET_ADD_PEAK_CHUNK = 0x1050


def _write_without_peak_chunk(path: Path, x: np.ndarray, sample_rate: int, subtype: str) -> None:
    """Write a WAV whose bytes depend on the samples alone.

    By default libsndfile puts a ``PEAK`` chunk into float WAV headers: the peak value and the time
    of writing. The time makes two writes of the same samples differ byte for byte (so no sha256
    is reproducible), and the peak value tells a listener's browser which stimulus is which. With
    the chunk switched off libsndfile writes a zero-filled ``PAD`` chunk in its place.
    """
    import soundfile as sf

    channels = 1 if x.ndim == 1 else x.shape[1]
    with sf.SoundFile(str(path), "w", int(sample_rate), channels, subtype=subtype, format="WAV") as f:
        f._check_if_closed()
        sf._snd.sf_command(f._file, _SFC_SET_ADD_PEAK_CHUNK, sf._ffi.NULL, 0)  # SF_FALSE: no PEAK chunk
        f.write(x)


def write_stereo_wav(
    path: str | os.PathLike,
    left: np.ndarray,
    right: np.ndarray,
    sample_rate: int,
    subtype: Literal["PCM_16", "FLOAT"] = "PCM_16",
) -> Path:
    """Write two equal-length channels as a stereo WAV, atomically (dichotic stimuli, e.g. headphone checks)."""
    chans = [to_float32_audio(c, what=f"{side} channel for {path}") for side, c in (("left", left), ("right", right))]
    if len(chans[0]) != len(chans[1]):
        raise AudioError(
            f"{path}: left and right channels differ in length ({len(chans[0])} vs {len(chans[1])} samples)"
        )
    x = np.stack(chans, axis=1)
    if subtype == "PCM_16":
        # Quantised here with symmetric rounding: libsndfile's float->int16 conversion is not odd-symmetric
        # (q(-x) != -q(x) for some x), which would break an exact antiphase pair (L = -R).
        x = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
    path = Path(path)
    with atomic_path(path) as tmp:
        _write_without_peak_chunk(tmp, x, sample_rate, subtype)
    return path


# ----------------------------------------------------------------------------- compressed copies (MP3)
# Listening copies for browsers (sonieval.gallery): MP3 is the one lossy format that every current
# browser decodes, decodeAudioData included (Ogg Opus/Vorbis are not played by every Safari). libsndfile
# >= 1.1 writes it with LAME and reads it with mpg123; both honour the LAME gapless header, so a copy
# decodes to exactly the samples it was made from (Chromium's decoder too: tested in tests/gallery).


def encode_mp3(
    samples: np.ndarray,
    sample_rate: int,
    *,
    compression_level: float,
    bitrate_mode: Literal["CONSTANT", "AVERAGE", "VARIABLE"] = "AVERAGE",
) -> bytes:
    """Mono ``samples`` as the bytes of an MP3 (libsndfile's ``compression_level``: 0 = best, 1 = smallest;
    ``bitrate_mode``: LAME's CBR, ABR or VBR); samples beyond [-1, 1] are clipped by the format."""
    import io

    import soundfile as sf

    x = to_float32_audio(samples, what="audio to encode as MP3")
    if "MP3" not in sf.available_formats():
        raise AudioError(
            f"libsndfile {sf.__libsndfile_version__} cannot write MP3",
            hint="install soundfile >= 0.12 with libsndfile >= 1.1 (built with LAME and mpg123)",
        )
    out = io.BytesIO()
    with sf.SoundFile(
        out,
        "w",
        int(sample_rate),
        1,
        format="MP3",
        subtype="MPEG_LAYER_III",
        bitrate_mode=bitrate_mode,
        compression_level=float(compression_level),
    ) as f:
        f.write(x)
    return out.getvalue()


def decode_audio_bytes(data: bytes, *, what: str = "audio bytes") -> tuple[np.ndarray, int]:
    """(mono float32 samples, rate) of an encoded file held in memory (MP3, OGG, FLAC, WAV)."""
    import io

    import soundfile as sf

    try:
        x, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError
        raise AudioError(f"{what}: cannot decode ({exc})") from None
    return np.ascontiguousarray(x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]), int(rate)
