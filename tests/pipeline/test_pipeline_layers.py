"""Layers through the pipeline: prepare caches each layer apart from one forward pass per batch, and
``layer: all`` expands into one system per layer through train, sonify and score (the depth table)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pipeline_helpers import make_clips, write_protocol

from sonieval.ledger import open_ledger
from sonieval.pipeline import prepare as prepare_mod
from sonieval.pipeline.prepare import run_prepare
from sonieval.protocol import load_protocol
from sonieval.tables import resolve_table_path

MEL = [{"name": "mel", "iterations": 2}]


def _protocol(root, layer, **sections):
    return load_protocol(
        write_protocol(root, encoders=[{"name": "wavlm", "size": "small", "layer": layer}], codec=MEL, **sections)
    )


class LayerForwards:
    """Records every encoder forward of the prepare stage: its batch size and the layers asked for."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[int, list[str]]] = []
        real = prepare_mod.encoder_forward

        def wrapped(encoder, device):
            fwd = real(encoder, device)

            def counted(batch, targets):
                self.calls.append((batch.shape[0], [t.layer for t in targets]))
                return fwd(batch, targets)

            return counted

        monkeypatch.setattr(prepare_mod, "encoder_forward", wrapped)


def _prepare(proto, **kw):
    with open_ledger(proto.results_path) as ledger:
        return run_prepare(proto, ledger, progress=False, **kw)


def test_prepare_caches_each_layer_apart_from_one_forward_per_batch(tmp_path, torch_threads, monkeypatch):
    make_clips(tmp_path)
    forwards = LayerForwards(monkeypatch)
    proto = _protocol(tmp_path, ["input", 2])
    table = _prepare(proto, batch_size=4).table
    emb = table[table["kind"] == "embedding"]
    assert (emb["status"] == "done").all() and sorted(emb["layer"].unique()) == ["input", "layer2"]
    # 11 clips in batches of 4: three forwards, each giving both layers
    assert forwards.calls == [(4, ["input", "layer2"]), (4, ["input", "layer2"]), (3, ["input", "layer2"])]
    keys = emb.groupby("layer")["model_key"].first()
    assert keys["layer2"] == keys["input"] + "@layer2"  # the input cut keeps the bare key (old caches stay valid)
    clip = emb["clip_id"].iloc[0]
    arrays = {
        layer: np.load(resolve_table_path(g.loc[g["clip_id"] == clip, "path"].iloc[0], proto.results_path))
        for layer, g in emb.groupby("layer")
    }
    assert arrays["input"].shape == arrays["layer2"].shape == (49, 64) and not np.allclose(
        arrays["input"], arrays["layer2"]
    )
    for layer, key in keys.items():
        info = json.loads((proto.cache_path / "embeddings" / key / "encoder.json").read_text())
        assert info["layer"] == layer and info["time_axis"]["grid"] == [1, 49] and info["num_blocks"] == 2
    # asking for every layer later computes only the one still missing, for every clip, in one pass per batch
    forwards.calls.clear()
    proto_all = _protocol(tmp_path, "all")
    table = _prepare(proto_all, batch_size=4).table
    assert forwards.calls == [(4, ["layer1"]), (4, ["layer1"]), (3, ["layer1"])]
    assert sorted(table.loc[table["kind"] == "embedding", "layer"].unique()) == ["input", "layer1", "layer2"]
    assert np.array_equal(
        np.load(
            resolve_table_path(
                table[(table["layer"] == "layer2") & (table["clip_id"] == clip)]["path"].iloc[0], proto.results_path
            )
        ),
        arrays["layer2"],
    )
    forwards.calls.clear()
    _prepare(proto_all)
    assert forwards.calls == []


@pytest.fixture(scope="module")
def layered_results(tmp_path_factory):
    """A tiny results folder run through prepare, train, sonify and score with ``layer: all`` (WavLM, 2 blocks)."""
    import torch

    from sonieval.metrics.leaderboard import run_score
    from sonieval.pipeline.sonify import run_sonify
    from sonieval.pipeline.train import run_train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("layers")
    make_clips(root)
    proto = _protocol(
        root,
        "all",
        gates={"variants": ["LIN"], "alignments": ["grid"], "controls": ["untrained"]},
        training={"epochs": [1]},
        sonify={"postprocess": ["none"]},
        metrics={"embeddings": ["logmel"], "metrics": ["kad"], "bootstrap": 50, "item_metrics": ["logmel_l1"]},
    )
    try:
        with open_ledger(proto.results_path) as ledger:
            run_prepare(proto, ledger, progress=False)
            trained = run_train(proto, ledger, progress=False)
            sonified = run_sonify(proto, ledger, progress=False)
            scored = run_score(proto, ledger, progress=False)
    finally:
        torch.set_num_threads(threads)
    return proto, trained, sonified, scored


