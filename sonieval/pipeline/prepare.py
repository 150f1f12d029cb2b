"""The ``prepare`` stage: encoder embeddings and codec latents, computed once into a cache.

For every usable clip of the clips table (``tables/clips.parquet``: splits train and
validation for training, the listening set for sonify) and every encoder of the protocol,
the embedding ``[T, D]`` at each layer the encoder's ``layer`` names (``input``, block k, a list,
``all``; :mod:`sonieval.models.layers`); and for the same clips the codec latent ``[C, T']`` (the
DAC-VAE posterior mean, the gate's training target and the codec-reconstruction ceiling).

Cache layout (``<cache>`` = ``proto.cache_path``)::

    <cache>/embeddings/<model_key>[@layer<k>]/<clip_sha256>.npy   float16
    <cache>/embeddings/<model_key>[@layer<k>]/encoder.json        provenance, the layer's time axis
    <cache>/latents/<model_key>/<clip_sha256>.npy                 float32

Each layer has its own folder (``layer_model_key``: the bare ``model_key`` for ``input``, so caches
written before layers existed stay valid). All the layers a clip still lacks come from **one**
forward pass of the batch (``Encoder.embed_layers``: hidden states reused, the forward stopped after
the deepest one asked for); a later run asking for more layers computes only the missing ones.

``model_key`` names the model (registry name, a slug and hash of the hub id or local
folder -- the encoder's ``cache_ident``: with a random model's seed and a chosen frame hop, e.g. crepe's --,
``-random`` for random weights, the clip length), so a cache entry is keyed by the
clip's *content* and the model that made it: a random twin (``encoders[i].twin``) never shares a folder
with its pretrained encoder, nor two seeds or two hops one folder; a changed file or another model never reuses a
stale entry, and another results folder sharing the cache reuses it. One ``.npy`` per entry
is written atomically, so a killed run loses at most the batch in flight (resumable).

Precision: embeddings are stored as float16 (AST: 1212×768×2 B = 1.8 MB instead of 3.7 MB
per clip). float16 keeps 11 significant bits, a relative rounding error ≤ 2⁻¹¹ ≈ 4.9e-4,
far below the gate's training loss; values beyond ±65504 would overflow, so such an
embedding is refused. Latents (64×431, 110 kB) stay float32: they are the training target.

The stage writes ``tables/prepared.parquet`` (clip_id, split, listening, kind, model, layer,
model_key, path, status, error; ``layer`` is the layer label of an embedding, ``input`` or
``layer<k>``, and empty for latents), which ``train`` and ``sonify`` read through the cache's read side
(:mod:`sonieval.pipeline.cache`: they never import this stage), and records every
entry in the run ledger (stage ``prepare``, one item per clip and layer: ``embedding/<encoder
slot>/<clip_id>``, the slot as in system ids, e.g. ``hubert.layer6``, ``crepe-tiny.twin.layer3``). The
encoders are the protocol's entries and their twins (``Protocol.sonified_encoders``), each known by its
``system_name`` (``crepe-tiny``, ``crepe-tiny.twin``), the prepared table's ``model``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sonieval.engines import resolve_device, run_tasks
from sonieval.errors import DataError, SonievalError
from sonieval.files import atomic_path, sha256_file
from sonieval.ledger import BatchResult, ItemOutcome, LedgerItem, RunLedger

# The cache's read side (sonieval.pipeline.cache), re-exported here where older code imports it from.
from sonieval.pipeline.cache import (  # noqa: F401
    CODEC_INFO,
    ENCODER_INFO,
    PREPARED_COLUMNS,
    USABLE_STATUS,
    cache_file,
    clips_table_path,
    codec_from_cache,
    codec_model_key,
    encoder_layers,
    is_random_model_key,
    load_array,
    load_prepared_codec,
    model_key,
    prepared_table_path,
    read_codec_info,
    read_encoder_info,
    read_prepared,
    weights_dir,
    write_codec_info,
)
from sonieval.protocol import Protocol
from sonieval.tables import read_table, table_path_value, write_table

STAGE = "prepare"
FLOAT16_MAX = 65504.0
DEFAULT_ENCODE_BATCH = 8


def read_usable_clips(proto: Protocol) -> pd.DataFrame:
    """Clips that are readable and needed downstream (train, validation, listening set)."""
    path = clips_table_path(proto)
    if not path.exists():
        from sonieval.data.results_folder import missing_table_error

        raise missing_table_error("clips", path, proto.source)
    clips = read_table(path, "clips")
    if "listening" not in clips.columns:
        raise DataError(
            "clips table lacks column listening",
            path=path,
            hint=f"rerun `sonieval data splits {proto.source or 'PROTOCOL'}`",
        )
    clips = clips[clips["status"].astype(str).isin(USABLE_STATUS)].copy()
    clips["listening"] = clips["listening"].fillna(False).astype(bool)
    needed = clips["split"].isin(["train", "validation"]) | clips["listening"]
    return clips[needed].reset_index(drop=True)


def save_array(path: Path, array: np.ndarray, kind: str) -> None:
    if not np.all(np.isfinite(array)):
        raise SonievalError(f"{kind} has NaN or infinite values; not cached", path=path)
    if kind == "embedding":
        if np.max(np.abs(array)) > FLOAT16_MAX:
            raise SonievalError(f"embedding values exceed the float16 range (±{FLOAT16_MAX:g})", path=path)
        array = array.astype(np.float16)
    else:
        array = array.astype(np.float32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


@dataclass
class PrepareResult:
    table: pd.DataFrame
    batches: dict[str, BatchResult]

    def summary(self) -> str:
        return "; ".join(f"{name}: {res.summary('entries')}" for name, res in self.batches.items())


@dataclass(frozen=True)
class CacheTarget:
    """One output a model's forward fills the cache with: an encoder layer's embeddings or a codec's latents."""

    name: str  # in ledger keys: the encoder slot as in system ids (``hubert``, ``hubert.layer6``) or the codec
    model: str  # the prepared table's ``model``: the encoder's or codec's name
    key: str  # the cache folder (for an encoder layer: layer_model_key)
    layer: str | None = None  # the layer label of an embedding (``input``, ``layer<k>``); None for latents


