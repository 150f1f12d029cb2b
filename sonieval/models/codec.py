"""Target codecs: the DAC-VAE (default) and the plain DAC 44 kHz model.

DAC-VAE ("descript-audio-vae" by innnky, hub repo ``innnky/vae-dac``, file
``v1.0_vae_dac_44100_87hz_64dim.pth``) is the Descript Audio Codec with its residual vector
quantiser replaced by a Gaussian posterior (docs/architecture.md#the-dac-vae-codec). It is built here from
descript-audio-codec's own ``dac.model.dac.Encoder``/``Decoder`` and ``dac.nn.quantize.VectorQuantize``
under the module names of the published code (``encoder``, ``quantizer``, ``mean_proj``,
``logs_proj``, ``dec_in_proj``, ``decoder``), so the published ``state_dict`` loads with
``strict=True``. The architecture comes from the checkpoint's ``metadata.kwargs`` (the published
constructor arguments), so a checkpoint with another configuration loads too.

- ``encode``: audio at 44.1 kHz is right-padded to a whole number of hops (512 samples; 5 s →
  431 × 512) and mapped to the **posterior mean** ``mean_proj(encoder(x))``: [64, 431] for 5 s
  (≈86.13 latent frames per second). No sampling, so encoding is deterministic.
- ``decode``: ``decoder(dec_in_proj(z))`` → audio in [-1, 1] (the decoder ends in tanh).
- The ``quantizer`` (VectorQuantize, 4096 codes of dimension 8 on the 64-dim latent) was only a
  training regulariser; it is built so the checkpoint loads strictly and never called.

Plain DAC 44 kHz (``codec.name: dac``) is loaded through dac's own loader (``DAC.load``). Its latent
here is the continuous ``z`` that dac's decoder takes, i.e. the sum of the residual codebook vectors
(``model.encode(x)[0]``, [1024, T'] for the 44 kHz model): continuous-valued, and — unlike the
encoder output before quantisation — on the manifold the decoder was trained on, so a gate's
prediction is decoded exactly like a real encoding.

``size: small`` builds the same architecture with fewer channels (same strides, hop and latent
dimension) and random weights; ``Codec.random_init`` says so and every output must state it.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sonieval.errors import WeightsUnavailable
from sonieval.models import weights
from sonieval.models.codec_base import (  # noqa: F401 - the contract, re-exported where it always was
    CODEC_NAMES,
    WEIGHT_FREE_CODECS,
    Codec,
    CodecError,
    codec_label,
)

DAC_VAE_REPO = "innnky/vae-dac"
DAC_VAE_FILE = "v1.0_vae_dac_44100_87hz_64dim.pth"
# The published constructor arguments (conf/base.yml of innnky/descript-audio-vae).
DAC_VAE_KWARGS: dict[str, Any] = {
    "encoder_dim": 64,
    "encoder_rates": [2, 4, 8, 8],
    "latent_dim": None,
    "decoder_dim": 1536,
    "decoder_rates": [8, 8, 4, 2],
    "n_codebooks": 9,
    "codebook_size": 1024,
    "codebook_dim": 8,
    "quantizer_dropout": 1.0,
    "sample_rate": 44100,
    "vae_latent_channels": 64,
    "vq_reg_codebook_size": 4096,
}
# Small random version: 4 → 64 encoder channels instead of 64 → 1024, decoder 64 instead of 1536.
DAC_VAE_SMALL = {"encoder_dim": 4, "decoder_dim": 64}
DAC_SMALL = {"encoder_dim": 4, "decoder_dim": 64, "n_codebooks": 2, "codebook_size": 64}


class DacVae(nn.Module):
    """The DAC-VAE network with the published module names (a strict state-dict match).

    Constructor arguments are the published ``metadata.kwargs``; ``n_codebooks``, ``codebook_size``
    and ``quantizer_dropout`` belong to the RVQ the VAE replaced and are accepted and unused.
    """

    def __init__(
        self,
        encoder_dim: int = 64,
        encoder_rates=(2, 4, 8, 8),
        latent_dim: int | None = None,
        decoder_dim: int = 1536,
        decoder_rates=(8, 8, 4, 2),
        n_codebooks: int = 9,
        codebook_size: int = 1024,
        codebook_dim: int = 8,
        quantizer_dropout: float = 0.0,
        sample_rate: int = 44100,
        vae_latent_channels: int = 64,
        vq_reg_codebook_size: int = 4096,
    ):
        super().__init__()
        import warnings

        from dac.model.dac import Decoder, Encoder
        from dac.nn.quantize import VectorQuantize

        # dac builds its convs with torch.nn.utils.weight_norm (deprecated, still exact): the published
        # state_dict stores weight_g/weight_v, which only the old form loads under the same names.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*weight_norm.*is deprecated", category=FutureWarning)
            self._build(
                encoder_dim,
                encoder_rates,
                latent_dim,
                decoder_dim,
                decoder_rates,
                codebook_dim,
                sample_rate,
                vae_latent_channels,
                vq_reg_codebook_size,
                Encoder,
                Decoder,
                VectorQuantize,
            )

    def _build(
        self,
        encoder_dim,
        encoder_rates,
        latent_dim,
        decoder_dim,
        decoder_rates,
        codebook_dim,
        sample_rate,
        vae_latent_channels,
        vq_reg_codebook_size,
        Encoder,
        Decoder,
        VectorQuantize,
    ):

        if latent_dim is None:
            latent_dim = encoder_dim * (2 ** len(encoder_rates))
        self.encoder_rates = list(encoder_rates)
        self.hop_length = int(math.prod(encoder_rates))
        self.sample_rate = int(sample_rate)
        self.vae_latent_channels = int(vae_latent_channels)
        self.encoder = Encoder(encoder_dim, list(encoder_rates), latent_dim)
        self.quantizer = VectorQuantize(
            input_dim=vae_latent_channels, codebook_size=vq_reg_codebook_size, codebook_dim=codebook_dim
        )
        self.mean_proj = nn.Conv1d(latent_dim, vae_latent_channels, 1)
        self.logs_proj = nn.Conv1d(latent_dim, vae_latent_channels, 1)
        self.dec_in_proj = nn.Conv1d(vae_latent_channels, latent_dim, 1)
        self.decoder = Decoder(latent_dim, decoder_dim, list(decoder_rates))

    def encode_mean(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, 1, n] (n a multiple of the hop) → posterior mean [B, C, n / hop]."""
        return self.mean_proj(self.encoder(audio))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.dec_in_proj(latent))


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a published-format checkpoint ``{"metadata": {"kwargs": ...}, "state_dict": ...}``."""
    path = Path(path)
    try:
        # weights_only: the published format is plain tensors, dicts, lists and numbers.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsUnavailable("checkpoint file not found", path=path) from None
    except Exception as exc:
        raise CodecError(
            f"not a readable PyTorch checkpoint ({type(exc).__name__}: {str(exc)[:120]})",
            path=path,
            hint="re-download it; a .pth saved with torch.save is expected",
        ) from None
    if (
        not isinstance(ckpt, dict)
        or "state_dict" not in ckpt
        or not isinstance(ckpt.get("metadata"), dict)
        or not isinstance(ckpt["metadata"].get("kwargs"), dict)
    ):
        keys = sorted(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CodecError(
            f"not in the published DAC-VAE format (expected keys 'metadata.kwargs' and 'state_dict', found {keys})",
            path=path,
        )
    return ckpt


def build_dac_vae(kwargs: dict[str, Any], *, path: str | os.PathLike | None = None) -> DacVae:
    import inspect

    allowed = set(inspect.signature(DacVae.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise CodecError(
            f"metadata.kwargs has arguments this DAC-VAE does not know: {unknown}",
            path=path,
            hint="the checkpoint is from a different model; use codec.name 'dac' for plain DAC",
        )
    return DacVae(**kwargs)


def load_dac_vae_checkpoint(path: str | os.PathLike) -> DacVae:
    """Build the architecture from ``metadata.kwargs`` and load ``state_dict`` with strict key matching."""
    ckpt = read_checkpoint(path)
    model = build_dac_vae(ckpt["metadata"]["kwargs"], path=path)
    result = model.load_state_dict(_state_dict_for(model, ckpt["state_dict"], path), strict=False)
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"{len(result.missing_keys)} missing key(s), e.g. {result.missing_keys[0]!r}")
        if result.unexpected_keys:
            parts.append(f"{len(result.unexpected_keys)} unexpected key(s), e.g. {result.unexpected_keys[0]!r}")
        raise CodecError(
            "state_dict does not match the DAC-VAE architecture of its metadata.kwargs: " + "; ".join(parts),
            path=path,
            hint="the file is not a DAC-VAE checkpoint or is damaged; re-download it",
        )
    return model.eval()


def _state_dict_for(model: nn.Module, state: dict, path) -> dict:
    expected = model.state_dict()
    for key, value in state.items():
        if key in expected and tuple(expected[key].shape) != tuple(value.shape):
            raise CodecError(
                f"state_dict[{key!r}] has shape {tuple(value.shape)}, the architecture of "
                f"metadata.kwargs expects {tuple(expected[key].shape)}",
                path=path,
                hint="metadata.kwargs and state_dict disagree: the file is damaged or edited",
            )
    return state


def save_dac_vae_checkpoint(model: DacVae, kwargs: dict[str, Any], path: str | os.PathLike) -> Path:
    """Save in the published format (used by tests and for fine-tuned codecs)."""
    from sonieval.files import atomic_path

    with atomic_path(path) as tmp:
        torch.save({"metadata": {"kwargs": dict(kwargs)}, "state_dict": model.state_dict()}, tmp)
    return Path(path)


class DacVaeCodec(Codec):
    """DAC-VAE: latent = posterior mean, [64, 431] for 5 s at 44.1 kHz."""

    name = "dac-vae"

    def __init__(self, model: DacVae, *, model_id: str, random_init: bool, device="cpu", sha256=None):
        super().__init__(
            model_id=model_id,
            random_init=random_init,
            hop_length=model.hop_length,
            latent_dim=model.vae_latent_channels,
            device=device,
            sha256=sha256,
        )
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, n] at 44.1 kHz → posterior mean [B, 64, ceil(n / 512)] (right-padded to whole hops)."""
        return self.model.encode_mean(self._audio_batch(audio)[:, None, :]).float().cpu()

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """[B, 64, T'] → audio [B, T' × 512] at 44.1 kHz in [-1, 1]."""
        return self.model.decode(self._latent_batch(latent))[:, 0, :].float().cpu()