def test_all_expands_into_one_system_per_layer(layered_results):
    from sonieval.pipeline.train import load_checkpoint

    proto, trained, sonified, _ = layered_results
    assert trained.ok and sonified.batch.ok, (trained.failed, sonified.batch.failed)
    training = pd.read_parquet(proto.results_path / "tables" / "training.parquet")
    assert sorted(zip(training["layer"], training["gate_slot"])) == [
        (layer, gate) for layer in ("input", "layer1", "layer2") for gate in ("LIN", "LIN.untrained")
    ]
    assert set(training["encoder"]) == {"wavlm"}
    prepared = pd.read_parquet(proto.results_path / "tables" / "prepared.parquet")
    for row in training.itertuples():
        meta = load_checkpoint(row.checkpoint)["meta"]
        key = prepared.loc[(prepared["layer"] == row.layer) & (prepared["kind"] == "embedding"), "model_key"].iloc[0]
        assert meta["layer"] == row.layer and meta["embedding_model_key"] == row.embedding_model_key == key
    son = sonified.table
    trained_ids = sorted(son.loc[son["control"] == "none", "system_id"].unique())
    assert trained_ids == [
        "wavlm.layer1/LIN/lr0.01/e1/grid/none",
        "wavlm.layer2/LIN/lr0.01/e1/grid/none",
        "wavlm/LIN/lr0.01/e1/grid/none",
    ]
    assert set(son.loc[son["encoder"] == "wavlm", "layer"]) == {"input", "layer1", "layer2"}
    assert (son["status"] == "done").all()


def test_score_draws_audibility_by_depth(layered_results):
    proto, _, _, scored = layered_results
    depth = scored.depth
    assert set(depth["encoder"]) == {"wavlm"} and list(depth["layer"].unique()) == ["input", "layer1", "layer2"]
    r2 = depth[depth["measure"] == "heldout_r2"]
    assert list(r2["depth"]) == [0, 1, 2] and r2["untrained_value"].notna().all()
    assert np.isfinite(depth.loc[depth["measure"] == "logmel_l1", "ceiling_value"]).all()
    out = proto.results_path / "scores"
    assert (out / "depth.csv").is_file() and (out / "figures" / "depth__wavlm.png").stat().st_size > 10_000
    md = (out / "leaderboard.md").read_text()
    assert "## Audibility by depth" in md and "figures/depth__wavlm.png" in md and "RANDOM-WEIGHT encoder" in md
    assert "depth__wavlm.png" in (out / "leaderboard.html").read_text()
    board = scored.leaderboard
    assert set(board.loc[board["encoder"] == "wavlm", "layer"]) == {"input", "layer1", "layer2"}


def test_shipped_depth_protocol_sweeps_layers_and_its_study_names_planned_systems(torch_threads):
    """protocols/depth.yaml: every encoder at several layers, and the study's systems are systems it makes."""
    from pathlib import Path

    from sonieval.models.encoders import load_encoder
    from sonieval.tables import encoder_slot, make_system_id

    proto = load_protocol(Path(__file__).resolve().parents[2] / "protocols" / "depth.yaml", check_paths=False)
    made = set()
    for i, spec in enumerate(proto.encoders):
        encoder = load_encoder(spec, index=i)
        assert len(encoder.loaded_layers) >= 3 and encoder.random_init
        for layer in encoder.loaded_layers:
            slot = encoder_slot(spec.name, "input" if layer == "input" else f"layer{layer}")
            made |= {
                make_system_id(slot, v, lr, e, a, p)
                for v in proto.gates.variants
                for lr in proto.training.learning_rates
                for e in proto.training.epochs
                for a in proto.gates.alignments
                for p in proto.sonify.postprocess
            }
    assert proto.study.systems and set(proto.study.systems) <= made
    assert proto.primary_codec.name == "mel" and set(proto.gates.controls) == {"untrained", "shuffled"}
