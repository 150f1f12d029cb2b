"""HuBERT's two uses (the encoder a gate sonifies, the embedding a metric scores with) load through one
loader and feed the model the same input for the same clip, normalised exactly when the checkpoint's
own feature-extractor config says ``do_normalize`` (published facebook/hubert-base-ls960 default: no)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sonieval.metrics.embeddings import load_embedding
from sonieval.models.encoders import HubertEncoder, load_encoder
from sonieval.protocol import EncoderSpec


def _clip() -> np.ndarray:
    t = np.arange(16_000) / 16_000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1).astype(np.float32)  # offset and scale: normalising shows


def _inputs_seen(encoder, backend, clip) -> tuple[torch.Tensor, torch.Tensor]:
    """What each path hands HuBERT's convolutional front end (its first module) for the clip."""
    seen: list[torch.Tensor] = []

    def capture(_module, args):
        seen.append(args[0].detach().clone())

    hooks = [
        encoder.conv_features.register_forward_pre_hook(capture),
        backend.load().feature_extractor.register_forward_pre_hook(capture),
    ]
    try:
        encoder.embed(torch.from_numpy(clip)[None])
        backend.embed_batch([clip])
    finally:
        for h in hooks:
            h.remove()
    assert len(seen) == 2
    return seen[0], seen[1]


def _normalised(x: torch.Tensor) -> bool:
    return abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-2


@pytest.mark.parametrize("do_normalize", [None, False, True], ids=["no-config", "raw", "normalise"])
def test_encoder_and_metric_embedding_feed_hubert_the_same_input(tmp_path, torch_threads, do_normalize):
    from transformers import HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(0)
    folder = tmp_path / "hubert"
    HubertModel(HubertEncoder.small_config()).save_pretrained(folder)
    if do_normalize is not None:  # the checkpoint's own preprocessor_config.json
        Wav2Vec2FeatureExtractor(
            feature_size=1,
            sampling_rate=16_000,
            padding_value=0.0,
            do_normalize=do_normalize,
            return_attention_mask=False,
        ).save_pretrained(folder)
    encoder = load_encoder(EncoderSpec(name="hubert", model=str(folder)))
    backend = load_embedding(f"hubert:{folder}")
    gate_input, metric_input = _inputs_seen(encoder, backend, _clip())
    assert torch.equal(gate_input, metric_input)
    # without a config the published checkpoint's choice applies: raw waveform
    assert _normalised(gate_input) is bool(do_normalize)
    assert encoder.describe()["do_normalize"] is bool(do_normalize)


def test_small_random_models_share_config_and_input(torch_threads):
    encoder = load_encoder(EncoderSpec(name="hubert", size="small"))
    backend = load_embedding("hubert:small")
    gate_input, metric_input = _inputs_seen(encoder, backend, _clip())
    assert torch.equal(gate_input, metric_input) and not _normalised(gate_input)
    assert backend.load().config.hidden_size == encoder.config.hidden_size  # one small configuration
