"""The engine-equality claim, checked as it is stated (sonieval.engines, docs/scaling.md): the full
demo protocol (protocols/demo.yaml as it is) run on a local Ray cluster, with one training worker and one
decoding worker killed mid-task, writes byte for byte the files the local engine wrote for it, both at one
thread per task. The local run is the session's `sonieval demo` (the `demo_run` fixture, shared with the demo
test), so the full demo costs this test one Ray run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from engine_helpers import kill_first_worker, ray_cluster  # noqa: F401 - a fixture

from sonieval.engines import RayEngine
from sonieval.ledger import open_ledger
from sonieval.pipeline.run import run_protocol
from sonieval.protocol import load_protocol

BYTE_FOLDERS = ["cache", "checkpoints", "sonifications", "scores", "training", "splits"]
TIMESTAMPED = ("events.out.tfevents.",)  # TensorBoard event files carry times of day: outside the claim
THREADED_STAGES = {"prepare", "train", "sonify", "score"}


def demo_protocol(text: str, root: Path):
    """protocols/demo.yaml as the demo ran it (``text``), its results under ``root`` (the demo's: results/demo)."""
    data = yaml.safe_load(text)
    data["results_dir"] = str(root / "results")
    root.mkdir(parents=True, exist_ok=True)
    (root / "demo.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_protocol(root / "demo.yaml")


def _files(results: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(results)): p
        for folder in BYTE_FOLDERS
        for p in (results / folder).rglob("*")
        if p.is_file() and not p.name.startswith(TIMESTAMPED)
    }


def _table(results: Path, rel: str, spelled: str) -> pd.DataFrame:
    """A table with its results folder's own path set aside (the only thing two folders may differ in): the
    demo's tables name it as its protocol does (results/demo, from the folder it ran in), others absolute."""

    def aside(v):
        return v.replace(str(results), "RESULTS").replace(spelled, "RESULTS") if isinstance(v, str) else v

    return pd.read_parquet(results / rel).map(aside)


def _recorded_threads(results: Path) -> dict[str, set[int]]:
    """Per stage, the thread counts the ledger recorded for the items tasks made."""
    with open_ledger(results) as ledger:
        table = ledger.table()
    seen: dict[str, set[int]] = {}
    for stage, extra in zip(table["stage"], table["extra"]):
        threads = json.loads(extra).get("threads") if extra else None
        if threads is not None:
            seen.setdefault(stage.split("-")[0], set()).add(threads)
    return seen


@pytest.mark.slow
def test_the_full_demo_on_ray_with_killed_workers_is_the_local_demo_byte_for_byte(
    ray_cluster, request, tmp_path, monkeypatch, torch_threads
):
    demo_run = request.getfixturevalue("demo_run")  # after the cluster: without Ray the test skips before the demo
    assert demo_run.exit_code == 0, demo_run.out[-2000:]
    monkeypatch.delenv("SONIEVAL_ESC50", raising=False)  # the demo's data: the built-in synthetic clip set
    proto = demo_protocol(demo_run.protocol, tmp_path / "ray")
    killed: dict[str, list[int]] = {"train": [], "sonify": []}
    watchers = [kill_first_worker(stage, pids) for stage, pids in killed.items()]
    result = run_protocol(proto, engine=RayEngine(threads=1), echo=lambda s: None)
    for watcher in watchers:
        watcher.join(1)
    assert all(killed.values()), f"no worker was seen running a task of every stage: {killed}"
    assert result.failures.empty, result.failures

    local, ray = _files(demo_run.results), _files(proto.results_path)
    assert {k for k in local if k.startswith(("cache/", "checkpoints/", "sonifications/"))} == {
        k for k in ray if k.startswith(("cache/", "checkpoints/", "sonifications/"))
    }  # every artifact exactly once, none left half-written under another name
    assert len([k for k in ray if k.startswith("sonifications/")]) >= 10
    assert set(ray) <= set(local), sorted(set(ray) - set(local))  # the demo adds its study and report
    differ = sorted(k for k in ray if ray[k].read_bytes() != local[k].read_bytes())
    assert not differ, f"{len(differ)} of {len(ray)} files differ, e.g. {differ[:5]}"
    for table in sorted((proto.results_path / "tables").glob("*.parquet")):
        rel = str(table.relative_to(proto.results_path))
        demo = _table(demo_run.results, rel, str(demo_run.results.relative_to(demo_run.root)))
        pd.testing.assert_frame_equal(demo, _table(proto.results_path, rel, str(proto.results_path)), obj=rel)

    # the condition of the claim, as recorded: every item a task made says it ran with one thread
    for results in (demo_run.results, proto.results_path):
        seen = _recorded_threads(results)
        assert THREADED_STAGES <= set(seen) and all(v == {1} for v in seen.values()), (results, seen)
