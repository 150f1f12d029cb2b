"""Shared fixtures.

Tests that need real parts (the ESC-50 subset, a PostgreSQL server, Chromium) find or start
them themselves. Locally they skip with a visible reason when the part is missing; with
SONIEVAL_REQUIRE_<PART>=1 (set by .ci/run) a missing part is a failure, not a skip.
"""

from __future__ import annotations

import os
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
