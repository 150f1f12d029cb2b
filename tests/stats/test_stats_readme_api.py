"""The stats API examples of README.md and docs/*.md (docs/api.md) run as written: every ```python block right
after a ``<!-- api-example: stats -->`` line (the metrics examples have their own test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness.readme import documented_examples

MARK = "stats"


EXAMPLES = documented_examples(MARK)
IDS = [f"{Path(file).stem}-example{i + 1}" for i, (file, _) in enumerate(EXAMPLES)]


def test_readme_has_stats_examples():
    codes = "\n".join(code for _, code in EXAMPLES)
    assert len(EXAMPLES) >= 3
    for name in ("st.report(", "st.icc(", "st.krippendorff_alpha(", "st.mixed_model("):
        assert name in codes, name


@pytest.mark.parametrize("file, code", EXAMPLES, ids=IDS)
def test_readme_stats_example_runs_and_writes_nothing_here(file, code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{file} ({MARK} example)", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert out.strip()  # each example prints what it computed
    if "simulate_ratings" in code and "st.report(" in code and "out_dir" not in code:
        assert "SIMULATED" in out  # simulated marks say so
    assert list(tmp_path.iterdir()) == []  # nothing left in the working folder
