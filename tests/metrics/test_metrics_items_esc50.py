"""Per-item measures, and the real-ESC-50 degradation check of KAD, FAD and the item measures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sonieval.audio import ENCODER_RATE, read_audio
from sonieval.measures import get_measure
from sonieval.metrics import items as I
from sonieval.metrics.distances import ReferenceKernel, frechet_audio_distance, gaussian_stats
from sonieval.metrics.embeddings import LogMelEmbedding

SNRS_DB = (20.0, 10.0, 0.0)  # falling SNR: more degraded left to right
CUTOFFS_HZ = (4000.0, 1500.0, 500.0)  # falling cutoff


def add_noise(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    power = float(np.mean(x**2)) or 1e-8
    return (x + rng.standard_normal(x.size) * np.sqrt(power / 10 ** (snr_db / 10))).astype(np.float32)


def low_pass(x: np.ndarray, cutoff_hz: float) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    sos = butter(8, cutoff_hz, btype="low", fs=ENCODER_RATE, output="sos")
    return sosfiltfilt(sos, x).astype(np.float32)


# the measures of the whole sound (the what-is-kept measures have their own tests: test_metrics_attributes*.py)
WHOLE_SOUND = tuple(m for m in I.ITEM_METRICS if get_measure(m).attribute is None)


def _increasing(values) -> bool:
    return all(a < b for a, b in zip(values, values[1:]))


def test_item_measures_are_defined_for_one_clip_and_refuse_undefined_pairs():
    rng = np.random.default_rng(0)
    t = np.arange(ENCODER_RATE) / ENCODER_RATE
    orig = (np.sin(2 * np.pi * 220 * t) * np.linspace(0, 1, t.size)).astype(np.float32)
    near = orig + 0.01 * rng.standard_normal(t.size).astype(np.float32)
    lm = LogMelEmbedding()
    scores = I.score_item(
        list(WHOLE_SOUND),
        evaluated_audio=near,
        original_audio=orig,
        evaluated_frames=lm.log_mel(near),
        original_frames=lm.log_mel(orig),
    )
    assert all(np.isfinite(v) for v in scores.values()), scores
    assert scores["envelope_correlation"] > 0.95
    silent = np.zeros_like(orig)
    assert isinstance(I.score_item(["mrstft"], evaluated_audio=near, original_audio=silent)["mrstft"], I.ItemScoreError)
    err = I.score_item(["envelope_correlation"], evaluated_audio=silent, original_audio=orig)["envelope_correlation"]
    assert isinstance(err, I.ItemScoreError) and "constant" in str(err)
    one = I.score_item(["frame_kad"], evaluated_frames=np.ones((1, 4)), original_frames=np.ones((5, 4)))
    assert isinstance(one["frame_kad"], I.ItemScoreError) and "at least 2" in str(one["frame_kad"])
    with pytest.raises(I.ItemScoreError, match="unknown per-item metric"):
        I.check_item_metrics(["fad_per_clip"])


@pytest.mark.slow
def test_kad_fad_and_item_measures_track_degradation_on_real_esc50(esc50_root, torch_threads):
    meta = pd.read_csv(esc50_root / "meta" / "esc50.csv").sort_values("filename")
    # 20 reference clips and 20 other clips from the same 20 classes (take one clip per class each)
    per_class = meta.groupby("category").head(2).groupby("category").filter(lambda g: len(g) == 2)
    classes = sorted(per_class["category"].unique())[:20]
    chosen = per_class[per_class["category"].isin(classes)]
    ref_files = chosen.groupby("category").nth(0)["filename"].tolist()
    eval_files = chosen.groupby("category").nth(1)["filename"].tolist()
    load = lambda f: read_audio(esc50_root / "audio" / f, ENCODER_RATE)[0]  # noqa: E731
    lm = LogMelEmbedding()
    ref_audio = [load(f) for f in ref_files]
    ev_audio = [load(f) for f in eval_files]
    ref_frames = [lm.log_mel(a) for a in ref_audio]
    rk = ReferenceKernel(np.concatenate(ref_frames), np.repeat(np.arange(20), [len(f) for f in ref_frames]))
    ref_stats = gaussian_stats(np.concatenate(ref_frames))

    def set_scores(transform):
        frames = [lm.log_mel(transform(a, i)) for i, a in enumerate(ev_audio)]
        stacked = np.concatenate(frames)
        groups = np.repeat(np.arange(20), [len(f) for f in frames])
        return rk.compare(stacked, groups).result().value, frechet_audio_distance(ref_stats, stacked).value

    noise = [set_scores(lambda a, i, s=s: add_noise(a, s, i)) for s in SNRS_DB]
    lowpass = [set_scores(lambda a, i, c=c: low_pass(a, c)) for c in CUTOFFS_HZ]
    for series in (noise, lowpass):
        kads, fads = [k for k, _ in series], [f for _, f in series]
        assert _increasing(kads), kads
        assert _increasing(fads), fads
        assert all(np.isfinite(kads + fads))

    # per-item measures rank one original's own degraded copies in the same order
    orig = ev_audio[0]
    orig_frames = lm.log_mel(orig)
    for copies, measures in (
        ([add_noise(orig, s, 0) for s in SNRS_DB], WHOLE_SOUND),
        # mean-pooled cosine and the envelope do not track low-pass filtering on log-mel (measured on
        # fold 4: the log floor of the removed bands changes the pooled shape non-monotonically)
        ([low_pass(orig, c) for c in CUTOFFS_HZ], ("frame_kad", "logmel_l1", "mrstft")),
    ):
        for m in measures:
            values = []
            for c in copies:
                got = I.score_item(
                    [m],
                    evaluated_audio=c,
                    original_audio=orig,
                    evaluated_frames=lm.log_mel(c),
                    original_frames=orig_frames,
                )[m]
                assert not isinstance(got, I.ItemScoreError), got
                values.append(got if I.ITEM_METRIC_DIRECTION[m] == "lower" else -got)
            assert _increasing(values), (m, values)
