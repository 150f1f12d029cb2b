"""The train stage: learning on a learnable synthetic mapping, epoch grids, outputs, resuming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pipeline_helpers import cached_pair_row, write_protocol

from sonieval.ledger import open_ledger
from sonieval.pipeline import train as train_mod
from sonieval.pipeline import trainer as trainer_mod
from sonieval.pipeline.prepare import PREPARED_COLUMNS, save_array
from sonieval.pipeline.train import checkpoint_path, load_checkpoint, run_train
from sonieval.protocol import load_protocol
from sonieval.tables import write_table

EMB, LAT = (16, 12), (6, 20)  # embedding [T, D], latent [C, T']


def synthetic_cache(root, n_train=48, n_validation=16, seed=0, noise=0.01, n_test=0):
    """Cache + prepared table for a mapping a LIN gate can learn exactly: Y = A · Xᵀ · B (+ noise);
    ``n_test`` held-out clips (split test, in the listening set)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((LAT[0], EMB[1])) / np.sqrt(EMB[1])
    b = rng.standard_normal((EMB[0], LAT[1])) / np.sqrt(EMB[0])
    rows = []
    for i in range(n_train + n_validation + n_test):
        split = "train" if i < n_train else "validation" if i < n_train + n_validation else "test"
        x = rng.standard_normal(EMB).astype(np.float32)
        y = (a @ x.T @ b + noise * rng.standard_normal(LAT)).astype(np.float32)
        for kind, key, arr in (("embedding", "synthetic-emb", x), ("latent", "synthetic-lat", y)):
            rows.append(cached_pair_row(root, i, split, kind, key, arr))
    write_table(pd.DataFrame(rows, columns=PREPARED_COLUMNS), root / "results" / "tables" / "prepared.parquet")
    write_clips_table(root, n_train, n_validation, n_test)


def write_clips_table(root, n_train, n_validation, n_test=0):
    """The clips table the cache's clips came from (train and prepare read it first)."""
    n = n_train + n_validation + n_test
    clips = pd.DataFrame(
        {
            "clip_id": [f"c{i:03d}" for i in range(n)],
            "filename": [f"c{i:03d}.wav" for i in range(n)],
            "fold": 1,
            "target": 0,
            "category": "synthetic",
            "path": [f"/nonexistent/c{i:03d}.wav" for i in range(n)],
            "split": ["train"] * n_train + ["validation"] * n_validation + ["test"] * n_test,
            "listening": [False] * (n_train + n_validation) + [True] * n_test,
            "status": "ok",
            "error": None,
        }
    )
    write_table(clips, root / "results" / "tables" / "clips.parquet", "clips")


def _proto(root, **training):
    t = {
        "learning_rates": [0.05],
        "epochs": [3, 12],
        "batch_size": 8,
        "eval_batch_size": 8,
        "gradient_accumulation": 2,
        **training,
    }
    return load_protocol(write_protocol(root, training=t))


def _baseline(proto) -> float:
    """MSE of predicting the training mean latent on the validation set."""
    data = train_mod.paired_data(proto, "ast")
    ytr = np.stack([np.load(p) for p in data.latents["train"]])
    yva = np.stack([np.load(p) for p in data.latents["validation"]])
    return float(np.mean((yva - ytr.mean(axis=0)) ** 2))


def test_loss_falls_on_a_learnable_mapping(tmp_path, torch_threads):
    synthetic_cache(tmp_path)
    proto = _proto(tmp_path)
    with open_ledger(proto.results_path) as ledger:
        result = run_train(proto, ledger, progress=False)
    assert result.ok, result.failed
    run_dir = proto.results_path / "training" / "ast" / "LIN" / "lr0.05" / "transpose"
    losses = pd.read_csv(run_dir / "losses.csv")
    train = losses[losses["split"] == "train"]["loss"].to_numpy()
    val = losses[losses["split"] == "validation"]["loss"].to_numpy()
    assert len(val) == 12 and len(train) == 12 * 3  # 48 clips / 8 per batch / 2 accumulated = 3 steps per epoch
    assert train[-3:].mean() < 0.3 * train[:3].mean()
    assert val.min() < 0.2 * _baseline(proto), "the gate did not learn the mapping"
    # epoch grid (prefix): e3 is the best within the first 3 epochs, e12 within all 12
    ck3 = load_checkpoint(checkpoint_path(proto, "ast", "LIN", 0.05, 3, "transpose"))["meta"]
    ck12 = load_checkpoint(checkpoint_path(proto, "ast", "LIN", 0.05, 12, "transpose"))["meta"]
    assert ck3["best_epoch"] <= 3 and ck3["best_validation_loss"] == pytest.approx(val[:3].min())
    assert ck12["best_validation_loss"] == pytest.approx(val.min()) and ck12["best_epoch"] == int(np.argmin(val)) + 1
    assert ck12["n_train"] == 48 and ck12["embedding_model_key"] == "synthetic-emb"
    # outputs: loss curves, tensorboard, the per-system table
    assert (run_dir / "loss_curves.png").stat().st_size > 10_000
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert losses["smoothed"].notna().all()
    table = pd.read_parquet(proto.results_path / "tables" / "training.parquet")
    assert sorted(table["epoch"]) == [3, 12] and (table["status"] == "done").all()
    assert set(table["embedding_model_key"]) == {"synthetic-emb"} and set(table["latent_model_key"]) == {
        "synthetic-lat"
    }
    # a rerun does nothing
    with open_ledger(proto.results_path) as ledger:
        again = run_train(proto, ledger, progress=False)
    assert again.skipped == ["ast/LIN/lr0.05/transpose"] and not again.done