# forward(audio [B, n], targets) -> one array [B, ...] per target, from one pass of the model
Forward = Callable[[np.ndarray, list[CacheTarget]], list[np.ndarray]]


def _compute_cached(
    proto: Protocol,
    ledger: RunLedger,
    clips: pd.DataFrame,
    *,
    kind: str,
    targets: list[CacheTarget],
    sample_rate: int,
    forward: Forward,
    load_model_info: dict[str, Any],
    batch_size: int,
    progress: bool,
) -> tuple[list[dict[str, Any]], BatchResult]:
    """Fill the cache for one model's targets, ``batch_size`` clips per forward; one ledger row per
    (clip, target). A clip goes through the model once for all the targets it still lacks."""
    by_clip = [(row, _clip_items(proto, row, kind, targets, load_model_info)) for row in clips.itertuples(index=False)]
    items = [it for _, its in by_clip for it in its]
    total = BatchResult()
    pending = {it.key for it in items if not ledger.is_done(STAGE, it.key, it.inputs)}
    total.skipped.extend(it.key for it in items if it.key not in pending)
    # A cache file from an earlier run (or another results folder) is reused without a forward.
    need = {
        it.key
        for it in items
        if it.key in pending and not it.payload["target"].exists() and it.payload["error"] is None
    }
    to_compute = [(row, its) for row, its in by_clip if any(it.key in need for it in its)]
    engine, tasks = _cache_tasks(
        proto,
        to_compute,
        pending,
        need,
        kind=kind,
        targets=targets,
        sample_rate=sample_rate,
        forward=forward,
        batch_size=batch_size,
    )
    _merge(
        total,
        run_tasks(
            ledger,
            STAGE,
            tasks,
            engine,
            desc=f"prepare {kind}s ({targets[0].model})",
            progress=progress,
            skip_done=False,
        ),
    )
    computed = {id(row) for row, _ in to_compute}
    rest = [it for row, its in by_clip if id(row) not in computed for it in its if it.key in pending]
    _merge(total, ledger.run_batch(STAGE, rest, lambda it: _store(it, None, kind), progress=False))

    rows = []
    for t in targets:  # the table by target, then clip
        for it in (it for _, its in by_clip for it in its if it.payload["target_spec"] == t):
            row = it.payload["row"]
            state = ledger.get(STAGE, it.key) or {}
            rows.append(
                {
                    "clip_id": row.clip_id,
                    "split": row.split,
                    "listening": bool(row.listening),
                    "kind": kind,
                    "model": t.model,
                    "layer": t.layer,
                    "model_key": t.key,
                    "path": table_path_value(it.payload["target"], proto.results_path),
                    "status": state.get("status", "failed"),
                    "error": state.get("error"),
                }
            )
    return rows, total


