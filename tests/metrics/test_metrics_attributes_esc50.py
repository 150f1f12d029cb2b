"""On real ESC-50 clips: the codec's own reconstruction (the ceiling) keeps pitch, loudness and onsets far
better than a decode of the clips' average spectrum (what a gate that learned only the average latent, the
shuffled control, gives); measures undefined for a clip say so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sonieval.audio import CODEC_RATE, ENCODER_RATE, read_audio, resample
from sonieval.measures import ItemScoreError
from sonieval.metrics.items import score_item

PITCHED = ("siren", "car_horn", "rooster", "crying_baby")
STRUCK = ("door_wood_knock", "clock_tick")
MEASURES = ["raw_pitch_accuracy", "loudness_correlation", "mfcc_correlation", "onset_f1"]


@pytest.mark.esc50
@pytest.mark.slow
def test_the_ceiling_keeps_pitch_and_timing_that_an_average_spectrum_loses(esc50_root, torch_threads):
    import torch

    from sonieval.models.mel_codec import MelCodec, fit_mel_normalisation

    meta = pd.read_csv(esc50_root / "meta" / "esc50.csv").sort_values("filename")
    chosen = meta[meta["category"].isin(PITCHED + STRUCK)].groupby("category").head(1)
    clips = [read_audio(esc50_root / "audio" / f, CODEC_RATE)[0] for f in chosen["filename"]]
    codec = MelCodec(fit_mel_normalisation(MelCodec(), clips), iterations=16)
    latents = codec.encode(torch.from_numpy(np.stack(clips)))
    average = latents.mean(dim=(0, 2), keepdim=True).expand_as(latents).contiguous()
    ceiling, flat = codec.decode(latents).numpy(), codec.decode(average).numpy()
    at16 = lambda x, n: resample(np.ascontiguousarray(x[:n]), CODEC_RATE, ENCODER_RATE)  # noqa: E731
    rows = []
    for category, original, c, f in zip(chosen["category"], clips, ceiling, flat):
        o = at16(original, len(original))
        for side, x in (("ceiling", c), ("average", f)):
            for m, v in score_item(MEASURES, evaluated_audio=at16(x, len(original)), original_audio=o).items():
                rows.append({"category": category, "side": side, "measure": m, "value": v})
    got = pd.DataFrame(rows)
    undefined = got[got["value"].map(lambda v: isinstance(v, ItemScoreError))]
    assert all("voiced frames" in str(v) or "onsets" in str(v) for v in undefined["value"]), undefined
    values = got[~got.index.isin(undefined.index)].astype({"value": float})
    mean = values.groupby(["measure", "side"])["value"].mean().unstack()
    pitched = values[values["category"].isin(PITCHED) & (values["measure"] == "raw_pitch_accuracy")]
    assert pitched["category"].nunique() >= 3, "pitch must be defined on most pitched clips"
    assert mean.loc["raw_pitch_accuracy", "ceiling"] - mean.loc["raw_pitch_accuracy", "average"] > 0.3, mean
    assert mean.loc["loudness_correlation", "ceiling"] > 0.9 > 0.5 > mean.loc["loudness_correlation", "average"], mean
    assert mean.loc["mfcc_correlation", "ceiling"] > 0.7 > 0.3 > mean.loc["mfcc_correlation", "average"], mean
    assert mean.loc["onset_f1", "ceiling"] - mean.loc["onset_f1", "average"] > 0.4, mean
