"""Encoders: local save_pretrained folders, documented shapes, AST token order, offline errors, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sonieval.errors import SonievalError, WeightsUnavailable
from sonieval.models import encoders as enc_mod
from sonieval.models.gates import build_gate
from sonieval.protocol import EncoderSpec

FIVE_S = 5 * 16000


def spec(name, **kw):
    return EncoderSpec(**{"name": name, "model": None, "size": "full", "finetuned": None, **kw})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Small random AST and HuBERT saved with save_pretrained (model + feature extractor)."""
    import transformers

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("encoders")
    out = {}
    for name in ("ast", "hubert"):
        cls = enc_mod.encoder_class(name)
        model = getattr(transformers, cls.model_class_name)(cls.small_config())
        folder = root / name
        model.save_pretrained(folder)
        if name == "ast":
            transformers.ASTFeatureExtractor().save_pretrained(folder)
        else:
            transformers.Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(folder)
        out[name] = (folder, model)
    return out


def test_ast_from_local_folder_gives_1212_tokens(torch_threads, saved):
    folder, model = saved["ast"]
    encoder = enc_mod.load_encoder(spec("ast", model=str(folder)))
    assert not encoder.random_init and encoder.model_id == str(folder)
    audio = torch.randn(2, FIVE_S) * 0.1
    emb = encoder.embed(audio)
    assert emb.shape == (2, 1212, model.config.hidden_size) == (2, *encoder.embedding_shape(FIVE_S))
    assert encoder.patch_grid == (12, 101)
    # the patch embedder alone: no cls/distillation tokens, no position embeddings
    with torch.no_grad():
        direct = model.embeddings.patch_embeddings(encoder.fbank(audio))
    assert torch.allclose(emb, direct)
    assert encoder.embed(audio[0]).shape == (1, 1212, model.config.hidden_size)


def test_ast_tokens_are_frequency_major(torch_threads, saved):
    folder, _ = saved["ast"]
    encoder = enc_mod.load_encoder(spec("ast", model=str(folder)))
    patch = encoder.patch_embeddings
    with torch.no_grad():
        base = patch(torch.zeros(1, 1024, 128))
        fbank = torch.zeros(1, 1024, 128)
        fbank[0, 0:10, 118:128] = 1.0  # first 10 frames, top 10 mel bins: only patch (f=11, t=0)
        changed = torch.nonzero((patch(fbank) - base).abs().sum(-1)[0]).flatten().tolist()
    assert changed == [11 * 101 + 0]


def test_hubert_from_local_folder_gives_249_frames(torch_threads, saved):
    folder, model = saved["hubert"]
    encoder = enc_mod.load_encoder(spec("hubert", model=str(folder)))
    audio = torch.randn(3, FIVE_S) * 0.1
    emb = encoder.embed(audio)
    assert emb.shape == (3, 249, model.config.hidden_size) == (3, *encoder.embedding_shape(FIVE_S))
    # the same as HubertModel's own path up to (not including) masking and the encoder
    with torch.no_grad():
        feats = model.feature_extractor(audio).transpose(1, 2)
        expected = model.feature_projection(feats)
    assert torch.allclose(emb, expected, atol=1e-6)
    axis = encoder.time_axis(FIVE_S)
    assert axis.grid == (1, 249) and axis.hop_s == 0.02


def test_finetuned_classification_checkpoint_loads_as_encoder(torch_threads, tmp_path):
    from transformers import HubertForSequenceClassification

    config = enc_mod.HubertEncoder.small_config()
    config.num_labels = 3
    clf = HubertForSequenceClassification(config)
    clf.save_pretrained(tmp_path / "ft")
    encoder = enc_mod.load_encoder(spec("hubert", finetuned=str(tmp_path / "ft")))
    with torch.no_grad():
        expected = clf.hubert.feature_projection(
            clf.hubert.feature_extractor(torch.ones(1, 16000) * 0.1).transpose(1, 2)
        )
    assert torch.allclose(encoder.embed(torch.ones(1, 16000) * 0.1), expected, atol=1e-6)


