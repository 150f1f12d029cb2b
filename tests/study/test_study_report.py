"""A study's export feeds the report on either scale: 1-5 marks and the 0-100 MUSHRA slider.

Marks here are made up by the test (planted: systems differ, one rater ignores the anchor,
one failed the headphone check); they exercise the analysis, they are not results.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from study_helpers import make_folder_study

from sonieval.stats.reporting import ReportOptions, build_report
from sonieval.study.export import write_ratings
from sonieval.study.headphone import score_responses
from sonieval.study.options import Headphones
from sonieval.study.session import RaterSession
from sonieval.study.store import StudyStore

QUALITY = {"sysA": 0.8, "sysB": 0.45, "sysC": 0.25}  # planted share of the scale


def _rate_everything(study, scale: tuple[int, int]) -> None:
    """Three raters mark every page; r003 marks the anchor at the top (not discriminating)."""
    lo, hi = scale
    store = StudyStore(study.url)
    rng = np.random.default_rng(0)
    for k, token in enumerate(study.tokens):
        s = RaterSession(store, study.study_id, token)
        _, trials, _ = s.headphone_plan()
        answers = [t.answer if k != 1 else t.answer % 3 + 1 for t in trials]  # r002 fails the check
        s.store.record_check(s.rater, score_responses(trials, answers, seed=s.rater.seed).as_record())
        while not (state := s.next_step()).finished:
            s.show(state)
            marks = {}
            for t in state.trials:
                share = {"reference": 1.0, "anchor": 1.0 if k == 2 else 0.05}.get(t.role, QUALITY.get(t.system_id, 0.5))
                mark = (
                    t.expected_mark
                    if t.role == "attention"
                    else int(round(lo + share * (hi - lo) + rng.normal(0, 0.03 * (hi - lo))))
                )
                marks[t.trial_id] = {a: min(hi, max(lo, mark)) for a in state.step.attributes}
            if len(state.trials) == 1:
                marks = marks[state.trial.trial_id]
            s.submit(state.step.position, marks)


@pytest.mark.slow
@pytest.mark.parametrize("mode, scale", [("joint", (1, 5)), ("multi", (0, 100))])
def test_study_export_is_analysed_on_its_own_scale(tmp_path, mode, scale):
    extra = {"rating_scale": "mushra", "scale_min": 0, "scale_max": 100} if scale == (0, 100) else {}
    study = make_folder_study(
        tmp_path,
        mode=mode,
        n_clips=3,
        n_systems=3,
        n_raters=3,
        familiarisation=False,
        attention_checks=1,
        headphones=Headphones(True, "continue"),
        study_id=f"panel-{mode}",
        **extra,
    )
    _rate_everything(study, scale)
    with StudyStore(study.url) as store:
        write_ratings(store, study.study_id, tmp_path / "export")
    scores = pd.DataFrame(
        {
            "system_id": list(QUALITY),
            "metric": "kad",
            "value": [1.0, 2.0, 3.0],
            "system_random_init": [True, True, False],
        }
    )
    scores.to_parquet(tmp_path / "scores.parquet")
    res = build_report(
        tmp_path / "export" / "ratings.parquet",
        tmp_path / "scores.parquet",
        tmp_path / "report",
        options=ReportOptions(n_boot=50),
    )
    summary, screening = res.summary, res.tables["screening"].set_index("rater_id")
    assert summary["scale"] == list(scale) and summary["study"] == study.study_id
    low, high = (89, 91) if scale == (0, 100) else (3, 4)  # BS.1534-3's own thresholds on 0-100
    assert f"hidden reference marked ≤ {low}" in summary["screening_rules"][0]
    assert f"anchor marked ≥ {high}" in summary["screening_rules"][1]
    assert any("headphone check" in rule for rule in summary["screening_rules"])
    assert not screening.loc["r001", "excluded"]
    assert "failed the headphone check (" in screening.loc["r002", "reasons"]
    assert "anchor ≥" in screening.loc["r003", "reasons"]
    means = res.tables["system_means"]
    audio = means[means["attribute"] == "audio"].set_index("system_id")["mean"]
    assert audio["sysA"] > audio["sysB"] > audio["sysC"]  # the planted order survives on either scale
    shares = [c for c in res.tables["mark_distribution"].columns if c.startswith("share_")]
    assert len(shares) == (5 if scale == (0, 100) else 5) and (shares[0] == "share_0-20") == (scale == (0, 100))
    assert f"(study {study.study_id})" in (tmp_path / "report" / "report.md").read_text()


def test_report_figures_carry_random_init_marks_and_no_overlapping_labels(tmp_path, monkeypatch):
    """Every figure showing a system made with random-init models marks it and explains the mark."""
    from matplotlib.text import Text

    import sonieval.plotting as plotting
    from sonieval.stats.simulate import simulate_ratings, simulate_scores

    seen: dict[str, dict] = {}
    original = plotting.save_figure

    def spy(fig, path, **kw):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        texts = [t.get_text() for t in fig.texts] + [t.get_text() for ax in fig.axes for t in ax.get_yticklabels()]
        boxes = [Text.get_window_extent(t, renderer) for ax in fig.axes for t in ax.texts]
        seen[str(path).rsplit("/", 1)[-1]] = {
            "texts": " ".join(" ".join(texts).split()),  # the stamp is wrapped
            "labels": [t.get_text() for ax in fig.axes for t in ax.texts],
            "overlaps": sum(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]),
        }
        return original(fig, path, **kw)

    monkeypatch.setattr(plotting, "save_figure", spy)
    ratings, plant = simulate_ratings(n_systems=12, n_raters=6, n_clips=6, seed=3)
    scores = simulate_scores(plant)
    scores["system_random_init"] = scores["system_id"].str.contains("S1/|S2/")  # S1 and S2 (not S10-S12)
    ratings.to_parquet(tmp_path / "r.parquet")
    scores.to_parquet(tmp_path / "s.parquet")
    build_report(tmp_path / "r.parquet", tmp_path / "s.parquet", tmp_path / "rep", options=ReportOptions(n_boot=20))
    for name in ("mark_distribution.png", "system_means.png", "scatter_kad.png"):
        assert "† randomly initialised codec (RANDOM-INIT)" in seen[name]["texts"], name
    assert "†" in seen["system_means.png"]["texts"]
    scatter = seen["scatter_kad.png"]
    assert sum("†" in label for label in scatter["labels"]) == 2 * 2  # two random-init systems, two panels
    assert scatter["overlaps"] == 0 and len(scatter["labels"]) >= 2 * 12 - 2


def test_controls_are_marked_in_the_report_tables(tmp_path):
    """Controls go through the report like any system, with a control column beside every system_id."""
    from sonieval.stats.simulate import simulate_ratings, simulate_scores

    ratings, plant = simulate_ratings(n_systems=4, n_raters=4, n_clips=4, seed=2)
    scores = simulate_scores(plant)
    rename = {
        "sim/S1/lr0.001/e1/transpose/minmax": "sim/S1.shuffled/lr0.001/e1/transpose/minmax",
        "sim/S2/lr0.001/e1/transpose/minmax": "sim/S1.untrained/lr0.0/e0/transpose/minmax",
        "sim/S3/lr0.001/e1/transpose/minmax": "codec/mel/lr0.0/e0/none/codec",
    }
    for frame in (ratings, scores):
        frame["system_id"] = frame["system_id"].replace(rename)
    ratings.to_parquet(tmp_path / "r.parquet")
    scores.to_parquet(tmp_path / "s.parquet")
    res = build_report(
        tmp_path / "r.parquet", tmp_path / "s.parquet", tmp_path / "rep", options=ReportOptions(n_boot=20)
    )
    means = res.tables["system_means"].drop_duplicates("system_id").set_index("system_id")["control"]
    assert means.to_dict() == {
        "sim/S1.shuffled/lr0.001/e1/transpose/minmax": "shuffled",
        "sim/S1.untrained/lr0.0/e0/transpose/minmax": "untrained",
        "codec/mel/lr0.0/e0/none/codec": "ceiling",
        "sim/S4/lr0.001/e1/transpose/minmax": "none",
    }
    written = pd.read_csv(tmp_path / "rep" / "tables" / "system_means.csv")
    columns = list(written.columns)
    assert columns[columns.index("system_id") + 1] == "control"
    assert (res.tables["reference_table"]["control"] != "").all()


def test_the_ratings_export_has_a_control_column(tmp_path):
    from study_helpers import write_folders

    from sonieval.study.create import StudySettings, create_from_folders
    from sonieval.tables import make_system_id

    originals, folders = write_folders(tmp_path / "input", 2, 2, 0.3)
    shuffled = make_system_id("ast", "LIN.shuffled", 0.005, 8, "transpose", "minmax")
    systems = dict(zip(["sysA", shuffled], folders.values()))
    created = create_from_folders(
        StudySettings(study_id="ctl", attention_checks=1, min_listen_fraction=0.0, n_raters=1, familiarisation=False),
        originals,
        systems,
        study_dir=tmp_path / "study",
        progress=False,
    )
    store = StudyStore(created.storage)
    s = RaterSession(store, "ctl", created.rater_tokens[0][1])
    while not (state := s.next_step()).finished:
        s.show(state)
        marks = {
            t.trial_id: {a: (t.expected_mark if t.role == "attention" else 3) for a in state.step.attributes}
            for t in state.trials
        }
        s.submit(state.step.position, marks if len(state.trials) > 1 else marks[state.trial.trial_id])
    write_ratings(store, "ctl", tmp_path / "export")
    df = pd.read_parquet(tmp_path / "export" / "ratings.parquet")
    son = df[df["role"] == "sonification"].drop_duplicates("system_id").set_index("system_id")["control"]
    assert son.to_dict() == {"sysA": "none", shuffled: "shuffled"}
    assert df.loc[df["role"] != "sonification", "control"].isna().all() and (df["role"] != "sonification").any()
