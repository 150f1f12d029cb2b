"""`sonieval score`: folder mode and protocol mode end to end, provenance, errors, resumability."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sonieval.audio import write_wav
from sonieval.cli import main
from sonieval.tables import ITEM_SCORES_COLUMNS, SCORES_COLUMNS, make_system_id, read_table

RATE = 16000


def _clip(seed: int, seconds: float = 1.0, kind: str = "tone") -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 200 + 150 * (seed % 7)
    env = 0.5 + 0.5 * np.sin(2 * np.pi * (1 + seed % 3) * t)
    x = np.sin(2 * np.pi * f0 * t) * env + 0.05 * rng.standard_normal(t.size)
    if kind == "noise":
        x = x + 0.8 * rng.standard_normal(t.size)
    return (0.3 * x).astype(np.float32)


@pytest.fixture
def folders(tmp_path):
    ref, good, bad = tmp_path / "ref", tmp_path / "good", tmp_path / "bad"
    for i in range(8):
        write_wav(ref / f"c{i}.wav", _clip(i), RATE)
        write_wav(good / f"c{i}.wav", _clip(i) + 0.01 * np.random.default_rng(100 + i).standard_normal(RATE), RATE)
        write_wav(bad / f"c{i}.wav", _clip(i, kind="noise"), RATE)
    return ref, good, bad


def test_score_folders_writes_ranked_leaderboard_with_provenance(folders, tmp_path, capsys, torch_threads):
    ref, good, bad = folders
    out = tmp_path / "out"
    rc = main(
        [
            "score",
            "--reference",
            str(ref),
            "--system",
            f"good={good}",
            "--system",
            f"bad={bad}",
            "--out",
            str(out),
            "--bootstrap",
            "50",
            "--no-progress",
        ]
    )
    assert rc == 0
    scores = read_table(out / "scores.parquet", "scores")
    assert set(SCORES_COLUMNS) <= set(scores.columns)
    assert len(scores) == 4 and scores["value"].notna().all()
    kad = scores[scores.metric == "kad"].set_index("system_id")
    assert kad.loc["good", "value"] < kad.loc["bad", "value"]
    assert (kad["ci_low"] < kad["ci_high"]).all() and kad[["ci_low", "ci_high"]].notna().all().all()
    assert kad["bandwidth"].nunique() == 1  # one sigma, from the reference, for every system
    row = kad.loc["good"]
    assert row["embedding"] == "logmel[weight-free]" and row["n_reference"] == 8 and row["n_evaluated"] == 8
    assert row["scale"] == 100 and row["reference_set"].startswith("folder:")
    versions = json.loads(row["versions"])
    assert {"sonieval", "numpy", "torch", "kadtk", "kad_convention"} <= set(versions)
    fad = scores[scores.metric == "fad"]
    assert fad["bandwidth"].isna().all() and (fad["scale"] == 1).all()
    items = read_table(out / "item_scores.parquet", "item_scores")
    assert set(ITEM_SCORES_COLUMNS) <= set(items.columns)
    assert set(items.metric) == {"frame_kad", "embedding_cosine", "logmel_l1", "mrstft", "envelope_correlation"}
    assert len(items) == 2 * 8 * 5 and items["value"].notna().all()
    l1 = items[items.metric == "logmel_l1"].groupby("system_id")["value"].mean()
    assert l1["good"] < l1["bad"]
    board = pd.read_csv(out / "leaderboard.csv")
    assert board[(board.metric == "kad")].sort_values("rank")["system_id"].tolist() == ["good", "bad"]
    md = (out / "leaderboard.md").read_text()
    assert "weight-free" in md and "n_reference = 8" in md
    assert "<table" in (out / "leaderboard.html").read_text()
    assert sorted(p.name for p in (out / "figures").glob("*.png")) == [
        "fad__logmel_weight-free___folders__-.png",
        "kad__logmel_weight-free___folders__-.png",
    ]
    paired = pd.read_csv(out / "paired_kad.csv")
    assert paired[["best_system", "system_id"]].values.tolist() == [["good", "bad"]]
    assert bool(paired["paired_clips"].iloc[0]) and paired["kad_difference"].iloc[0] < 0
    assert paired["ci_high"].iloc[0] < 0 and "Paired bootstrap against the best system" in md
    printed = capsys.readouterr().out
    assert "KAD on logmel[weight-free]" in printed and "1. good" in printed

    # rerun: every system is skipped (ledger) and the tables are identical
    rc = main(
        [
            "score",
            "--reference",
            str(ref),
            "--system",
            f"good={good}",
            "--system",
            f"bad={bad}",
            "--out",
            str(out),
            "--bootstrap",
            "50",
            "--no-progress",
        ]
    )
    assert rc == 0
    again = read_table(out / "scores.parquet", "scores")
    pd.testing.assert_frame_equal(again, scores)


def test_one_broken_file_is_recorded_and_the_rest_scored(folders, tmp_path, capsys):
    ref, good, bad = folders
    (bad / "c3.wav").write_bytes(b"not audio at all")
    out = tmp_path / "out"
    rc = main(
        [
            "score",
            "--reference",
            str(ref),
            "--system",
            f"good={good}",
            "--system",
            f"bad={bad}",
            "--out",
            str(out),
            "--bootstrap",
            "0",
            "--no-progress",
            "--no-items",
            "--metric",
            "kad",
        ]
    )
    assert rc == 1  # a failure was recorded
    scores = read_table(out / "scores.parquet", "scores").set_index("system_id")
    assert scores.loc["bad", "n_evaluated"] == 7 and scores.loc["bad", "n_failed"] == 1
    assert scores.loc["good", "n_evaluated"] == 8
    assert "c3.wav" in capsys.readouterr().out


def test_folder_mode_argument_errors_are_one_line(tmp_path, capsys):
    assert main(["score", "--reference", str(tmp_path), "--system", "x", "--out", str(tmp_path / "o")]) == 2
    assert "expected NAME=DIR" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["score", "--reference", str(empty), "--system", f"a={empty}", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no audio files" in err and len(err.strip().splitlines()) == 1
    assert main(["score", "--reference", str(empty)]) == 2
    assert "folder mode needs" in capsys.readouterr().err


def _protocol_results(tmp_path, reference_set="test"):
    """A results folder as the prepare and sonify stages write it (tables + audio)."""
    results = tmp_path / "results"
    clips, sons = [], []
    categories = ["dog", "rain"]
    for i in range(12):
        cat = categories[i % 2]
        split = "test" if i < 8 else "train"
        p = results / "clips" / f"clip{i}.wav"
        write_wav(p, _clip(i if cat == "dog" else 50 + i), RATE)
        clips.append(
            {
                "clip_id": f"clip{i}",
                "filename": p.name,
                "fold": 4,
                "target": i % 2,
                "category": cat,
                "path": str(p),
                "split": split,
                "listening": i < 4,
                "status": "done",
                "error": None,
            }
        )
    for post in ("minmax", "minmax+squared"):
        sid = make_system_id("ast", "LIN", 0.005, 3, "transpose", post)
        for i in range(8, 12):
            cat = categories[i % 2]
            p = results / "sonifications" / sid / f"clip{i}.wav"
            noisy = "noise" if post == "minmax+squared" else "tone"
            write_wav(p, _clip(i if cat == "dog" else 50 + i, kind=noisy), RATE)
            sons.append(
                {
                    "system_id": sid,
                    "encoder": "ast",
                    "variant": "LIN",
                    "lr": 0.005,
                    "epoch": 3,
                    "alignment": "transpose",
                    "postprocess": post,
                    "clip_id": f"clip{i}",
                    "category": cat,
                    "path": str(p.relative_to(results)),
                    "sha256": "x",
                    "status": "done",
                    "error": None,
                    "random_init": True,
                }
            )
    (results / "tables").mkdir(parents=True)
    pd.DataFrame(clips).to_parquet(results / "tables" / "clips.parquet")
    pd.DataFrame(sons).to_parquet(results / "tables" / "sonifications.parquet")
    proto = tmp_path / "p.yaml"
    proto.write_text(
        f"name: t\nresults_dir: {results}\ndata: {{esc50: synthetic}}\nencoders: [{{name: ast, size: small}}]\n"
        f"metrics: {{embeddings: [logmel], reference_set: {reference_set}, bootstrap: 30}}\n"
    )
    return proto, results


def test_score_protocol_per_class_rows_and_dot_plots(tmp_path, torch_threads):
    proto, results = _protocol_results(tmp_path)
    assert main(["score", str(proto), "--no-progress"]) == 0
    scores = read_table(results / "scores" / "scores.parquet", "scores")
    overall = scores[scores.category.isna()]
    assert len(overall) == 4 and (overall.reference_set.str.startswith("esc50:test")).all()
    assert (overall.n_reference == 8).all() and (overall.n_evaluated == 4).all()
    per_class = scores[scores.category.notna()]
    assert set(per_class.category) == {"dog", "rain"}
    assert (per_class[per_class.metric == "kad"].n_reference == 4).all()
    figs = sorted(p.name for p in (results / "scores" / "figures").glob("*.png"))
    assert len(figs) == 4 and any("ast__minmax+squared" in f for f in figs)
    items = read_table(results / "scores" / "item_scores.parquet", "item_scores")
    assert set(items.clip_id) == {"clip8", "clip9", "clip10", "clip11"}
    md = (results / "scores" / "leaderboard.md").read_text()
    assert "Per class (KAD" in md and "| dog |" in md and "| rain |" in md
    assert overall["system_random_init"].astype(bool).all() and "RANDOMLY INITIALISED" in md and "` †" in md


def test_unknown_reference_split_is_one_clear_line(tmp_path, capsys):
    proto, _ = _protocol_results(tmp_path, reference_set="validation")
    assert main(["score", str(proto), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "split(s) validation not in the clips table" in err and "available: test, train" in err


def test_an_embedding_without_weights_fails_alone(folders, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ref, good, _ = folders
    base = [
        "score",
        "--reference",
        str(ref),
        "--system",
        f"good={good}",
        "--bootstrap",
        "0",
        "--no-progress",
        "--no-items",
        "--metric",
        "kad",
    ]
    rc = main(base + ["--out", str(tmp_path / "a"), "--embedding", "kadtk:vggish", "--embedding", "logmel"])
    assert rc == 1
    out = capsys.readouterr().out
    assert "failed: kadtk:vggish: pretrained weights are not cached" in out
    scores = read_table(tmp_path / "a" / "scores.parquet", "scores")
    assert scores["embedding"].tolist() == ["logmel[weight-free]"]
    assert main(base + ["--out", str(tmp_path / "b"), "--embedding", "kadtk:vggish"]) == 2
    err = capsys.readouterr().err.strip()
    assert "nothing could be scored" in err and len(err.splitlines()) == 1


def test_all_saturated_systems_are_called_out(tmp_path):
    from sonieval.metrics.render import leaderboard_markdown
    from sonieval.metrics.scoring import build_leaderboard

    rows = []
    for sid, value in (("a", 84.1), ("b", 84.2)):
        rows.append(
            {
                "system_id": sid,
                "metric": "kad",
                "embedding": "logmel[weight-free]",
                "reference_set": "esc50:test",
                "n_reference": 10,
                "n_evaluated": 10,
                "value": value,
                "ci_low": np.nan,
                "ci_high": np.nan,
                "bandwidth": 3.0,
                "scale": 100.0,
                "versions": json.dumps({"sonieval": "0"}),
                "category": None,
                "saturated": True,
                "n_failed": 0,
                "error": None,
                "cross_term": 0.0,
            }
        )
    md = leaderboard_markdown(build_leaderboard(pd.DataFrame(rows)))
    assert "All systems are saturated" in md and md.count("| saturated |") == 2


def test_reference_clips_takes_a_seeded_subset_of_the_reference_split(tmp_path):
    from sonieval.metrics.leaderboard import protocol_sets
    from sonieval.protocol import load_protocol

    proto_path, _ = _protocol_results(tmp_path)
    text = proto_path.read_text().replace("bootstrap: 30}", "bootstrap: 30, reference_clips: 5}")
    proto_path.write_text(text)
    reference, _, label = protocol_sets(load_protocol(proto_path))
    again, _, _ = protocol_sets(load_protocol(proto_path))
    assert len(reference.clip_ids) == 5 and reference.clip_ids == again.clip_ids  # seeded: the same subset
    assert set(reference.clip_ids) <= {f"clip{i}" for i in range(8)}  # from the test split only
    assert label.startswith("esc50:test[5 of 8 clips, seed ")