class DacCodec(Codec):
    """Plain DAC (44 kHz): latent = the decoder's continuous input ``z`` (summed codebook vectors)."""

    name = "dac"

    def __init__(self, model, *, model_id: str, random_init: bool, device="cpu", sha256=None):
        super().__init__(
            model_id=model_id,
            random_init=random_init,
            hop_length=int(model.hop_length),
            latent_dim=int(model.latent_dim),
            device=device,
            sha256=sha256,
        )
        self.model = model.to(self.device).eval()

    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        z = self.model.encode(self._audio_batch(audio)[:, None, :])[0]
        return z.float().cpu()

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.model.decode(self._latent_batch(latent))[:, 0, :].float().cpu()


def _dac_weights_path(spec_checkpoint: str | None) -> Path:
    """Plain DAC 44 kHz weights: a local path, else dac's own cache (downloaded by dac when online)."""
    if spec_checkpoint is not None:
        p = Path(os.path.expanduser(spec_checkpoint))
        if not p.is_file():
            raise WeightsUnavailable(
                "codec.checkpoint: DAC weights file not found",
                path=p,
                hint="give the .pth from `python -m dac download --model_type 44khz`",
            )
        return p
    import dac.utils

    cached = Path.home() / ".cache" / "descript" / "dac" / "weights_44khz_8kbps_0.0.1.pth"
    if cached.is_file():
        return cached
    fix = (
        "run `python -m dac download --model_type 44khz` where there is network and copy "
        f"{cached} here, or set `codec.checkpoint: /path/to/weights_44khz_8kbps_0.0.1.pth`"
    )
    if weights.is_offline():
        raise WeightsUnavailable(
            f"DAC 44 kHz weights are not cached at {cached} and downloads are off (HF_HUB_OFFLINE=1)", hint=fix
        )
    try:
        return Path(dac.utils.download(model_type="44khz"))
    except Exception as exc:
        raise WeightsUnavailable(
            f"DAC 44 kHz weights are not cached at {cached} and cannot be downloaded ({type(exc).__name__})", hint=fix
        ) from None


