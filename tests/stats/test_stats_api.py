"""The public stats API as a user calls it: ``sonieval.stats.report`` on two DataFrames, and the tidy
reliability functions (column names as arguments) against the report's own maths, pingouin and the
``krippendorff`` package. Every rating here is SIMULATED (sonieval.stats.simulate) and stays labelled so."""

import json

import krippendorff
import numpy as np
import pandas as pd
import pingouin
import pytest

import sonieval.stats as stats
from sonieval.cli import main
from sonieval.errors import DataError, SonievalError
from sonieval.stats import models, reliability
from sonieval.stats.simulate import simulate_ratings, simulate_scores


@pytest.fixture(scope="module")
def study():
    """A small SIMULATED study: 3 systems, 6 raters, 6 clips, both attributes, and its scores."""
    ratings, plant = simulate_ratings(n_systems=3, n_raters=6, n_clips=6, seed=5)
    return ratings, simulate_scores(plant, seed=5)


def _one_attribute(ratings: pd.DataFrame, attribute: str = "visual") -> pd.DataFrame:
    return ratings[(ratings["role"] == "sonification") & (ratings["attribute"] == attribute)]


# --- report --------------------------------------------------------------------------------------


def test_report_from_two_dataframes_returns_dataframes_and_writes_nothing(study, tmp_path, monkeypatch):
    ratings, scores = study
    monkeypatch.chdir(tmp_path)
    res = stats.report(ratings, scores, n_boot=50, seed=0)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a folder
    assert res.out_dir is None and res.files == []
    assert {"system_means", "reliability", "mixed_model", "correlations", "screening"} <= set(res.tables)
    assert all(isinstance(t, pd.DataFrame) for t in res.tables.values())
    assert res.summary["simulated"] is True and "SIMULATED" in res.summary["warning"]
    assert res.summary["n_ratings"] == len(ratings)
    kinds = {i["kind"]: i for i in res.summary["provenance"]["inputs"]}
    assert kinds["ratings"]["path"] == "<ratings DataFrame>" and len(kinds["ratings"]["sha256"]) == 64
    assert kinds["ratings"]["n_rows"] == len(ratings)
    means = res.tables["system_means"]
    assert set(means["system_id"]) == set(scores["system_id"]) and means["mean"].notna().all()


def test_report_to_a_folder_writes_the_files_the_cli_writes(study, tmp_path):
    ratings, scores = study
    ratings.to_csv(tmp_path / "ratings.csv", index=False)
    scores.to_csv(tmp_path / "scores.csv", index=False)
    rc = main(
        [
            "report",
            "--ratings",
            str(tmp_path / "ratings.csv"),
            "--scores",
            str(tmp_path / "scores.csv"),
            "--out",
            str(tmp_path / "cli"),
            "--bootstrap",
            "50",
            "--seed",
            "0",
            "--no-progress",
        ]
    )
    assert rc == 0
    res = stats.report(ratings, scores, out_dir=tmp_path / "api", n_boot=50, seed=0)
    cli_files = sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*") if p.is_file())
    api_files = sorted(p.relative_to(tmp_path / "api") for p in res.files)
    assert api_files == cli_files and len(api_files) > 20
    for rel in (f for f in api_files if f.suffix == ".csv"):
        a = pd.read_csv(tmp_path / "api" / rel).drop(columns="provenance")
        c = pd.read_csv(tmp_path / "cli" / rel).drop(columns="provenance")
        pd.testing.assert_frame_equal(a, c, obj=str(rel))
        assert (a["simulated"] == "SIMULATED").all()
    a, c = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("api", "cli"))
    for key in ("provenance", "notes"):  # where the inputs came from; the CLI adds a data-source line
        a.pop(key), c.pop(key)
    assert a == c
    assert "SIMULATED" in (tmp_path / "api" / "report.html").read_text()
    means = pd.read_csv(tmp_path / "api" / "tables" / "system_means.csv")
    pd.testing.assert_series_equal(means["mean"], res.tables["system_means"]["mean"].reset_index(drop=True))


def test_report_bad_input_is_one_line(study):
    ratings, scores = study
    with pytest.raises(DataError, match=r"ratings table lacks column\(s\) mark") as info:
        stats.report(ratings.drop(columns="mark"), scores)
    assert "\n" not in str(info.value)
    with pytest.raises(SonievalError, match="unknown report option.*n_bootstrap.*options are .*n_boot"):
        stats.report(ratings, scores, n_bootstrap=10)
    with pytest.raises(DataError, match="ratings must be a pandas DataFrame or a path"):
        stats.report(ratings.to_dict("records"), scores)


# --- tidy reliability ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tidy(study):
    """One system's visual marks (a complete raters × clips design) under a user's own column names."""
    ratings, _ = study
    part = _one_attribute(ratings)
    part = part[part["system_id"] == part["system_id"].iloc[0]]
    return part.rename(columns={"rater_id": "judge", "clip_id": "excerpt", "mark": "score"})[
        ["judge", "excerpt", "score"]
    ].reset_index(drop=True)


def _canonical(tidy: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {"rater_id": tidy["judge"], "clip_id": tidy["excerpt"], "system_id": "s", "mark": tidy["score"].astype(float)}
    )


def test_icc_on_a_tidy_frame_matches_the_report_maths_and_pingouin(tidy):
    out = stats.icc(tidy, rater="judge", item="excerpt", mark="score", seed=3)
    assert list(out["form"]) == ["ICC(A,1)", "ICC(A,k)", "ICC(C,1)", "ICC(C,k)"]
    assert (out["n_marks"] == len(tidy)).all() and (out["n_raters"] == 6).all() and (out["n_items"] == 6).all()
    internal = reliability.icc_variance_components(_canonical(tidy), seed=3)
    ref = pingouin.intraclass_corr(data=tidy, targets="excerpt", raters="judge", ratings="score").set_index("Type")
    for row in out.itertuples():
        assert row.icc == internal[row.type]
        assert [row.ci_low, row.ci_high] == internal[f"{row.type}_ci95"]
        assert row.icc == pytest.approx(ref.loc[row.form, "ICC"], abs=1e-6)  # REML = ANOVA on a complete design
        assert row.ci_low < row.icc < row.ci_high
    anova = stats.icc(tidy, rater="judge", item="excerpt", mark="score", method="anova").set_index("form")
    for form in anova.index:
        assert anova.loc[form, "icc"] == pytest.approx(ref.loc[form, "ICC"], abs=1e-9)
        lo, hi = ref.loc[form, "CI95"]  # pingouin rounds its F-based CIs to two decimals
        assert anova.loc[form, "ci_low"] == pytest.approx(lo, abs=0.005 + 1e-9)
        assert anova.loc[form, "ci_high"] == pytest.approx(hi, abs=0.005 + 1e-9)


def _matrix(tidy: pd.DataFrame) -> np.ndarray:
    """raters × items matrix (NaN = not marked), as the krippendorff package takes it."""
    return tidy.pivot_table(index="judge", columns="excerpt", values="score", aggfunc="mean").to_numpy(float)


@pytest.mark.parametrize("level", ["ordinal", "interval"])
def test_krippendorff_alpha_on_a_tidy_frame_matches_the_report_maths_and_the_package(tidy, level):
    sparse = tidy.sample(frac=0.8, random_state=1).reset_index(drop=True)  # missing marks, as in real studies
    out = stats.krippendorff_alpha(sparse, rater="judge", item="excerpt", mark="score", level=level, n_boot=200)
    assert len(out) == 1 and out.loc[0, "level"] == level and out.loc[0, "n_marks"] == len(sparse)
    expected = krippendorff.alpha(reliability_data=_matrix(sparse), level_of_measurement=level)
    assert out.loc[0, "alpha"] == pytest.approx(expected, abs=1e-9)
    internal = reliability.krippendorff_alpha(_canonical(sparse), None, None, 200, 0)
    key = {"ordinal": "alpha", "interval": "alpha_interval"}[level]
    assert out.loc[0, "alpha"] == internal[key]
    assert out.loc[0, "ci_low"] < out.loc[0, "alpha"] < out.loc[0, "ci_high"]
    on_scale = stats.krippendorff_alpha(
        sparse, rater="judge", item="excerpt", mark="score", level=level, scale=(1, 5), n_boot=0
    )
    expected = krippendorff.alpha(
        reliability_data=_matrix(sparse), level_of_measurement=level, value_domain=[1, 2, 3, 4, 5]
    )
    assert on_scale.loc[0, "alpha"] == pytest.approx(expected, abs=1e-9)
    assert np.isnan(on_scale.loc[0, "ci_low"]) and "bootstrap off" in on_scale.loc[0, "note"]