# The engine of the running ``run_prepare`` (sonieval.engines): it reaches the cache loop without
# changing the helpers between (prepare_encoder, cache_embeddings), which other code calls as they are.
_ENGINE: ContextVar = ContextVar("prepare_engine", default=None)
CHUNKS_PER_TASK = 8  # forward batches per Ray task: 64 clips at batch 8, seconds of a GPU per task


def _cache_tasks(
    proto: Protocol,
    to_compute: list,
    pending: set[str],
    need: set[str],
    *,
    kind: str,
    targets: list[CacheTarget],
    sample_rate: int,
    forward: Forward,
    batch_size: int,
) -> tuple[Any, list]:
    """The forward passes as tasks: on the local engine one per batch with the loaded model (recorded after
    each batch, so a kill loses at most the batch in flight); on Ray several batches per task, the worker
    loading the model once from its recipe (see ModelForward)."""
    from sonieval.engines import LocalEngine, Task

    engine = _ENGINE.get() or LocalEngine()
    recipe = getattr(forward, "recipe", None)
    if engine.name == "local" or recipe is None:
        engine, source, size = (engine if engine.name == "local" else LocalEngine()), ("here", forward), batch_size
        proto_ref, resources = proto, engine.device_resources()
    else:
        device = "auto" if engine.gpus else getattr(forward, "device", "cpu")
        # about two tasks per slot, so that every worker has clips to embed, of whole batches (the batch
        # boundaries, and so the bytes, stay those of the local engine), at most CHUNKS_PER_TASK batches
        spread = math.ceil(len(to_compute) / (2 * max(engine.slots, 1)) / batch_size) * batch_size
        source, size = ("recipe", recipe, device), max(batch_size, min(batch_size * CHUNKS_PER_TASK, spread))
        proto_ref, resources = engine.put(proto), engine.device_resources()
    tasks = []
    for start in range(0, len(to_compute), size):
        part = to_compute[start : start + size]
        items = [it for _, its in part for it in its if it.key in pending]
        mine = {it.key for _, its in part for it in its} & need
        tasks.append(
            Task(
                f"prepare {kind}s {targets[0].model} {start}",
                cache_chunk,
                items,
                (proto_ref, part, targets, mine, sample_rate, kind, batch_size, source),
                resources,
            )
        )
    return engine, tasks


def cache_chunk(
    items: list[LedgerItem],
    proto: Protocol,
    part: list,
    targets: list[CacheTarget],
    need: set[str],
    sample_rate: int,
    kind: str,
    batch_size: int,
    source: tuple,
) -> dict[str, Any]:
    """The task: forward ``part``'s clips batch by batch and write their cache entries (no ledger)."""
    from sonieval.engines import attempt, worker_memo

    if source[0] == "here":
        forward = source[1]
    else:
        _, recipe, device = source
        device = resolve_device(device)
        forward = worker_memo(
            ("forward", str(proto.results_path), recipe, device), lambda: build_forward(proto, recipe, device)
        )
    mine = {it.key for it in items}
    answer: dict[str, Any] = {}
    for start in range(0, len(part), batch_size):
        chunk = part[start : start + batch_size]
        results: dict[str, Any] = {}
        _forward_chunk(proto, chunk, targets, need, sample_rate, forward, results)
        for it in (it for _, its in chunk for it in its if it.key in mine):
            answer[it.key] = attempt(_store, it, results.pop(it.key, None), kind)
    return answer


def _clip_items(
    proto: Protocol, row, kind: str, targets: list[CacheTarget], load_model_info: dict[str, Any]
) -> list[LedgerItem]:
    """One ledger item per target for one clip, keyed by the clip's content hash."""
    try:
        sha = sha256_file(row.path)
    except OSError as exc:
        sha = f"unreadable-{row.clip_id}"
        err = f"{row.path}: cannot read file ({exc.strerror})"
    else:
        err = None
    return [
        LedgerItem(
            f"{kind}/{t.name}/{row.clip_id}",
            {"clip_sha256": sha, "model_key": t.key, **load_model_info},
            payload={"row": row, "target": cache_file(proto, kind, t.key, sha), "error": err, "target_spec": t},
        )
        for t in targets
    ]


