"""The prepared-data cache, read side: what ``prepare`` wrote, as train, sonify and the workers read it.

``prepare`` (:mod:`sonieval.pipeline.prepare`) is the only writer of the cache's arrays; this module
names where its entries are and reads them back, so the stages after it never import the stage itself:

    <cache>/embeddings/<model_key>[@layer<k>]/<clip_sha256>.npy   float16 (:func:`load_array`: float32)
    <cache>/embeddings/<model_key>[@layer<k>]/encoder.json        provenance, the layer's time axis
    <cache>/latents/<model_key>/<clip_sha256>.npy                 float32
    <cache>/latents/<model_key>/codec.json                        provenance and the codec's fitted state
    <results>/tables/prepared.parquet                             one row per (clip, model, layer)

A codec's **fitted state** (what it learnt from the train split: the mel codec's per-band normalisation)
has one save path and one load path, both here: :func:`save_codec_state` stores ``codec.describe()``
beside the latents before any latent is made (prepare, :func:`write_codec_info`), and
:func:`restore_codec_state` gives it back to the codec (``Codec.load_fitted``) wherever the latents are read
back: a prepare worker (:func:`codec_from_cache`), sonify's driver and its decoding workers
(:func:`load_prepared_codec`). A codec that learns nothing (DAC-VAE, DAC) is loaded as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sonieval.errors import DataError
from sonieval.protocol import Protocol

__all__ = [
    "CODEC_INFO",
    "ENCODER_INFO",
    "PREPARED_COLUMNS",
    "USABLE_STATUS",
    "cache_file",
    "clips_table_path",
    "codec_from_cache",
    "codec_model_key",
    "encoder_layers",
    "is_random_model_key",
    "load_array",
    "load_prepared_codec",
    "model_key",
    "prepared_table_path",
    "read_codec_info",
    "read_encoder_info",
    "read_prepared",
    "restore_codec_state",
    "save_codec_state",
    "weights_dir",
    "write_codec_info",
]

PREPARED_COLUMNS = ["clip_id", "split", "listening", "kind", "model", "layer", "model_key", "path", "status", "error"]
USABLE_STATUS = ("ok", "done")  # the clips stage marks readable clips "ok", unreadable ones "failed"
ENCODER_INFO = "encoder.json"
CODEC_INFO = "codec.json"
RANDOM_MARK = "-random-"


def is_random_model_key(key: str | None) -> bool:
    """Whether a cache key made by :func:`model_key` names a randomly initialised model."""
    return bool(key) and RANDOM_MARK in str(key)


def model_key(name: str, model_id: str | None, random_init: bool, clip_seconds: float) -> str:
    """A folder name for one model's cache: readable slug plus a hash of the full id."""
    ident = str(model_id or name)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", ident.rstrip("/").split("/")[-1])[:40].strip("-") or "model"
    digest = hashlib.sha256(ident.encode()).hexdigest()[:8]
    return f"{name}-{slug}-{digest}{RANDOM_MARK[:-1] if random_init else ''}-{clip_seconds:g}s"


def codec_model_key(proto: Protocol, codec: Any) -> str:
    return model_key(codec.name, codec.model_id, codec.random_init, proto.data.clip_seconds)


def clips_table_path(proto: Protocol) -> Path:
    return proto.layout.table("clips")


def prepared_table_path(proto: Protocol) -> Path:
    return proto.layout.table("prepared")


def cache_file(proto: Protocol, kind: str, key: str, clip_sha: str) -> Path:
    return proto.layout.cache.model(kind, key) / f"{clip_sha}.npy"


def weights_dir() -> Path:
    """Where pretrained weights are cached: ``$SONIEVAL_WEIGHTS`` or ``~/.cache/sonieval/weights``."""
    return Path(os.environ.get("SONIEVAL_WEIGHTS", Path.home() / ".cache" / "sonieval" / "weights"))


def load_array(path: str | Path) -> np.ndarray:
    """A cached embedding or latent as float32."""
    path = Path(path)
    if not path.exists():
        raise DataError("cache entry not found", path=path, hint="run `sonieval prepare PROTOCOL`")
    try:
        return np.load(path).astype(np.float32)
    except Exception as exc:  # a damaged file
        raise DataError(
            f"cannot read cache entry ({type(exc).__name__}: {exc})",
            path=path,
            hint="delete it and rerun `sonieval prepare PROTOCOL`",
        ) from None


