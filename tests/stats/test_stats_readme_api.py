"""README's stats API examples run as written: every ```python block right after a
``<!-- api-example: stats -->`` line (the metrics examples have their own test)."""

from __future__ import annotations

import pytest
from harness.readme import readme_examples

MARK = "stats"


EXAMPLES = readme_examples(MARK)


def test_readme_has_stats_examples():
    codes = "\n".join(EXAMPLES)
    assert len(EXAMPLES) >= 3
    for name in ("st.report(", "st.icc(", "st.krippendorff_alpha(", "st.mixed_model("):
        assert name in codes, name


@pytest.mark.parametrize("code", EXAMPLES, ids=[f"example{i + 1}" for i in range(len(EXAMPLES))])
def test_readme_stats_example_runs_and_writes_nothing_here(code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md ({MARK} example)", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    assert out.strip()  # each example prints what it computed
    if "simulate_ratings" in code and "st.report(" in code and "out_dir" not in code:
        assert "SIMULATED" in out  # simulated marks say so
    assert list(tmp_path.iterdir()) == []  # nothing left in the working folder
