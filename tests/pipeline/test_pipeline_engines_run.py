"""`sonieval run` on a local Ray cluster gives what the local engine gives, and survives a killed worker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from engine_helpers import checkpoints, kill_first_worker, ray_cluster, same_checkpoints  # noqa: F401 - a fixture

from sonieval.audio import read_audio
from sonieval.pipeline.engines import LocalEngine, RayEngine
from sonieval.pipeline.run import run_protocol
from sonieval.protocol import load_protocol

REPO = Path(__file__).resolve().parents[2]
TABLES = [
    "tables/clips.parquet",
    "tables/prepared.parquet",
    "tables/training.parquet",
    "tables/sonifications.parquet",
    "scores/scores.parquet",
    "scores/item_scores.parquet",
]


def reduced_demo(root: Path):
    """protocols/demo.yaml made small: the synthetic clips, one small random encoder, the mel codec, 3 epochs."""
    data = yaml.safe_load((REPO / "protocols" / "demo.yaml").read_text(encoding="utf-8"))
    data["results_dir"] = str(root / "results")
    data["data"].update(esc50="synthetic", listening_set={"n_clips": 4, "seed": 42, "at_least_one_per_class": False})
    data["encoders"] = [{"name": "ast", "size": "small"}]
    data["codec"] = [{"name": "mel", "iterations": 4}]
    data["training"].update(epochs=[3])
    data["metrics"].update(bootstrap=50, item_metrics=["logmel_l1"])
    root.mkdir(parents=True, exist_ok=True)
    (root / "demo.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_protocol(root / "demo.yaml")


def _table(proto, rel: str) -> pd.DataFrame:
    df = pd.read_parquet(proto.results_path / rel)
    root = str(proto.results_path.parent)
    return df.map(lambda v: v.replace(root, "ROOT") if isinstance(v, str) else v)


def _files(proto, folder: str) -> list[str]:
    base = proto.results_path / folder
    return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())


@pytest.mark.slow
def test_run_on_ray_matches_the_local_engine_and_survives_a_killed_worker(tmp_path, ray_cluster, torch_threads):
    local, ray_proto = reduced_demo(tmp_path / "local"), reduced_demo(tmp_path / "ray")
    assert not run_protocol(local, engine=LocalEngine(), echo=lambda s: None).failures.shape[0]
    killed: list[int] = []
    watcher = kill_first_worker("train", killed)
    result = run_protocol(ray_proto, engine=RayEngine(), echo=lambda s: None)
    watcher.join(1)
    assert killed, "no training task was seen running on a worker"
    assert result.failures.empty, result.failures
    for rel in TABLES:  # the same tables, row for row (the folder names aside)
        # libsndfile stamps a float WAV's PEAK chunk with the time of writing, so two writes of the same samples
        # never share a sha256 (under either engine): the samples are compared instead
        drop = ["sha256"] if rel.endswith("sonifications.parquet") else []
        pd.testing.assert_frame_equal(
            _table(local, rel).drop(columns=drop), _table(ray_proto, rel).drop(columns=drop), obj=rel
        )
    for wav in _files(local, "sonifications"):
        same = [read_audio(p / "sonifications" / wav)[0] for p in (local.results_path, ray_proto.results_path)]
        assert np.array_equal(*same), wav
    a, b = checkpoints(local), checkpoints(ray_proto)
    assert len(a) == 3 and same_checkpoints(a, b)  # LIN, its untrained and shuffled controls; bit for bit
    # every artifact exactly once: the same files, none left half-written under a final name
    for folder in ("sonifications", "checkpoints"):
        assert _files(local, folder) == _files(ray_proto, folder)
    son = _table(ray_proto, "tables/sonifications.parquet")
    assert len(son) == len(_files(ray_proto, "sonifications")) and son["path"].is_unique
