"""The learning table over replicate seeds: means and t intervals over seeds, the verdict, the rendering."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from sonieval.document import Document
from sonieval.metrics.controls import learning_table, seed_table
from sonieval.metrics.render import add_seeds
from sonieval.tables import make_system_id

TRAINED = {None: 3.0, 43: 4.0, 44: 5.0}  # KAD of the trained gate per seed (lower is better)


def _scores(shuffled_offset: float) -> pd.DataFrame:
    rows = []
    for seed, kad in TRAINED.items():
        suffix = "" if seed is None else f".s{seed}"
        for control, value, lr, epoch in (
            ("", kad, 0.005, 8),
            (".shuffled", kad + shuffled_offset, 0.005, 8),
            (".untrained", 40.0 + kad, 0.0, 0),
        ):
            sid = make_system_id("ast", f"LIN{control}{suffix}", lr, epoch, "transpose", "none")
            rows.append(
                {
                    "system_id": sid,
                    "metric": "kad",
                    "embedding": "logmel",
                    "value": value,
                    "ci_low": value - 0.5,
                    "ci_high": value + 0.5,
                }
            )
    rows.append(
        {
            "system_id": make_system_id("codec", "mel", 0.0, 0, "none", "codec"),
            "metric": "kad",
            "embedding": "logmel",
            "value": 0.1,
            "ci_low": 0.0,
            "ci_high": 0.3,
        }
    )
    return pd.DataFrame(rows)


def test_seed_table_means_and_t_intervals_over_seeds():
    learning = learning_table(_scores(20.0), pd.DataFrame(), None, "mel")
    assert len(learning) == 3 and learning["beats_controls"].all()
    (row,) = seed_table(learning).to_dict("records")
    assert row["system"] == "ast/LIN/lr0.005/e8/transpose/none" and row["n_seeds"] == 3
    half = stats.t.ppf(0.975, 2) * np.std([3.0, 4.0, 5.0], ddof=1) / np.sqrt(3)  # 2.48
    assert np.isclose(row["system_value"], 4.0) and np.isclose(row["system_ci_high"], 4.0 + half)
    assert np.isclose(row["shuffled_value"], 24.0) and np.isclose(row["ceiling_value"], 0.1)
    assert row["seeds_beating_both"] == 3 and row["beats_controls"] is True
    doc = Document(markup=True)
    add_seeds(doc, seed_table(learning))
    text = doc.markdown()
    assert "## Learning over replicate seeds" in text and "| 3/3 | yes |" in text


def test_seed_intervals_that_overlap_do_not_beat_the_controls():
    # the shuffled control is only 1 better per seed: each seed's own CIs do not overlap (0.5 wide),
    # but the seed intervals (±2.48) do, so the verdict over seeds is no
    learning = learning_table(_scores(1.5), pd.DataFrame(), None, "mel")
    (row,) = seed_table(learning).to_dict("records")
    assert row["seeds_beating_both"] == 3 and row["beats_controls"] is False


def test_one_seed_gives_no_seed_table():
    learning = learning_table(_scores(20.0), pd.DataFrame(), None, "mel")
    assert seed_table(learning[learning["system_id"].str.contains("/LIN/")]).empty
