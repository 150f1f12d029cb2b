"""Audibility by depth: the learning table arranged by layer, and where the trained gate stops beating its controls."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sonieval.metrics.controls import learning_table
from sonieval.metrics.depth import depth_summary, depth_table


def _scores(rows):
    return pd.DataFrame(
        [
            {
                "system_id": s,
                "metric": "kad",
                "embedding": "logmel",
                "value": v,
                "ci_low": v - 0.5,
                "ci_high": v + 0.5,
                "category": None,
            }
            for s, v in rows
        ]
    )


def test_depth_table_orders_layers_and_finds_the_deepest_that_beats_both_controls():
    rows = []
    # wavlm: the trained gate's KAD beats both controls at input and layer1, not at layer2 (no learning left)
    for slot, trained in (("wavlm", 2.0), ("wavlm.layer1", 3.0), ("wavlm.layer2", 9.0)):
        rows += [
            (f"{slot}/LIN/lr0.01/e5/grid/none", trained),
            (f"{slot}/LIN.shuffled/lr0.01/e5/grid/none", 9.2),
            (f"{slot}/LIN.untrained/lr0.0/e0/grid/none", 12.0),
        ]
    # hubert at one layer only: in the learning table, not in the depth table
    rows += [("hubert/LIN/lr0.01/e5/grid/none", 2.0), ("hubert/LIN.shuffled/lr0.01/e5/grid/none", 9.0)]
    rows += [("codec/mel/lr0.0/e0/none/codec", 1.0)]
    learning = learning_table(_scores(rows), pd.DataFrame(), primary_codec="mel")
    assert set(learning["encoder"]) == {"wavlm", "hubert"}
    depth = depth_table(learning.sample(frac=1.0, random_state=0))  # order comes from the depth, not the input
    assert list(depth["layer"]) == ["input", "layer1", "layer2"] and list(depth["depth"]) == [0, 1, 2]
    assert set(depth["gate"]) == {"LIN/lr0.01/e5/grid/none"} and (depth["ceiling_value"] == 1.0).all()
    assert list(depth["beats_controls"]) == [True, True, False]
    summary = depth_summary(depth)
    assert summary.loc[0, "audible_to"] == "layer1" and summary.loc[0, "beating_layers"] == "input, layer1"
    # an encoder without several layers gives no depth table at all
    assert depth_table(learning[learning["encoder"] == "hubert"]).empty


def test_depth_figure_is_drawn(tmp_path):
    from sonieval.metrics.depth import depth_figures

    rows = []
    for slot, trained in (("clap", 2.0), ("clap.layer1", 4.0)):
        rows += [(f"{slot}/LIN/lr0.01/e5/grid/none", trained), (f"{slot}/LIN.untrained/lr0.0/e0/grid/none", 8.0)]
    depth = depth_table(learning_table(_scores(rows), pd.DataFrame(), primary_codec="mel"))
    assert depth["beats_controls"].isna().all()  # no shuffled control run: unknown, not "no"
    assert depth_summary(depth).loc[0, "audible_to"] == "unknown"
    (path,) = depth_figures(depth, tmp_path, {"clap": "RANDOM-WEIGHT encoder"})
    assert path.name == "depth__clap.png" and path.stat().st_size > 5_000
    assert np.isfinite(depth["system_value"]).all()
