"""ESC-50 data layer: opening, verification, download (offline), splits, listening set, clips stage."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sonieval.cli import main
from sonieval.data import esc50 as esc
from sonieval.data.esc50 import (
    assign_splits,
    dataset_for_protocol,
    open_esc50,
    prepare_clips,
    resolve_esc50_root,
    select_listening_set,
    split_counts,
    verify_esc50,
    write_split_files,
)
from sonieval.data.synthetic import SYNTHETIC_CATEGORIES, make_synthetic_esc50
from sonieval.errors import DataError
from sonieval.files import sha256_file
from sonieval.ledger import open_ledger
from sonieval.protocol import ListeningSetSpec, SplitSpec, load_protocol


def fake_clips(n_classes: int, per_class: int) -> pd.DataFrame:
    """A clips table without audio (split/listening logic only looks at ids and categories)."""
    rows = [
        {
            "clip_id": f"{1 + i % 5}-{100 * c + i}-A-{c}",
            "filename": f"{1 + i % 5}-{100 * c + i}-A-{c}.wav",
            "fold": 1 + i % 5,
            "target": c,
            "category": f"class{c:02d}",
        }
        for c in range(n_classes)
        for i in range(per_class)
    ]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- opening


def test_resolve_root_option_then_env(monkeypatch, tmp_path):
    monkeypatch.delenv("SONIEVAL_ESC50", raising=False)
    assert resolve_esc50_root(None) is None
    monkeypatch.setenv("SONIEVAL_ESC50", str(tmp_path / "env"))
    assert resolve_esc50_root(None) == tmp_path / "env"
    assert resolve_esc50_root(tmp_path / "opt") == tmp_path / "opt"


def test_open_copy(tiny_esc50):
    ds = open_esc50(tiny_esc50)
    assert ds.synthetic and ds.label.startswith("SYNTHETIC clip set (not ESC-50)")
    assert list(ds.clips.columns[:1]) == ["clip_id"] and len(ds.clips) == 8
    row = ds.clips.iloc[0]
    assert row["clip_id"] == Path(row["filename"]).stem and Path(row["path"]).is_absolute()
    assert Path(row["path"]).is_file()


def test_open_not_a_copy(tmp_path):
    with pytest.raises(DataError, match="ESC-50 folder not found"):
        open_esc50(tmp_path / "nope")
    with pytest.raises(DataError, match="no meta/esc50.csv here"):
        open_esc50(tmp_path)


def test_meta_non_integer_fold(tiny_esc50):
    meta = tiny_esc50 / "meta" / "esc50.csv"
    df = pd.read_csv(meta)
    df["fold"] = df["fold"].astype(str)
    df.loc[2, "fold"] = "four"
    df.to_csv(meta, index=False)
    with pytest.raises(DataError, match=r"column 'fold' has a non-integer value 'four' in data row 3"):
        open_esc50(tiny_esc50)


# ----------------------------------------------------------------------------- verification


def test_verify_missing_and_unlisted_files(tiny_esc50):
    ds = open_esc50(tiny_esc50)
    gone = Path(ds.clips.iloc[1]["path"])
    gone.rename(tiny_esc50 / "audio" / "9-999-A-0.wav")  # now missing, and an unlisted file appears
    report = verify_esc50(tiny_esc50, progress=False)
    assert not report.ok and report.n_problem_files == 2
    assert report.problems[str(gone)] == ["missing (listed in meta/esc50.csv)"]
    assert report.problems[str(tiny_esc50.resolve() / "audio" / "9-999-A-0.wav")] == ["not listed in meta/esc50.csv"]


def test_verify_filename_contradicting_meta(tiny_esc50):
    meta = tiny_esc50 / "meta" / "esc50.csv"
    df = pd.read_csv(meta)
    df.loc[0, "target"] = 7
    df.to_csv(meta, index=False)
    report = verify_esc50(tiny_esc50, progress=False)
    assert any("meta/esc50.csv says 7" in p for ps in report.problems.values() for p in ps)


def test_checksums_written_then_detect_tampering(tiny_esc50, capsys):
    assert main(["data", "esc50", "--esc50", str(tiny_esc50), "--write-checksums", "--no-progress"]) == 0
    sums = (tiny_esc50 / "checksums.sha256").read_text().splitlines()
    assert len(sums) == 9 and sums[0].endswith("  audio/" + sorted(p.name for p in (tiny_esc50 / "audio").iterdir())[0])
    assert "9 of 9 match" in verify_esc50(tiny_esc50, progress=False).checksums
    victim = sorted((tiny_esc50 / "audio").iterdir())[3]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF  # same size, same format, different content
    victim.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["data", "esc50", "--esc50", str(tiny_esc50), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert f"{victim.resolve()}: content differs from its SHA-256 in checksums.sha256" in out
    assert verify_esc50(tiny_esc50, checksums=False, progress=False).ok


def test_no_copy_given(monkeypatch, capsys):
    monkeypatch.delenv("SONIEVAL_ESC50", raising=False)
    assert main(["data", "esc50"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no ESC-50 copy given" in err and "--root DIR" in err and "SONIEVAL_ESC50" in err


# ----------------------------------------------------------------------------- download (never the network)


def _zip_copy(copy: Path, zip_path: Path) -> Path:
    """An archive laid out like GitHub's master.zip (everything under ESC-50-master/)."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(copy.rglob("*")):
            if p.is_file():
                zf.write(p, Path("ESC-50-master") / p.relative_to(copy))
    return zip_path


