"""The RIDGE gate: the exact linear least-squares map, fitted in closed form, as a reference system."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pipeline_helpers import cached_pair_row, write_protocol
from test_pipeline_train import write_clips_table

from sonieval.errors import ProtocolError
from sonieval.ledger import open_ledger
from sonieval.models import gates as g
from sonieval.pipeline.prepare import PREPARED_COLUMNS
from sonieval.pipeline.ridge import FrameMoments, fit_ridge
from sonieval.pipeline.train import load_checkpoint, run_train
from sonieval.protocol import load_protocol
from sonieval.tables import write_table

EMB, LAT = (30, 10), (6, 30)  # embedding [T, D] on the latent's own frames, latent [C, T']


def frame_map_cache(root, n=(40, 12, 10), noise=0.2, seed=0):
    """Latent frame j = A · (embedding frame j) + c + noise: a per-frame linear map RIDGE can fit exactly."""
    rng = np.random.default_rng(seed)
    a, c = rng.standard_normal((LAT[0], EMB[1])), rng.standard_normal(LAT[0])
    rows, splits = [], ["train"] * n[0] + ["validation"] * n[1] + ["test"] * n[2]
    for i, split in enumerate(splits):
        x = rng.standard_normal(EMB).astype(np.float32)
        y = (a @ x.T + c[:, None] + noise * rng.standard_normal(LAT)).astype(np.float32)
        for kind, key, arr in (("embedding", "frames-emb", x), ("latent", "frames-lat", y)):
            rows.append(cached_pair_row(root, i, split, kind, key, arr))
    write_table(pd.DataFrame(rows, columns=PREPARED_COLUMNS), root / "results" / "tables" / "prepared.parquet")
    write_clips_table(root, *n)
    return a, c


def test_ridge_moments_give_numpys_least_squares_and_validation_choice():
    """Moments summed on the embedding's own frames through the interpolation's Gram equal those of the
    interpolated frames; the fit is numpy's ridge solution; the chosen λ has the least validation MSE."""
    rng = np.random.default_rng(1)
    w_true = rng.standard_normal((5, 3))
    interp = np.abs(rng.standard_normal((8, 20)))  # 8 embedding frames onto 20 latent frames
    feats = [rng.standard_normal((4, 5, 8)) for _ in range(3)]
    frames = [np.einsum("brt,tk->brk", f, interp) for f in feats]  # the features on the latent's frames
    batches = [
        (f, np.einsum("brk,rc->bck", x, w_true) + 0.5 + 0.1 * rng.standard_normal((4, 3, 20)))
        for f, x in zip(feats, frames)
    ]
    train = FrameMoments.of(batches[:2], interp)
    W, b, lam, scores = fit_ridge(train, FrameMoments.of(batches[2:], interp))
    x = np.concatenate([f.transpose(0, 2, 1).reshape(-1, 5) for f in frames[:2]])
    y = np.concatenate([t.transpose(0, 2, 1).reshape(-1, 3) for _, t in batches[:2]])
    assert train.n == len(x) and np.allclose(train.sxx, x.T @ x) and np.allclose(train.sx, x.sum(0))
    xc, yc = x - x.mean(0), y - y.mean(0)
    exact = np.linalg.solve(xc.T @ xc + lam * np.eye(5), xc.T @ yc)
    np.testing.assert_allclose(W, exact, rtol=1e-8)
    np.testing.assert_allclose(b, y.mean(0) - x.mean(0) @ exact, rtol=1e-8)
    xv = frames[2].transpose(0, 2, 1).reshape(-1, 5)
    yv = batches[2][1].transpose(0, 2, 1).reshape(-1, 3)
    direct = float(np.mean((xv @ W + b - yv) ** 2))
    assert direct == pytest.approx(scores[lam], rel=1e-8) and scores[lam] == min(scores.values())


def test_ridge_system_recovers_a_per_frame_map_and_beats_its_shuffled_control(tmp_path, torch_threads):
    a, c = frame_map_cache(tmp_path)
    proto = load_protocol(
        write_protocol(
            tmp_path,
            gates={
                "variants": ["RIDGE", "LIN"],
                "alignments": ["grid", "transpose"],
                "controls": ["shuffled", "untrained"],
            },
            training={"learning_rates": [0.02], "epochs": [5], "batch_size": 8, "eval_batch_size": 8},
        )
    )
    with open_ledger(proto.results_path) as ledger:
        assert run_train(proto, ledger, progress=False).ok
    table = pd.read_parquet(proto.results_path / "tables" / "training.parquet")
    ridge = table[table["variant"] == "RIDGE"].set_index("control")
    assert set(ridge["alignment"]) == {"grid"} and (ridge[["lr", "epoch"]] == 0).all().all()  # grid only, lr0/e0
    assert (
        ridge.loc["none", "heldout_r2"]
        > 0.9
        > 0.2
        > max(ridge.loc["shuffled", "heldout_r2"], ridge.loc["untrained", "heldout_r2"])
    )
    assert (
        "ridge_lambda" not in load_checkpoint(ridge.loc["untrained", "checkpoint"])["meta"]
    )  # the map at its initialisation
    ck = load_checkpoint(ridge.loc["none", "checkpoint"])
    w = ck["state_dict"]["layers.0_linear_rows.linear.weight"].numpy()
    # the embedding's frames sit on the latent's (default time axis): the map is recovered up to the noise
    np.testing.assert_allclose(w, a, atol=0.05)
    assert ck["meta"]["ridge_lambda"] > 0 and ck["meta"]["variant"] == "RIDGE"
    gate = g.build_gate("RIDGE", EMB, LAT, "grid")
    gate.load_state_dict(ck["state_dict"])
    assert gate(torch.zeros(1, *EMB)).shape == (1, *LAT)


def test_ridge_without_a_grid_alignment_is_refused_in_one_line(tmp_path):
    path = write_protocol(tmp_path, gates={"variants": ["RIDGE"], "alignments": ["transpose"]})
    with pytest.raises(ProtocolError, match="RIDGE maps each latent frame") as info:
        load_protocol(path)
    assert "\n" not in str(info.value)


def test_ridge_parameter_counts_in_its_docstring():
    for label, shape in (("AST→DAC-VAE", g.AST_EMBEDDING), ("HuBERT→DAC-VAE", g.HUBERT_EMBEDDING)):
        for alignment in g.GRID_ALIGNMENTS:
            n = g.gate_parameter_count("RIDGE", shape, g.DAC_VAE_LATENT, alignment)
            assert f"{alignment} {n:,}" in g.RIDGE.__doc__.split(label)[1].splitlines()[0]


def test_ridge_on_too_many_features_fails_alone_with_one_line(tmp_path, torch_threads, monkeypatch):
    from sonieval.pipeline import ridge

    frame_map_cache(tmp_path, n=(8, 4, 2))
    monkeypatch.setattr(ridge, "RIDGE_MAX_FEATURES", EMB[1] - 1)
    proto = load_protocol(
        write_protocol(
            tmp_path,
            gates={"variants": ["RIDGE", "LIN"], "alignments": ["grid"]},
            training={"learning_rates": [0.02], "epochs": [1], "batch_size": 4, "eval_batch_size": 4},
        )
    )
    with open_ledger(proto.results_path) as ledger:
        result = run_train(proto, ledger, progress=False)
    assert result.done == ["ast/LIN/lr0.02/grid"]
    error = result.failed["ast/RIDGE/lr0.0/grid"]
    assert list(result.failed) == ["ast/RIDGE/lr0.0/grid"] and "RIDGE: 10 features per frame" in error
    assert "\n" not in error
