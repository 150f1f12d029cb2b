"""The demo's entry point (write_simulated_report) on leaderboard-shaped tables, and per-class
correlations with real ESC-50 clip ids and classes."""

import json

import numpy as np
import pandas as pd

from sonieval.stats.reporting import ReportOptions, build_report
from sonieval.stats.simulate import simulate_ratings, simulate_scores, write_simulated_report
from sonieval.tables import make_system_id, write_table


def _leaderboard_like(systems, clips, categories):
    rng = np.random.default_rng(0)
    rows = []
    for i, sid in enumerate(systems):
        for metric in ("kad", "fad"):
            base = {
                "system_id": sid,
                "metric": metric,
                "embedding": "logmel",
                "reference_set": "esc50-test",
                "n_reference": 40,
                "n_evaluated": 20,
                "ci_low": np.nan,
                "ci_high": np.nan,
                "bandwidth": 1.0,
                "scale": 100.0,
                "versions": "sonieval 0.1.0",
                "ci_method": "none",
                "error": None,
            }
            rows.append({**base, "category": None, "value": 10.0 + i + rng.normal(0, 0.3)})
            for cat in categories:
                rows.append({**base, "category": cat, "value": 10.0 + i + rng.normal(0, 1.0)})
    rows.append(
        {
            **rows[0],
            "metric": "kad",
            "system_id": "ast/LIN/lr0.01/e1/transpose/codec",
            "value": np.nan,
            "error": "reference kernel failed",
        }
    )
    scores = pd.DataFrame(rows)
    items = pd.DataFrame(
        [
            {
                "system_id": sid,
                "clip_id": c,
                "metric": m,
                "embedding": "logmel",
                "value": float(rng.random()),
                "direction": d,
                "error": None,
            }
            for sid in systems
            for c in clips
            for m, d in (("frame_kad", "lower"), ("envelope_correlation", "higher"))
        ]
    )
    return scores, items


SYSTEMS = [make_system_id("ast", v, 0.005, 3, "transpose", "minmax") for v in ("LIN", "CONV", "ATTN", "LIN-D")]


def test_write_simulated_report_says_simulated_everywhere(tmp_path):
    clips = [f"1-{i}-A-0" for i in range(8)]
    scores, items = _leaderboard_like(SYSTEMS, clips, ["dog", "rain"])
    result = write_simulated_report(tmp_path / "rep", scores=scores, item_scores=items, n_raters=6, n_boot=50)
    out = tmp_path / "rep"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["simulated"] is True and "SIMULATED" in summary["warning"]
    assert "planted" in summary["warning"]
    assert (out / "report.md").read_text().count("SIMULATED") >= 3
    assert "SIMULATED" in (out / "report.html").read_text()
    for csv in (out / "tables").glob("*.csv"):
        df = pd.read_csv(csv)
        assert (df["simulated"] == "SIMULATED").all(), csv.name
    assert (out / "inputs" / "ratings_SIMULATED.csv").is_file()
    assert {p.name for p in (out / "figures").glob("*.png")} >= {"mark_distribution.png", "scatter_kad.png"}
    # the real systems are the rated ones; items use the real clip ids, so item level exists
    assert {s["system"] for s in summary["systems"]} == set(SYSTEMS + ["ast/LIN/lr0.01/e1/transpose/codec"])
    levels = {(c["metric"], c["level"]) for c in summary["correlations"]}
    assert ("frame_kad", "item") in levels and ("envelope_correlation", "item") in levels
    assert any("non-finite value left out" in n for n in summary["notes"])
    assert any("category column" in n for n in summary["notes"])  # per-class rows but no classes in ratings
    assert result.summary["n_raters_kept"] == 6


def test_per_class_correlations_with_esc50_classes(tmp_path, esc50_root):
    meta = pd.read_csv(esc50_root / "meta" / "esc50.csv")
    meta = meta[meta["category"].isin(sorted(meta["category"].unique())[:3])]
    meta = meta.groupby("category").head(4)
    clips = meta["filename"].str.replace(".wav", "", regex=False).tolist()
    categories = sorted(meta["category"].unique())
    systems = [
        make_system_id("hubert", v, 0.01, 50, "transpose", "minmax")
        for v in ("LIN", "CONV", "ATTN", "LIN-D", "CONV-GN")
    ]
    ratings, plant = simulate_ratings(systems, quality=np.linspace(4.5, 1.5, 5), n_raters=6, clips=clips, seed=4)
    scores = simulate_scores(plant, metrics={"kad": ("lower", 1.0)}, seed=4)
    per_class = pd.concat([scores.assign(category=c) for c in categories], ignore_index=True)
    clips_table = pd.DataFrame(
        {
            "clip_id": clips,
            "filename": meta["filename"].tolist(),
            "fold": meta["fold"].tolist(),
            "target": meta["target"].tolist(),
            "category": meta["category"].tolist(),
            "path": [str(esc50_root / "audio" / f) for f in meta["filename"]],
            "split": "test",
            "status": "ok",
            "error": None,
        }
    )
    rp = write_table(ratings, tmp_path / "ratings.csv")
    sp = write_table(pd.concat([scores, per_class], ignore_index=True), tmp_path / "scores.csv")
    cp = write_table(clips_table, tmp_path / "clips.csv")
    result = build_report(rp, sp, tmp_path / "out", clips_path=cp, options=ReportOptions(n_boot=50, figures=False))
    cls = [c for c in result.summary["correlations"] if c["level"] == "class"]
    assert {c["category"] for c in cls} == set(categories)
    assert all(c["n"] == 5 and c["spearman"] > 0.5 for c in cls)
    assert any(s["kind"] == "clips" for s in result.summary["provenance"]["inputs"])