def test_tidy_functions_on_study_ratings_give_the_reports_reliability(study):
    """item=["system_id", "clip_id"] (a stimulus) on one attribute reproduces the report's table."""
    ratings, scores = study
    res = stats.report(ratings, scores, n_boot=100, seed=2, figures=False)
    kept = res.tables["screening"].loc[~res.tables["screening"]["excluded"], "rater_id"]
    visual = _one_attribute(ratings)
    visual = visual[visual["rater_id"].isin(kept)]
    row = res.tables["reliability"].set_index("attribute").loc["visual"]
    icc = stats.icc(visual, item=["system_id", "clip_id"], seed=2).set_index("type")
    assert icc.loc["icc_a1", "icc"] == pytest.approx(row["icc_a1"], rel=1e-12)
    assert icc.loc["icc_a1", "ci_low"] == pytest.approx(row["icc_a1_ci_low"], rel=1e-12)
    alpha = stats.krippendorff_alpha(
        visual, item=["system_id", "clip_id"], level=["ordinal", "interval"], scale=(1, 5), n_boot=100, seed=2
    ).set_index("level")
    assert alpha.loc["ordinal", "alpha"] == pytest.approx(row["krippendorff_alpha_ordinal"], rel=1e-12)
    assert alpha.loc["ordinal", "ci_high"] == pytest.approx(row["alpha_ci_high"], rel=1e-12)
    assert alpha.loc["interval", "alpha"] == pytest.approx(row["krippendorff_alpha_interval"], rel=1e-12)


def test_mixed_model_with_custom_columns_matches_the_report_model(study):
    ratings, _ = study
    visual = _one_attribute(ratings)
    custom = visual.rename(columns={"rater_id": "who", "clip_id": "sound", "system_id": "model", "mark": "y"})
    out = stats.mixed_model(custom, mark="y", system="model", rater="who", item="sound")
    internal, info, _ = models.mixed_model(visual)
    assert list(out["model"]) == list(internal["system_id"])
    np.testing.assert_allclose(out["estimate"], internal["estimate"], rtol=1e-12)
    np.testing.assert_allclose(out["ci_high"], internal["ci_high"], rtol=1e-12)
    assert out.attrs["fit"]["residual_variance"] == pytest.approx(info["residual_variance"], rel=1e-12)
    # the planted order of the systems (S1 best) is recovered
    assert out["estimate"].is_monotonic_decreasing


@pytest.mark.parametrize("fn", [stats.icc, stats.krippendorff_alpha, stats.mixed_model])
def test_a_missing_column_is_one_line_naming_it_and_the_columns_present(tidy, fn):
    with pytest.raises(SonievalError) as info:
        fn(tidy, rater="judge", item="excerpt", mark="rating")
    message = str(info.value)
    assert "\n" not in message
    assert "'rating' (mark=)" in message and "columns present: judge, excerpt, score" in message


def test_empty_cells_and_text_marks_are_errors_not_silent_drops(tidy):
    holed = tidy.astype({"score": object})
    holed.loc[3, "score"] = None
    with pytest.raises(SonievalError, match=r"1 row\(s\) with an empty cell .*'score'.*dropna"):
        stats.icc(holed, rater="judge", item="excerpt", mark="score")
    holed.loc[3, "score"] = "good"
    with pytest.raises(SonievalError, match="non-numeric value.*'good'"):
        stats.krippendorff_alpha(holed, rater="judge", item="excerpt", mark="score")
    with pytest.raises(SonievalError, match="unknown level.*nominal"):
        stats.krippendorff_alpha(tidy, rater="judge", item="excerpt", mark="score", level="nominal")


def test_public_names():
    assert {"report", "ReportOptions", "ReportResult", "icc", "krippendorff_alpha", "mixed_model"} <= set(stats.__all__)
    for name in stats.__all__:
        assert not name.startswith("_") and getattr(stats, name) is not None
