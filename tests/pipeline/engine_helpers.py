"""Helpers for the engine tests: a Ray cluster the tests start themselves, and toy tasks.

The toy tasks live in this module so that Ray's worker processes can import them: the test cluster
puts this folder on their ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sonieval.errors import DataError
from sonieval.files import atomic_path
from sonieval.pipeline.engines import attempt
from sonieval.pipeline.manifest import ItemOutcome
from sonieval.testing import require_part

HERE = Path(__file__).resolve().parent
HOLD_SECONDS = 120  # a held task waits at most this long for the test to release it


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
    path = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
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


def failing_task(items, folder: str):
    """A toy task whose whole input is bad: it raises before making anything."""
    log_call(Path(folder), ",".join(it.key for it in items))
    raise DataError("this task's input table is damaged", path=Path(folder) / "table.parquet", hint="a toy bad input")
