"""Helpers for the test suite (importable from any test folder)."""

from __future__ import annotations

import os

import pytest


def parts_required(part: str) -> bool:
    """True when a missing ``part`` must fail the run (CI, or SONIEVAL_REQUIRE_<PART>=1)."""
    return os.environ.get(f"SONIEVAL_REQUIRE_{part.upper()}") == "1" or os.environ.get("CI") == "true"


def require_part(part: str, reason: str) -> None:
    """Skip (locally) or fail (in CI) because ``part`` (esc50, postgres, browser) is missing."""
    if parts_required(part):
        pytest.fail(f"required part missing: {part}: {reason}", pytrace=False)
    pytest.skip(f"{part} not available: {reason}")
