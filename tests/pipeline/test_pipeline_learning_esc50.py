"""Learning is measured, not assumed: on real ESC-50 clips a trained gate must beat its controls.

One small sweep (80 real clips of 10 classes: 60 train, 10 validation, 10 listening; small random
AST; the weight-free mel codec; LIN under ``transpose`` and ``grid``; untrained and shuffled
controls) runs every stage once. The checks fail when learning breaks (a gate that learns nothing
ties its controls) and when time is mis-mapped (a reversed or shifted latent time axis moves the
decoded sound away from its original); the fault-injection tests show that the checks can fail.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pipeline_helpers import write_protocol

from sonieval.audio import ENCODER_RATE, read_audio
from sonieval.metrics.items import time_lag
from sonieval.pipeline.run import run_protocol
from sonieval.protocol import load_protocol
from sonieval.tables import resolve_table_path

CATEGORIES = [
    "dog",
    "rooster",
    "rain",
    "sea_waves",
    "crying_baby",
    "clock_tick",
    "helicopter",
    "chainsaw",
    "church_bells",
    "hand_saw",
]
R2_MARGIN = 0.2  # a trained gate explains at least this much more latent variance than either control
MAX_TIMED_LAG = 4  # frames of 20 ms: correctly timed sonifications peak within ±80 ms of their originals
MIN_TIMED_PEAK = 0.25  # mean loudness-curve correlation at the peak (controls: 0.04-0.08; the codec: 0.97)


@pytest.fixture(scope="module")
def learned(esc50_root, tmp_path_factory):
    """Run the whole sweep once for the module; returns (protocol, learning table, sonifications, clips)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("learning")
    proto = load_protocol(
        write_protocol(
            root,
            data={
                "esc50": str(esc50_root),
                "clip_seconds": 5.0,
                "categories": CATEGORIES,
                "split": {"train": 0.75, "validation": 0.125, "test": 0.125, "seed": 42},
                "listening_set": {"n_clips": 10, "seed": 42},
            },
            codec=[{"name": "mel", "iterations": 8}],
            gates={"variants": ["LIN"], "alignments": ["transpose", "grid"], "controls": ["untrained", "shuffled"]},
            training={
                "learning_rates": [0.005],
                "epochs": [8],
                "batch_size": 16,
                "eval_batch_size": 16,
                "gradient_accumulation": 1,
            },
            sonify={"postprocess": ["none"], "batch_size": 10},
            metrics={
                "embeddings": ["logmel"],
                "metrics": ["kad"],
                "bootstrap": 300,
                "item_metrics": ["logmel_l1", "envelope_correlation"],
            },
        )
    )
    run_protocol(proto, echo=lambda _: None)
    learning = pd.read_csv(proto.results_path / "scores" / "learning.csv")
    son = pd.read_parquet(proto.results_path / "tables" / "sonifications.parquet")
    clips = pd.read_parquet(proto.results_path / "tables" / "clips.parquet")
    return proto, learning, son, clips


def _row(learning: pd.DataFrame, system_id: str, measure: str) -> pd.Series:
    got = learning[(learning["system_id"] == system_id) & (learning["measure"] == measure)]
    assert len(got) == 1, f"no {measure} row for {system_id}"
    return got.iloc[0]


def learning_holds(row: pd.Series, margin: float = 0.0) -> bool:
    """The trained CI is beyond both controls' CIs (by ``margin`` on the value for R²)."""
    if not bool(row["beats_controls"]):
        return False
    best_control = max(row["shuffled_value"], row["untrained_value"])
    return row["system_value"] - best_control >= margin if not row["lower_is_better"] else True


@pytest.mark.esc50
@pytest.mark.slow
@pytest.mark.parametrize("alignment", ["transpose", "grid"])
def test_trained_gate_beats_both_controls_on_r2_and_decoded_audio(learned, alignment):
    _, learning, _, _ = learned
    sid = f"ast/LIN/lr0.005/e8/{alignment}/none"
    r2 = _row(learning, sid, "heldout_r2")
    assert learning_holds(r2, R2_MARGIN), r2.to_dict()
    assert r2["shuffled_value"] < 0.1 and abs(r2["untrained_value"]) < 0.2, "controls must not learn"
    # on the decoded audio, against each clip's own original: log-mel distance, lower is better
    dist = _row(learning, sid, "logmel_l1")
    assert learning_holds(dist), dist.to_dict()
    assert dist["ceiling_value"] < dist["system_value"], "the codec's own reconstruction is the ceiling"


def test_the_learning_check_can_fail():
    """A gate that learned nothing ties its controls: the check says no."""
    tied = pd.Series(
        {
            "beats_controls": False,
            "lower_is_better": False,
            "system_value": 0.02,
            "shuffled_value": 0.0,
            "untrained_value": 0.01,
        }
    )
    barely = pd.Series(
        {
            "beats_controls": True,
            "lower_is_better": False,
            "system_value": 0.15,
            "shuffled_value": 0.0,
            "untrained_value": 0.01,
        }
    )
    assert not learning_holds(tied) and not learning_holds(barely, R2_MARGIN)


