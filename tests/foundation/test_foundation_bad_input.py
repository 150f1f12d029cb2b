"""The issue's "Bad input (each with a test)" list.

Each bad file: `sonieval data esc50 --esc50 <copy>` names it on one line with the problem and what to
do, exits non-zero, no traceback; in a batch (the clips stage) the good clips still finish and the bad
one is in the ledger with its error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from foundation_helpers import write_bad_audio

from sonieval.cli import main
from sonieval.data.esc50 import open_esc50, prepare_clips
from sonieval.errors import DataError, ProtocolError
from sonieval.ledger import open_ledger
from sonieval.protocol import load_protocol

# kind -> (text expected in the verification line, readable by the clips stage under pad_or_trim?)
BAD_FILES = {
    "truncated": ("truncated WAV", False),
    "text": ("not a readable audio file", False),
    "zero_length": ("empty file (0 bytes)", False),
    "stereo_48k": ("2 channels, expected mono; sample rate 48000 Hz, expected 44100 Hz", True),
    "8bit": ("sample format PCM_U8, expected PCM_16", True),
    "float_nan": ("NaN", False),
    "1s": ("44100 frames (1.000 s), expected 220500", True),
    "12s": ("529200 frames (12.000 s), expected 220500", True),
}


def _damage(copy: Path, kind: str) -> tuple[str, Path]:
    """Replace the first listed clip of ``copy`` by a bad file of ``kind``; return (clip_id, path)."""
    clips = open_esc50(copy).clips
    victim = clips.iloc[0]
    path = Path(victim["path"])
    path.unlink()
    write_bad_audio(kind, path)
    return victim["clip_id"], path


def _assert_one_clean_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_verify_names_bad_file(kind, tiny_esc50, capsys):
    clip_id, path = _damage(tiny_esc50, kind)
    rc = main(["data", "esc50", "--esc50", str(tiny_esc50), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc != 0
    problem_lines = [ln for ln in out.splitlines() if ln.startswith(str(path.parent))]
    assert len(problem_lines) == 1, out  # one line for the bad file, none for the good ones
    line = problem_lines[0]
    assert line.startswith(f"{path}: ")
    assert BAD_FILES[kind][0] in line
    assert "official archive" in line  # what to do
    _assert_one_clean_line(err)
    assert "1 file(s) with problems" in err


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_batch_finishes_good_clips_and_records_bad(kind, tiny_esc50, write_protocol, tmp_path):
    clip_id, path = _damage(tiny_esc50, kind)
    proto = load_protocol(
        write_protocol({"name": "bad", "results_dir": str(tmp_path / "res"), "data": {"esc50": str(tiny_esc50)}})
    )
    with open_ledger(proto.results_path) as ledger:
        table = prepare_clips(proto, ledger, progress=False)
        row = ledger.get("clips", clip_id)
    others = table[table["clip_id"] != clip_id]
    assert len(others) == 7 and (others["status"] == "ok").all()
    bad = table.set_index("clip_id").loc[clip_id]
    readable = BAD_FILES[kind][1]
    if readable:
        # audio.py's policy: converted, and what was done is recorded.
        assert bad["status"] == "ok" and row["status"] == "done"
        notes = row["extra"]
        if kind == "stereo_48k":
            assert notes["resampled"] and notes["mixed_down"] and bad["source_rate"] == 48_000
        elif kind == "8bit":
            assert notes["source_subtype"] == "PCM_U8"
        elif kind == "1s":
            assert bad["length_action"] == "padded"
        elif kind == "12s":
            assert bad["length_action"] == "trimmed"
    else:
        assert bad["status"] == "failed" and row["status"] == "failed"
        assert str(path) in bad["error"] and str(path) in row["error"]
        assert not bad["listening"]
        split_files = (proto.results_path / "splits").glob("*.txt")
        assert all(path.name not in f.read_text() for f in split_files)
    stored = pd.read_parquet(proto.results_path / "tables" / "clips.parquet")
    assert len(stored) == 8


@pytest.mark.parametrize("kind", ["1s", "12s"])
def test_strict_length_policy_fails_wrong_lengths(kind, tiny_esc50, write_protocol, tmp_path):
    clip_id, path = _damage(tiny_esc50, kind)
    proto = load_protocol(
        write_protocol(
            {
                "name": "strict",
                "results_dir": str(tmp_path / "res"),
                "data": {"esc50": str(tiny_esc50), "length_policy": "strict"},
            }
        )
    )
    with open_ledger(proto.results_path) as ledger:
        table = prepare_clips(proto, ledger, progress=False)
        failures = ledger.failures("clips")
    assert list(failures["key"]) == [clip_id]
    assert str(path) in failures["error"].iloc[0] and "expected exactly 220500" in failures["error"].iloc[0]
    assert (table[table["clip_id"] != clip_id]["status"] == "ok").all()


def test_meta_missing_column(tiny_esc50, write_protocol, tmp_path, capsys):
    meta = tiny_esc50 / "meta" / "esc50.csv"
    pd.read_csv(meta).drop(columns=["take"]).to_csv(meta, index=False)
    rc = main(["data", "esc50", "--esc50", str(tiny_esc50), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 2
    line = _assert_one_clean_line(err)
    assert str(meta.resolve()) in line and "lacks column(s) take" in line and "official archive" in line
    proto = load_protocol(
        write_protocol({"name": "m", "results_dir": str(tmp_path / "r"), "data": {"esc50": str(tiny_esc50)}})
    )
    with open_ledger(tmp_path / "r") as ledger, pytest.raises(DataError, match="take"):
        prepare_clips(proto, ledger, progress=False)


def test_protocol_misspelt_key(write_protocol, capsys):
    path = write_protocol({"name": "typo", "data": {"esc5O": "auto"}})
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    msg = str(info.value)
    assert str(path) in msg and "data.esc5O" in msg and "did you mean 'esc50'" in msg
    rc = main(["data", "splits", str(path)])
    _, err = capsys.readouterr()
    assert rc == 2
    assert "data.esc5O: unknown key" in _assert_one_clean_line(err)


def test_protocol_missing_folder(write_protocol, tmp_path, capsys):
    missing = tmp_path / "no-such-esc50"
    path = write_protocol({"name": "nofolder", "data": {"esc50": str(missing)}})
    with pytest.raises(ProtocolError, match="does not exist"):
        load_protocol(path)
    rc = main(["data", "splits", str(path)])
    _, err = capsys.readouterr()
    assert rc == 2
    line = _assert_one_clean_line(err)
    assert str(path) in line and str(missing) in line and "data.esc50" in line


def test_cli_subprocess_bad_file_no_traceback(tiny_esc50):
    """Through the installed entry point, as a user runs it (also proves `--help` stays offline and light)."""
    _damage(tiny_esc50, "text")
    env = {**os.environ, "SONIEVAL_ESC50": str(tiny_esc50)}
    env.pop("SONIEVAL_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "sonieval", "data", "esc50", "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "not a readable audio file" in proc.stdout
    helped = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from sonieval.cli import main\n"
            "for a in (['data','--help'], ['data','esc50','--help'], ['data','splits','--help']):\n"
            "    try: main(a)\n    except SystemExit: pass\n"
            "print(sorted(m for m in ('torch','transformers','dac','kadtk','streamlit') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert helped.returncode == 0 and helped.stdout.strip().endswith("[]"), helped.stdout + helped.stderr
    assert "--esc50" in helped.stdout and "PROTOCOL" in helped.stdout


# ----------------------------------------------------------------------------- errors that say what to do next


def _small_protocol(write_protocol, tmp_path, esc50: str = "auto") -> Path:
    return write_protocol(
        {
            "name": "next",
            "results_dir": str(tmp_path / "res"),
            "data": {
                "esc50": esc50,
                "max_clips_per_class": 2,
                "clip_seconds": 1.0,  # the built-in set has 400 clips: made at 1 s, a fifth of the cost
                "listening_set": {"n_clips": 2, "at_least_one_per_class": False},
            },
        }
    )


def test_extra_file_in_a_copy_is_told_to_move_out(tiny_esc50, capsys):
    extra = tiny_esc50 / "audio" / "my-own-recording.wav"
    write_bad_audio("1s", extra)
    rc = main(["data", "esc50", "--esc50", str(tiny_esc50), "--no-progress", "--no-checksums"])
    out, err = capsys.readouterr()
    line = [ln for ln in out.splitlines() if ln.startswith(str(extra))]
    assert rc == 1 and len(line) == 1 and "not listed in meta/esc50.csv" in line[0]
    assert "move it out of audio/" in line[0] and "remove its row" not in line[0]
    assert "1 file(s) with problems" in _assert_one_clean_line(err)


def test_data_splits_with_a_bad_clip_names_the_commands_that_fix_it(tiny_esc50, write_protocol, tmp_path, capsys):
    clip_id, path = _damage(tiny_esc50, "truncated")
    proto = write_protocol(
        {"name": "splitfail", "results_dir": str(tmp_path / "res"), "data": {"esc50": str(tiny_esc50)}}
    )
    rc = main(["data", "splits", str(proto), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 1 and f"failed: {path}: truncated WAV" in out
    line = _assert_one_clean_line(err)
    assert "1 clip(s) could not be read" in line and f"`sonieval data esc50 --esc50 {tiny_esc50.resolve()}`" in line
    assert f"rerun `sonieval data splits {proto}`" in line


def test_run_exits_nonzero_and_lists_the_failed_items(
    tiny_esc50, tiny_esc50_master, write_protocol, tmp_path, capsys, monkeypatch
):
    import sonieval.pipeline.run as run_module

    monkeypatch.setattr(run_module, "FAILURES_SHOWN", 2)
    clips = open_esc50(tiny_esc50).clips.iloc[:3]
    for path in clips["path"]:
        write_bad_audio("text", Path(path))
    proto = write_protocol(
        {"name": "runfail", "results_dir": str(tmp_path / "res"), "data": {"esc50": str(tiny_esc50)}}
    )
    rc = main(["run", str(proto), "--until", "clips"])
    out, err = capsys.readouterr()
    failures_csv = tmp_path / "res" / "run_failures.csv"
    lines = [ln.split("\r")[-1] for ln in err.split("\n")]  # progress bars (\r, cleared) come before the report
    lines = lines[next(i for i, ln in enumerate(lines) if ln.startswith("sonieval run:")) :]
    assert rc == 1 and "Traceback" not in err
    assert lines[0] == "sonieval run: 3 item(s) failed; the others finished:"
    for clip_id, path, line in zip(clips["clip_id"], clips["path"], lines[1:3]):
        assert line.startswith(f"  [clips] {clip_id}: {path}: ") and "not a readable audio file" in line
    assert lines[3] == f"  ... and 1 more, all listed in {failures_csv}"
    assert f"`sonieval data esc50 --esc50 {tiny_esc50.resolve()}`" in err and f"`sonieval run {proto}`" in err
    listed = pd.read_csv(failures_csv)
    assert list(listed["stage"]) == ["clips"] * 3 and list(listed["key"]) == list(clips["clip_id"])
    # fixed copy: the rerun redoes only those items, succeeds, and the list of failures goes away
    for filename, path in zip(clips["filename"], clips["path"]):
        shutil.copyfile(tiny_esc50_master / "audio" / filename, path)
    assert main(["run", str(proto), "--until", "clips"]) == 0
    assert not failures_csv.exists()
    assert (pd.read_parquet(tmp_path / "res" / "tables" / "clips.parquet")["status"] == "ok").all()


@pytest.mark.parametrize(
    "argv",
    [
        ["prepare"],
        ["train"],
        ["sonify"],
        ["score"],
        ["study", "create"],
        ["study", "serve", "--free-port"],
        ["sonify", "--figure", "clip0"],
    ],
)
def test_a_stage_before_the_clips_table_names_the_command_that_makes_it(
    argv, write_protocol, tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("SONIEVAL_ESC50", raising=False)
    proto = _small_protocol(write_protocol, tmp_path)
    head = 2 if argv[0] == "study" else 1
    rc = main([*argv[:head], str(proto), *argv[head:]])
    line = _assert_one_clean_line(capsys.readouterr().err)
    clips = tmp_path / "res" / "tables" / "clips.parquet"
    assert rc == 2 and f"{clips}: clips table not found" in line
    assert f"`sonieval data splits {proto}`" in line and f"`sonieval run {proto}`" in line
    assert "sonieval data PROTOCOL" not in line
    assert not (tmp_path / "res" / "tables").exists() and not (tmp_path / "res" / "scores").exists()


@pytest.mark.parametrize("command", ["train", "sonify"])
def test_train_or_sonify_before_prepare_write_nothing(command, write_protocol, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SONIEVAL_ESC50", raising=False)
    proto = _small_protocol(write_protocol, tmp_path)
    assert main(["data", "splits", str(proto), "--no-progress"]) == 0
    capsys.readouterr()
    rc = main([command, str(proto)])
    line = _assert_one_clean_line(capsys.readouterr().err)
    tables = tmp_path / "res" / "tables"
    assert rc == 2 and f"{tables / 'prepared.parquet'}: prepared table not found" in line
    assert f"`sonieval prepare {proto}`" in line
    assert sorted(p.name for p in tables.iterdir()) == ["clips.parquet"]  # no training/sonifications table


def test_report_before_export_names_study_export(write_protocol, tmp_path, capsys):
    proto = _small_protocol(write_protocol, tmp_path)
    rc = main(["report", "--protocol", str(proto)])
    line = _assert_one_clean_line(capsys.readouterr().err)
    ratings = tmp_path / "res" / "study" / "ratings.parquet"
    assert rc == 2 and f"{ratings}: ratings table not found" in line and f"`sonieval study export {proto}`" in line
    assert not (tmp_path / "res" / "report").exists()


def test_esc50_skip_message_and_env_are_absolute(tiny_esc50, tmp_path):
    """A relative SONIEVAL_ESC50 broke tests that change directory: the suite makes it absolute at start,
    and the skip message suggests an absolute path."""
    tests_dir = Path(__file__).resolve().parents[1]
    code = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); import conftest; "
        "print(os.environ['SONIEVAL_ESC50']); print(conftest.esc50_suggestion())"
    )
    env = {**os.environ, "SONIEVAL_ESC50": tiny_esc50.name}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tests_dir)],
        cwd=tiny_esc50.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    resolved, suggestion = proc.stdout.splitlines()
    assert resolved == str(tiny_esc50.resolve())
    suggested = suggestion.split("SONIEVAL_ESC50=", 1)[1].split()[0]
    assert suggestion.startswith("export SONIEVAL_ESC50=") and Path(suggested).is_absolute()