def _forward_chunk(
    proto: Protocol,
    chunk: list[tuple[Any, list[LedgerItem]]],
    targets: list[CacheTarget],
    need: set[str],
    sample_rate: int,
    forward: Forward,
    results: dict[str, Any],
) -> None:
    """One forward of the chunk's clips for the union of the targets they lack; fills ``results``."""
    from sonieval.audio import load_clip

    audio, ok = [], []
    for row, its in chunk:
        wanted = [it for it in its if it.key in need]
        try:
            clip = load_clip(row.path, sample_rate, proto.data.clip_seconds, proto.data.length_policy)
        except SonievalError as exc:
            results.update({it.key: exc for it in wanted})
            continue
        audio.append(clip.samples)
        ok.append(wanted)
    if not ok:
        return
    needed = {it.payload["target_spec"] for wanted in ok for it in wanted}
    targets = [t for t in targets if t in needed]
    try:
        out = dict(zip(targets, forward(np.stack(audio), targets)))
    except SonievalError as exc:
        results.update({it.key: exc for wanted in ok for it in wanted})
        return
    for i, wanted in enumerate(ok):
        for it in wanted:
            results[it.key] = out[it.payload["target_spec"]][i]


def _store(item: LedgerItem, value: np.ndarray | Exception | None, kind: str) -> ItemOutcome:
    if item.payload["error"]:
        raise SonievalError(item.payload["error"])
    target: Path = item.payload["target"]
    if isinstance(value, Exception):
        raise value
    if value is None:  # reused from the cache: check it still loads
        arr = load_array(target)
        return ItemOutcome(path=target, extra={"shape": list(arr.shape), "reused": True})
    save_array(target, np.asarray(value), kind)
    return ItemOutcome(path=target, extra={"shape": list(np.shape(value))})


def _merge(total: BatchResult, res: BatchResult) -> None:
    total.done.extend(res.done)
    total.skipped.extend(res.skipped)
    total.failed.update(res.failed)


def write_encoder_info(proto: Protocol, key: str, encoder: Any, layer: Any = "input") -> Path:
    """Beside one layer's cached embeddings (folder ``key``): the encoder's provenance, the layer and its
    time axis (for the ``grid`` alignment; CLAP's grid changes from stage to stage)."""
    import json

    from sonieval.files import write_text_atomic
    from sonieval.models.layers import layer_label

    n = int(round(proto.data.clip_seconds * encoder.sample_rate))
    info: dict[str, Any] = {
        "encoder": encoder.name,
        "system_name": encoder.system_name or encoder.name,
        "cache_ident": encoder.cache_ident,
        "model_id": str(encoder.model_id),
        "random_init": bool(encoder.random_init),
        "sample_rate": encoder.sample_rate,
        "layer": layer_label(layer),
        "num_blocks": int(encoder.num_blocks),
    }
    try:
        axis = encoder.time_axis(n, layer)
        info["time_axis"] = {"grid": list(axis.grid), "hop_s": axis.hop_s, "first_center_s": axis.first_center_s}
    except NotImplementedError:
        info["time_axis"] = None
    return write_text_atomic(proto.layout.cache.model("embedding", key) / ENCODER_INFO, json.dumps(info, indent=1))


@dataclass
class ModelForward:
    """A loaded model's forward, and the recipe a worker rebuilds it from (``("encoder", name)`` or
    ``("codec", name, model id, random init)`` of the protocol): a Ray task carries the recipe, never the
    weights."""

    fn: Forward
    recipe: tuple
    device: str

    def __call__(self, batch: np.ndarray, targets: list[CacheTarget]) -> list[np.ndarray]:
        return self.fn(batch, targets)


def build_forward(proto: Protocol, recipe: tuple, device: str) -> ModelForward:
    """The forward a recipe names, loaded here (in a worker): the protocol's encoder or prepared codec."""
    if recipe[0] == "encoder":
        from sonieval.models.encoders import load_encoder

        index, spec = next((i, s) for i, s in proto.sonified_encoders() if s.system_name == recipe[1])
        return encoder_forward(load_encoder(spec, device=device, index=index), device)
    return codec_forward(codec_from_info(proto, recipe, device), device)


