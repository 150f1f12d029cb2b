"""Shared fixtures.

Tests that need real parts (the ESC-50 subset, a PostgreSQL server, Chromium) find or start
them themselves. Locally they skip with a visible reason when the part is missing; with
SONIEVAL_REQUIRE_<PART>=1 (set by .ci/run) a missing part is a failure, not a skip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness.parts import require_part

os.environ.setdefault("MPLBACKEND", "Agg")
# Tests must never reach a hub: everything they load is made locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_ESC50 = REPO.parent / "shared" / "esc50"  # where the real subset lives beside a checkout here and in CI

# Tests change directory (tmp_path) and write protocols elsewhere: a relative SONIEVAL_ESC50 would then
# name another folder, so it is made absolute once, against the directory pytest was started in.
if os.environ.get("SONIEVAL_ESC50"):
    os.environ["SONIEVAL_ESC50"] = str(Path(os.environ["SONIEVAL_ESC50"]).expanduser().resolve())


def esc50_suggestion() -> str:
    """How to point the tests at a copy: an absolute path (a relative one breaks tests that change directory)."""
    example = SHARED_ESC50 if (SHARED_ESC50 / "meta" / "esc50.csv").is_file() else Path("/absolute/path/to/ESC-50")
    return f"export SONIEVAL_ESC50={example} (an absolute path to a copy in the official layout)"


@pytest.fixture(scope="session")
def esc50_root() -> Path:
    """The real ESC-50 subset (../shared/esc50 in CI), from SONIEVAL_ESC50 (made absolute above)."""
    value = os.environ.get("SONIEVAL_ESC50")
    if not value:
        require_part("esc50", f"SONIEVAL_ESC50 is not set: {esc50_suggestion()}")
    root = Path(value)
    if not (root / "meta" / "esc50.csv").is_file() or not (root / "audio").is_dir():
        require_part(
            "esc50", f"SONIEVAL_ESC50={value} is not an ESC-50 copy (no meta/esc50.csv or audio/): {esc50_suggestion()}"
        )
    return root


@pytest.fixture
def torch_threads():
    """Keep torch to one thread in tests: two cores are shared by the whole suite."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass(frozen=True)
class DemoRun:
    """One `sonieval demo` (protocols/demo.yaml as it is) on the built-in synthetic clips."""

    root: Path  # the folder it ran in
    results: Path  # its results folder (root/results/demo)
    exit_code: int
    out: str  # what it printed
    protocol: str  # the text of protocols/demo.yaml it ran (read as it started)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> DemoRun:
    """`sonieval demo` once per session, torch and BLAS held to one thread (as `torch_threads`, and as every
    task of a Ray engine with threads=1): the demo test reads its output, and the engine-equality test
    compares a Ray run of the same protocol with its files, so the full demo runs on the local engine once."""
    import contextlib
    import io

    from sonieval.cli import main as cli_main
    from sonieval.engines import pin_threads

    root = tmp_path_factory.mktemp("demo")
    protocol = (REPO / "protocols" / "demo.yaml").read_text(encoding="utf-8")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, pin_threads(1), contextlib.redirect_stdout(out):
        mp.chdir(root)
        mp.delenv("SONIEVAL_ESC50", raising=False)  # the built-in synthetic clip set
        code = cli_main(["demo"])
    return DemoRun(root, root / "results" / "demo", code, out.getvalue(), protocol)
