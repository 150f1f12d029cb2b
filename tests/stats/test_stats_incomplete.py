"""Incomplete, unbalanced and messy rating data: planted nulls hold their error rate, planted
effects are found, every statistic sees the same rows, and undefined numbers say why."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sonieval.cli import main
from sonieval.document import fmt as _fmt
from sonieval.errors import DataError
from sonieval.stats import models
from sonieval.stats.reliability import icc_variance_components
from sonieval.stats.reporting import ReportOptions, build_report
from sonieval.stats.simulate import simulate_incomplete_ratings, simulate_ratings, simulate_scores
from sonieval.tables import write_table


def _nested_null(rng, n_sys=4, clips_per_system=8, n_raters=24, per_rater=12):
    """Equal system means; clips nested in systems (each system its own clips); each rater a subset."""
    n_clips = n_sys * clips_per_system
    r = np.repeat(np.arange(n_raters), per_rater)
    c = np.concatenate([rng.choice(n_clips, per_rater, replace=False) for _ in range(n_raters)])
    y = 3 + rng.normal(0, 0.5, n_raters)[r] + rng.normal(0, 0.6, n_clips)[c] + rng.normal(0, 0.8, len(r))
    return pd.DataFrame(
        {
            "rater_id": r.astype(str),
            "clip_id": c.astype(str),
            "system_id": (c % n_sys).astype(str),
            "mark": np.clip(np.round(y), 1, 5),
        }
    )


def _old_per_rater_wilcoxon_p(part: pd.DataFrame, a: str, b: str) -> float:
    """The report's former test: Wilcoxon on per-rater means over whatever clips each rater saw."""
    means = part.groupby(["rater_id", "system_id"])["mark"].mean().unstack()[[a, b]].dropna()
    return float(stats.wilcoxon(means[a], means[b]).pvalue)


def test_planted_null_holds_the_nominal_false_positive_rate():
    """500 incomplete data sets with no system difference: the mixed-model contrast rejects at the
    nominal 5 % (within binomial error), Holm holds the family-wise rate; the former per-rater
    Wilcoxon, blind to clip sampling, does not (the control)."""
    rng = np.random.default_rng(2024)
    n_sets = 500
    first_pair, family, old = [], [], []
    for _ in range(n_sets):
        part = _nested_null(rng)
        _, info, fit = models.mixed_model(part)
        pairs = models.mixed_model_contrasts(fit, info["systems_fitted"])
        first_pair.append(pairs["p_value"].iloc[0] < 0.05)
        family.append(pairs["p_holm"].min() < 0.05)
        old.append(_old_per_rater_wilcoxon_p(part, "0", "1") < 0.05)
    sd = np.sqrt(0.05 * 0.95 / n_sets)
    assert abs(np.mean(first_pair) - 0.05) < 3.3 * sd, np.mean(first_pair)  # two-sided 99.9 % binomial band
    assert np.mean(family) < 0.05 + 3.3 * sd, np.mean(family)
    assert np.mean(old) > 0.15, np.mean(old)


def test_report_on_an_incomplete_design_uses_mixed_model_contrasts_and_finds_the_planted_effect(tmp_path):
    quality = [3.6, 3.0, 3.0, 2.4]  # S1 > S2 = S3 > S4
    ratings, plant = simulate_incomplete_ratings(
        quality=quality, n_raters=120, n_clips=40, per_rater=(6, 30), attributes=("visual", "audio"), seed=3
    )
    scores = simulate_scores(plant, metrics={"kad": ("lower", 0.9)}, seed=3)
    rp, sp = write_table(ratings, tmp_path / "r.parquet"), write_table(scores, tmp_path / "s.parquet")
    result = build_report(rp, sp, tmp_path / "out", options=ReportOptions(n_boot=100, figures=False))
    for info in result.summary["pairwise"].values():
        assert info["method"] == "mixed_model" and "incomplete" in info["reason"]
        pairs = {(p["system_a"].split("/")[1], p["system_b"].split("/")[1]): p for p in info["pairs"]}
        assert pairs[("S1", "S4")]["p_holm"] < 1e-6 and pairs[("S1", "S4")]["difference"] == pytest.approx(
            1.2, abs=0.25
        )
        assert pairs[("S2", "S3")]["p_holm"] > 0.05  # the planted tie
    fit = result.tables["mixed_model_fit"]
    assert (fit["n_rows_used"] == fit["n_rows"]).all() and fit["n_rows"].sum() == len(ratings)
    fr = result.tables["friedman"]
    assert fr["note"].str.startswith("secondary (design incomplete").all()
    rel = result.tables["reliability"]
    assert (rel["n_marks"] == fit["n_rows"].to_numpy()).all()
    block = result.tables["reliability_complete_block"]
    assert (block["share_of_marks"] < 0.5).all() and block["method"].str.startswith("greedy").all()
    md = (tmp_path / "out" / "report.md").read_text()
    assert "primary pairwise result = mixed-model contrasts" in md and "Why: design incomplete" in md