def encoder_forward(encoder: Any, device: str) -> ModelForward:
    """All the asked-for layers of a batch from one forward pass of the encoder."""
    import torch

    from sonieval.models.layers import parse_layer_label

    def forward(batch: np.ndarray, targets: list[CacheTarget]) -> list[np.ndarray]:
        layers = [parse_layer_label(t.layer) for t in targets]
        with torch.inference_mode():
            # CPU audio in: the encoder moves its features to its own device (its fbank runs on NumPy)
            out = encoder.embed_layers(torch.from_numpy(batch), layers)
        return [out[layer].float().cpu().numpy() for layer in layers]

    return ModelForward(forward, ("encoder", encoder.system_name or encoder.name), device)


def codec_forward(codec: Any, device: str) -> ModelForward:
    import torch

    def forward(batch: np.ndarray, targets: list[CacheTarget]) -> list[np.ndarray]:
        with torch.inference_mode():
            return [codec.encode(torch.from_numpy(batch)).float().cpu().numpy()]  # the codec moves it to its device

    return ModelForward(forward, ("codec", codec.name, str(codec.model_id), bool(codec.random_init)), device)


def codec_from_info(proto: Protocol, recipe: tuple, device: str) -> Any:
    """Codec ``name`` as this run's prepare wrote it: with the fitted state the driver stored beside its latents
    (``<cache>/latents/<key>/codec.json``) before sending any task (the cache's one load path)."""
    _, name, model_id, random_init = recipe
    key = model_key(name, model_id, random_init, proto.data.clip_seconds)  # as codec_model_key in the driver
    return codec_from_cache(proto, name, key, device=device)


def encoder_targets(proto: Protocol, encoder: Any) -> list[CacheTarget]:
    """One cache target per loaded layer of ``encoder`` (its ``encoders[i].layer`` expanded)."""
    from sonieval.models.layers import layer_label, layer_model_key
    from sonieval.tables import encoder_slot

    base = model_key(encoder.name, encoder.cache_ident, encoder.random_init, proto.data.clip_seconds)
    name = encoder.system_name or encoder.name  # as system ids name it: crepe-tiny, crepe-tiny.twin, hubert
    return [
        CacheTarget(
            encoder_slot(name, layer_label(layer)),
            name,
            layer_model_key(base, layer),
            layer_label(layer),
        )
        for layer in encoder.loaded_layers
    ]


def prepare_encoder(
    proto: Protocol,
    ledger: RunLedger,
    clips: pd.DataFrame,
    spec: Any,
    *,
    index: int | None = None,
    device: str = "cpu",
    batch_size: int = DEFAULT_ENCODE_BATCH,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], BatchResult]:
    """The embeddings of one ``encoders[index]`` entry at every layer it names, into the cache."""
    from sonieval.models.encoders import load_encoder

    encoder = load_encoder(spec, device=device, index=index)
    return cache_embeddings(proto, ledger, clips, encoder, device=device, batch_size=batch_size, progress=progress)


def cache_embeddings(
    proto: Protocol,
    ledger: RunLedger,
    clips: pd.DataFrame,
    encoder: Any,
    *,
    device: str = "cpu",
    batch_size: int = DEFAULT_ENCODE_BATCH,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], BatchResult]:
    """The embeddings of a loaded encoder at its ``loaded_layers`` for ``clips``, into the cache."""
    from sonieval.models.layers import parse_layer_label

    targets = encoder_targets(proto, encoder)
    for t in targets:
        write_encoder_info(proto, t.key, encoder, parse_layer_label(t.layer))
    info = {"model_id": str(encoder.model_id), "random_init": bool(encoder.random_init)}
    return _compute_cached(
        proto,
        ledger,
        clips,
        kind="embedding",
        targets=targets,
        sample_rate=encoder.sample_rate,
        forward=encoder_forward(encoder, device),
        load_model_info=info,
        batch_size=batch_size,
        progress=progress,
    )


def run_prepare(
    proto: Protocol,
    ledger: RunLedger,
    *,
    device: str = "auto",
    batch_size: int = DEFAULT_ENCODE_BATCH,
    progress: bool = True,
    engine: Any = None,
) -> PrepareResult:
    """Fill the embedding and latent caches for the protocol's clips, encoders and layers (resumable); the
    forward passes run as tasks on ``engine`` (sonieval.engines; default: this process)."""
    token = _ENGINE.set(engine)
    try:
        return _prepare_all(proto, ledger, device=device, batch_size=batch_size, progress=progress)
    finally:
        _ENGINE.reset(token)


