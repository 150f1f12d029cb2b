"""The measure catalogue is the one place a measure is declared: items, controls, render, stats and the
protocol all read it, and a measure registered once (entry + function) is known to every one of them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sonieval import measures as C
from sonieval.errors import ProtocolError
from sonieval.metrics import items as I
from sonieval.metrics.controls import LOWER_IS_BETTER, item_summary, learning_table, paired_item_differences
from sonieval.metrics.render import MEASURE_TITLES
from sonieval.protocol import MetricsSpec, load_protocol
from sonieval.stats.inputs import metric_direction
from sonieval.tables import make_system_id

SPARKLE = C.Measure("sparkle", "Sparkle of each sonification", "higher", "a.u.", "item", basis="waveform-16k")


@pytest.fixture
def sparkle():
    """A measure registered for one test: an entry and its function, removed afterwards."""
    C.register_measure(SPARKLE)
    C.item_measure("sparkle")(lambda ev, orig: float(np.abs(ev).max() / max(np.abs(orig).max(), 1e-9)))
    yield SPARKLE
    C.unregister_measure("sparkle")


def test_every_item_measure_has_its_function_and_every_function_its_entry():
    for name in C.item_measure_names():
        assert callable(C.item_function(name)), name
    assert set(C._FUNCTIONS) == set(C.item_measure_names())  # no function bound to a name the catalogue lacks
    for attribute in C.ATTRIBUTES.values():
        assert C.get_measure(attribute.measure).attribute == attribute.name


def test_the_built_in_directions_and_headings_are_the_ones_the_pages_showed():
    # the four places that used to declare "lower is better" now read the catalogue; these are their old values
    old = {"kad": True, "fad": True, "frame_kad": True, "embedding_cosine": True, "logmel_l1": True}
    old |= {"mrstft": True, "envelope_correlation": False, "validation_r2": False}
    assert {k: LOWER_IS_BETTER[k] for k in old} == old
    assert {k: metric_direction(k) == "lower" for k in old} == old
    assert I.ITEM_METRIC_DIRECTION["envelope_correlation"] == "higher"
    assert MEASURE_TITLES["logmel_l1"] == (
        "Log-mel distance of each sonification to its own original (mean over clips, lower is better)"
    )
    assert MEASURE_TITLES["kad"] == "KAD against the reference set (lower is better)"
    assert MEASURE_TITLES["validation_r2"] == "Validation R² against the train-mean latent (higher is better)"
    assert LOWER_IS_BETTER["heldout_r2"] is False


def test_a_registered_measure_is_known_everywhere(sparkle):
    assert LOWER_IS_BETTER["sparkle"] is False and MEASURE_TITLES["sparkle"].endswith(
        "(mean over clips, higher is better)"
    )
    assert metric_direction("sparkle") == "higher"
    assert MetricsSpec(item_metrics=["sparkle"]).item_metrics == ["sparkle"]
    x = np.sin(np.arange(1600) / 5.0).astype(np.float32)
    assert I.score_item(["sparkle"], evaluated_audio=0.5 * x, original_audio=x)["sparkle"] == pytest.approx(0.5)
    # its direction decides the learning table's and the paired differences' verdicts
    trained = make_system_id("ast", "LIN", 0.005, 8, "transpose", "none")
    shuffled = make_system_id("ast", "LIN.shuffled", 0.005, 8, "transpose", "none")
    untrained = make_system_id("ast", "LIN.untrained", 0.0, 0, "transpose", "none")
    rows = [
        {"system_id": s, "clip_id": f"c{i}", "metric": "sparkle", "embedding": "waveform-16k", "value": v + 0.01 * i}
        for s, v in ((trained, 0.9), (shuffled, 0.2), (untrained, 0.1))
        for i in range(8)
    ]
    items = pd.DataFrame(rows)
    paired = paired_item_differences(items, n_boot=200)
    assert paired["better"].all() and not paired["lower_is_better"].any()
    table = learning_table(pd.DataFrame(), item_summary(items, n_boot=200), paired_items=paired)
    (row,) = table.to_dict("records")
    assert row["beats_controls"] is True and row["verdict"] == "paired"


def test_unknown_or_contradictory_entries_are_refused_in_one_line(tmp_path):
    with pytest.raises(C.ItemScoreError, match="did you mean raw_pitch_accuracy"):
        I.check_item_metrics(["raw_pitch_acuracy"])
    with pytest.raises(C.MeasureError, match="already in the catalogue"):
        C.register_measure(C.Measure("kad", "Another KAD", "higher", "x", "set"))
    with pytest.raises(C.MeasureError, match="names its basis"):
        C.Measure("loud", "Loudness", "higher", "dB", "item")
    with pytest.raises(C.MeasureError, match="carries no"):
        C.Measure("loud", "Loudness (dB)", "higher", "dB", "item", basis="waveform-16k")
    with pytest.raises(C.MeasureError, match="unknown attribute"):
        C.register_measure(C.Measure("loud", "Loudness", "higher", "dB", "item", attribute="timbre", basis="w"))
    with pytest.raises(C.MeasureError, match="not a per-item one"):
        C.item_measure("kad")
    with pytest.raises(C.MeasureError, match="built in"):
        C.unregister_measure("kad")
    protocol = tmp_path / "p.yaml"
    protocol.write_text("name: x\nmetrics:\n  item_metrics: [onset_f]\n")
    with pytest.raises(ProtocolError) as err:
        load_protocol(protocol)
    assert "metrics.item_metrics" in str(err.value) and "did you mean 'onset_f1'" in str(err.value)
    assert "\n" not in str(err.value)
