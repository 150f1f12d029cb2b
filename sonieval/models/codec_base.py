"""The codec contract: what every target codec (DAC-VAE, DAC, the weight-free mel codec, yours) gives.

A codec encodes 44.1 kHz audio ``[B, n]`` into a latent ``[B, C, T']`` (``C = latent_dim``, one frame per
``hop_length`` samples, frame j centred at ``(j + frame_center_hops) · hop``) and decodes a latent back
into audio ``[B, T' · hop]``. :class:`Codec` checks both inputs (one clear error on a wrong shape or a
non-finite value) and names the codec in every output (:attr:`Codec.label`).

A codec may learn something from the data before it encodes (``fits_data``: the mel codec's per-band
statistics of the train split). ``prepare`` fits it (:meth:`Codec.fit`) and stores what it learnt with
its provenance (:meth:`Codec.describe`, ``codec.json`` beside the latents); every later reader gives it
back (:meth:`Codec.load_fitted`) through one load path (:func:`sonieval.pipeline.cache.codec_from_cache`).

Here, below the codecs themselves (:mod:`sonieval.models.codec`, :mod:`sonieval.models.mel_codec`), so the
factory (``load_codec``) can import every codec and no codec imports the factory back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from sonieval.audio import CODEC_RATE
from sonieval.errors import SonievalError

__all__ = ["CODEC_NAMES", "WEIGHT_FREE_CODECS", "Codec", "CodecError", "codec_label"]


class CodecError(SonievalError):
    """Bad input to a codec (wrong shape, NaN latents) or an unusable checkpoint."""


CODEC_NAMES = ("dac-vae", "dac", "mel")
WEIGHT_FREE_CODECS = ("mel",)


def codec_label(name: str, *, weight_free: bool | None = None, random_init: bool = False) -> str:
    """``name[weight-free|random-init|pretrained]``: the codec as every output names it."""
    if weight_free is None:
        weight_free = name in WEIGHT_FREE_CODECS
    kind = "weight-free" if weight_free else ("random-init" if random_init else "pretrained")
    return f"{name}[{kind}]"


class Codec:
    """A target codec: ``encode`` 44.1 kHz audio to a latent [B, C, T'], ``decode`` it back."""

    name: str = "codec"
    weight_free: bool = False  # a signal-processing codec without learned weights (``mel``)
    # Where latent frame j is centred, in hops: DAC's encoders summarise samples [j·hop, (j+1)·hop).
    frame_center_hops: float = 0.5

    def __init__(
        self,
        *,
        model_id: str,
        random_init: bool,
        hop_length: int,
        latent_dim: int,
        device: str | torch.device = "cpu",
        sha256: str | None = None,
    ):
        self.model_id = model_id
        self.random_init = random_init
        self.sample_rate = CODEC_RATE
        self.hop_length = int(hop_length)
        self.latent_dim = int(latent_dim)
        self.device = torch.device(device)
        self.sha256 = sha256

    # --- shapes
    def latent_frames(self, n_samples: int) -> int:
        return math.ceil(n_samples / self.hop_length)

    def latent_shape(self, n_samples: int) -> tuple[int, int]:
        return (self.latent_dim, self.latent_frames(n_samples))

    @property
    def first_frame_center_s(self) -> float:
        """The time of latent frame 0's centre (``grid`` alignment interpolates onto j·hop plus this)."""
        return self.frame_center_hops * self.hop_length / self.sample_rate

    @property
    def latent_rate(self) -> float:
        """Latent frames per second (44100 / 512 ≈ 86.13 for DAC-VAE)."""
        return self.sample_rate / self.hop_length

    @property
    def label(self) -> str:
        """How outputs name this codec: ``mel[weight-free]``, ``dac-vae[random-init]``, ``dac-vae[pretrained]``."""
        return codec_label(self.name, weight_free=self.weight_free, random_init=self.random_init)

    def describe(self) -> dict[str, Any]:
        """Provenance for tables and logs."""
        return {
            "codec": self.name,
            "label": self.label,
            "model_id": self.model_id,
            "random_init": self.random_init,
            "sha256": self.sha256,
            "latent_dim": self.latent_dim,
            "hop_length": self.hop_length,
            "first_frame_center_s": self.first_frame_center_s,
        }

    # --- checks
    def _audio_batch(self, audio: torch.Tensor) -> torch.Tensor:
        audio = torch.as_tensor(audio, dtype=torch.float32)
        if audio.ndim == 1:
            audio = audio[None]
        if audio.ndim != 2 or audio.shape[-1] == 0:
            raise CodecError(
                f"{self.name}.encode: expected audio [batch, samples] at 44.1 kHz, got shape {tuple(audio.shape)}"
            )
        if not torch.isfinite(audio).all():
            raise CodecError(f"{self.name}.encode: audio contains NaN or infinite samples")
        pad = self.latent_frames(audio.shape[-1]) * self.hop_length - audio.shape[-1]
        return nn.functional.pad(audio, (0, pad)).to(self.device)

    def _latent_batch(self, latent: torch.Tensor) -> torch.Tensor:
        latent = torch.as_tensor(latent, dtype=torch.float32)
        if latent.ndim == 2:
            latent = latent[None]
        if latent.ndim != 3 or latent.shape[1] != self.latent_dim or latent.shape[-1] == 0:
            raise CodecError(
                f"{self.name}.decode: expected a latent [batch, {self.latent_dim}, frames], "
                f"got shape {tuple(latent.shape)}"
            )
        bad = int((~torch.isfinite(latent)).sum())
        if bad:
            raise CodecError(
                f"{self.name}.decode: latent contains {bad} NaN or infinite value(s)",
                hint="the gate produced non-finite output; check its checkpoint and training loss",
            )
        return latent.to(self.device)

    # --- what the codec learns from the data (none by default)
    fits_data: bool = False  # True: ``prepare`` fits it on the train split before it encodes any clip

    def fit(self, clips: Iterable[np.ndarray], source: str = "train split") -> None:
        """Learn the fitted state from 44.1 kHz clips (1-D arrays; prepare: the train split's, in clip order).
        Only a codec with ``fits_data`` is fitted; what it learnt must appear in :meth:`describe`."""
        raise NotImplementedError(f"codec {self.name} learns nothing from the data (fits_data is False)")

    def load_fitted(self, record: dict[str, Any]) -> None:
        """Take the fitted state back from ``record`` (what :meth:`describe` returned when prepare stored it)."""
        raise NotImplementedError(f"codec {self.name} learns nothing from the data (fits_data is False)")

    # --- the codec itself
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
