"""Fixtures for the pipeline tests (helpers live in pipeline_helpers.py: `conftest` is not importable by name
when several test folders have one)."""

from __future__ import annotations

import pytest
from pipeline_helpers import make_clips, write_protocol

from sonieval.protocol import load_protocol


@pytest.fixture
def tiny_protocol(tmp_path, torch_threads):
    """A protocol over 11 synthetic 1-s clips (6 train, 2 validation, 3 listening), small random models."""
    make_clips(tmp_path)
    return load_protocol(write_protocol(tmp_path))