def _prepare_all(
    proto: Protocol,
    ledger: RunLedger,
    *,
    device: str = "auto",
    batch_size: int = DEFAULT_ENCODE_BATCH,
    progress: bool = True,
) -> PrepareResult:
    """run_prepare's work (see there)."""
    device = resolve_device(device)
    clips = read_usable_clips(proto)
    if clips.empty:
        raise DataError(
            "no usable clips (train, validation or listening set) in the clips table",
            path=clips_table_path(proto),
            hint="check `sonieval data splits PROTOCOL`'s output",
        )
    rows: list[dict[str, Any]] = []
    batches: dict[str, BatchResult] = {}
    for i, spec in proto.sonified_encoders():  # each entry, and its random twin after it
        r, b = prepare_encoder(
            proto, ledger, clips, spec, index=i, device=device, batch_size=batch_size, progress=progress
        )
        rows += r
        batches[f"embedding/{spec.system_name}"] = b
    for spec in proto.codecs:
        codec_clips = clips_for_codec(clips, spec, proto.seed)
        codec = prepared_codec_for(proto, spec.name, codec_clips, device=device, progress=progress)
        key = codec_model_key(proto, codec)
        write_codec_info(proto, key, codec)
        info = {"model_id": str(codec.model_id), "random_init": bool(codec.random_init)}
        r, b = _compute_cached(
            proto,
            ledger,
            codec_clips,
            kind="latent",
            targets=[CacheTarget(codec.name, codec.name, key)],
            sample_rate=codec.sample_rate,
            forward=codec_forward(codec, device),
            load_model_info=info,
            batch_size=batch_size,
            progress=progress,
        )
        rows += r
        batches[f"latent/{codec.name}"] = b
        del codec
    table = pd.DataFrame(rows, columns=PREPARED_COLUMNS)
    write_table(table, prepared_table_path(proto))
    return PrepareResult(table, batches)


def clips_for_codec(clips: pd.DataFrame, spec: Any, seed: int) -> pd.DataFrame:
    """The clips a codec encodes: all of them, or with ``codec.max_train_clips`` a seeded subset of the
    train and validation clips (the same share of each) plus every listening clip. An expensive codec
    (a full-size DAC-VAE encodes 5 s in seconds on a CPU) can so train its gates on fewer pairs."""
    limit = spec.max_train_clips
    train = clips["split"] == "train"
    if limit is None or int(train.sum()) <= limit:
        return clips
    share = limit / int(train.sum())
    keep = clips["listening"].astype(bool).copy()
    rng = np.random.default_rng(seed)
    for split in ("train", "validation"):
        idx = np.flatnonzero((clips["split"] == split).to_numpy())
        n = max(2, int(round(len(idx) * share))) if len(idx) >= 2 else len(idx)
        keep.iloc[rng.choice(idx, size=min(n, len(idx)), replace=False)] = True
    return clips[keep].reset_index(drop=True)


def prepared_codec_for(
    proto: Protocol, name: str, clips: pd.DataFrame, *, device: str = "cpu", progress: bool = False
) -> Any:
    """The codec ``name`` of the protocol, ready to encode: one that learns from the data (the mel codec's
    statistics) is fitted on the train split's clips; :func:`write_codec_info` then stores its fitted state."""
    from sonieval.models.codec import load_codec

    codec = load_codec(proto.resolved_codec(name), weights_dir(), device=device)
    if codec.fits_data:
        train = clips[clips["split"] == "train"].sort_values("clip_id")
        if train.empty:
            raise DataError(
                f"the {name} codec learns from the train split's clips (its normalisation), and there are none",
                path=clips_table_path(proto),
                hint="check the protocol's data.split and `sonieval data splits PROTOCOL`",
            )
        codec.fit(_train_audio(proto, train, f"{name} codec", progress), source=f"train split ({len(train)} clips)")
    return codec


def _train_audio(proto: Protocol, train: pd.DataFrame, what: str, progress: bool) -> Iterator[np.ndarray]:
    """The train split's clips at 44.1 kHz, read once, in clip order (an unreadable one is left out: the
    latent pass records it)."""
    from tqdm.auto import tqdm

    from sonieval.audio import CODEC_RATE, load_clip

    rows = tqdm(
        train.itertuples(index=False),
        total=len(train),
        desc=f"{what}: train-split statistics",
        unit="clip",
        disable=not progress,
    )
    for row in rows:
        try:
            yield load_clip(row.path, CODEC_RATE, proto.data.clip_seconds, proto.data.length_policy).samples
        except SonievalError:
            continue
