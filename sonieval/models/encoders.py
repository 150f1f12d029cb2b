"""Encoders under study: the embedding a gate learns to sonify (DESIGN.md §4).

A registry (``@register_encoder("name")``) of small classes, one per model, as in fadtk/kadtk's
loaders. Each loads with transformers from a hub id (through :mod:`sonieval.models.weights`, which
gives one clear line when the weights are not cached and there is no network) or from a local
``save_pretrained`` folder (e.g. the output of ``sonieval finetune``). ``size: small`` builds a
randomly initialised small config of the same architecture with the same patch/convolution
geometry, so the embedding's token count is the real one; ``Encoder.random_init`` says so.

- ``ast``: AST patch embeddings [1212, 768] for 5 s: the ASTFeatureExtractor's Kaldi fbank
  ([1024 frames, 128 mel bins], 16 kHz, AudioSet normalisation) through
  ``ASTModel.embeddings.patch_embeddings`` only: Conv2d 16×16, stride 10 over (128 freq × 1024 time)
  → [768, 12, 101] flattened frequency-major (token = f·101 + t). No cls/distillation tokens, no
  position embeddings (the reference work's choice, thesis §3.0.2). Only ~49 of the 101 time
  columns hold the 5 s clip; the rest see the fbank's zero padding.
- ``hubert``: HuBERT features before masking and the encoder, [249, 768] for 5 s (≈50 Hz):
  ``feature_extractor`` (7 conv layers) then ``feature_projection`` (LayerNorm when the config has
  ``feat_proj_layer_norm``, Linear 512 → 768, dropout). In transformers 5.x HuBERT's
  ``feature_projection`` returns one tensor; wav2vec 2.0's returns (hidden, normed features).
- ``wav2vec2``: the same cut for wav2vec 2.0 (proof that another encoder is one small class).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch

from sonieval.audio import ENCODER_RATE
from sonieval.errors import SonievalError, WeightsUnavailable
from sonieval.models import weights
from sonieval.models.gates import TimeAxis

ENCODERS: dict[str, type["Encoder"]] = {}


class EncoderError(SonievalError):
    """Bad input to an encoder or an unusable encoder checkpoint."""


def register_encoder(name: str) -> Callable[[type["Encoder"]], type["Encoder"]]:
    """Class decorator: make an encoder available under ``encoders[i].name`` in protocols."""

    def wrap(cls: type["Encoder"]) -> type["Encoder"]:
        cls.name = name
        ENCODERS[name] = cls
        return cls

    return wrap


class Encoder:
    """An embedding model: ``embed(audio [B, n] at 16 kHz) -> [B, T, D]``."""

    name: str = ""
    default_model_id: str = ""
    sample_rate: int = ENCODER_RATE

    def __init__(self, model_id: str, random_init: bool, device: str | torch.device = "cpu"):
        self.model_id = model_id
        self.random_init = random_init
        self.device = torch.device(device)

    def embedding_shape(self, n_samples: int) -> tuple[int, int]:
        raise NotImplementedError

    def time_axis(self, n_samples: int) -> TimeAxis:
        """Where the embedding's frames sit in time (for the gates' ``grid`` alignment)."""
        raise NotImplementedError

    def _embed(self, audio: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"encoder": self.name, "model_id": self.model_id, "random_init": self.random_init}

    @torch.no_grad()
    def embed(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, n] (or [n]) float audio at 16 kHz → embeddings [B, T, D] (float32, on the CPU)."""
        audio = torch.as_tensor(audio, dtype=torch.float32)
        if audio.ndim == 1:
            audio = audio[None]
        if audio.ndim != 2 or audio.shape[-1] == 0:
            raise EncoderError(f"{self.name}.embed: expected audio [batch, samples] at {self.sample_rate} Hz, "
                               f"got shape {tuple(audio.shape)}")
        if not torch.isfinite(audio).all():
            raise EncoderError(f"{self.name}.embed: audio contains NaN or infinite samples")
        return self._embed(audio).float().cpu()


# ----------------------------------------------------------------------------- transformers models


