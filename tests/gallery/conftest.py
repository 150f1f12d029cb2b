"""Fixtures of the gallery tests: one small real results folder per session and its gallery (test input:
synthetic tones through small random models; not results)."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gallery_helpers import run_pipeline, write_ratings  # noqa: E402


@dataclass(frozen=True)
class Built:
    root: Path
    results: Path
    protocol: Path
    result: object  # the first build's GalleryResult


@pytest.fixture(scope="session")
def _built_template(tmp_path_factory) -> Built:
    """prepare, train, sonify, score (6 systems and the ceiling, 3 clips), a ratings export, then the gallery."""
    from sonieval.gallery import build_gallery

    root = tmp_path_factory.mktemp("gallery")
    proto = run_pipeline(root)
    write_ratings(proto.results_path)
    result = build_gallery(proto.results_path, protocol=root / "protocol.yaml", workers=2)
    return Built(root, proto.results_path, root / "protocol.yaml", result)


@pytest.fixture(scope="session")
def built(_built_template) -> Built:
    """The session's results folder and gallery; tests that read it must not change it (see `own_copy`)."""
    return _built_template


@pytest.fixture
def own_copy(_built_template, tmp_path) -> Built:
    """A copy of the results folder (gallery included) that a test may change."""
    root = tmp_path / "copy"
    shutil.copytree(_built_template.root, root)
    results = root / "results"
    text = (root / "protocol.yaml").read_text().replace(str(_built_template.root), str(root))
    (root / "protocol.yaml").write_text(text)
    return Built(root, results, root / "protocol.yaml", _built_template.result)