def read_prepared(proto: Protocol) -> pd.DataFrame:
    """The prepared table (``tables/prepared.parquet``), with ``layer`` filled in for tables older than layers."""
    path = prepared_table_path(proto)
    if not path.exists():
        from sonieval.data.results_folder import require_tables

        require_tables(proto.results_path, ["clips", "prepared"], proto.source)
    try:
        table = pd.read_parquet(path)
    except Exception as exc:
        raise DataError(
            f"cannot read table ({type(exc).__name__})", path=path, hint="rerun `sonieval prepare PROTOCOL`"
        ) from None
    if "layer" not in table.columns and "kind" in table.columns:  # written before layers existed: all input
        table.insert(
            table.columns.get_loc("model") + 1 if "model" in table.columns else len(table.columns),
            "layer",
            np.where(table["kind"] == "embedding", "input", None),
        )
    missing = [c for c in PREPARED_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(
            f"prepared table lacks column(s) {', '.join(missing)}", path=path, hint="rerun `sonieval prepare PROTOCOL`"
        )
    return table


def read_encoder_info(embedding_folder: str | Path) -> dict[str, Any]:
    """An encoder layer's provenance written beside its cached embeddings (empty when absent)."""
    path = Path(embedding_folder) / ENCODER_INFO
    return json.loads(path.read_text()) if path.exists() else {}


def encoder_layers(proto: Protocol, spec: Any) -> list[str]:
    """The layer labels ``encoders[i].layer`` expands into (``input``, ``layer<k>``), shallowest first.

    ``input``, numbers and lists expand from the protocol alone; ``all`` needs the model's depth,
    which the prepare stage found when it loaded the model: the layers of the prepared table.
    """
    from sonieval.models.layers import ALL, expand_layers, layer_depth, layer_label, parse_layer_label

    value = spec.layer
    if not (isinstance(value, str) and value == ALL):
        items = value if isinstance(value, list) else [value]
        deepest = max([int(v) for v in items if not isinstance(v, str)], default=0)
        return [layer_label(layer) for layer in expand_layers(value, deepest)]
    name = spec.system_name  # the prepared table's model (crepe-tiny, crepe-tiny.twin, hubert)
    prepared = read_prepared(proto)
    rows = prepared[(prepared["kind"] == "embedding") & (prepared["model"] == name)]
    if rows.empty:
        raise DataError(
            f"encoder {name!r} has layer: all, and the prepared table holds none of its layers",
            path=prepared_table_path(proto),
            hint="run `sonieval prepare PROTOCOL` first",
        )
    have = sorted(rows["layer"].astype(str).unique(), key=lambda label: layer_depth(parse_layer_label(label)))
    info = read_encoder_info(proto.layout.cache.model("embedding", str(rows["model_key"].iloc[0])))
    if "num_blocks" in info:
        expected = ["input", *(layer_label(k) for k in range(1, int(info["num_blocks"]) + 1))]
        if have != expected:
            raise DataError(
                f"encoder {name!r} has layer: all ({', '.join(expected)}), the prepared table holds {', '.join(have)}",
                path=prepared_table_path(proto),
                hint="rerun `sonieval prepare PROTOCOL` (it computes only the missing layers)",
            )
    return have


# ---------------------------------------------------------------------------- a codec's provenance and fitted state


def read_codec_info(latent_folder: str | Path) -> dict[str, Any]:
    """The codec's provenance written beside its cached latents (empty when absent)."""
    path = Path(latent_folder) / CODEC_INFO
    return json.loads(path.read_text()) if path.exists() else {}


def save_codec_state(latent_folder: str | Path, codec: Any) -> Path:
    """The one save path of a codec's provenance and fitted state: ``codec.describe()`` (the mel codec's
    normalisation with it) as ``codec.json`` in ``latent_folder``, written atomically."""
    from sonieval.files import write_text_atomic

    return write_text_atomic(Path(latent_folder) / CODEC_INFO, json.dumps(codec.describe(), indent=1))


def restore_codec_state(codec: Any, latent_folder: str | Path) -> Any:
    """The one load path: ``codec`` (as built, not fitted) given back the fitted state that ``codec.json`` of
    ``latent_folder`` holds (``Codec.load_fitted``); a codec that learns nothing from the data as it is."""
    if not codec.fits_data:
        return codec
    path = Path(latent_folder) / CODEC_INFO
    try:
        codec.load_fitted(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(
            f"the {codec.name} codec's fitted state (its record beside the latents) is missing or damaged",
            path=path,
            hint="rerun `sonieval prepare PROTOCOL`",
        ) from None
    return codec


def write_codec_info(proto: Protocol, key: str, codec: Any) -> Path:
    """Beside the latents of folder ``key``: the codec's provenance and fitted state (:func:`save_codec_state`),
    written by prepare before any latent is made."""
    return save_codec_state(proto.layout.cache.model("latent", key), codec)


def codec_from_cache(proto: Protocol, name: str, key: str, device: str = "cpu") -> Any:
    """The protocol's codec ``name`` with the fitted state stored beside the latents of folder ``key``
    (:func:`restore_codec_state`): what a prepare worker encodes with."""
    from sonieval.models.codec import load_codec

    codec = load_codec(proto.resolved_codec(name), weights_dir(), device=device)
    return restore_codec_state(codec, proto.layout.cache.model("latent", key))


def load_prepared_codec(proto: Protocol, name: str, device: str = "cpu") -> Any:
    """The codec that made the prepared latents of codec ``name`` (one that learns from the data: with the
    fitted state of its latest prepared latents, :func:`restore_codec_state`): what sonify decodes with."""
    from sonieval.models.codec import load_codec

    codec = load_codec(proto.resolved_codec(name), weights_dir(), device=device)
    if not codec.fits_data:
        return codec
    prepared = read_prepared(proto)
    keys = prepared[(prepared["kind"] == "latent") & (prepared["model"] == name) & (prepared["status"] == "done")]
    if keys.empty:
        raise DataError(
            f"no prepared {name}-codec latents, so no fitted state (normalisation statistics) to decode with",
            path=prepared_table_path(proto),
            hint="run `sonieval prepare PROTOCOL`",
        )
    return restore_codec_state(codec, proto.layout.cache.model("latent", str(keys["model_key"].iloc[-1])))
