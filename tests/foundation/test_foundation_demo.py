"""`sonieval demo` end to end: offline, on embedded defaults, every output made and labelled."""

from __future__ import annotations

import pytest

from sonieval.cli import main as cli_main


@pytest.mark.slow
def test_demo_runs_end_to_end_and_says_what_is_not_real(demo_run, monkeypatch, capsys, torch_threads):
    # `sonieval demo` ran once for the session under demo_run.root (tests/conftest.py), on the built-in synthetic
    # clip set; the engine-equality test compares a Ray run with the same files
    tmp_path, out = demo_run.root, demo_run.out
    assert demo_run.exit_code == 0, out[-2000:]
    assert "SYNTHETIC clip set" in out
    assert "small randomly initialised AST" in out and "weight-free mel codec" in out and "SIMULATED" in out
    # the gates really learn: the learning table leads, and on the synthetic set every trained system on the
    # mel codec beats both its controls on held-out R², KAD, FAD and log-mel distance (issue 19.5)
    assert "## Learning: trained systems against their controls" in out
    learning = out.split("## Learning: trained systems against their controls")[1].split("# KAD / FAD leaderboard")[0]
    verdicts = {}
    for line in learning.splitlines():
        if line.startswith("### "):
            measure = line
        elif line.startswith("| `") and "@dac-vae" not in line:
            verdicts[(measure, line.split("`")[1])] = line.rstrip(" |").rsplit("|", 1)[1].strip()
    systems = {s for _, s in verdicts}
    assert systems == {"ast/LIN/lr0.005/e8/transpose/none", "crepe-tiny.layer5/RIDGE/lr0.0/e0/grid/none"}
    assert len(verdicts) == 8 and set(verdicts.values()) == {"yes"}, verdicts
    # the codec's own reconstruction (the ceiling) ranks first on both leaderboards
    for board in ("## KAD · logmel[weight-free]", "## FAD · logmel[weight-free]"):
        first = next(li for li in out.split(board)[1].splitlines() if li.startswith("| 1 |"))
        assert "codec/mel/lr0.0/e0/none/codec" in first, first
    # pretrained CREPE keeps pitch beyond its random twin (the explanation profile)
    profile = out.split("## Explanation profile")[1]
    crepe = next(li for li in profile.splitlines() if li.startswith("| crepe-tiny | layer5 |"))
    pitch = crepe.split("|")[4].strip()
    assert pitch.startswith(("kept", "partly kept")) and "▲twin" in pitch, crepe
    # every study stimulus reached the loudness target (none too quiet to align)
    assert "loudness:" not in out, [li for li in out.splitlines() if "loudness:" in li]
    # the random DAC-VAE path is exercised and marked; the random encoder is marked too
    assert "ast/LIN@dac-vae/lr0.005/e8/transpose/none` †" in out
    assert "Systems marked † were decoded by a RANDOMLY INITIALISED codec" in out
    assert "Systems marked ‡ sonify a RANDOMLY INITIALISED encoder" in out
    assert "Where to listen" in out and "codec/mel/lr0.0/e0/none/codec" in out
    assert "sonieval study serve" in out and "?rater=" in out and "?admin=" in out
    listed = out.split("Outputs:")[1].splitlines()
    paths = [line.split()[-1] for line in listed if line.startswith("  ")]
    assert len(paths) >= 10
    for p in paths:
        assert (tmp_path / p).exists(), p
    report = (tmp_path / "results/demo/report_SIMULATED/report.md").read_text(encoding="utf-8")
    assert "SIMULATED" in report.splitlines()[0] or "SIMULATED" in report[:500]
    # a second run reuses everything already made
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SONIEVAL_ESC50", raising=False)
    assert cli_main(["demo"]) == 0
    assert "0 clips made, 400 already done" in capsys.readouterr().out
