"""Fixtures of the study tests: small studies over synthetic tones (test fixtures, not results)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_helpers import clone_study, make_folder_study  # noqa: E402


@pytest.fixture(scope="session")
def _small_study_template(tmp_path_factory):
    return make_folder_study(tmp_path_factory.mktemp("study-template"))


@pytest.fixture
def small_study(_small_study_template, tmp_path):
    """A joint-mode study: 2 clips x 2 systems, reference, anchor, 1 attention check, no listening gate."""
    return clone_study(_small_study_template, tmp_path / "copy")


@pytest.fixture(scope="session")
def temp_postgres():
    """A throwaway PostgreSQL server (initdb + pg_ctl on a free localhost port)."""
    from harness.parts import require_part
    from harness.pgtemp import start_temp_postgres

    try:
        server = start_temp_postgres()
    except RuntimeError as exc:
        require_part("postgres", str(exc))
    yield server
    server.stop()
