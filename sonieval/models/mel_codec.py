"""The weight-free ``mel`` codec: a normalised log-mel "latent" with the DAC-VAE latent's geometry.

Why it exists: the published DAC-VAE weights cannot be downloaded everywhere, and a randomly
initialised DAC-VAE decodes every latent into the same DC-offset band, so nothing about the method
can be heard or tested with it. The mel codec needs no weights and decodes audio that follows its
latent, so the whole method (encoder → gate → latent → audio) runs, learns and can be heard offline.

Geometry (docs/architecture.md#the-mel-codec): 44.1 kHz audio, n_fft 2048 (Hann), hop 512, 64 mel bands (HTK scale,
0–22.05 kHz, no area normalisation), power 2 → for 5 s (220,500 samples) a latent [64, 431]: the
DAC-VAE latent's own shape (64 channels, ≈86.13 frames per second), so every gate and alignment
trains on it unchanged.

- ``encode``: ``(log(max(mel_power, 1e-8)) − mean_b) / std_b`` per band b; ``mean``/``std`` are
  the **train split's** per-band statistics (:class:`MelNormalisation`), computed by ``prepare`` and
  stored beside the cached latents (``codec.json``). The statistics are part of the codec's id, so
  latents normalised with other statistics are never mixed in one cache folder.
- ``decode``: un-normalise, ``exp``, mel → linear power spectrum by the minimum-norm least-squares
  inverse of the filterbank (what ``torchaudio.transforms.InverseMelScale`` solves with
  ``torch.linalg.lstsq`` on every call; here its pseudo-inverse is computed once and applied as
  one matrix product, the same solution for a full-rank filterbank, clamped at 0 like torchaudio),
  then phase reconstruction by ``torchaudio.functional.griffinlim`` (fast Griffin-Lim, momentum
  0.99, zero initial phase so decoding is deterministic; ``iterations`` configurable).

Why torchaudio and not librosa: torchaudio's transforms are torch modules, so decoding is batched
and runs on the GPU when there is one (librosa's ``mel_to_audio`` is NumPy, one clip at a time, and
solves a non-negative least-squares problem per frame). Only torchaudio's pure-Python transforms
are used: its compiled extension does not load next to the CPU torch here (docs/architecture.md#dependencies-and-the-platform).

The decoded audio is not clipped or rescaled: Griffin-Lim output may exceed ±1 (sonify writes
float WAVs and the post-processings rescale).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from sonieval.models.codec_base import Codec, CodecError

N_FFT = 2048
HOP = 512
N_MELS = 64
LOG_FLOOR = 1e-8  # −80 dB below a unit mel power: below the quietest ESC-50 content, above float error
DEFAULT_ITERATIONS = 32
MEL_MODEL_ID = f"mel-{N_MELS}x{N_FFT}x{HOP}"
MOMENTUM = 0.99  # fast Griffin-Lim (Perraudin et al. 2013), torchaudio's default
MIN_STD = 1e-3  # a band with (almost) no variance in the train split is scaled by this, not by ~0


@dataclass(frozen=True)
class MelNormalisation:
    """Per-band log-mel statistics of the train split (what ``encode`` subtracts and divides by)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    n_clips: int
    source: str = "train split"

    def __post_init__(self) -> None:
        if len(self.mean) != N_MELS or len(self.std) != N_MELS:
            raise CodecError(
                f"mel normalisation needs {N_MELS} band means and stds, got {len(self.mean)} and {len(self.std)}"
            )
        if not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.std)) and min(self.std) > 0):
            raise CodecError("mel normalisation statistics are not finite and positive")

    @classmethod
    def fit(cls, log_mels: Iterable[np.ndarray], source: str = "train split") -> MelNormalisation:
        """Band means and stds over every frame of every clip ([64, T] log-mel arrays)."""
        total, total_sq, frames, n = np.zeros(N_MELS), np.zeros(N_MELS), 0, 0
        for lm in log_mels:
            lm = np.asarray(lm, dtype=np.float64)
            total += lm.sum(axis=1)
            total_sq += (lm**2).sum(axis=1)
            frames += lm.shape[1]
            n += 1
        if n == 0:
            raise CodecError(
                "mel normalisation: no training clips to compute statistics from",
                hint="the train split is empty; check `sonieval data splits PROTOCOL`",
            )
        mean = total / frames
        std = np.sqrt(np.maximum(total_sq / frames - mean**2, 0.0))
        return cls(tuple(float(v) for v in mean), tuple(float(max(v, MIN_STD)) for v in std), n, source)

    def digest(self) -> str:
        text = json.dumps({"mean": [round(v, 6) for v in self.mean], "std": [round(v, 6) for v in self.std]})
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std), "digest": self.digest()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MelNormalisation:
        try:
            return cls(
                tuple(float(v) for v in data["mean"]),
                tuple(float(v) for v in data["std"]),
                int(data["n_clips"]),
                str(data.get("source", "train split")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(
                f"mel normalisation record is incomplete ({type(exc).__name__}: {exc})",
                hint="rerun `sonieval prepare PROTOCOL`",
            ) from None


class MelCodec(Codec):
    """Weight-free codec: latent = per-band normalised log-mel [64, ceil(n / 512)] at 44.1 kHz."""

    name = "mel"
    weight_free = True
    frame_center_hops = 0.0  # centred STFT frames (center=True): frame j at j·hop

    def __init__(
        self,
        normalisation: MelNormalisation | None = None,
        *,
        iterations: int = DEFAULT_ITERATIONS,
        device: str | torch.device = "cpu",
    ):
        import torchaudio.transforms as T

        super().__init__(model_id=MEL_MODEL_ID, random_init=False, hop_length=HOP, latent_dim=N_MELS, device=device)
        self._normalise(normalisation)
        if int(iterations) < 1:
            raise CodecError(f"codec.iterations must be at least 1, got {iterations}")
        self.iterations = int(iterations)
        self._mel = T.MelSpectrogram(
            self.sample_rate, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, power=2.0, center=True
        ).to(self.device)
        fb = self._mel.mel_scale.fb  # [n_freq, n_mels]: mel = fb^T @ power spectrum
        self._inverse_fb = torch.linalg.pinv(fb.T.double()).float().to(self.device)  # [n_freq, n_mels]
        self._window = torch.hann_window(N_FFT, device=self.device)

    def _normalise(self, normalisation: MelNormalisation | None) -> None:
        """Set the statistics; they are part of the codec's id (latents of other statistics never mix)."""
        self.normalisation = normalisation
        self.model_id = MEL_MODEL_ID + (f"-norm{normalisation.digest()}" if normalisation else "-unnormalised")

    # --- the fitted state: the train split's statistics (sonieval.models.codec_base)
    fits_data = True

    def fit(self, clips: Iterable[np.ndarray], source: str = "train split") -> None:
        """The train split's per-band statistics (:func:`fit_mel_normalisation`) become this codec's."""
        self._normalise(fit_mel_normalisation(self, clips, source=source))

    def load_fitted(self, record: dict[str, Any]) -> None:
        """The statistics :meth:`describe` stored (``record["normalisation"]``) become this codec's again."""
        self._normalise(MelNormalisation.from_dict(record["normalisation"]))

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            iterations=self.iterations,
            n_fft=N_FFT,
            n_mels=N_MELS,
            normalisation=self.normalisation.to_dict() if self.normalisation else None,
        )
        return info

    # --- the log-mel itself (no normalisation): what the train-split statistics are computed on
    @torch.no_grad()
    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, n] at 44.1 kHz → log mel power [B, 64, ceil(n / 512)] (float32, CPU)."""
        x = self._audio_batch(audio)  # right-padded to whole hops, on the device
        frames = x.shape[-1] // HOP
        mel = self._mel(x)[..., :frames]
        return torch.log(mel.clamp_min(LOG_FLOOR)).float().cpu()

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.normalisation is None:
            raise CodecError(
                "the mel codec has no normalisation statistics",
                hint="they come from the train split: run `sonieval prepare PROTOCOL`",
            )
        mean = torch.tensor(self.normalisation.mean, dtype=torch.float32)[:, None]
        std = torch.tensor(self.normalisation.std, dtype=torch.float32)[:, None]
        return mean, std

    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, n] at 44.1 kHz → normalised log-mel [B, 64, ceil(n / 512)]."""
        mean, std = self._stats()
        return (self.log_mel(audio) - mean) / std

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """[B, 64, T'] → audio [B, T' × 512] at 44.1 kHz (Griffin-Lim; not clipped)."""
        from torchaudio.functional import griffinlim

        z = self._latent_batch(latent)
        mean, std = self._stats()
        log_mel = z * std.to(z.device) + mean.to(z.device)
        # exp of a gate's output can overflow float32 where the gate extrapolates wildly: cap it at the
        # loudest level the floor-to-ceiling range of real audio reaches (e^25 ≈ 7e10 mel power).
        mel = torch.exp(log_mel.clamp(max=25.0))
        power = torch.relu(torch.matmul(self._inverse_fb, mel))  # [B, n_freq, T']
        # Frames are centred (frame j at sample j·512), so T' frames span (T'−1)·512 samples; the last
        # hop (11.6 ms) is returned as zeros to keep the codec contract of T'·512 samples.
        frames = z.shape[-1]
        audio = griffinlim(
            power, self._window, N_FFT, HOP, N_FFT, 2.0, self.iterations, MOMENTUM, (frames - 1) * HOP, False
        )
        return torch.nn.functional.pad(audio, (0, HOP)).float().cpu()


def fit_mel_normalisation(
    codec: MelCodec, clips: Iterable[np.ndarray], source: str = "train split"
) -> MelNormalisation:
    """Train-split statistics from 44.1 kHz clips (an iterable of 1-D arrays), one clip at a time."""
    return MelNormalisation.fit(
        (codec.log_mel(torch.from_numpy(np.asarray(c, dtype=np.float32)))[0].numpy() for c in clips), source=source
    )
