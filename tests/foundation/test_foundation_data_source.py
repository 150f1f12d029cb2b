"""One data source per results folder, and no stale sonifications (issue 13, point 7).

Each case goes through the CLI as a user meets it: the first command that resolves ``data.esc50``
pins what it resolved to; a later one that resolves elsewhere stops with one line; ``score`` and
``study create`` refuse sonifications of other clips, stale WAVs in the folders they are given, and
folders made from different data sources; ``sonieval data stale`` cleans; the report names the source.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from sonieval.cli import main
from sonieval.files import sha256_file
from sonieval.tables import SONIFICATIONS_COLUMNS, resolve_table_path, write_table

SYSTEM = "ast/LIN/lr0.005/e1/transpose/minmax"


@pytest.fixture
def cli(capsys):
    """Run ``sonieval ARGS`` in-process; returns (exit status, stdout, stderr)."""

    def _run(*argv: str) -> tuple[int, str, str]:
        rc = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return rc, out, err

    return _run


@pytest.fixture
def protocol(write_protocol, tmp_path):
    """A small protocol (2 clips per class; scoring light) writing to tmp_path/<results>."""

    def _make(results: str = "res", esc50: str = "auto", name: str = "p.yaml") -> Path:
        return write_protocol(
            {
                "name": "ds",
                "results_dir": str(tmp_path / results),
                "data": {
                    "esc50": esc50,
                    "max_clips_per_class": 2,
                    "clip_seconds": 1.0,  # the built-in set has 400 clips: made at 1 s, a fifth of the cost
                    "listening_set": {"n_clips": 2, "at_least_one_per_class": False},
                },
                "metrics": {
                    "embeddings": ["logmel"],
                    "metrics": ["kad"],
                    "bootstrap": 0,
                    "item_metrics": [],
                    "per_class": False,
                },
            },
            name,
        )

    return _make


def one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


def fake_sonifications(results: Path, extra_clips: tuple[str, ...] = ()) -> pd.DataFrame:
    """A sonifications table for the listening clips (their originals copied as the system's audio), plus
    rows for ``extra_clips`` (clips the clips table does not hold). Returns the table."""
    clips = pd.read_parquet(results / "tables" / "clips.parquet")
    listening = clips[clips["listening"]]
    rows = []
    for clip_id, category, src in [
        *zip(listening["clip_id"], listening["category"], listening["path"]),
        *((c, "dog", listening["path"].iloc[0]) for c in extra_clips),
    ]:
        dest = results / "sonifications" / SYSTEM / f"{clip_id}.wav"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(results / src if not Path(src).is_absolute() else src, dest)
        rows.append(
            {
                "system_id": SYSTEM,
                "encoder": "ast",
                "variant": "LIN",
                "lr": 0.005,
                "epoch": 1,
                "alignment": "transpose",
                "postprocess": "minmax",
                "clip_id": clip_id,
                "category": category,
                "path": dest.relative_to(results).as_posix(),
                "sha256": sha256_file(dest),
                "status": "done",
                "error": None,
            }
        )
    table = pd.DataFrame(rows, columns=SONIFICATIONS_COLUMNS)
    write_table(table, results / "tables" / "sonifications.parquet", "sonifications")
    return table


# ----------------------------------------------------------------------------- the pin


def test_first_command_pins_the_data_source_and_another_is_refused(cli, protocol, tiny_esc50, tmp_path, monkeypatch):
    monkeypatch.delenv("SONIEVAL_ESC50", raising=False)
    proto = protocol()
    rc, out, _ = cli("data", "splits", proto, "--no-progress")
    res = tmp_path / "res"
    pin_file = res / "data_source.json"
    assert rc == 0 and f"pinned in {pin_file}" in out
    pin = json.loads(pin_file.read_text())
    assert (
        pin["kind"] == "synthetic" and pin["setting"] == "auto" and "SONIEVAL_ESC50 is not set" in pin["resolved_via"]
    )
    assert pin["format"] == 1 and pin["protocol"] == str(proto.resolve()) and "SYNTHETIC" in pin["label"]
    clips_before = sha256_file(res / "tables" / "clips.parquet")

    monkeypatch.setenv("SONIEVAL_ESC50", str(tiny_esc50))
    for argv in (("data", "splits", proto, "--no-progress"), ("run", proto, "--until", "clips")):
        rc, _, err = cli(*argv)
        line = one_line(err)
        assert rc == 2 and line.startswith(f"sonieval {argv[0]}: error: {pin_file}: ")
        assert (
            "holds the built-in SYNTHETIC clip set" in line and f"SYNTHETIC clip set at {tiny_esc50.resolve()}" in line
        )
        assert "unset SONIEVAL_ESC50 to keep using this folder" in line
        assert f"set results_dir in {proto}" in line and f"delete {res}" in line
    assert sha256_file(res / "tables" / "clips.parquet") == clips_before  # nothing rewritten
    assert json.loads(pin_file.read_text()) == pin

    # the suggested way out: a new results folder takes the new source
    rc, out, _ = cli("data", "splits", protocol(results="res2", name="p2.yaml"), "--no-progress")
    pin2 = json.loads((tmp_path / "res2" / "data_source.json").read_text())
    assert rc == 0 and pin2["kind"] == "esc50" and pin2["root"] == str(tiny_esc50.resolve())
    assert pin2["meta_sha256"] == sha256_file(tiny_esc50 / "meta" / "esc50.csv")
    assert pin2["resolved_via"] == "from $SONIEVAL_ESC50"


def test_a_folder_pinned_to_esc50_refuses_the_synthetic_fallback(cli, protocol, tiny_esc50, tmp_path, monkeypatch):
    monkeypatch.setenv("SONIEVAL_ESC50", str(tiny_esc50))
    proto = protocol()
    assert cli("data", "splits", proto, "--no-progress")[0] == 0
    pinned_at = json.loads((tmp_path / "res" / "data_source.json").read_text())["pinned_at"]

    monkeypatch.delenv("SONIEVAL_ESC50")
    rc, _, err = cli("data", "splits", proto, "--no-progress")
    line = one_line(err)
    assert rc == 2 and f"holds the SYNTHETIC clip set at {tiny_esc50.resolve()}" in line
    assert "now resolves to the built-in SYNTHETIC clip set" in line and "$SONIEVAL_ESC50 is not set" in line
    assert f"set SONIEVAL_ESC50={tiny_esc50.resolve()} to keep using this folder" in line
    assert not (tmp_path / "res" / "cache" / "synthetic-esc50").exists()  # refused before making anything

    monkeypatch.setenv("SONIEVAL_ESC50", str(tiny_esc50))  # as suggested: the same source again is fine
    assert cli("data", "splits", proto, "--no-progress")[0] == 0
    assert json.loads((tmp_path / "res" / "data_source.json").read_text())["pinned_at"] == pinned_at


def test_an_edited_meta_csv_is_another_data_source(cli, protocol, tiny_esc50, tmp_path):
    proto = protocol(esc50=str(tiny_esc50))
    assert cli("data", "splits", proto, "--no-progress")[0] == 0
    meta = tiny_esc50 / "meta" / "esc50.csv"
    pd.read_csv(meta).iloc[:-1].to_csv(meta, index=False)  # one clip dropped from the copy's list
    rc, _, err = cli("data", "splits", proto, "--no-progress")
    line = one_line(err)
    assert rc == 2 and f"the meta/esc50.csv of {tiny_esc50.resolve()} changed since this results folder" in line
    assert "restore the copy's meta/esc50.csv" in line


def test_a_folder_made_before_pins_is_judged_by_its_clips_table(cli, protocol, tiny_esc50, tmp_path, monkeypatch):
    monkeypatch.setenv("SONIEVAL_ESC50", str(tiny_esc50))
    proto = protocol()
    assert cli("data", "splits", proto, "--no-progress")[0] == 0
    (tmp_path / "res" / "data_source.json").unlink()  # as a results folder from an older sonieval
    monkeypatch.delenv("SONIEVAL_ESC50")
    rc, _, err = cli("data", "splits", proto, "--no-progress")
    line = one_line(err)
    assert rc == 2 and line.startswith(f"sonieval data: error: {tmp_path / 'res' / 'tables' / 'clips.parquet'}: ")
    assert f"holds the SYNTHETIC clip set at {tiny_esc50.resolve()}" in line
    monkeypatch.setenv("SONIEVAL_ESC50", str(tiny_esc50))
    assert cli("data", "splits", proto, "--no-progress")[0] == 0
    assert json.loads((tmp_path / "res" / "data_source.json").read_text())["kind"] == "esc50"  # pinned now


# ----------------------------------------------------------------------------- stale sonifications


def test_score_and_study_create_refuse_sonifications_of_other_clips(cli, protocol, tmp_path, monkeypatch):
    monkeypatch.delenv("SONIEVAL_ESC50", raising=False)
    proto = protocol()
    assert cli("data", "splits", proto, "--no-progress")[0] == 0
    res = tmp_path / "res"
    fake_sonifications(res, extra_clips=("4-181286-A-0",))  # an ESC-50 clip id among synthetic clips
    for argv in (("score", proto, "--no-progress"), ("study", "create", proto)):
        rc, _, err = cli(*argv)
        line = one_line(err)
        assert rc == 2 and f"{res / 'tables' / 'sonifications.parquet'}: 1 sonification(s)" in line
        assert f"{SYSTEM}/4-181286-A-0" in line and "not in tables/clips.parquet" in line
        assert f"`sonieval sonify {proto}`" in line
    assert not (res / "scores").exists() and not (res / "study").exists()


def test_stale_wavs_are_never_scored_and_data_stale_deletes_them(cli, protocol, tmp_path, monkeypatch):
    monkeypatch.delenv("SONIEVAL_ESC50", raising=False)
    proto = protocol()
    assert cli("data", "splits", proto, "--no-progress")[0] == 0
    res = tmp_path / "res"
    table = fake_sonifications(res)
    system_dir = res / "sonifications" / SYSTEM
    stale = system_dir / "4-181286-A-0.wav"  # left by an earlier data source
    shutil.copyfile(system_dir / f"{table['clip_id'].iloc[0]}.wav", stale)
    reference = tmp_path / "reference"  # the protocol's clips: embedding all 400 of the set would take minutes
    reference.mkdir()
    for path in pd.read_parquet(res / "tables" / "clips.parquet")["path"]:
        shutil.copyfile(resolve_table_path(path, res), reference / Path(path).name)

    # folder mode would count it: refused, naming the file and the command that cleans
    out_dir = tmp_path / "folder-scores"
    rc, _, err = cli(
        "score",
        "--reference",
        reference,
        "--system",
        f"lin={system_dir}",
        "--out",
        out_dir,
        "--no-progress",
        "--no-items",
        "--metric",
        "kad",
        "--bootstrap",
        "0",
    )
    line = one_line(err)
    assert rc == 2 and "system lin: 1 WAV file(s)" in line and f"sonifications/{SYSTEM}/4-181286-A-0.wav" in line
    assert f"`sonieval data stale {res.resolve()} --delete`" in line and not out_dir.exists()
    rc, _, err = cli(
        "study", "create", "--originals", reference, "--system", f"lin={system_dir}", "--study-dir", tmp_path / "study"
    )
    assert rc == 2 and "4-181286-A-0.wav" in one_line(err) and "rated as this system's" in err

    # protocol mode scores the table's rows only, and says what it left out
    rc, out, err = cli("score", proto, "--no-progress")
    assert rc == 0, err
    assert "warning: 1 WAV file(s)" in err and f"`sonieval data stale {proto} --delete`" in err
    assert set(pd.read_parquet(res / "scores" / "scores.parquet")["n_evaluated"]) == {len(table)}

    rc, out, _ = cli("data", "stale", proto)
    assert rc == 0 and f"stale: {stale.resolve()}" in out and stale.exists()
    rc, out, _ = cli("data", "stale", res, "--delete")
    assert rc == 0 and f"deleted: {stale.resolve()}" in out and not stale.exists()
    rc, _, err = cli(
        "score",
        "--reference",
        reference,
        "--system",
        f"lin={system_dir}",
        "--out",
        out_dir,
        "--no-progress",
        "--no-items",
        "--metric",
        "kad",
        "--bootstrap",
        "0",
    )
    assert rc == 0, err
    assert set(pd.read_parquet(out_dir / "scores.parquet")["n_evaluated"]) == {len(table)}


def test_folders_of_different_data_sources_are_not_mixed(cli, protocol, tiny_esc50, tmp_path, monkeypatch):
    monkeypatch.delenv("SONIEVAL_ESC50", raising=False)
    synthetic = protocol()
    assert cli("data", "splits", synthetic, "--no-progress")[0] == 0
    fake_sonifications(tmp_path / "res")
    real = protocol(results="res-esc50", esc50=str(tiny_esc50), name="esc50.yaml")
    assert cli("data", "splits", real, "--no-progress")[0] == 0
    fake_sonifications(tmp_path / "res-esc50")
    synth_dir = tmp_path / "res" / "sonifications" / SYSTEM
    real_dir = tmp_path / "res-esc50" / "sonifications" / SYSTEM

    rc, _, err = cli(
        "score",
        "--reference",
        tiny_esc50 / "audio",
        "--system",
        f"lin={synth_dir}",
        "--out",
        tmp_path / "out",
        "--no-progress",
    )
    line = one_line(err)
    assert rc == 2 and f"--reference {tiny_esc50 / 'audio'} is the SYNTHETIC clip set at {tiny_esc50.resolve()}" in line
    assert f"--system lin={synth_dir} was made from the built-in SYNTHETIC clip set" in line
    assert f"recorded in {tmp_path / 'res' / 'data_source.json'}" in line
    rc, _, err = cli(
        "score",
        "--reference",
        tiny_esc50 / "audio",
        "--system",
        f"real={real_dir}",
        "--system",
        f"synth={synth_dir}",
        "--out",
        tmp_path / "out",
        "--no-progress",
    )
    assert rc == 2 and "--system synth=" in one_line(err) and not (tmp_path / "out").exists()
    rc, _, err = cli(
        "study",
        "create",
        "--originals",
        tiny_esc50 / "audio",
        "--system",
        f"lin={synth_dir}",
        "--study-dir",
        tmp_path / "study",
    )
    assert rc == 2 and "a study compares sonifications of one data source" in one_line(err)
    assert not (tmp_path / "study").exists()


# ----------------------------------------------------------------------------- the report


def test_report_data_checks_name_the_data_source(cli, protocol, tiny_esc50, tmp_path):
    from sonieval.stats.simulate import simulate_ratings, simulate_scores

    proto = protocol(esc50=str(tiny_esc50))
    assert cli("data", "splits", proto, "--no-progress")[0] == 0
    res = tmp_path / "res"
    ratings, plant = simulate_ratings(n_systems=3, n_raters=4, n_clips=3, seed=1)
    write_table(ratings, res / "study" / "ratings.parquet")
    write_table(simulate_scores(plant, seed=1), res / "scores" / "scores.parquet")
    rc, _, err = cli("report", "--protocol", proto, "--bootstrap", "0", "--no-figures")
    assert rc == 0, err
    md = (res / "report" / "report.md").read_text(encoding="utf-8")
    checks = md.split("## Data checks and warnings", 1)[1].split("\n## ", 1)[0]
    sha = sha256_file(tiny_esc50 / "meta" / "esc50.csv")[:12]
    assert f"data source: SYNTHETIC clip set (not ESC-50) at {tiny_esc50.resolve()}" in checks
    assert f"meta/esc50.csv sha256 {sha}" in checks and str(res / "data_source.json") in checks

    # from explicit files with the clips table (as the demo's report is made): its data set is named
    rc, _, err = cli(
        "report",
        "--ratings",
        res / "study" / "ratings.parquet",
        "--scores",
        res / "scores" / "scores.parquet",
        "--clips",
        res / "tables" / "clips.parquet",
        "--out",
        tmp_path / "rep2",
        "--bootstrap",
        "0",
        "--no-figures",
    )
    assert rc == 0, err
    md = (tmp_path / "rep2" / "report.md").read_text(encoding="utf-8")
    checks = md.split("## Data checks and warnings", 1)[1].split("\n## ", 1)[0]
    assert checks.count("data source: ") == 1
    assert f"data source: SYNTHETIC clip set (not ESC-50) at {tiny_esc50.resolve()} (4 clips" in checks
