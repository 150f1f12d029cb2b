"""Helpers for the pipeline tests: a tiny results folder with synthetic test clips and small models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sonieval.audio import CODEC_RATE, write_wav
from sonieval.tables import write_table

CLIP_SECONDS = 1.0


def _clip(rng: np.random.Generator, cls: int, seconds: float = CLIP_SECONDS) -> np.ndarray:
    """A short class-dependent sound: a decaying tone with a little noise."""
    t = np.arange(int(seconds * CODEC_RATE)) / CODEC_RATE
    f = 220.0 * (cls + 1)
    env = np.exp(-t * (2 + cls))
    return (0.6 * env * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def make_clips(root: Path, n_train: int = 6, n_validation: int = 2, n_test: int = 3, seed: int = 0) -> pd.DataFrame:
    """Write WAVs and ``tables/clips.parquet`` as the clips stage would (the interface this stage reads)."""
    rng = np.random.default_rng(seed)
    rows = []
    splits = ["train"] * n_train + ["validation"] * n_validation + ["test"] * n_test
    for i, split in enumerate(splits):
        cls = i % 3
        clip_id = f"{split}-{i:02d}-{cls}"
        path = write_wav(root / "audio" / f"{clip_id}.wav", _clip(rng, cls), CODEC_RATE)
        rows.append(
            {
                "clip_id": clip_id,
                "filename": path.name,
                "fold": 1,
                "target": cls,
                "category": f"class{cls}",
                "path": str(path),
                "split": split,
                "listening": split == "test",
                "status": "ok",
                "error": None,
            }
        )
    clips = pd.DataFrame(rows)
    write_table(clips, root / "results" / "tables" / "clips.parquet", "clips")
    return clips


def write_protocol(root: Path, **sections) -> Path:
    data = {
        "name": "pipeline-test",
        "results_dir": str(root / "results"),
        "data": {"esc50": "synthetic", "clip_seconds": CLIP_SECONDS},
        "encoders": [{"name": "ast", "size": "small"}],
        "codec": {"name": "dac-vae", "size": "small"},
        "gates": {"variants": ["LIN"], "alignments": ["transpose"]},
        "training": {"learning_rates": [0.01], "epochs": [1, 2], "batch_size": 4, "eval_batch_size": 4},
        "sonify": {"postprocess": ["none", "minmax", "minmax+squared", "embedding_rescale+minmax"], "batch_size": 2},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    root.mkdir(parents=True, exist_ok=True)
    path = root / "protocol.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def cached_pair_row(root: Path, i: int, split: str, kind: str, key: str, array: np.ndarray) -> dict:
    """Save one cached embedding or latent of clip ``i`` as the prepare stage does; its prepared-table row."""
    from sonieval.pipeline.prepare import save_array

    path = root / "results" / "cache" / f"{kind}s" / key / f"{i:064x}.npy"
    save_array(path, array, kind)
    return {
        "clip_id": f"c{i:03d}",
        "split": split,
        "listening": False,
        "kind": kind,
        "model": "ast" if kind == "embedding" else "dac-vae",
        "layer": "input" if kind == "embedding" else None,
        "model_key": key,
        "path": str(path),
        "status": "done",
        "error": None,
    }