def _profiles(proto, son: pd.DataFrame, clips: pd.DataFrame, system_id: str) -> list[np.ndarray]:
    """Each listening clip's loudness-correlation profile by lag, sonification against original."""
    originals = dict(zip(clips["clip_id"], clips["path"]))
    return [
        time_lag(
            read_audio(resolve_table_path(r.path, proto.results_path), ENCODER_RATE)[0],
            read_audio(originals[r.clip_id], ENCODER_RATE)[0],
        )[1]
        for r in son[son["system_id"] == system_id].itertuples()
    ]


def timed(profiles: list[np.ndarray]) -> bool:
    """Averaged over clips, the sonifications' loudness follows their originals' best at lag ≈ 0.

    The average over clips, not each clip's own peak: a stationary or periodic sound (rain, a
    chainsaw) has a flat or many-peaked profile on its own, but only the true timing lines up across
    clips. Lag 0 must be (nearly) the peak, and the peak must be a real correlation."""
    mean = np.nanmean(np.stack(profiles), axis=0)
    centre = len(mean) // 2
    peak_lag = int(np.argmax(mean)) - centre
    return abs(peak_lag) <= MAX_TIMED_LAG and mean.max() >= MIN_TIMED_PEAK and mean[centre] >= 0.8 * mean.max()


@pytest.mark.esc50
@pytest.mark.slow
def test_trained_sonifications_are_timed_like_their_originals(learned):
    proto, _, son, clips = learned
    assert timed(_profiles(proto, son, clips, "codec/mel/lr0.0/e0/none/codec")), "the codec itself keeps time"
    for alignment in ("grid", "transpose"):
        assert timed(_profiles(proto, son, clips, f"ast/LIN/lr0.005/e8/{alignment}/none")), alignment
    assert not timed(_profiles(proto, son, clips, "ast/LIN.shuffled/lr0.005/e8/grid/none")), "a control is not timed"


def _decode_with_aligner_fault(proto, son: pd.DataFrame, system_id: str, fault: str, monkeypatch) -> dict:
    """Re-decode a system's listening clips with its alignment's latent time axis reversed or shifted."""
    from sonieval.models import gates
    from sonieval.models.gates import build_gate
    from sonieval.pipeline.prepare import load_array, load_prepared_codec
    from sonieval.pipeline.train import load_checkpoint, time_axis_from

    real = gates.Aligner.to_latent
    shift = 43  # latent frames: 0.5 s at 86.13 frames per second

    def faulty(self, y):
        z = real(self, y)
        return z.flip(-1) if fault == "reversed" else torch.roll(z, shift, dims=-1)

    rows = son[son["system_id"] == system_id]
    meta_ck = load_checkpoint(rows["checkpoint"].iloc[0])
    meta = meta_ck["meta"]
    gate = build_gate(
        meta["variant"],
        tuple(meta["embedding_shape"]),
        tuple(meta["latent_shape"]),
        meta["alignment"],
        time_axis=time_axis_from(meta["time_axis"]),
    )
    gate.load_state_dict(meta_ck["state_dict"])
    gate.eval()
    prepared = pd.read_parquet(proto.results_path / "tables" / "prepared.parquet")
    emb = prepared[(prepared["kind"] == "embedding") & (prepared["model"] == "ast")].set_index("clip_id")["path"]
    x = torch.from_numpy(
        np.stack([load_array(resolve_table_path(emb[c], proto.results_path)) for c in rows["clip_id"]])
    )
    monkeypatch.setattr(gates.Aligner, "to_latent", faulty)
    with torch.no_grad():
        audio = load_prepared_codec(proto, "mel").decode(gate(x)).numpy()
    return dict(zip(rows["clip_id"], audio))


@pytest.mark.esc50
@pytest.mark.slow
@pytest.mark.parametrize("fault", ["reversed", "shifted"])
def test_a_reversed_or_shifted_time_axis_fails_the_timing_check(learned, fault, monkeypatch):
    """Prove the timing check can fail: the same trained gate with its alignment's latent time axis
    reversed, or shifted by 0.5 s, gives sonifications that are no longer timed like their originals."""
    import soxr

    from sonieval.audio import CODEC_RATE

    proto, _, son, clips = learned
    decoded = _decode_with_aligner_fault(proto, son, "ast/LIN/lr0.005/e8/grid/none", fault, monkeypatch)
    originals = dict(zip(clips["clip_id"], clips["path"]))
    profiles = [
        time_lag(soxr.resample(a, CODEC_RATE, ENCODER_RATE), read_audio(originals[c], ENCODER_RATE)[0])[1]
        for c, a in decoded.items()
    ]
    assert not timed(profiles)