class TransformersEncoder(Encoder):
    """Shared loading for transformers models: local folder, hub id (cached) or small random config."""

    model_class_name: str = ""
    # Weight-name prefixes (in the base model) of the modules the embedding is computed with.
    embedding_modules: tuple[str, ...] = ()

    @classmethod
    def small_config(cls):
        raise NotImplementedError

    @classmethod
    def load(cls, spec, device: str = "cpu", *, setting: str = "encoders[i].model") -> "TransformersEncoder":
        import transformers

        model_cls = getattr(transformers, cls.model_class_name)
        source = getattr(spec, "finetuned", None) or getattr(spec, "model", None)
        if getattr(spec, "size", "full") == "small" and not getattr(spec, "finetuned", None):
            torch.manual_seed(0)
            model = model_cls(cls.small_config())
            folder, model_id, random_init = None, f"{cls.name}-small-random", True
        else:
            model_id = source or cls.default_model_id
            local = Path(os.path.expanduser(model_id))
            if local.exists() or model_id.startswith((".", "/", "~")):
                if not (local / "config.json").is_file():
                    raise WeightsUnavailable(f"{setting}: not a save_pretrained folder (no config.json)", path=local,
                                             hint="give a folder written by save_pretrained (e.g. by `sonieval finetune`) or a hub id")
                folder = local
            else:
                folder = weights.hub_snapshot(model_id, what=f"{cls.name} encoder", setting=setting)
            try:
                model, loading = model_cls.from_pretrained(folder, output_loading_info=True)
            except Exception as exc:
                raise EncoderError(f"cannot load a {cls.model_class_name} from it ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0][:140] if str(exc) else ''})", path=folder,
                                   hint=f"is it a {cls.name} checkpoint?") from None
            # transformers fills missing weights with random ones and only logs it: refuse that for the
            # modules the embedding is made of (other parts, e.g. a classifier head, may differ).
            missing = [k for k in loading.get("missing_keys", []) if k.startswith(cls.embedding_modules)]
            if missing:
                raise EncoderError(f"checkpoint lacks {len(missing)} weight(s) the {cls.name} embedding needs, "
                                   f"e.g. {missing[0]!r}", path=folder,
                                   hint=f"is it a {cls.name} checkpoint? (they would be random otherwise)")
            random_init = False
        enc = cls(model, folder, model_id=model_id, random_init=random_init, device=device)
        return enc

    def __init__(self, model, folder: Path | None, *, model_id: str, random_init: bool, device="cpu"):
        super().__init__(model_id, random_init, device)
        self.config = model.config
        self.feature_extractor = self.feature_extractor_for(model.config, folder)
        self._keep(model.to(self.device).eval())

    @classmethod
    def feature_extractor_for(cls, config, folder: Path | None):
        """The model's feature extractor: the folder's preprocessor_config.json, else the published defaults."""
        raise NotImplementedError

    def _keep(self, model) -> None:
        """Keep only the modules the embedding needs (the rest is freed)."""
        raise NotImplementedError


def _load_feature_extractor(cls_name: str, folder: Path | None, **defaults):
    import transformers

    fe_cls = getattr(transformers, cls_name)
    if folder is not None and (Path(folder) / "preprocessor_config.json").is_file():
        return fe_cls.from_pretrained(folder)
    return fe_cls(**defaults)