@pytest.mark.parametrize("name", ["ast", "hubert", "wav2vec2"])
def test_small_random_encoders_feed_every_alignment(torch_threads, name):
    encoder = enc_mod.load_encoder(spec(name, size="small"))
    assert encoder.random_init and "random" in encoder.model_id
    emb = encoder.embed(torch.randn(1, FIVE_S) * 0.1)
    shape = encoder.embedding_shape(FIVE_S)
    assert emb.shape[1:] == shape and np.isfinite(emb.numpy()).all()
    for alignment in ("reshape", "transpose", "grid"):
        gate = build_gate("LIN", shape, (64, 431), alignment, time_axis=encoder.time_axis(FIVE_S))
        assert gate(emb).shape == (1, 64, 431)


def test_offline_without_cached_weights_is_one_clear_line(monkeypatch):
    import huggingface_hub

    def refuse(*a, **k):
        raise huggingface_hub.errors.LocalEntryNotFoundError("outgoing traffic has been disabled")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(WeightsUnavailable) as exc:
        enc_mod.load_encoder(spec("ast"))
    msg = str(exc.value)
    assert "\n" not in msg
    assert "MIT/ast-finetuned-audioset-10-10-0.4593" in msg and "encoders[i].model: /local/dir" in msg
    assert "huggingface-cli download" in msg


def test_bad_local_folder_and_unknown_encoder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsUnavailable, match="not a save_pretrained folder"):
        enc_mod.load_encoder(spec("hubert", model=str(tmp_path / "empty")))
    with pytest.raises(
        SonievalError,
        match="unknown encoder 'beats'; registered: ast, clap, crepe, hubert, plugin, wav2vec2, wavlm, whisper",
    ):
        enc_mod.load_encoder(spec("beats"))


def test_bad_audio_is_one_clear_error(torch_threads):
    encoder = enc_mod.load_encoder(spec("hubert", size="small"))
    bad = torch.zeros(1, 16000)
    bad[0, 5] = float("nan")
    with pytest.raises(SonievalError, match="NaN or infinite"):
        encoder.embed(bad)
    with pytest.raises(SonievalError, match=r"expected audio \[batch, samples\]"):
        encoder.embed(torch.zeros(1, 2, 3))


def test_registry_makes_a_new_encoder_one_small_class(torch_threads):
    @enc_mod.register_encoder("test-wavlm")
    class WavLMEncoder(enc_mod.HubertEncoder):
        default_model_id = "microsoft/wavlm-base"
        model_class_name = "WavLMModel"

        @classmethod
        def small_config(cls):
            from transformers import WavLMConfig

            return WavLMConfig(
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
                conv_dim=(16,) * 7,
                num_conv_pos_embeddings=16,
                num_conv_pos_embedding_groups=4,
            )

    try:
        encoder = enc_mod.load_encoder(spec("test-wavlm", size="small"))
        assert encoder.embed(torch.randn(1, FIVE_S) * 0.1).shape == (1, 249, 32)
    finally:
        enc_mod.ENCODERS.pop("test-wavlm", None)


def test_checkpoint_missing_embedding_weights_is_refused(torch_threads, tmp_path):
    """transformers would silently fill missing weights randomly; the embedding's own modules must load."""
    from safetensors.torch import load_file, save_file
    from transformers import HubertModel

    folder = tmp_path / "hubert"
    HubertModel(enc_mod.HubertEncoder.small_config()).save_pretrained(folder)
    weights_file = next(folder.glob("*.safetensors"))
    state = {k: v for k, v in load_file(weights_file).items() if "feature_projection.projection" not in k}
    save_file(state, weights_file, metadata={"format": "pt"})
    with pytest.raises(SonievalError) as exc:
        enc_mod.load_encoder(spec("hubert", model=str(folder)))
    assert "feature_projection.projection" in str(exc.value) and "\n" not in str(exc.value)