def test_icc_intervals_cover_the_planted_value():
    """Monte-Carlo ICC intervals on incomplete designs: coverage near 95 % over 150 data sets."""
    rng = np.random.default_rng(11)
    s_sd, r_sd, e_sd = 0.8, 0.5, 0.7
    hits_a1, hits_ak = [], []
    for _ in range(150):
        raters, units, per = 30, 40, 15
        r = np.repeat(np.arange(raters), per)
        u = np.concatenate([rng.choice(units, per, replace=False) for _ in range(raters)])
        y = rng.normal(0, s_sd, units)[u] + rng.normal(0, r_sd, raters)[r] + rng.normal(0, e_sd, len(r))
        part = pd.DataFrame({"rater_id": r.astype(str), "system_id": "s", "clip_id": u.astype(str), "mark": y})
        res = icc_variance_components(part, n_draws=1000, seed=1)
        true_a1 = s_sd**2 / (s_sd**2 + r_sd**2 + e_sd**2)
        true_ak = s_sd**2 / (s_sd**2 + (r_sd**2 + e_sd**2) / res["k_hat"])
        hits_a1.append(res["icc_a1_ci95"][0] <= true_a1 <= res["icc_a1_ci95"][1])
        hits_ak.append(res["icc_ak_ci95"][0] <= true_ak <= res["icc_ak_ci95"][1])
    for hits in (hits_a1, hits_ak):
        assert 0.95 - 3.3 * np.sqrt(0.95 * 0.05 / 150) < np.mean(hits) <= 1.0, np.mean(hits)


def _tiny(tmp_path, ratings, scores, **opts):
    rp = write_table(ratings, tmp_path / "ratings.csv")
    sp = write_table(scores, tmp_path / "scores.csv")
    return build_report(rp, sp, tmp_path / "out", options=ReportOptions(n_boot=50, seed=1, **opts))


def test_single_clip_and_single_rater_are_undefined_with_reasons(tmp_path):
    ratings, plant = simulate_ratings(n_systems=4, n_raters=6, n_clips=1, seed=2)
    scores = simulate_scores(plant, seed=2)
    result = _tiny(tmp_path / "clip", ratings, scores, figures=False)
    fit = result.tables["mixed_model_fit"]
    assert fit["note"].str.contains("one clip").all() and fit["rater_variance"].isna().all()
    assert result.tables["mixed_model"]["estimate"].isna().all()
    assert result.tables["system_means"]["ci_low"].isna().all()
    assert any("one clip" in n and "bootstrap" in n for n in result.summary["notes"])
    ratings, plant = simulate_ratings(n_systems=4, n_raters=1, n_clips=6, seed=2)
    result = _tiny(tmp_path / "rater", ratings, simulate_scores(plant, seed=2), figures=False)
    rel = result.summary["reliability"]["visual"]
    assert rel["icc_a1"] is None and rel["krippendorff_alpha_ordinal"] is None and "one rater" in rel["note"]
    assert result.tables["mixed_model_fit"]["note"].str.contains("one rater").all()
    assert result.tables["pairwise_mixed_model"].empty


