"""Embedding backends for the metrics, one small class each behind a registry, plus a cache.

An embedding is named by a *spec* string ``name[:source]``:

- ``logmel`` - the built-in, weight-free log-mel embedding (:class:`LogMelEmbedding`): works
  offline, the default of the demo and the tests, and labelled ``weight-free`` in every output;
- ``ast``, ``hubert``, ``wavlm``, ``clap`` - transformers encoders: the encoders whose card in
  :mod:`sonieval.models.catalogue` names a ``metric_embedding`` (a test keeps the two lists equal).
  ``source`` is a hub id or a local ``save_pretrained`` folder (default: the card's hub id), or
  ``small`` for a randomly initialised small configuration (labelled ``random-init``);
- ``kadtk:<model>`` - kadtk 1.1.0's loaders (``panns-cnn14-16k``, ``panns-cnn14-32k``,
  ``panns-wavegram-logmel``, ``vggish``, ``clap-laion-audio``, ``clap-laion-music``,
  ``openl3-mel256-env``, ...), imported lazily, with kadtk's process-wide
  ``warnings.filterwarnings("ignore")`` undone after import.

Every backend's :attr:`EmbeddingBackend.embedding_id` carries its weights label, e.g.
``logmel[weight-free]``, ``hubert:small[random-init]``, ``kadtk:panns-cnn14-16k[pretrained]``;
that id is what the scores tables' ``embedding`` column holds.

Extraction (:func:`embed_files`) is batched (clips of equal length share a forward pass; kadtk
itself runs one file per pass), shows a progress bar, and is cached per file under
``<cache>/metric_embeddings/<backend key>/`` keyed by the audio file's SHA-256 *content* hash plus
the backend's id, version and parameters (kadtk/fadtk key by directory, which goes stale when
files change).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sonieval.audio import ENCODER_RATE, read_audio
from sonieval.errors import SonievalError, WeightsUnavailable
from sonieval.files import atomic_path, sha256_file
from sonieval.logmel import LogMel
from sonieval.models.catalogue import encoder_card
from sonieval.results_layout import CacheLayout

DEFAULT_EMBEDDING = "logmel"


class EmbeddingError(SonievalError):
    """An embedding spec that names no backend, or a backend that cannot embed."""


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[[str | None], EmbeddingBackend]] = {}


def register_embedding(name: str):
    """Class decorator: ``@register_embedding("logmel")``; the class takes ``source`` (or None)."""

    def deco(cls):
        _REGISTRY[name] = cls
        return cls

    return deco


def available_embeddings() -> list[str]:
    return sorted(_REGISTRY) + ["kadtk:<model>"]


def load_embedding(spec: str, *, device: str = "cpu") -> EmbeddingBackend:
    """Build the backend a spec names (``logmel``, ``hubert:small``, ``kadtk:vggish``, ...)."""
    spec = spec.strip()
    if spec.startswith("kadtk:"):
        return KadtkEmbedding(spec[len("kadtk:") :], device=device)
    name, _, source = spec.partition(":")
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        did = f" (did you mean {close[0]!r}?)" if close else ""
        raise EmbeddingError(f"unknown embedding {spec!r}{did}", hint=f"available: {', '.join(available_embeddings())}")
    backend = _REGISTRY[name](source or None)
    backend.device = device
    return backend


# --------------------------------------------------------------------------- base


class EmbeddingBackend:
    """One embedding model: audio at ``sample_rate`` -> frames ``[n_frames, dim]`` per clip."""

    name: str = ""
    version: str = "1"
    sample_rate: int = ENCODER_RATE
    batch_size: int = 16
    weights: str = "pretrained"  # weight-free | random-init | pretrained | local
    source: str | None = None
    device: str = "cpu"

    @property
    def embedding_id(self) -> str:
        base = self.name if not self.source else f"{self.name}:{self.source}"
        return f"{base}[{self.weights}]"

    def params(self) -> dict:
        """Everything that changes the output (part of the cache key and the provenance)."""
        return {"sample_rate": self.sample_rate}

    def provenance(self) -> dict:
        return {"embedding": self.embedding_id, "version": self.version, "weights": self.weights, **self.params()}

    def embed_batch(self, batch: list[np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def cache_key(self) -> str:
        text = json.dumps({"id": self.embedding_id, "version": self.version, **self.params()}, sort_keys=True)
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.embedding_id).strip("_")[:60]
        return f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


# --------------------------------------------------------------------------- logmel


@register_embedding("logmel")
class LogMelEmbedding(EmbeddingBackend):
    """Weight-free frame-level log-mel embedding (the default; needs no download).

    The frames of :class:`sonieval.logmel.LogMel` (on the ground floor: the study's familiarisation reads
    them too): 16 kHz mono; |STFT|^2 with a periodic Hann window of ``n_fft = 1024`` samples (64 ms), hop
    320 samples (20 ms, 50 frames/s), ``center=True`` with zero padding (5 s -> 251 frames);
    ``n_mels = 64`` Slaney-normalised mel filters (librosa ``filters.mel``, ``htk=False``)
    from ``fmin = 50`` to ``fmax = 8000`` Hz; ``log(mel + 1e-6)`` (natural log). One 64-d vector
    per frame.
    """

    name = "logmel"
    version = "1"
    weights = "weight-free"
    batch_size = 32
    n_fft = LogMel.n_fft
    hop_length = LogMel.hop_length
    n_mels = LogMel.n_mels
    fmin = LogMel.fmin
    fmax = LogMel.fmax
    log_offset = LogMel.log_offset

    def __init__(self, source: str | None = None):
        if source:
            raise EmbeddingError(f"embedding 'logmel' takes no source, got {source!r}", hint="write just 'logmel'")
        self._transform = LogMel()

    def params(self) -> dict:
        return {
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "hop_length": self.hop_length,
            "n_mels": self.n_mels,
            "fmin": self.fmin,
            "fmax": self.fmax,
            "log_offset": self.log_offset,
            "window": "hann",
            "center": True,
            "mel_norm": "slaney",
        }

    def log_mel(self, audio: np.ndarray) -> np.ndarray:
        """[n] or [B, n] float32 audio -> [(B,) n_frames, n_mels] log-mel frames."""
        return self._transform(audio)

    def embed_batch(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        return list(self.log_mel(np.stack(batch)))


# --------------------------------------------------------------------------- transformers


class TransformersEmbedding(EmbeddingBackend):
    """A transformers audio encoder; frames = last hidden states (one row per token/frame).

    ``source``: hub id (default :attr:`hub_id`), local ``save_pretrained`` folder, or ``small``
    (a random small configuration, seed 0). A local folder whose config sets
    ``sonieval_random_init: true`` is labelled ``random-init``.

    Loading, the small configuration and the feature extractor (the checkpoint's own
    ``preprocessor_config.json``, e.g. HuBERT's ``do_normalize``) are those of the encoder of the same
    name in :mod:`sonieval.models.encoders`, so a gate's encoder and a metric's embedding feed the
    model the same input for the same clip.
    """

    batch_size = 4
    version = "2"  # 2: the encoders' loader and feature extractor (HuBERT/WavLM no longer always normalised)

    def __init__(self, source: str | None = None):
        self.source = source
        self._model = None
        self._extractor = None
        if source == "small":
            self.weights = "random-init"
        elif source and Path(source).is_dir():
            cfg = Path(source) / "config.json"
            flagged = cfg.is_file() and json.loads(cfg.read_text()).get("sonieval_random_init", False)
            self.weights = "random-init" if flagged else "local"
        else:
            self.weights = "pretrained"

    @property
    def hub_id(self) -> str:
        """The published weights: the hub id on this encoder's catalogue card (declared once, there)."""
        card = encoder_card(self.name)
        return card.hub_id if card is not None and card.hub_id else ""

    def params(self) -> dict:
        return {"sample_rate": self.sample_rate, "model": self.source or self.hub_id, "output": "last_hidden_state"}

    def encoder_class(self):
        """The sonieval.models.encoders class this backend shares its loading with."""
        from sonieval.models.encoders import encoder_class

        return encoder_class(self.name)

    def _small_model(self):
        import transformers

        enc = self.encoder_class()
        return getattr(transformers, enc.model_class_name)(enc.small_config())

    def _feature_extractor(self, config, folder: Path | None):
        return self.encoder_class().feature_extractor_for(config, folder)

    def load(self):
        if self._model is not None:
            return self._model
        import torch

        from sonieval.models.encoders import EncoderError, load_pretrained

        folder = None
        if self.source == "small":
            torch.manual_seed(0)
            self._model = self._small_model()
        else:
            where = self.source or self.hub_id
            try:
                self._model, folder, missing = load_pretrained(
                    self.encoder_class().model_class_name,
                    where,
                    what=self.name,
                    setting=f"embedding '{self.name}:<source>'",
                    checkpoint_of=self.name,
                )
            except EncoderError as exc:
                raise EmbeddingError(exc.problem, path=exc.path, hint=exc.hint) from None
            n_params = len(self._model.state_dict())
            if len(missing) > 0.1 * n_params:
                # transformers would otherwise run a mostly randomly initialised model, silently
                raise EmbeddingError(
                    f"{where!r}: {len(missing)} of {n_params} {self.name} weights are missing from the checkpoint",
                    hint=f"give a complete {self.name} checkpoint",
                )
        self._extractor = self._feature_extractor(self._model.config, folder)
        self._model.eval().to(self.device)
        return self._model


@register_embedding("hubert")
class HubertEmbedding(TransformersEmbedding):
    """HuBERT (transformers ``HubertModel``) last hidden states, ~50 frames/s at 16 kHz."""

    name = "hubert"

    def model_input(self, batch: list[np.ndarray]):
        """What the model is fed for a batch: the feature extractor's ``input_values`` (normalised
        only when the checkpoint's config says ``do_normalize``)."""
        self.load()
        return self._extractor(list(batch), sampling_rate=self.sample_rate, return_tensors="pt")["input_values"]

    def embed_batch(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        model = self.load()
        x = self.model_input(batch).to(self.device)
        with torch.no_grad():
            h = model(x).last_hidden_state
        return [a for a in h.float().cpu().numpy()]


@register_embedding("wavlm")
class WavLMEmbedding(HubertEmbedding):
    """WavLM (transformers ``WavLMModel``) last hidden states, ~50 frames/s at 16 kHz."""

    name = "wavlm"


@register_embedding("ast")
class AstEmbedding(TransformersEmbedding):
    """AST (transformers ``ASTModel``) last hidden states of the 1212 patch tokens (cls and
    distillation tokens dropped); input: ``ASTFeatureExtractor`` 128-bin fbank, 1024 frames."""

    name = "ast"

    def embed_batch(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        model = self.load()
        feats = self._extractor(list(batch), sampling_rate=self.sample_rate, return_tensors="pt")
        with torch.no_grad():
            h = model(feats["input_values"].to(self.device)).last_hidden_state[:, 2:]
        return [a for a in h.float().cpu().numpy()]


@register_embedding("clap")
class ClapEmbedding(TransformersEmbedding):
    """CLAP audio tower (transformers ``ClapModel.get_audio_features``): one 512-d projected
    embedding per clip (48 kHz input). Clip-level: KAD works on sets of clips; FAD needs more
    clips than dimensions."""

    name = "clap"
    sample_rate = 48_000

    def embed_batch(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        model = self.load()
        feats = self._extractor(list(batch), sampling_rate=self.sample_rate, return_tensors="pt")
        with torch.no_grad():
            out = model.get_audio_features(input_features=feats["input_features"].to(self.device))
        out = getattr(out, "pooler_output", out)
        return [a[None] for a in out.float().cpu().numpy()]


# --------------------------------------------------------------------------- kadtk

# kadtk model name -> (class name in kadtk.model_loader, constructor kwargs)
KADTK_MODELS: dict[str, tuple[str, dict]] = {
    "panns-cnn14-16k": ("PANNsModel", {"variant": "cnn14-16k"}),
    "panns-cnn14-32k": ("PANNsModel", {"variant": "cnn14-32k"}),
    "panns-wavegram-logmel": ("PANNsModel", {"variant": "wavegram-logmel"}),
    "vggish": ("VGGishModel", {}),
    "clap-laion-audio": ("CLAPLaionModel", {"type": "audio"}),
    "clap-laion-music": ("CLAPLaionModel", {"type": "music"}),
    "clap-2023": ("CLAPModel", {"type": "2023"}),
    "openl3-mel256-env": ("OpenL3Model", {"variant": "mel256-env"}),
    "openl3-mel128-env": ("OpenL3Model", {"variant": "mel128-env"}),
    "encodec-emb": ("EncodecEmbModel", {"variant": "24k"}),
    "dac-44kHz": ("DACModel", {}),
}


def import_kadtk():
    """Import kadtk without letting it silence every warning of the process."""
    saved = warnings.filters[:]
    try:
        import kadtk  # noqa: F401  (its modules call warnings.filterwarnings("ignore"))
        import kadtk.model_loader as model_loader
    except ImportError as exc:
        raise EmbeddingError(
            f"kadtk is not importable ({exc})",
            hint="pip install --no-deps kadtk==1.1.0 (its declared pins contradict "
            "the stack; see requirements/nodeps.txt)",
        ) from None
    finally:
        warnings.filters[:] = saved
        warnings._filters_mutated()  # type: ignore[attr-defined]  # invalidate cached decisions
    return model_loader


class KadtkEmbedding(EmbeddingBackend):
    """A kadtk 1.1.0 model loader behind our interface (weights as kadtk downloads them).

    PANNs run batched through the network directly (kadtk's own ``PANNsModel._get_embedding``
    returns an undefined name in 1.1.0); the others go through kadtk's ``_get_embedding`` one
    clip at a time, as kadtk does.
    """

    batch_size = 8
    weights = "pretrained"

    def __init__(self, model: str, device: str = "cpu"):
        if model not in KADTK_MODELS:
            import difflib

            close = difflib.get_close_matches(model, list(KADTK_MODELS), n=1)
            did = f" (did you mean 'kadtk:{close[0]}'?)" if close else ""
            raise EmbeddingError(f"unknown kadtk model {model!r}{did}", hint=f"available: {', '.join(KADTK_MODELS)}")
        self.model_name = model
        self.name = f"kadtk:{model}"
        self.source = None
        self.device = device
        self._loader = None
        self.version = "kadtk-1.1.0"

    @property
    def embedding_id(self) -> str:
        return f"{self.name}[{self.weights}]"

    def params(self) -> dict:
        return {"sample_rate": self.sample_rate, "kadtk_model": self.model_name}

    def _build(self):
        class_name, kwargs = KADTK_MODELS[self.model_name]
        ml = getattr(import_kadtk(), class_name)(**kwargs)
        self.sample_rate = int(ml.sr)
        return ml

    @property
    def sample_rate(self) -> int:  # type: ignore[override]
        return getattr(self, "_sr", None) or (self._build_sr())

    @sample_rate.setter
    def sample_rate(self, value: int) -> None:
        self._sr = value

    def _build_sr(self) -> int:
        # known without importing kadtk, so that the cache key needs no model
        variant = KADTK_MODELS[self.model_name][1]
        rates = {
            "PANNsModel": 16000 if variant.get("variant") == "cnn14-16k" else 32000,
            "VGGishModel": 16000,
            "CLAPLaionModel": 48000,
            "CLAPModel": 44100,
            "OpenL3Model": 48000,
            "EncodecEmbModel": 24000,
            "DACModel": 44100,
        }
        return rates[KADTK_MODELS[self.model_name][0]]

    def weights_file(self) -> Path | None:
        """Where kadtk keeps this model's checkpoint, when it is a known file (PANNs)."""
        class_name, kwargs = KADTK_MODELS[self.model_name]
        if class_name == "PANNsModel":
            names = {
                "cnn14-32k": "Cnn14_mAP=0.431.pth",
                "cnn14-16k": "Cnn14_16k_mAP=0.438.pth",
                "wavegram-logmel": "Wavegram_Logmel_Cnn14_mAP=0.439.pth",
            }
            import importlib.util

            spec = importlib.util.find_spec("kadtk")
            if spec is None or not spec.submodule_search_locations:
                return None
            root = Path(list(spec.submodule_search_locations)[0])
            return root / ".model-checkpoints" / names[kwargs["variant"]]
        return None

    def load(self):
        if self._loader is not None:
            return self._loader
        wf = self.weights_file()
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("SONIEVAL_OFFLINE") == "1"
        if offline and (wf is None or not wf.is_file()):
            raise WeightsUnavailable(
                f"{self.name}: pretrained weights are not cached and downloads are off (offline mode)",
                hint=f"run once with network access{f' (kadtk stores them at {wf})' if wf else ''}, "
                "or use the weight-free 'logmel' embedding",
            )
        saved = warnings.filters[:]
        try:
            # some kadtk loaders download in their constructor (CLAP), the others in load_model
            ml = self._build()
            ml.load_model()
        except Exception as exc:  # noqa: BLE001 - kadtk raises whatever its downloader raises
            raise WeightsUnavailable(
                f"{self.name}: cannot load pretrained weights ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})",
                hint="check network access or the kadtk checkpoint folder, or use the weight-free 'logmel' embedding",
            ) from None
        finally:
            warnings.filters[:] = saved
        self._loader = ml
        return ml

    def embed_batch(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        ml = self.load()
        if KADTK_MODELS[self.model_name][0] == "PANNsModel":
            x = torch.from_numpy(np.stack(batch)).float().to(ml.device)
            with torch.no_grad():
                out = ml.model.forward(x)
            emb = out["2048"] if "cnn14" in ml.variant else out["embedding"]
            return [e[None] for e in emb.float().cpu().numpy()]
        frames = []
        for audio in batch:
            e = np.asarray(ml.get_embedding(audio.astype(np.float32)), dtype=np.float32)
            frames.append(e.reshape(-1, e.shape[-1]))
        return frames


# --------------------------------------------------------------------------- cache + extraction


class EmbeddingCache:
    """Per-file embeddings under ``root/<backend key>/<sha[:2]>/<sha>.npy`` (content-addressed)."""

    def __init__(self, root: str | os.PathLike):
        self.root = CacheLayout(Path(root)).metric_embeddings

    def path(self, backend: EmbeddingBackend, content_sha256: str) -> Path:
        return self.root / backend.cache_key() / content_sha256[:2] / f"{content_sha256}.npy"

    def get(self, backend: EmbeddingBackend, content_sha256: str) -> np.ndarray | None:
        p = self.path(backend, content_sha256)
        if not p.is_file():
            return None
        try:
            return np.load(p)
        except (OSError, ValueError):
            return None  # a damaged entry is recomputed

    def put(self, backend: EmbeddingBackend, content_sha256: str, frames: np.ndarray) -> None:
        p = self.path(backend, content_sha256)
        with atomic_path(p) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, frames)
        meta = p.parent.parent / "embedding.json"
        if not meta.exists():
            with atomic_path(meta) as tmp:
                tmp.write_text(json.dumps(backend.provenance(), indent=1, default=str))


@dataclass
class Extraction:
    """Frames per input path, and one error line per path that failed."""

    frames: dict[str, np.ndarray] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    from_cache: int = 0


class _LengthBatches:
    """Clips waiting to be embedded, batched by length (no padding changes any clip's frames)."""

    def __init__(self, backend: EmbeddingBackend, cache: EmbeddingCache | None, result: Extraction, bar) -> None:
        self.backend, self.cache, self.result, self.bar = backend, cache, result, bar
        self.pending: dict[int, list[tuple[str, str, np.ndarray]]] = {}

    def add(self, path: str, sha: str, audio: np.ndarray, batch_size: int) -> None:
        items = self.pending.setdefault(len(audio), [])
        items.append((path, sha, audio))
        if len(items) >= batch_size:
            self.flush(len(audio))

    def flush_all(self) -> None:
        for length in list(self.pending):
            self.flush(length)

    def flush(self, length: int) -> None:
        items = self.pending.pop(length, [])
        if not items:
            return
        try:
            out = self.backend.embed_batch([a for _, _, a in items])
        except SonievalError as exc:
            for p, _, _ in items:
                self.result.errors[p] = str(exc)
            self.bar.update(len(items))
            if isinstance(exc, WeightsUnavailable):
                raise
            return
        for (p, sha, _), frames in zip(items, out):
            self._keep(p, sha, np.ascontiguousarray(frames, dtype=np.float32))
        self.bar.update(len(items))

    def _keep(self, path: str, sha: str, frames: np.ndarray) -> None:
        if frames.ndim != 2 or not np.all(np.isfinite(frames)):
            self.result.errors[path] = (
                f"{path}: embedding {self.backend.embedding_id} gave non-finite or malformed frames"
            )
            return
        if self.cache is not None:
            self.cache.put(self.backend, sha, frames)
        self.result.frames[path] = frames


def _cached_or_audio(backend, cache, path: str, result: Extraction) -> tuple[str, np.ndarray] | None:
    """(sha256, audio) of a file still to embed; None when it came from the cache or failed (recorded)."""
    try:
        sha = sha256_file(path)
    except OSError as exc:
        result.errors[path] = f"{path}: cannot read file ({exc.strerror})"
        return None
    cached = cache.get(backend, sha) if cache is not None else None
    if cached is not None:
        result.frames[path] = cached
        result.from_cache += 1
        return None
    try:
        audio, _, _ = read_audio(path, backend.sample_rate)
    except SonievalError as exc:
        result.errors[path] = str(exc)
        return None
    return sha, audio


def embed_files(
    backend: EmbeddingBackend,
    paths: Iterable[str | os.PathLike],
    *,
    cache: EmbeddingCache | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> Extraction:
    """Embed audio files in batches; a file that fails is recorded and the others go on.

    Files are read at the backend's rate (mixed down to mono, not padded); clips of equal length
    are batched together so that no padding changes any clip's frames.
    """
    from tqdm.auto import tqdm

    result = Extraction()
    unique = list(dict.fromkeys(os.fspath(p) for p in paths))
    bar = tqdm(
        total=len(unique),
        desc=desc or f"embed {backend.embedding_id}",
        unit="clip",
        disable=not progress or len(unique) < 2,
        leave=False,
    )
    batches = _LengthBatches(backend, cache, result, bar)
    for p in unique:
        todo = _cached_or_audio(backend, cache, p, result)
        if todo is None:
            bar.update(1)
            continue
        batches.add(p, *todo, batch_size or backend.batch_size)
    batches.flush_all()
    bar.close()
    return result