@contextlib.contextmanager
def _quiet_weight_norm():
    """dac uses the deprecated torch.nn.utils.weight_norm on purpose (see DacVae); hide only that warning."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight_norm.*is deprecated", category=FutureWarning)
        yield


def load_codec(spec, cache_dir: str | os.PathLike | None = None, device: str = "cpu", *, normalisation=None) -> Codec:
    """Build the codec a protocol's ``codec`` section names (sonieval.protocol.CodecSpec).

    ``mel`` is weight-free; its ``normalisation`` (train-split statistics, made by ``prepare``) is
    needed to encode and decode, and ``spec.iterations`` sets its Griffin-Lim iterations.

    ``spec.size == "small"``: random weights, small channels, same hop and latent dimension.
    Otherwise ``spec.checkpoint`` is a local file, ``owner/repo/file.pth`` on the hub, or None for
    the published default; checksummed under ``cache_dir`` (sonieval.models.weights).
    """
    name, size, checkpoint = spec.name, spec.size, spec.checkpoint
    if name == "mel":
        from sonieval.models.mel_codec import DEFAULT_ITERATIONS, MelCodec

        return MelCodec(normalisation, iterations=spec.iterations or DEFAULT_ITERATIONS, device=device)
    if name == "dac-vae":
        if size == "small":
            torch.manual_seed(0)
            kwargs = {**DAC_VAE_KWARGS, **DAC_VAE_SMALL}
            return DacVaeCodec(DacVae(**kwargs), model_id="dac-vae-small-random", random_init=True, device=device)
        path, label, digest = weights.resolve_checkpoint(
            checkpoint,
            default_repo=DAC_VAE_REPO,
            default_file=DAC_VAE_FILE,
            what="DAC-VAE",
            setting="codec.checkpoint",
            cache_dir=cache_dir,
        )
        return DacVaeCodec(
            load_dac_vae_checkpoint(path), model_id=label, random_init=False, device=device, sha256=digest
        )
    if name == "dac":
        from dac.model.dac import DAC

        if size == "small":
            torch.manual_seed(0)
            with _quiet_weight_norm():
                model = DAC(**DAC_SMALL)
            return DacCodec(model, model_id="dac-44khz-small-random", random_init=True, device=device)
        path = _dac_weights_path(checkpoint)
        digest = weights.verify_checksum(path, key=str(path.resolve()), cache_dir=cache_dir)
        try:
            with _quiet_weight_norm():
                model = DAC.load(str(path))
        except Exception as exc:
            raise CodecError(
                f"dac could not load these weights ({type(exc).__name__}: {str(exc)[:120]})",
                path=path,
                hint="expected a DAC 44 kHz .pth from `python -m dac download`",
            ) from None
        return DacCodec(model, model_id=str(path), random_init=False, device=device, sha256=digest)
    raise CodecError(f"codec.name: unknown codec {name!r}; allowed: {', '.join(CODEC_NAMES)}")