def test_download_offline_is_one_clear_line(tmp_path, capsys):
    url = "http://127.0.0.1:9/ESC-50/archive/master.zip"  # local discard port: refused, no network touched
    rc = main(["data", "esc50", "--root", str(tmp_path / "dl"), "--url", url, "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert (
        url in lines[0] and "download failed" in lines[0] and "--esc50 DIR" in lines[0] and "SONIEVAL_ESC50" in lines[0]
    )
    assert [p.name for p in (tmp_path / "dl").iterdir()] == []  # no partial archive left


def test_download_extract_verify_from_local_archive(tiny_esc50_master, tmp_path, capsys):
    archive = _zip_copy(tiny_esc50_master, tmp_path / "master.zip")
    root = tmp_path / "dl"
    rc = main(["data", "esc50", "--root", str(root), "--url", archive.as_uri(), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0, out
    copy = root / "ESC-50"
    sha = sha256_file(archive)
    assert f"SHA-256 {sha}" in out and f"export SONIEVAL_ESC50={copy.resolve()}" in out
    assert "warning: SHA-256 differs from the one recorded for the official archive" in out  # not the real archive
    assert (copy / "archive.sha256").read_text().startswith(sha)
    assert len((copy / "checksums.sha256").read_text().splitlines()) == 9
    assert sorted(p.name for p in root.iterdir()) == ["ESC-50"]  # atomic: no staging folder or zip left
    assert verify_esc50(copy, progress=False).ok
    # A second run reuses the copy instead of downloading.
    assert main(["data", "esc50", "--root", str(root), "--url", "http://127.0.0.1:9/x.zip", "--no-progress"]) == 0
    assert "not downloading again" in capsys.readouterr().out


def test_download_wrong_sha256_refused(tiny_esc50_master, tmp_path):
    archive = _zip_copy(tiny_esc50_master, tmp_path / "master.zip")
    with pytest.raises(DataError, match="differs from the expected"):
        esc.download_esc50(
            tmp_path / "dl", url=archive.as_uri(), expected_sha256="0" * 64, progress=False, echo=lambda s: None
        )
    assert list((tmp_path / "dl").iterdir()) == []


def test_download_with_matching_sha256(tiny_esc50_master, tmp_path):
    archive = _zip_copy(tiny_esc50_master, tmp_path / "master.zip")
    said = []
    copy = esc.download_esc50(
        tmp_path / "dl",
        url=archive.as_uri(),
        expected_sha256=sha256_file(archive).upper(),
        progress=False,
        echo=said.append,
    )
    assert (copy / "meta" / "esc50.csv").is_file() and not any("warning" in s for s in said)


def test_download_not_a_zip(tmp_path):
    fake = tmp_path / "master.zip"
    fake.write_text("<html>rate limited</html>")
    with pytest.raises(DataError, match="not a valid zip archive"):
        esc.download_esc50(tmp_path / "dl", url=fake.as_uri(), progress=False, echo=lambda s: None)
    assert list((tmp_path / "dl").iterdir()) == []


# ----------------------------------------------------------------------------- splits and listening set


@pytest.mark.parametrize(
    "n, expected",
    [
        (1, (1, 0, 0)),
        (2, (1, 0, 1)),
        (3, (1, 1, 1)),
        (8, (6, 1, 1)),
        (10, (8, 1, 1)),
        (15, (11, 2, 2)),
        (40, (32, 4, 4)),
    ],
)
def test_split_counts_rounding_rule(n, expected):
    assert split_counts(n, 0.1, 0.1) == expected


def test_assign_splits_stratified_and_deterministic():
    clips = fake_clips(50, 40)
    a = assign_splits(clips, SplitSpec(seed=42))
    b = assign_splits(clips.sample(frac=1, random_state=3), SplitSpec(seed=42))  # input order must not matter
    pd.testing.assert_frame_equal(a, b)
    per_class = a.groupby("category")["split"].value_counts().unstack()
    assert (per_class["train"] == 32).all() and (per_class["validation"] == 4).all() and (per_class["test"] == 4).all()
    c = assign_splits(clips, SplitSpec(seed=7))
    assert not a["split"].equals(c["split"])
    # Dropping a class leaves every other class's split as it was.
    d = assign_splits(clips[clips["category"] != "class00"], SplitSpec(seed=42))
    merged = a.merge(d, on="clip_id", suffixes=("", "_d"))
    assert (merged["split"] == merged["split_d"]).all()


def test_eight_clips_per_class_get_validation_and_test():
    s = assign_splits(fake_clips(5, 8))
    assert (
        s.groupby("category")["split"].value_counts().unstack()[["train", "validation", "test"]].values == [6, 1, 1]
    ).all()


def test_listening_set_full_esc50_shape():
    s = assign_splits(fake_clips(50, 40))
    listening = select_listening_set(s, ListeningSetSpec(n_clips=77, seed=42))
    assert len(listening) == 77 and listening["category"].nunique() == 50
    assert (listening["split"] == "test").all() and listening.attrs["note"] == ""
    again = select_listening_set(s.sample(frac=1, random_state=1), ListeningSetSpec(n_clips=77, seed=42))
    assert list(again["clip_id"]) == list(listening["clip_id"])
    other = select_listening_set(s, ListeningSetSpec(n_clips=77, seed=1))
    assert set(other["clip_id"]) != set(listening["clip_id"])


def test_listening_set_fewer_test_clips_than_asked():
    s = assign_splits(fake_clips(5, 8))
    listening = select_listening_set(s, ListeningSetSpec(n_clips=77))
    assert len(listening) == 5 and "only 5 test clips available, fewer than the 77 asked" in listening.attrs["note"]


def test_listening_set_more_classes_than_clips():
    s = assign_splits(fake_clips(10, 8))
    listening = select_listening_set(s, ListeningSetSpec(n_clips=4))
    assert len(listening) == 4 and listening["category"].nunique() == 4
    assert "10 classes but only 4 clips asked" in listening.attrs["note"]


def test_write_split_files_one_filename_per_line(tmp_path):
    s = assign_splits(fake_clips(3, 10))
    paths = write_split_files(s, tmp_path)
    assert sorted(p.name for p in paths.values()) == ["test.txt", "train.txt", "validation.txt"]
    lines = (tmp_path / "test.txt").read_text().splitlines()
    assert lines == sorted(s.loc[s["split"] == "test", "filename"]) and all(x.endswith(".wav") for x in lines)


# ----------------------------------------------------------------------------- synthetic set and the clips stage


def test_synthetic_set_conforms_and_is_deterministic(tmp_path):
    a = make_synthetic_esc50(tmp_path / "a", clips_per_class=1)  # one clip of each of the 10 classes
    b = make_synthetic_esc50(tmp_path / "b", clips_per_class=1)
    report = verify_esc50(a, progress=False)
    assert report.ok and report.synthetic and "SYNTHETIC" in report.summary()
    ds = open_esc50(a)
    assert set(ds.clips["category"]) == set(SYNTHETIC_CATEGORIES) and ds.synthetic
    for f in ds.clips["filename"]:
        assert sha256_file(a / "audio" / f) == sha256_file(b / "audio" / f)
    # Different classes sound different: spectral centroids of the classes are spread out.
    from sonieval.audio import read_audio

    centroids = []
    for cat in SYNTHETIC_CATEGORIES:
        x, rate, _ = read_audio(ds.clips[ds.clips["category"] == cat]["path"].iloc[0])
        mag = np.abs(np.fft.rfft(x))
        centroids.append(float((np.fft.rfftfreq(len(x), 1 / rate) * mag).sum() / mag.sum()))
    assert len({round(c, -2) for c in centroids}) >= 8


def test_protocol_auto_without_env_uses_labelled_synthetic_set(monkeypatch, write_protocol, tmp_path):
    monkeypatch.delenv("SONIEVAL_ESC50", raising=False)
    proto = load_protocol(
        write_protocol(
            {
                "name": "auto",
                "results_dir": str(tmp_path / "res"),
                "data": {
                    "esc50": "auto",
                    "categories": ["dog", "rain"],
                    "listening_set": {"n_clips": 5},
                    "clip_seconds": 1.0,  # the 400-clip set at 1 s: a fifth of the cost
                },
            }
        )
    )
    ds = dataset_for_protocol(proto)
    assert ds.synthetic and "SYNTHETIC" in ds.label and ds.notes and "ignored" in ds.notes[0]


def test_protocol_unknown_category_on_a_real_path(tiny_esc50, write_protocol, tmp_path):
    proto = load_protocol(
        write_protocol({"name": "cat", "data": {"esc50": str(tiny_esc50), "categories": ["synthetic_glides"]}})
    )
    with pytest.raises(DataError, match="did you mean 'synthetic_glide'"):
        dataset_for_protocol(proto)


def test_clips_stage_tables_and_resume(tiny_esc50, write_protocol, tmp_path, capsys):
    path = write_protocol(
        {
            "name": "stage",
            "results_dir": str(tmp_path / "res"),
            "data": {"esc50": str(tiny_esc50), "listening_set": {"n_clips": 2}},
        }
    )
    assert main(["data", "splits", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    res = tmp_path / "res"
    assert "8 clips made" in out and str(res / "splits" / "listening_set.txt") in out and "SYNTHETIC" in out
    from sonieval.tables import CLIPS_COLUMNS, read_table

    table = read_table(res / "tables" / "clips.parquet", "clips")
    assert list(table.columns[: len(CLIPS_COLUMNS)]) == CLIPS_COLUMNS and "listening" in table.columns
    assert table["listening"].sum() == 2 and (table["status"] == "ok").all() and table["synthetic"].all()
    assert (table["length_action"] == "none").all() and not table["resampled"].any()
    assert (res / "splits" / "listening_set.txt").read_text().count(".wav") == 2
    # Rerun: nothing re-read; a changed file is re-read.
    assert main(["data", "splits", str(path), "--no-progress"]) == 0
    assert "0 clips made, 8 already done" in capsys.readouterr().out
    victim = Path(table["path"].iloc[0])
    shutil.copy(victim, tmp_path / "keep.wav")
    from foundation_helpers import write_bad_audio

    write_bad_audio("12s", victim)
    assert main(["data", "splits", str(path), "--no-progress"]) == 0
    assert "1 clips made, 7 already done" in capsys.readouterr().out
    table = read_table(res / "tables" / "clips.parquet", "clips")
    assert table.set_index("clip_id").loc[victim.stem, "length_action"] == "trimmed"


# ----------------------------------------------------------------------------- the real subset


@pytest.mark.esc50
def test_real_subset_verifies(esc50_root, capsys):
    assert main(["data", "esc50", "--esc50", str(esc50_root), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "400 clips listed" in out and "50 classes" in out and "folds present: 4 (partial copy" in out
    assert "all conform" in out


@pytest.mark.esc50
def test_real_subset_splits_and_listening_set(esc50_root):
    clips = open_esc50(esc50_root).clips
    assert len(clips) == 400
    a, b = assign_splits(clips), assign_splits(clips)
    pd.testing.assert_frame_equal(a, b)
    counts = a.groupby("category")["split"].value_counts().unstack()
    assert (counts["train"] == 6).all() and (counts["validation"] == 1).all() and (counts["test"] == 1).all()
    listening = select_listening_set(a)
    assert len(listening) == 50 and listening["category"].nunique() == 50
    assert "only 50 test clips available" in listening.attrs["note"]


@pytest.mark.esc50
@pytest.mark.slow
def test_real_subset_clips_stage(esc50_root, write_protocol, tmp_path):
    proto = load_protocol(
        write_protocol({"name": "real", "results_dir": str(tmp_path / "res"), "data": {"esc50": str(esc50_root)}})
    )
    with open_ledger(proto.results_path) as ledger:
        table = prepare_clips(proto, ledger, progress=False)
    assert len(table) == 400 and (table["status"] == "ok").all()
    assert table["listening"].sum() == 50 and table[table["listening"]]["category"].nunique() == 50
    assert table["dataset"].iloc[0].startswith("ESC-50 copy at") and not table["synthetic"].any()
    assert len((proto.results_path / "splits" / "test.txt").read_text().splitlines()) == 50
