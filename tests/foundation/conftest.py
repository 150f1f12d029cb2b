"""Fixtures for the foundation tests: a tiny ESC-50-layout copy and makers of bad audio files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from sonieval.data.synthetic import make_synthetic_esc50


@pytest.fixture(scope="session")
def tiny_esc50_master(tmp_path_factory) -> Path:
    """A small copy in the official layout (synthetic clips: 2 classes x 4), made once per session."""
    return make_synthetic_esc50(tmp_path_factory.mktemp("tiny") / "esc50", n_classes=2, clips_per_class=4)


@pytest.fixture
def tiny_esc50(tiny_esc50_master, tmp_path) -> Path:
    """A fresh, writable copy of the tiny set for one test to damage."""
    dest = tmp_path / "esc50"
    shutil.copytree(tiny_esc50_master, dest)
    return dest


@pytest.fixture
def write_protocol(tmp_path):
    """Write a protocol YAML under tmp_path and return its path."""

    def _write(data: dict, name: str = "proto.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    return _write
