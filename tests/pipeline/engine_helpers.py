"""Helpers for the engine tests: a Ray cluster the tests start themselves, and toy tasks.

The toy tasks live in this module so that Ray's worker processes can import them: the test cluster
puts this folder on their ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from harness.parts import require_part

from sonieval.engines import attempt
from sonieval.errors import DataError
from sonieval.files import atomic_path
from sonieval.ledger import ItemOutcome

HERE = Path(__file__).resolve().parent
HOLD_SECONDS = 120  # a held task waits at most this long for the test to release it
CLUSTER_MARK, CLUSTER_ID = "SONIEVAL_TEST_CLUSTER", f"{os.getpid()}-{time.time_ns()}"  # in the workers' environment


def ray_or_skip():
    """Ray, or a visible skip (a failure under CI: SONIEVAL_REQUIRE_RAY=1)."""
    try:
        import ray
    except ImportError:
        require_part("ray", "Ray is not installed: pip install 'sonieval[ray]' (pinned in requirements/lock.txt)")
    return ray


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for this test module (about 2 s to start on an idle machine)."""
    ray = ray_or_skip()
    if ray.is_initialized():
        yield ray
        return
    path = os.pathsep.join(p for p in (str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path, CLUSTER_MARK: CLUSTER_ID}},
    )
    yield ray
    ray.shutdown()


def log_call(folder: Path, what: str) -> None:
    """One line per task start (appends are atomic for short lines)."""
    with open(folder / "calls.log", "a") as fh:
        fh.write(f"{os.getpid()} {what}\n")


def calls(folder: Path) -> list[tuple[int, str]]:
    path = folder / "calls.log"
    if not path.exists():
        return []
    return [(int(a), b) for a, b in (line.split(" ", 1) for line in path.read_text().splitlines())]


def write_items(items, folder: str, hold: str | None = None):
    """A toy task: item ``k`` becomes ``out/k.txt``; items named ``bad*`` fail for their input; item ``hold``
    waits (after the items before it were written) until the test writes ``release``."""
    folder = Path(folder)
    log_call(folder, ",".join(it.key for it in items))
    return {it.key: attempt(_write_one, folder, it.key, hold) for it in items}


def _write_one(folder: Path, key: str, hold: str | None) -> ItemOutcome:
    if key.startswith("bad"):
        raise DataError(f"item {key} is unreadable", path=folder / key, hint="a toy bad input")
    if key == hold:
        (folder / f"holding-{os.getpid()}").write_text("")
        deadline = time.monotonic() + HOLD_SECONDS
        while not (folder / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    path = folder / "out" / f"{key}.txt"
    with atomic_path(path) as tmp:
        tmp.write_text(f"artifact {key}\n")
    return ItemOutcome(path=path, extra={"pid": os.getpid()})


def report_threads(items):
    """A toy task: what its process's pools hold while it runs (torch's intra-op threads, NumPy's OpenBLAS)."""
    import torch
    from threadpoolctl import threadpool_info

    blas = sorted({i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"})
    return {it.key: ItemOutcome(extra={"torch": torch.get_num_threads(), "blas": blas}) for it in items}


def failing_task(items, folder: str):
    """A toy task whose whole input is bad: it raises before making anything."""
    log_call(Path(folder), ",".join(it.key for it in items))
    raise DataError("this task's input table is damaged", path=Path(folder) / "table.parquet", hint="a toy bad input")


EMB, LAT = (16, 12), (6, 20)  # a small embedding [T, D] and latent [C, T'] for training tests


def synthetic_pairs(root: Path, n_train: int = 24, n_validation: int = 8, seed: int = 0) -> None:
    """Clips table, cache and prepared table of a learnable mapping (Y = A·Xᵀ·B + noise), as the prepare stage
    would leave them; the same seed gives the same pairs in any folder."""
    import numpy as np
    import pandas as pd
    from pipeline_helpers import cached_pair_row, make_clips

    from sonieval.pipeline.prepare import PREPARED_COLUMNS
    from sonieval.tables import write_table

    make_clips(root, n_train=2, n_validation=1, n_test=1)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((LAT[0], EMB[1])) / np.sqrt(EMB[1])
    b = rng.standard_normal((EMB[0], LAT[1])) / np.sqrt(EMB[0])
    rows = []
    for i in range(n_train + n_validation):
        x = rng.standard_normal(EMB).astype(np.float32)
        y = (a @ x.T @ b + 0.01 * rng.standard_normal(LAT)).astype(np.float32)
        for kind, key, arr in (("embedding", "synthetic-emb", x), ("latent", "synthetic-lat", y)):
            rows.append(cached_pair_row(root, i, "train" if i < n_train else "validation", kind, key, arr))
    write_table(pd.DataFrame(rows, columns=PREPARED_COLUMNS), root / "results" / "tables" / "prepared.parquet")


def sweep_protocol(root: Path):
    """A sweep whose gates share their pairs: 3 variants (one with dropout) x 2 learning rates, the untrained
    and shuffled controls, blur augmentation, a prefix epoch grid and gradient accumulation."""
    from pipeline_helpers import write_protocol

    from sonieval.protocol import load_protocol

    return load_protocol(
        write_protocol(
            root,
            gates={
                "variants": ["LIN", "LIN-D", "CONV"],
                "alignments": ["transpose"],
                "controls": ["untrained", "shuffled"],
            },
            training={
                "learning_rates": [0.05, 0.01],
                "epochs": [1, 3],
                "batch_size": 8,
                "eval_batch_size": 8,
                "gradient_accumulation": 2,
                "augmentation": {"gaussian_blur": True, "blur_sigma": 2.0},
            },
        )
    )


def checkpoints(proto) -> dict[str, dict]:
    """Every system checkpoint of a results folder: relative path -> state_dict."""
    import torch

    root = proto.results_path / "checkpoints"
    return {
        str(p.relative_to(root)): torch.load(p, weights_only=True)["state_dict"] for p in sorted(root.rglob("e*.pt"))
    }


def same_checkpoints(a: dict[str, dict], b: dict[str, dict]) -> bool:
    import torch

    return a.keys() == b.keys() and all(
        a[k].keys() == b[k].keys() and all(torch.equal(a[k][n], b[k][n]) for n in a[k]) for k in a
    )


def workers_running(title_prefix: str) -> list[int]:
    """PIDs of this test cluster's workers running a task whose name starts with ``title_prefix`` (Ray titles a
    busy worker process ``ray::<task name>``)."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            title = (proc / "cmdline").read_bytes().split(b"\0")[0].decode()
            if (
                title.startswith(f"ray::{title_prefix}")
                and f"{CLUSTER_MARK}={CLUSTER_ID}".encode() in (proc / "environ").read_bytes()
            ):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def kill_first_worker(title_prefix: str, killed: list[int], timeout: float = 600):
    """A thread that kills (SIGKILL) the first worker seen running a ``title_prefix`` task."""
    import signal
    import threading

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not killed:
            for pid in workers_running(title_prefix):
                time.sleep(0.5)  # mid-task, not at its first instruction
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed.append(pid)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread
