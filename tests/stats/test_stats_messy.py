"""Messy input: each case gives a defined result or one clear error line, never an unexplained NaN."""

import json

import numpy as np
import pandas as pd
import pytest

from sonieval.cli import main
from sonieval.errors import DataError
from sonieval.stats.reporting import ReportOptions, build_report
from sonieval.stats.simulate import simulate_ratings, simulate_scores
from sonieval.tables import write_table

NOTE_COLUMNS = ("note", "reasons")


def _base(n_systems=4, seed=5, **kw):
    ratings, plant = simulate_ratings(n_systems=n_systems, n_raters=6, n_clips=6, seed=seed, **kw)
    scores = simulate_scores(plant, metrics={"kad": ("lower", 0.9), "fad": ("lower", 0.5)}, seed=seed)
    return ratings, scores


def _report(tmp_path, ratings, scores, **opts):
    rp = write_table(ratings, tmp_path / "ratings.csv")
    sp = write_table(scores, tmp_path / "scores.csv")
    options = ReportOptions(n_boot=opts.pop("n_boot", 100), seed=1, figures=opts.pop("figures", False), **opts)
    return build_report(rp, sp, tmp_path / "out", options=options)


def assert_no_unexplained_nan(result):
    """Every undefined number sits in a row whose note says why (tables and summary.json)."""
    for name, df in result.tables.items():
        if df.empty:
            continue
        notes = [c for c in NOTE_COLUMNS if c in df.columns]
        if not notes:
            assert not df.isna().any().any(), f"table {name} has n/a values and no note column"
            continue
        values = df.drop(columns=notes)
        nan_rows = values.isna().any(axis=1)
        explained = df[notes].fillna("").astype(str).apply(lambda r: any(x.strip() for x in r), axis=1)
        bad = nan_rows & ~explained
        assert not bad.any(), f"{name}: unexplained n/a in rows\n{df[bad].to_string()}"
    summary = json.loads((result.out_dir / "summary.json").read_text())
    for row in summary["systems"] + summary["correlations"]:
        if any(v is None for k, v in row.items() if k != "note"):
            assert row["note"], row
    assert "NaN" not in (result.out_dir / "report.md").read_text()
    assert "NaN" not in (result.out_dir / "summary.json").read_text()


def test_missing_cells_are_dropped_and_counted(tmp_path):
    ratings, scores = _base()
    ratings.loc[[3, 10, 50], "mark"] = np.nan
    ratings.loc[7, "rater_id"] = None
    result = _report(tmp_path, ratings, scores)
    assert result.summary["n_ratings"] == len(ratings) - 4
    assert any("4 of" in n and "dropped" in n for n in result.summary["notes"])
    assert_no_unexplained_nan(result)


def test_rater_with_one_mark(tmp_path):
    ratings, scores = _base()
    one = ratings.iloc[[0]].assign(rater_id="solo", role="sonification", attribute="visual")
    result = _report(tmp_path, pd.concat([ratings, one], ignore_index=True), scores)
    assert result.summary["n_raters"] == 7
    ra = result.tables["rater_agreement"]
    solo = ra[ra["rater_id"] == "solo"].iloc[0]
    assert pd.isna(solo["spearman_with_panel"]) and solo["note"]
    assert_no_unexplained_nan(result)


def test_system_with_constant_marks(tmp_path):
    ratings, scores = _base()
    sid = sorted(ratings.loc[ratings["role"] == "sonification", "system_id"].unique())[1]
    ratings.loc[ratings["system_id"] == sid, "mark"] = 3
    result = _report(tmp_path, ratings, scores)
    row = result.tables["system_means"].query("system_id == @sid").iloc[0]
    assert row["mean"] == 3 and row["sd"] == 0 and row["ci_low"] == row["ci_high"] == 3
    assert "all marks equal" in row["note"]
    assert_no_unexplained_nan(result)


def test_single_system(tmp_path):
    ratings, scores = _base()
    sid = sorted(ratings.loc[ratings["role"] == "sonification", "system_id"].unique())[0]
    ratings = ratings[(ratings["role"] != "sonification") | (ratings["system_id"] == sid)]
    result = _report(tmp_path, ratings, scores)
    corr = [c for c in result.summary["correlations"] if c["level"] == "system"]
    assert corr and all(c["spearman"] is None and "at least 3" in c["note"] for c in corr)
    assert "one system" in result.tables["friedman"]["note"].iloc[0]
    assert len(result.tables["mixed_model"]) == 2  # one intercept per attribute
    assert_no_unexplained_nan(result)