def test_killed_run_resumes_from_its_last_epoch_and_matches_an_uninterrupted_run(tmp_path, monkeypatch, torch_threads):
    for name in ("whole", "killed"):
        synthetic_cache(tmp_path / name)
    whole = _proto(tmp_path / "whole", epochs=[5])
    with open_ledger(whole.results_path) as ledger:
        assert run_train(whole, ledger, progress=False).ok

    killed = _proto(tmp_path / "killed", epochs=[5])
    real_evaluate, calls = trainer_mod.evaluate, []

    def evaluate_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # killed while evaluating epoch 4
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer_mod, "evaluate", evaluate_then_die)
    with open_ledger(killed.results_path) as ledger, pytest.raises(KeyboardInterrupt):
        run_train(killed, ledger, progress=False)
    assert not checkpoint_path(killed, "ast", "LIN", 0.05, 5, "transpose").exists()
    monkeypatch.setattr(trainer_mod, "evaluate", real_evaluate)
    calls.clear()
    counted = []
    monkeypatch.setattr(trainer_mod, "evaluate", lambda *a, **k: (counted.append(1), real_evaluate(*a, **k))[1])
    with open_ledger(killed.results_path) as ledger:
        assert run_train(killed, ledger, progress=False).ok
    assert len(counted) == 2, "resumed run should only do epochs 4 and 5"
    a = load_checkpoint(checkpoint_path(whole, "ast", "LIN", 0.05, 5, "transpose"))
    b = load_checkpoint(checkpoint_path(killed, "ast", "LIN", 0.05, 5, "transpose"))
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=0)
    la = pd.read_csv(whole.results_path / "training" / "ast/LIN/lr0.05/transpose" / "losses.csv")
    lb = pd.read_csv(killed.results_path / "training" / "ast/LIN/lr0.05/transpose" / "losses.csv")
    pd.testing.assert_frame_equal(la, lb)


def test_separate_epoch_grid_and_options(tmp_path, torch_threads):
    synthetic_cache(tmp_path, n_train=16, n_validation=8)
    proto = _proto(
        tmp_path,
        epochs=[1, 2],
        epoch_grid="separate",
        normalize_latents=True,
        augmentation={"gaussian_blur": True, "blur_sigma": 1.5},
    )
    with open_ledger(proto.results_path) as ledger:
        result = run_train(proto, ledger, progress=False)
    assert sorted(result.done) == ["ast/LIN/lr0.05/transpose/E1", "ast/LIN/lr0.05/transpose/E2"]
    meta = load_checkpoint(checkpoint_path(proto, "ast", "LIN", 0.05, 2, "transpose"))["meta"]
    assert meta["total_epochs"] == 2 and meta["gaussian_blur"] is True
    norm = meta["latent_normalization"]
    assert norm is not None and norm["min"] < 0 < norm["max"]


def test_gaussian_blur_smooths_and_keeps_shape():
    x = torch.randn(2, 30, 20)
    y = train_mod.gaussian_blur(x, 1.0)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert y.diff(dim=1).abs().mean() < 0.6 * x.diff(dim=1).abs().mean()
    const = torch.full((1, 5, 4), 3.0)  # smaller than the kernel: still works, constants stay constant
    torch.testing.assert_close(train_mod.gaussian_blur(const, 2.0), const)


def test_missing_prepare_output_is_one_clear_error(tmp_path, torch_threads):
    from sonieval.data.results_folder import MissingTable

    proto = _proto(tmp_path)
    write_clips_table(tmp_path, 4, 2)
    with open_ledger(proto.results_path) as ledger, pytest.raises(MissingTable) as err:
        run_train(proto, ledger, progress=False)
    msg = str(err.value)
    assert "prepared table not found" in msg and "sonieval prepare" in msg and "\n" not in msg
    assert not (proto.results_path / "tables" / "training.parquet").exists()


