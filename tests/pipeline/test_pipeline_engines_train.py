"""Gates trained together (one pass over the shared pairs per batch) are the gates trained one at a time."""

from __future__ import annotations

import pandas as pd
import pytest
from engine_helpers import checkpoints, same_checkpoints, sweep_protocol, synthetic_pairs

from sonieval.engines import LocalEngine
from sonieval.ledger import open_ledger
from sonieval.pipeline.train import paired_data, plan_runs, train_one_run
from sonieval.pipeline.train_tasks import MAX_GATES_PER_TASK, gates_per_task, train_together


def _losses(proto) -> pd.DataFrame:
    parts = [pd.read_csv(p) for p in sorted((proto.results_path / "training").rglob("losses.csv"))]
    return pd.concat(parts, ignore_index=True).sort_values(["run_id", "step", "split"]).reset_index(drop=True)


def test_gates_trained_together_are_the_gates_trained_alone(tmp_path, torch_threads):
    alone, together = sweep_protocol(tmp_path / "alone"), sweep_protocol(tmp_path / "together")
    for proto in (alone, together):
        synthetic_pairs(proto.results_path.parent)
    runs = [r for r in plan_runs(alone) if r.control != "untrained"]
    assert len(runs) == 12 and len({r.run_id for r in runs}) == 12  # 3 variants x 2 lrs x (trained, shuffled)
    data = paired_data(alone, "ast")
    for run in runs:  # one system at a time, as before the executor layer
        train_one_run(alone, run, data, "cpu", fingerprint="f", progress=False)
    got = train_together(together, [(r.run_id, r, "f") for r in runs], paired_data(together, "ast"), "cpu")
    assert all(isinstance(v, dict) for v in got.values()), got
    a, b = checkpoints(alone), checkpoints(together)
    assert len(a) == 24 and same_checkpoints(a, b)  # e1 and e3 of every run, bit for bit
    assert _losses(alone).equals(_losses(together))
    # a control: one gate of a different seed is not the same gate (the comparison can fail)
    other = train_together(together, [(runs[2].run_id, _reseeded(runs[2]), "g")], paired_data(together, "ast"), "cpu")
    assert isinstance(other[runs[2].run_id], dict)
    assert not same_checkpoints(a, checkpoints(together))


def _reseeded(run):
    from dataclasses import replace

    return replace(run, seed=run.seed + 1)


def test_a_killed_lockstep_task_resumes_each_gate_from_its_own_epoch(tmp_path, monkeypatch, torch_threads):
    from sonieval.pipeline import trainer as train_mod

    alone, killed = sweep_protocol(tmp_path / "alone"), sweep_protocol(tmp_path / "killed")
    for proto in (alone, killed):
        synthetic_pairs(proto.results_path.parent)
    runs = [r for r in plan_runs(alone) if r.control != "untrained"][:4]
    data = paired_data(alone, "ast")
    for run in runs:
        train_one_run(alone, run, data, "cpu", fingerprint="f", progress=False)
    real_evaluate, n = train_mod.evaluate, []

    def evaluate_then_die(*args, **kwargs):
        n.append(1)
        if len(n) == 7:  # killed while validating epoch 2 of the third gate: gates 1-2 saved epoch 2, 3-4 epoch 1
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train_mod, "evaluate", evaluate_then_die)
    data = paired_data(killed, "ast")
    with pytest.raises(KeyboardInterrupt):
        train_together(killed, [(r.run_id, r, "f") for r in runs], data, "cpu")
    monkeypatch.setattr(train_mod, "evaluate", real_evaluate)
    got = train_together(killed, [(r.run_id, r, "f") for r in runs], paired_data(killed, "ast"), "cpu")
    assert all(isinstance(v, dict) for v in got.values()), got
    assert same_checkpoints(checkpoints(alone), checkpoints(killed))
    assert _losses(alone).equals(_losses(killed))
    # byte for byte, the resume states too: a resumed gate's history comes from a file, yet pickles as the original
    a, b = _checkpoint_bytes(alone), _checkpoint_bytes(killed)
    assert a.keys() == b.keys() and not [k for k in a if a[k] != b[k]], [k for k in a if a[k] != b.get(k)]


def _checkpoint_bytes(proto) -> dict[str, bytes]:
    root = proto.results_path / "checkpoints"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.pt"))}


def test_gates_per_task_keeps_every_slot_busy_and_is_bounded():
    assert gates_per_task(4, 1) == 2 and gates_per_task(16, 2) == 4 and gates_per_task(3, 8) == 1
    assert gates_per_task(1000, 2) == MAX_GATES_PER_TASK


def test_sweep_runs_through_the_local_engine_with_one_writer(tmp_path, torch_threads):
    from sonieval.pipeline.train import run_train

    proto = sweep_protocol(tmp_path)
    synthetic_pairs(tmp_path)
    with open_ledger(proto.results_path) as ledger:
        result = run_train(proto, ledger, progress=False, engine=LocalEngine())
        assert result.ok and len(result.done) == 15  # 3 untrained + 12 trained
        table = ledger.table("train")
    assert (table["status"] == "done").all() and sorted(table["key"]) == sorted(r.run_id for r in plan_runs(proto))