@register_encoder("ast")
class ASTEncoder(TransformersEncoder):
    """AST patch embeddings [1212, 768] (frequency-major 12 × 101 patch grid) for 5 s."""

    default_model_id = "MIT/ast-finetuned-audioset-10-10-0.4593"
    model_class_name = "ASTModel"
    embedding_modules = ("embeddings.patch_embeddings.",)

    @classmethod
    def small_config(cls):
        from transformers import ASTConfig

        # Real patch geometry (16×16 patches, stride 10, 128 mel bins, 1024 frames → 12 × 101 patches);
        # only the width and depth are small.
        return ASTConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,
                         patch_size=16, frequency_stride=10, time_stride=10, max_length=1024, num_mel_bins=128)

    @classmethod
    def feature_extractor_for(cls, config, folder):
        return _load_feature_extractor("ASTFeatureExtractor", folder, num_mel_bins=config.num_mel_bins,
                                       max_length=config.max_length)

    def _keep(self, model) -> None:
        self.patch_embeddings = model.embeddings.patch_embeddings

    @property
    def patch_grid(self) -> tuple[int, int]:
        c = self.config
        f = (c.num_mel_bins - c.patch_size) // c.frequency_stride + 1
        t = (c.max_length - c.patch_size) // c.time_stride + 1
        return f, t

    def embedding_shape(self, n_samples: int) -> tuple[int, int]:
        f, t = self.patch_grid
        return f * t, self.config.hidden_size  # AST pads/truncates every input to max_length frames

    def time_axis(self, n_samples: int) -> TimeAxis:
        c = self.config
        frame_s = 0.010  # Kaldi fbank: 25 ms windows every 10 ms
        return TimeAxis(self.patch_grid, c.time_stride * frame_s, (c.patch_size - 1) / 2 * frame_s + 0.0125)

    def fbank(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, n] at 16 kHz → normalised fbank [B, max_length, num_mel_bins] (ASTFeatureExtractor)."""
        feats = self.feature_extractor([a.numpy() for a in audio], sampling_rate=self.sample_rate, return_tensors="pt")
        return feats["input_values"]

    def _embed(self, audio: torch.Tensor) -> torch.Tensor:
        return self.patch_embeddings(self.fbank(audio).to(self.device))


@register_encoder("hubert")
class HubertEncoder(TransformersEncoder):
    """HuBERT features before masking and the transformer encoder, [249, 768] for 5 s (≈50 Hz)."""

    default_model_id = "facebook/hubert-base-ls960"
    model_class_name = "HubertModel"
    embedding_modules = ("feature_extractor.", "feature_projection.")

    @classmethod
    def small_config(cls):
        from transformers import HubertConfig

        # Real convolution geometry (kernels 10,3,3,3,3,2,2; strides 5,2,2,2,2,2,2: hop 320); narrow.
        return HubertConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,
                            conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)

    @classmethod
    def feature_extractor_for(cls, config, folder):
        # facebook/hubert-base-ls960 was trained on raw (not normalised) waveforms.
        return _load_feature_extractor("Wav2Vec2FeatureExtractor", folder, feature_size=1,
                                       sampling_rate=ENCODER_RATE, padding_value=0.0, do_normalize=False,
                                       return_attention_mask=False)

    def _keep(self, model) -> None:
        self.conv_features = model.feature_extractor
        self.feature_projection = model.feature_projection

    def _frames(self, n_samples: int) -> int:
        n = n_samples
        for k, s in zip(self.config.conv_kernel, self.config.conv_stride):
            n = (n - k) // s + 1
        return n

    def embedding_shape(self, n_samples: int) -> tuple[int, int]:
        return self._frames(n_samples), self.config.hidden_size

    def time_axis(self, n_samples: int) -> TimeAxis:
        hop, field = 1, 1
        for k, s in zip(self.config.conv_kernel, self.config.conv_stride):
            field += (k - 1) * hop
            hop *= s
        return TimeAxis((1, self._frames(n_samples)), hop / self.sample_rate, field / 2 / self.sample_rate)

    def _embed(self, audio: torch.Tensor) -> torch.Tensor:
        values = self.feature_extractor([a.numpy() for a in audio], sampling_rate=self.sample_rate,
                                        return_tensors="pt")["input_values"].to(self.device)
        features = self.conv_features(values).transpose(1, 2)
        projected = self.feature_projection(features)
        return projected[0] if isinstance(projected, tuple) else projected


@register_encoder("wav2vec2")
class Wav2Vec2Encoder(HubertEncoder):
    """wav2vec 2.0 features before masking and the encoder, [249, 768] for 5 s."""

    default_model_id = "facebook/wav2vec2-base"
    model_class_name = "Wav2Vec2Model"

    @classmethod
    def small_config(cls):
        from transformers import Wav2Vec2Config

        return Wav2Vec2Config(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,
                              conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)

    @classmethod
    def feature_extractor_for(cls, config, folder):
        # wav2vec 2.0 base expects zero-mean, unit-variance input (its published preprocessor config).
        return _load_feature_extractor("Wav2Vec2FeatureExtractor", folder, feature_size=1,
                                       sampling_rate=ENCODER_RATE, padding_value=0.0, do_normalize=True,
                                       return_attention_mask=False)


def encoder_class(name: str) -> type[Encoder]:
    try:
        return ENCODERS[name]
    except KeyError:
        raise EncoderError(f"encoders[].name: unknown encoder {name!r}; registered: {', '.join(sorted(ENCODERS))}") from None


def load_encoder(spec, device: str = "cpu") -> Encoder:
    """Build the encoder a protocol's ``encoders[i]`` entry names (sonieval.protocol.EncoderSpec)."""
    return encoder_class(spec.name).load(spec, device=device)