def test_diverging_loss_fails_the_run_with_one_line(tmp_path, torch_threads):
    synthetic_cache(tmp_path, n_train=16, n_validation=8)
    proto = _proto(tmp_path, epochs=[2])
    data = train_mod.paired_data(proto, "ast")
    # a target near float32's limit makes the squared error overflow to inf
    save_array(Path(data.latents["train"][0]), np.full(LAT, 3e38, np.float32), "latent")
    with open_ledger(proto.results_path) as ledger:
        result = run_train(proto, ledger, progress=False)
    msg = result.failed["ast/LIN/lr0.05/transpose"]
    assert "training loss became inf at epoch 1" in msg and "lower the learning rate" in msg and "\n" not in msg
    table = pd.read_parquet(proto.results_path / "tables" / "training.parquet")
    assert (table["status"] == "failed").all() and table["error"].str.contains("loss became inf").all()
    assert not checkpoint_path(proto, "ast", "LIN", 0.05, 2, "transpose").exists()


def test_heldout_r2_is_measured_on_clips_that_chose_nothing(tmp_path, torch_threads):
    """The epoch is chosen on validation; R² is also reported on the held-out (test) clips, for trained
    systems and controls alike, computed as 1 - SSE/SST against the train-mean latent."""
    synthetic_cache(tmp_path, n_test=10, noise=0.3)
    proto = load_protocol(
        write_protocol(
            tmp_path,
            gates={"variants": ["LIN"], "alignments": ["transpose"], "controls": ["untrained", "shuffled"]},
            training={"learning_rates": [0.05], "epochs": [6], "batch_size": 8, "eval_batch_size": 8},
        )
    )
    with open_ledger(proto.results_path) as ledger:
        assert run_train(proto, ledger, progress=False).ok
    table = pd.read_parquet(proto.results_path / "tables" / "training.parquet").set_index("control")
    assert (table["n_heldout"] == 10).all() and (table["n_validation"] == 16).all()
    data = train_mod.paired_data(proto, "ast")
    mean = torch.stack([data.store("train").pairs([i])[1][0] for i in range(48)]).mean(0)
    x, y = data.store("test").pairs(list(range(10)))
    for control, row in table.iterrows():
        ck = load_checkpoint(row["checkpoint"])
        gate = train_mod.GateTrainer(proto, train_mod.plan_runs(proto)[0], data, "cpu", "").gate
        gate.load_state_dict(ck["state_dict"])
        with torch.no_grad():
            r2 = 1 - float(((gate(x) - y) ** 2).sum() / ((y - mean) ** 2).sum())
        assert row["heldout_r2"] == pytest.approx(r2, rel=1e-4, abs=1e-5), control
        assert row["heldout_r2_ci_low"] <= row["heldout_r2"] <= row["heldout_r2_ci_high"]
        assert ck["meta"]["heldout_r2"] == pytest.approx(row["heldout_r2"])
    trained, shuffled = table.loc["none", "heldout_r2"], table.loc["shuffled", "heldout_r2"]
    assert trained > 0.2 and trained > shuffled + 0.2, (trained, shuffled)


def test_an_encoder_chooses_its_own_gates_and_a_codec_restricts_them(tmp_path):
    # the demo's shape: LIN on transpose for AST, RIDGE on grid for CREPE; a second codec that takes LIN only
    path = write_protocol(
        tmp_path,
        encoders=[
            {"name": "ast", "size": "small"},
            {"name": "crepe", "model": "tiny", "layer": 5, "twin": True, "variants": ["RIDGE"], "alignments": ["grid"]},
        ],
        codec=[{"name": "mel"}, {"name": "dac-vae", "size": "small", "variants": ["LIN"], "controls": False}],
        gates={"variants": ["LIN"], "alignments": ["transpose"], "controls": ["untrained", "shuffled"]},
    )
    runs = train_mod.plan_runs(load_protocol(path))
    got = {(r.encoder, r.variant, r.alignment, r.codec, r.control) for r in runs}
    assert {(e, v, a) for e, v, a, _, _ in got} == {
        ("ast", "LIN", "transpose"),
        ("crepe-tiny", "RIDGE", "grid"),
        ("crepe-tiny.twin", "RIDGE", "grid"),
    }
    assert {e for e, _, _, codec, _ in got if codec == "dac-vae"} == {"ast"}  # RIDGE is not among dac-vae's gates
    assert ("crepe-tiny", "RIDGE", "grid", None, "shuffled") in got and (
        "crepe-tiny",
        "RIDGE",
        "grid",
        None,
        "untrained",
    ) in got


def test_an_encoder_gate_choice_that_cannot_run_is_one_clear_error(tmp_path):
    from sonieval.errors import SonievalError

    path = write_protocol(
        tmp_path, encoders=[{"name": "crepe", "model": "tiny", "variants": ["RIDGE"], "alignments": ["transpose"]}]
    )
    with pytest.raises(SonievalError, match="RIDGE needs alignment grid"):
        load_protocol(path)
