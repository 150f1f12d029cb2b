"""The executor layer on toy tasks: one writer, every artifact once, bad inputs fail once, a killed worker's
task is retried on another worker, and a run resumes under the other engine."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from engine_helpers import calls, failing_task, ray_cluster, report_threads, write_items  # noqa: F401 - a fixture

from sonieval.engines import LocalEngine, RayEngine, Resources, Task, chunks, make_engine, run_tasks
from sonieval.errors import SonievalError
from sonieval.ledger import LedgerItem, RunLedger, open_ledger

KEYS = ["a", "b", "bad-c", "d", "e", "f"]


def _tasks(folder: Path, keys=KEYS, size: int = 2, hold: str | None = None) -> list[Task]:
    return [
        Task(f"toy-{i}", write_items, [LedgerItem(k, {"k": k}) for k in part], (str(folder), hold))
        for i, part in enumerate(chunks(list(keys), len(keys) // size))
    ]


def _artifacts(folder: Path) -> dict[str, str]:
    out = folder / "out"
    return {p.name: p.read_text() for p in sorted(out.iterdir())} if out.exists() else {}


def _run(folder: Path, engine, tasks=None):
    with open_ledger(folder) as ledger:
        result = run_tasks(ledger, "toy", tasks if tasks is not None else _tasks(folder), engine, progress=False)
        return result, ledger.table("toy")


def _expected() -> dict[str, str]:
    return {f"{k}.txt": f"artifact {k}\n" for k in KEYS if not k.startswith("bad")}


def test_local_engine_records_every_item_once(tmp_path):
    result, table = _run(tmp_path, LocalEngine())
    assert _artifacts(tmp_path) == _expected()
    assert sorted(result.done) == sorted(k for k in KEYS if k != "bad-c")
    assert list(result.failed) == ["bad-c"] and "item bad-c is unreadable" in result.failed["bad-c"]
    assert table.set_index("key")["status"].to_dict() == {k: "failed" if k == "bad-c" else "done" for k in KEYS}
    # a rerun sends only the failed item's task again, and that item fails again with the same line
    again, _ = _run(tmp_path, LocalEngine())
    assert sorted(again.skipped) == sorted(result.done) and again.failed == result.failed
    assert [c[1] for c in calls(tmp_path)].count("bad-c,d") == 1 and calls(tmp_path)[-1][1] == "bad-c"


def test_engine_names_are_checked():
    with pytest.raises(SonievalError, match="unknown engine 'spark'"):
        make_engine("spark")
    with pytest.raises(SonievalError, match="--address is for --engine ray"):
        make_engine("local", "auto")


def test_chunks_cover_the_sequence_in_order():
    assert chunks(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert chunks(list(range(7)), 2, at_most=2) == [[0, 1], [2, 3], [4, 5], [6]]
    assert chunks([], 4) == []


def test_ray_makes_the_same_artifacts_and_fails_bad_inputs_once(tmp_path, ray_cluster):
    local, ray_dir = tmp_path / "local", tmp_path / "ray"
    local.mkdir(), ray_dir.mkdir()
    _, local_table = _run(local, LocalEngine())
    engine = RayEngine()
    tasks = _tasks(ray_dir) + [
        Task("toy-broken", failing_task, [LedgerItem("g", {}), LedgerItem("h", {})], (str(ray_dir),))
    ]
    result, table = _run(ray_dir, engine, tasks)
    assert _artifacts(ray_dir) == _artifacts(local) == _expected()
    assert set(result.failed) == {"bad-c", "g", "h"}
    assert result.failed["g"].endswith("this task's input table is damaged (a toy bad input)")  # one line, no traceback
    assert "\n" not in result.failed["g"] and "Traceback" not in result.failed["g"]
    # a task that failed for its input ran once: Ray retries worker deaths, not application errors
    assert [c[1] for c in calls(ray_dir)].count("g,h") == 1
    mine = table[~table["key"].isin(["g", "h"])].reset_index(drop=True)
    assert mine["status"].equals(local_table["status"])
    assert mine["error"].str.replace(str(ray_dir), "DIR").equals(local_table["error"].str.replace(str(local), "DIR"))
    assert len({pid for pid, _ in calls(ray_dir)} - {os.getpid()}) >= 1  # ran in worker processes


def _kill_when_held(folder: Path, killed: list[int]) -> threading.Thread:
    """Kill (SIGKILL) the first worker that holds the item, then release the held item for the retry."""

    def watch():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            held = sorted(folder.glob("holding-*"))
            if held:
                pid = int(held[0].name.split("-")[1])
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                (folder / "release").write_text("")
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_killed_worker_has_its_task_retried_on_another_worker(tmp_path, ray_cluster):
    killed: list[int] = []
    watcher = _kill_when_held(tmp_path, killed)
    # the held task has written "a" and holds "b" when its worker is killed
    result, table = _run(tmp_path, RayEngine(), _tasks(tmp_path, hold="b"))
    watcher.join(5)
    assert killed, "no worker held the item"
    assert _artifacts(tmp_path) == _expected()  # every artifact once, with its content
    assert not list((tmp_path / "out").glob(".*"))  # no half-written file left under any name
    assert list(result.failed) == ["bad-c"]
    starts = [pid for pid, what in calls(tmp_path) if what == "a,b"]
    assert len(starts) == 2 and starts[0] == killed[0] and starts[1] != killed[0]  # retried in another process
    row = table.set_index("key").loc["b"]
    assert row["status"] == "done" and str(starts[1]) in row["extra"]  # recorded once, by the driver, from the retry


def test_a_worker_killed_more_often_than_the_retries_fails_its_items(tmp_path, ray_cluster):
    killed: list[int] = []
    watcher = _kill_when_held(tmp_path, killed)
    tasks = [Task("toy-held", write_items, [LedgerItem("x", {}), LedgerItem("y", {})], (str(tmp_path), "y"))]
    result, _ = _run(tmp_path, RayEngine(max_retries=0), tasks)
    watcher.join(5)
    assert set(result.failed) == {"x", "y"}
    assert "died 1 times" in result.failed["y"] and "rerun" in result.failed["y"]
    # the rerun (the worker is not killed again) makes them
    again, _ = _run(tmp_path, RayEngine(), tasks)
    assert sorted(again.done) == ["x", "y"] and sorted(_artifacts(tmp_path)) == ["x.txt", "y.txt"]


def test_a_run_stopped_under_one_engine_resumes_under_the_other(tmp_path, ray_cluster):
    first = _tasks(tmp_path)[:1]  # the local engine makes a and b, then "stops"
    _run(tmp_path, LocalEngine(), first)
    result, _ = _run(tmp_path, RayEngine())
    assert sorted(result.skipped) == ["a", "b"] and sorted(result.done) == ["d", "e", "f"]
    assert [what for _, what in calls(tmp_path)].count("a,b") == 1  # never sent again
    back, _ = _run(tmp_path, LocalEngine())  # and back: only the bad item is tried again
    assert sorted(back.skipped) == ["a", "b", "d", "e", "f"] and list(back.failed) == ["bad-c"]


def test_ray_tasks_hold_their_resources(tmp_path, ray_cluster):
    engine = RayEngine()
    assert engine.slots == 2 and engine.gpus == 0 and engine.device_resources() == Resources(cpus=1.0)
    assert "2 CPUs" in engine.describe()


def test_shard_ledgers_are_merged_by_the_next_unsharded_run(tmp_path):
    from sonieval.pipeline.ledgers import merge_shard_ledgers, open_shard_ledger, shard_ledgers

    with open_ledger(tmp_path) as main:  # finished before the array started
        main.record("sonify", "old", "done", inputs={"v": 1})
        main.record("sonify", "redo", "failed", inputs={"v": 1}, error="bad clip")
    for k, keys in ((1, ["a", "redo"]), (2, ["b", "c"])):
        with open_shard_ledger(tmp_path, "sonify", (k, 2)) as ledger:
            assert ledger.is_done("sonify", "old", {"v": 1})  # a shard does not redo finished work
            for key in keys:
                ledger.record("sonify", key, "done", inputs={"v": 1})
            ledger.record("sonify", f"running-{k}", "running", inputs={"v": 1})  # still in flight: not merged
    assert [p.name for p in shard_ledgers(tmp_path, "sonify")] == [
        "sonify-shard-1-of-2.sqlite",
        "sonify-shard-2-of-2.sqlite",
    ]
    with open_ledger(tmp_path) as main:
        assert merge_shard_ledgers(main, tmp_path, "sonify") == 4  # a, b, c and the redone item (not "old" again)
        assert merge_shard_ledgers(main, tmp_path, "sonify") == 0  # idempotent
        status = main.table("sonify").set_index("key")["status"].to_dict()
    assert status == {"a": "done", "b": "done", "c": "done", "old": "done", "redo": "done"}


def _threads_seen(tmp_path: Path, engine) -> dict:
    """What a toy task saw (torch and BLAS threads) and what the ledger recorded for it."""
    with RunLedger(tmp_path / f"{engine.name}-{engine.threads}.sqlite") as ledger:
        run_tasks(ledger, "toy", [Task("toy-threads", report_threads, [LedgerItem("t", {})])], engine, progress=False)
        return ledger.get("toy", "t")["extra"]


def test_every_task_runs_with_the_engines_threads_and_records_them(tmp_path, ray_cluster, torch_threads):
    import torch

    assert _threads_seen(tmp_path, LocalEngine(threads=2)) == {"torch": 2, "blas": [2], "threads": 2}
    assert torch.get_num_threads() == 1  # the caller's count is given back after the task
    assert LocalEngine().threads == 1  # the default: the process's torch count
    assert _threads_seen(tmp_path, RayEngine()) == {"torch": 1, "blas": [1], "threads": 1}
    engine = RayEngine(threads=2)  # each task holds two CPUs: one runs at a time on the test cluster
    assert engine.slots == 1 and engine.device_resources() == Resources(cpus=2.0)
    assert _threads_seen(tmp_path, engine) == {"torch": 2, "blas": [2], "threads": 2}
    with engine:  # the driver is held to the engine's threads for its own work, then given back
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == 1
    with pytest.raises(SonievalError, match="threads must be a whole number of at least 1, got 0"):
        make_engine("local", threads=0)


def test_the_old_import_path_gives_the_same_engines():
    """sonieval.pipeline.engines (deprecated) re-exports sonieval.engines: the same objects, not copies."""
    import sonieval.engines as engines
    import sonieval.pipeline.engines as old

    assert old.__all__ == engines.__all__ and all(getattr(old, n) is getattr(engines, n) for n in engines.__all__)
