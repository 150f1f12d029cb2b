"""docs/extending.md, "Adding a measure": the example runs as written, and the measure it registers (one
catalogue entry and its function) is scored, directed and validated like a built-in one."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness.readme import api_examples

from sonieval import measures as C

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


@pytest.fixture
def clean_catalogue():
    yield
    C.unregister_measure("zcr_distance")


def test_the_adding_a_measure_example_runs_and_registers_a_measure(clean_catalogue, tmp_path, monkeypatch, capsys):
    (code,) = api_examples(DOC.read_text(encoding="utf-8"), "measure")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/extending.md (measure example)", "exec"), {"__name__": "__docs__"})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and list(tmp_path.iterdir()) == []
    assert lines[0].startswith("{'zcr_distance': ") and "'loudness_correlation': " in lines[0]
    distance = float(lines[0].split("'zcr_distance': ")[1].split(",")[0])
    assert distance > 2.0  # the running sum of white noise crosses zero several octaves less often
    assert "never crosses zero" in lines[1]  # undefined: says why (not 0, not NaN)
    assert lines[2] == "['logmel_l1', 'zcr_distance']"
    assert C.get_measure("zcr_distance").lower_is_better and C.ATTRIBUTES["noisiness"].measure == "zcr_distance"
    C.unregister_measure("zcr_distance")
    assert "noisiness" not in C.ATTRIBUTES and "zcr_distance" not in C.item_measure_names()