def test_two_and_four_systems_warn_in_words(tmp_path):
    ratings, scores = _base(n_systems=4)
    result = _report(tmp_path, ratings, scores)
    c = next(c for c in result.summary["correlations"] if c["level"] == "system")
    assert "cannot reach p < 0.05" in c["note"] and "0.083" in c["note"]
    assert c["p_permutation"] >= 1 / 12
    ratings2, scores2 = _base(n_systems=2, seed=8)
    result2 = _report(tmp_path / "two", ratings2, scores2)
    assert "Friedman needs three" in result2.tables["friedman"]["note"].iloc[0]
    assert result2.tables["pairwise_wilcoxon"]["p_value"].notna().all()
    assert_no_unexplained_nan(result2)


def test_marks_outside_declared_scale_is_one_clear_error(tmp_path, capsys):
    ratings, scores = _base()
    ratings.loc[5, "mark"] = 7
    write_table(ratings, tmp_path / "r.csv")
    write_table(scores, tmp_path / "s.csv")
    rc = main(
        [
            "report",
            "--ratings",
            str(tmp_path / "r.csv"),
            "--scores",
            str(tmp_path / "s.csv"),
            "--out",
            str(tmp_path / "out"),
            "--bootstrap",
            "0",
            "--no-figures",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "r.csv" in err and "outside the declared scale 1..5" in err and "--scale-max" in err
    # Declaring the study's real scale makes the same table valid.
    rc = main(
        [
            "report",
            "--ratings",
            str(tmp_path / "r.csv"),
            "--scores",
            str(tmp_path / "s.csv"),
            "--out",
            str(tmp_path / "out"),
            "--bootstrap",
            "0",
            "--no-figures",
            "--scale-max",
            "7",
        ]
    )
    assert rc == 0


def test_non_numeric_mark_and_unknown_role_are_errors():
    from sonieval.stats.inputs import check_ratings

    ratings, _ = _base()
    bad = ratings.astype({"mark": object})
    bad.loc[2, "mark"] = "good"
    with pytest.raises(DataError, match="non-numeric"):
        check_ratings(bad)
    bad = ratings.copy()
    bad.loc[2, "role"] = "practice"
    with pytest.raises(DataError, match="unknown value"):
        check_ratings(bad)


def test_scores_with_unmatched_system_names(tmp_path):
    ratings, scores = _base()
    wrong = scores.assign(system_id=scores["system_id"].str.upper())
    with pytest.raises(DataError, match="no system_id in the scores table matches"):
        _report(tmp_path, ratings, wrong)
    partial = scores.copy()
    first = sorted(partial["system_id"].unique())[0]
    partial.loc[partial["system_id"] == first, "system_id"] = "other/system"
    result = _report(tmp_path / "p", ratings, partial)
    assert any("have no score" in n for n in result.summary["notes"])
    assert all(c["n"] == 3 for c in result.summary["correlations"] if c["level"] == "system")
    assert_no_unexplained_nan(result)


def test_unknown_metric_direction_is_left_out_with_a_note(tmp_path):
    ratings, scores = _base()
    extra = scores[scores["metric"] == "kad"].assign(metric="mystery_score")
    result = _report(tmp_path, ratings, pd.concat([scores, extra], ignore_index=True))
    assert any("mystery_score" in n and "direction unknown" in n for n in result.summary["notes"])
    assert "mystery_score" not in {c["metric"] for c in result.summary["correlations"]}
    declared = extra.assign(higher_is_better=False)
    result = _report(tmp_path / "d", ratings, pd.concat([scores, declared], ignore_index=True))
    assert "mystery_score" in {c["metric"] for c in result.summary["correlations"]}


def test_everyone_excluded_falls_back_with_a_note(tmp_path):
    ratings, scores = _base()
    ratings.loc[ratings["role"] == "reference", "mark"] = 1
    result = _report(tmp_path, ratings, scores)
    assert any("exclude every rater" in n for n in result.summary["notes"])
    assert result.summary["systems"]


def test_no_screening_parquet_and_figures(tmp_path):
    ratings, scores = _base(careless={"random": 1})
    rp = write_table(ratings, tmp_path / "ratings.parquet")
    sp = write_table(scores, tmp_path / "scores.parquet")
    rc = main(
        [
            "report",
            "--ratings",
            str(rp),
            "--scores",
            str(sp),
            "--out",
            str(tmp_path / "out"),
            "--bootstrap",
            "50",
            "--no-screening",
        ]
    )
    assert rc == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_raters_kept"] == summary["n_raters"] == 7
    assert summary["simulated"] is True
    for f in (
        "report.html",
        "report.md",
        "figures/mark_distribution.png",
        "figures/scatter_kad.png",
        "tables/correlations.csv",
        "tables/reference_table.csv",
    ):
        assert (tmp_path / "out" / f).is_file(), f
    html = (tmp_path / "out" / "report.html").read_text()
    assert "SIMULATED" in html and (tmp_path / "out" / "report.md").read_text().count("SIMULATED") >= 2
    csv = pd.read_csv(tmp_path / "out" / "tables" / "system_means.csv")
    assert (csv["simulated"] == "SIMULATED").all() and csv["provenance"].str.contains("ratings=ratings.parquet@").all()


def test_scale_from_the_tables_scale_columns(tmp_path):
    ratings, scores = _base()
    ratings["mark"] = ratings["mark"] * 2  # marks 2..10 on a declared 0..10 scale
    ratings["scale_min"], ratings["scale_max"] = 0, 10
    result = _report(tmp_path, ratings, scores)
    assert result.summary["scale"] == [0, 10]
    assert any("scale_max 10 from the table" in n for n in result.summary["notes"])
    with pytest.raises(DataError, match="outside the declared scale 1..5"):
        _report(tmp_path / "x", ratings, scores, scale_min=1, scale_max=5)


def test_study_export_dtypes_and_repeated_marks(tmp_path):
    """The study export's extra columns (nullable ints, booleans, tz-aware times) are read as they are."""
    ratings, scores = _base(careless={"random": 1})
    ratings["expected_mark"] = ratings["expected_mark"].astype("Int64")
    ratings["attention_passed"] = pd.Series(
        np.where(ratings["role"] == "attention", ratings["mark"] == ratings["expected_mark"], pd.NA), dtype="boolean"
    )
    ratings["submitted_at"] = pd.to_datetime(ratings["submitted_at"], utc=True)
    ratings["category"] = "dog"
    son = ratings[(ratings["role"] == "sonification") & (ratings["rater_id"] == "rater001")]
    # A re-test: the same stimulus again in a new trial (kept: a real second mark) ...
    retest = son.head(2).assign(trial_id=lambda d: d["trial_id"] + "-retest", mark=1)
    # ... and a double submission: the same trial twice, later (a duplicate: one is kept, by choice).
    double = son.iloc[[5]].assign(mark=1, submitted_at=son["submitted_at"].max() + pd.Timedelta("1h"))
    ratings = pd.concat([ratings, retest, double], ignore_index=True)
    rp = write_table(ratings, tmp_path / "ratings.parquet", "ratings")
    sp = write_table(scores, tmp_path / "scores.parquet", "scores")
    with pytest.raises(DataError, match=r"1 duplicated \(rater_id, trial_id, attribute\) row.*rater001-t"):
        build_report(rp, sp, tmp_path / "out", options=ReportOptions(n_boot=0, figures=False))
    result = build_report(rp, sp, tmp_path / "out", options=ReportOptions(n_boot=50, figures=False, duplicates="last"))
    assert result.summary["n_ratings"] == len(ratings) - 1
    assert any("duplicated" in n and "the last by submitted_at kept" in n for n in result.summary["notes"])
    assert {e["rater_id"] for e in result.summary["excluded_raters"]} == {"careless_random01"}
    n_son = int(result.tables["system_means"]["n"].sum())
    assert result.tables["mixed_model_fit"]["n_rows_used"].sum() == n_son  # models and means: the same rows
    assert result.tables["reliability"]["n_marks"].sum() == n_son  # reliability too (re-test marks included)
    assert result.summary["provenance"]["parameters"]["duplicates"] == "last"
    assert_no_unexplained_nan(result)


def test_report_from_a_protocol(tmp_path, capsys):
    """`sonieval report --protocol P` finds the study export and the scores in P's results folder."""
    ratings, scores = _base()
    results = tmp_path / "results"
    write_table(ratings, results / "study" / "ratings.parquet")
    write_table(scores, results / "scores" / "scores.parquet")
    proto = tmp_path / "p.yaml"
    proto.write_text(
        f"name: stats_test\nresults_dir: {results}\nseed: 3\nreport:\n  bootstrap: 40\n  anchor_max_fraction: 0.5\n"
    )
    assert main(["report", "--protocol", str(proto), "--no-figures"]) == 0
    summary = json.loads((results / "report" / "summary.json").read_text())
    params = summary["provenance"]["parameters"]
    assert params["bootstrap"] == 40 and params["seed"] == 3 and params["screening"]["anchor_max_fraction"] == 0.5
    assert "report.html" in capsys.readouterr().out
    rc = main(["report", "--scores", "x.csv", "--out", str(tmp_path / "o")])
    assert rc == 2 and "--ratings required" in capsys.readouterr().err
