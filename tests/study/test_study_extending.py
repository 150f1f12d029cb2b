"""docs/extending.md, "Adding a study question": the example runs as written, and the question its protocol
defines is asked, held to the listening rule, stored, exported and read by the report's inputs."""

from __future__ import annotations

from pathlib import Path

from harness.readme import api_examples

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"


def test_the_adding_a_study_question_example_runs_from_protocol_to_report_inputs(tmp_path, monkeypatch, capsys):
    (code,) = api_examples(DOC.read_text(encoding="utf-8"), "study_question")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/extending.md (study question example)", "exec"), {"__name__": "__docs__"})
    lines = capsys.readouterr().out.strip().splitlines()
    assert list(tmp_path.iterdir()) == []  # everything it wrote was in its own temporary folder
    assert lines[0] == "['audio', 'pleasant']"
    assert lines[1] == "Pleasantness: how pleasant is the sonification to listen to?"  # as the app reads it
    assert lines[2].startswith("Please listen to every sound long enough first")  # the rule holds for it
    # 2 clips x (the system, the hidden reference, the anchor): 6 pages, one mark of each question on each
    assert lines[3] == "{'audio': {'size': 6, 'mean': 4.0}, 'pleasant': {'size': 6, 'mean': 2.0}}"
    assert lines[4] == "['n_pleasant', 'mean_pleasant']"
    assert lines[5] == "['audio', 'pleasant']"
    assert "column attribute has unknown value(s) ['pleasant']" in lines[6] and len(lines) == 7
