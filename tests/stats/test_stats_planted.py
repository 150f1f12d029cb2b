"""Simulated ratings with a planted structure: the report must recover what was planted."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sonieval.stats.reporting import ReportOptions, build_report
from sonieval.stats.simulate import simulate_item_scores, simulate_ratings, simulate_scores
from sonieval.tables import write_table


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    quality = np.linspace(4.4, 1.6, 8)  # S1 best … S8 worst
    ratings, plant = simulate_ratings(
        quality=quality,
        n_raters=16,
        n_clips=24,
        rater_bias_sd=0.5,
        clip_sd=0.5,
        careless={"random": 2, "constant": 1},
        seed=11,
    )
    scores = simulate_scores(
        plant,
        metrics={
            "kad": ("lower", 1.0),  # agrees perfectly (lower is better)
            "fad": ("lower", -1.0),  # planted to disagree
            "envelope_correlation": ("higher", 1.0),  # agrees, higher is better
            "cosine_distance": ("lower", 0.6),  # partial agreement, realised value checked below
        },
        seed=11,
    )
    items = pd.concat(
        [
            simulate_item_scores(plant, rho=0.8, seed=11),
            simulate_item_scores(plant, rho=0.0, seed=12, metric="l2_distance"),
        ],
        ignore_index=True,
    )
    paths = {
        k: write_table(v, tmp / f"{k}.csv") for k, v in {"ratings": ratings, "scores": scores, "items": items}.items()
    }
    result = build_report(
        paths["ratings"],
        paths["scores"],
        tmp / "report",
        item_scores_path=paths["items"],
        options=ReportOptions(n_boot=300, seed=2, figures=False),
    )
    return result, plant, scores


def test_screening_removes_planted_careless_raters_only(planted):
    result, plant, _ = planted
    excluded = {e["rater_id"] for e in result.summary["excluded_raters"]}
    assert excluded == set(plant.careless)
    assert result.summary["n_raters"] == 19 and result.summary["n_raters_kept"] == 16


def test_recovers_system_ordering(planted):
    result, plant, _ = planted
    for attribute in ("visual", "audio"):
        rows = [s for s in result.summary["systems"] if s["attribute"] == attribute]
        est = pd.Series({s["system"]: s["mean"] for s in rows})
        truth = pd.Series(plant.quality)[est.index]
        assert stats.kendalltau(est, truth).statistic == pytest.approx(1.0)
        for s in rows:  # cluster bootstrap CI is wider than the naive t interval and holds the mean
            assert s["ci_low"] < s["mean"] < s["ci_high"]
            assert s["ci_high"] - s["ci_low"] > s["t_ci_high"] - s["t_ci_low"]
    mm = result.tables["mixed_model"]
    for _attribute, part in mm.groupby("attribute"):
        truth = pd.Series(plant.quality)[part["system_id"]]
        assert stats.spearmanr(part["estimate"], truth.to_numpy()).statistic > 0.95


def test_correlation_sign_follows_declared_direction(planted):
    result, _, _ = planted
    corr = {(c["metric"], c["attribute"]): c for c in result.summary["correlations"] if c["level"] == "system"}
    for attribute in ("visual", "audio"):
        assert corr[("kad", attribute)]["spearman"] == pytest.approx(1.0)
        assert corr[("envelope_correlation", attribute)]["spearman"] == pytest.approx(1.0)
        assert corr[("fad", attribute)]["spearman"] == pytest.approx(-1.0)
        # 8 systems: exact enumeration, p = 2/8! for a perfect ordering
        assert corr[("kad", attribute)]["p_permutation"] == pytest.approx(2 / 40320)


def test_correlation_size_matches_realised_plant(planted):
    result, plant, scores = planted
    cos = scores[scores["metric"] == "cosine_distance"].set_index("system_id")["value"]
    truth = pd.Series(plant.quality)[cos.index]
    realised = stats.spearmanr(-cos, truth).statistic
    for c in result.summary["correlations"]:
        if c["metric"] == "cosine_distance" and c["level"] == "system":
            assert c["spearman"] == pytest.approx(realised, abs=0.15)
            assert c["ci_low"] <= c["spearman"] <= c["ci_high"]


def test_item_level_and_metric_comparison(planted):
    result, _, _ = planted
    items = [c for c in result.summary["correlations"] if c["level"] == "item" and c["metric"] == "embedding_distance"]
    assert {c["attribute"] for c in items} == {"visual", "audio"}
    for c in items:
        assert c["n"] == 8 * 24
        assert 0.3 < c["spearman"] and c["ci_low"] < c["spearman"] < c["ci_high"]
    noise = [c for c in result.summary["correlations"] if c["level"] == "item" and c["metric"] == "l2_distance"]
    assert all(c["ci_low"] < 0 < c["ci_high"] for c in noise)  # planted: no relation at item level
    cmp = result.tables["metric_comparison"]
    row = cmp[(cmp["metric_a"] == "fad") & (cmp["metric_b"] == "kad") & (cmp["attribute"] == "audio")].iloc[0]
    assert row["level"] == "system" and row["difference"] == pytest.approx(-2.0) and row["ci_high"] < 0
    row = cmp[
        (cmp["metric_a"] == "embedding_distance") & (cmp["metric_b"] == "l2_distance") & (cmp["attribute"] == "visual")
    ].iloc[0]
    assert row["level"] == "item" and row["difference"] > 0.3 and row["ci_low"] > 0


def test_reliability_and_outputs(planted):
    result, _, _ = planted
    rel = result.summary["reliability"]
    for attribute in ("visual", "audio"):
        r = rel[attribute]
        assert 0.3 < r["krippendorff_alpha_ordinal"] < 0.95
        assert r["krippendorff_alpha_ci"][0] < r["krippendorff_alpha_ordinal"] < r["krippendorff_alpha_ci"][1]
        assert r["icc2_k"] > r["icc2_1"] > 0.3
        assert r["icc_ck"] >= r["icc_ak"] and r["icc_c1"] >= r["icc_a1"]  # rater variance counts against agreement
        assert r["n_marks"] == 16 * 24 * 8 and r["icc_k_hat"] == 16  # every kept rater, every mark
        assert r["complete_block"]["share_of_marks"] == 1.0
    out = result.out_dir
    summary = json.loads((out / "summary.json").read_text())
    for key in ("n_ratings", "n_raters", "n_raters_kept", "reliability", "systems", "correlations"):
        assert key in summary
    assert set(summary["systems"][0]) >= {"system", "attribute", "mean", "ci_low", "ci_high", "n"}
    assert set(summary["correlations"][0]) >= {
        "metric",
        "attribute",
        "level",
        "spearman",
        "kendall_tau_b",
        "pearson",
        "p_permutation",
        "ci_low",
        "ci_high",
        "n",
    }
    fr = result.tables["friedman"]
    assert (fr["p_value"] < 1e-6).all()
    pw = result.tables["pairwise_wilcoxon"]
    assert (pw["p_holm"] >= pw["p_value"]).all()


def test_mixed_model_sees_planted_rater_and_clip_variance(planted):
    result, plant, _ = planted
    fit = result.tables["mixed_model_fit"]
    kept = [r for r in plant.rater_bias if r not in plant.careless]
    planted_rater_var = np.var([plant.rater_bias[r] for r in kept], ddof=1)
    planted_clip_var = np.var(list(plant.clip_effect.values()), ddof=1)
    for row in fit.itertuples():
        assert row.converged
        # rounding to the 1-5 scale shrinks the effects a little; the size must still match
        assert 0.4 * planted_rater_var < row.rater_variance < 2.0 * planted_rater_var
        assert 0.4 * planted_clip_var < row.clip_variance < 2.0 * planted_clip_var
        assert row.n_rows_used == row.n_rows == 16 * 24 * 8  # every mark, no subsample