def test_duplicates_from_the_command_line(tmp_path, capsys):
    ratings, plant = simulate_ratings(n_systems=3, n_raters=5, n_clips=4, seed=6)
    scores = simulate_scores(plant, seed=6)
    son = ratings[ratings["role"] == "sonification"]
    ratings = pd.concat(
        [ratings, son.iloc[[0, 7, 9, 11]].assign(mark=lambda d: np.where(d["mark"] > 1, d["mark"] - 1, 2))],
        ignore_index=True,
    )
    rp, sp = write_table(ratings, tmp_path / "r.csv"), write_table(scores, tmp_path / "s.csv")
    base = ["report", "--ratings", str(rp), "--scores", str(sp), "--bootstrap", "20", "--no-figures"]
    assert main(base + ["--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "4 duplicated (rater_id, trial_id, attribute) row(s)" in err
    assert "rater001-t" in err and "…" in err and "--duplicates first|last|mean" in err
    assert main(base + ["--out", str(tmp_path / "mean"), "--duplicates", "mean"]) == 0
    summary = json.loads((tmp_path / "mean" / "summary.json").read_text())
    assert summary["n_ratings"] == len(ratings) - 4
    assert any("their mean mark kept (--duplicates mean)" in n for n in summary["notes"])
    dist = pd.read_csv(tmp_path / "mean" / "tables" / "mark_distribution.csv")
    half = [c for c in dist.columns if c.startswith("share_") and "." in c]
    assert half and np.allclose(dist[[c for c in dist.columns if c.startswith("share_")]].sum(axis=1), 1)
    assert "duplicated" in (tmp_path / "mean" / "report.md").read_text().split("## 1.")[0]  # in the data checks


def test_only_the_columns_the_statistics_use_are_required(tmp_path):
    ratings, plant = simulate_incomplete_ratings(quality=[3.5, 3.0, 2.5], n_raters=20, n_clips=8, per_rater=10, seed=4)
    ratings = ratings[["rater_id", "clip_id", "system_id", "attribute", "mark"]]
    scores = simulate_scores(plant, metrics={"kad": ("lower", 0.9)}, seed=4)[["system_id", "metric", "value"]]
    result = _tiny(tmp_path, ratings, scores, figures=False)
    assert result.summary["n_ratings"] == len(ratings)
    assert any("no role column" in n for n in result.summary["notes"])
    with pytest.raises(DataError, match="lacks column.*attribute"):
        _tiny(tmp_path / "x", ratings.drop(columns="attribute"), scores, figures=False)


def test_deprecated_protocol_key_and_removed_flag(tmp_path, capsys):
    ratings, plant = simulate_ratings(n_systems=3, n_raters=5, n_clips=4, seed=6)
    results = tmp_path / "results"
    write_table(ratings, results / "study" / "ratings.parquet")
    write_table(simulate_scores(plant, seed=6), results / "scores" / "scores.parquet")
    proto = tmp_path / "p.yaml"
    proto.write_text(f"name: dep\nresults_dir: {results}\nreport:\n  bootstrap: 20\n  mixed_model_max_rows: 3000\n")
    assert main(["report", "--protocol", str(proto), "--no-figures"]) == 0
    summary = json.loads((results / "report" / "summary.json").read_text())
    assert any("mixed_model_max_rows" in n and "deprecated and ignored" in n for n in summary["notes"])
    capsys.readouterr()
    assert main(["report", "--protocol", str(proto), "--mixed-model-max-rows", "3000"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--mixed-model-max-rows was removed" in err


def test_small_defects(tmp_path, monkeypatch):
    """NaN rows last in the lowest-agreement table; no '-0.000'; a system without marks in one
    attribute says why; the stamp sits below the x-axis label of a one-system figure."""
    assert _fmt(-0.0) == "0.000" and _fmt(-0.0004) == "-4.0e-04" and _fmt(-0.25, 2) == "-0.25"
    ratings, plant = simulate_ratings(n_systems=1, n_raters=6, n_clips=6, seed=9)
    solo = ratings.iloc[[0]].assign(rater_id="solo", role="sonification", attribute="visual")
    extra = ratings[(ratings["role"] == "sonification") & (ratings["attribute"] == "visual")].assign(
        system_id="sim/X/lr0.001/e1/transpose/minmax", trial_id=lambda d: d["trial_id"] + "-x"
    )
    ratings = pd.concat([ratings, solo, extra], ignore_index=True)

    from sonieval import plotting

    checked = []
    original = plotting.save_figure

    def check_then_save(fig, path, **kw):
        renderer = fig.canvas.get_renderer()
        stamp = next(t for t in fig.texts if "n_ratings=" in t.get_text())
        label_bottom = min(ax.get_tightbbox(renderer).y0 for ax in fig.axes)
        checked.append(stamp.get_window_extent(renderer).y1 <= label_bottom)
        return original(fig, path, **kw)

    monkeypatch.setattr(plotting, "save_figure", check_then_save)
    result = _tiny(tmp_path, ratings, simulate_scores(plant, seed=9))
    assert checked and all(checked)
    md = (tmp_path / "out" / "report.md").read_text()
    lowest = md.split("lowest ten")[1].split("\n\n")[1].splitlines()
    assert "n/a" not in lowest[2]  # first data row: a defined ρ (the rater without one comes last)
    assert "-0.000" not in md
    emm = result.tables["mixed_model"]
    row = emm[(emm["attribute"] == "audio") & emm["system_id"].str.contains("/X/")].iloc[0]
    assert pd.isna(row["estimate"]) and "no marks for this attribute" in row["note"]


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for n in (1, 2, 6, 45):
        p = rng.random(n) ** 3
        np.testing.assert_allclose(models.holm(p), multipletests(p, method="holm")[1], rtol=1e-12)
    assert np.isnan(models.holm([0.01, np.nan, 0.04])[1])
    np.testing.assert_allclose(models.holm([0.01, np.nan, 0.04])[[0, 2]], [0.02, 0.04])
