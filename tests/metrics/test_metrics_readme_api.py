"""The metrics API examples of README.md and docs/*.md (docs/api.md) run as written: every ```python block right
after a ``<!-- api-example: metrics -->`` line (other areas' examples, e.g. ``stats``, are left to their tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness.readme import api_examples, documented_examples

MARK = "metrics"


def test_extractor_takes_only_its_own_area():
    text = (
        "<!-- api-example: metrics -->\n```python\na = 1\n```\n"
        "<!-- api-example: stats -->\n```python\nb = 2\n```\n"
        "```python\nc = 3\n```\n"
    )
    assert api_examples(text, "metrics") == ["a = 1\n"] and api_examples(text, "stats") == ["b = 2\n"]


EXAMPLES = documented_examples(MARK)
IDS = [f"{Path(file).stem}-example{i + 1}" for i, (file, _) in enumerate(EXAMPLES)]


def test_readme_has_metrics_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("file, code", EXAMPLES, ids=IDS)
def test_readme_metrics_example_runs_and_writes_nothing_here(file, code, tmp_path, monkeypatch, capsys, torch_threads):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{file} ({MARK} example)", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip()  # each example prints what it computed
    assert list(tmp_path.iterdir()) == []  # nothing left in the working folder
