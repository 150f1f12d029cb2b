"""Fixtures of the study tests: small studies over synthetic tones (test fixtures, not results)."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_helpers import make_folder_study  # noqa: E402


@pytest.fixture
def small_study(tmp_path):
    """A joint-mode study: 2 clips x 2 systems, reference, anchor, 1 attention check, no listening gate."""
    return make_folder_study(tmp_path)
