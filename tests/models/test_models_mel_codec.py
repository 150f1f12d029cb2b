"""The weight-free mel codec: geometry, train-split normalisation, round trip, batching, errors, offline use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sonieval.audio import CODEC_RATE, load_clip
from sonieval.models.codec import CodecError, load_codec
from sonieval.models.mel_codec import MelCodec, MelNormalisation, fit_mel_normalisation
from sonieval.protocol import ProtocolError, parse_protocol

# Stated round-trip bound (encode → decode → encode), in normalised log-mel units (per-band standard
# deviations of the train split): Griffin-Lim does not recover the phase exactly, so the re-encoded
# log-mel differs from the first; measured 0.12-0.16 on real ESC-50 clips with 32 iterations.
ROUND_TRIP_MAX_MEAN_ABS = 0.25


def _tones(n: int = 4, seconds: float = 5.0, seed: int = 0) -> np.ndarray:
    """Decaying tones with noise: a stand-in for clips when ESC-50 is not needed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * CODEC_RATE)) / CODEC_RATE
    out = []
    for i in range(n):
        f = 200.0 * (i + 1)
        env = np.exp(-t * (1 + i)) * (t > 0.3 * i)
        out.append(0.5 * env * np.sin(2 * np.pi * f * t) + 0.001 * rng.standard_normal(t.size))
    return np.stack(out).astype(np.float32)


def _codec(clips: np.ndarray, iterations: int = 32) -> MelCodec:
    raw = MelCodec(iterations=iterations)
    return MelCodec(fit_mel_normalisation(raw, list(clips)), iterations=iterations)


def test_geometry_label_and_normalisation():
    clips = _tones()
    codec = _codec(clips)
    z = codec.encode(torch.from_numpy(clips))
    assert tuple(z.shape) == (4, 64, 431), "5 s at 44.1 kHz must give the DAC-VAE latent's shape [64, 431]"
    assert codec.label == "mel[weight-free]" and codec.weight_free and not codec.random_init
    assert codec.describe()["label"] == "mel[weight-free]" and codec.describe()["normalisation"]["n_clips"] == 4
    # the train-split statistics make every band zero-mean, unit-variance over the training clips
    flat = z.permute(1, 0, 2).reshape(64, -1)
    assert flat.mean(dim=1).abs().max() < 1e-3
    assert (flat.std(dim=1) - 1).abs().max() < 1e-2 or (flat.std(dim=1) < 1.01).all()
    # the statistics are part of the codec's id, so latents of other statistics never share a cache folder
    other = _codec(_tones(seed=1) * 0.1)
    assert other.model_id != codec.model_id and codec.model_id.startswith("mel-64x2048x512-norm")
    again = MelNormalisation.from_dict(codec.normalisation.to_dict())
    assert again == codec.normalisation


def test_decode_follows_the_latent_batched_and_deterministic():
    clips = _tones()
    codec = _codec(clips, iterations=16)
    z = codec.encode(torch.from_numpy(clips))
    batched = codec.decode(z)
    assert tuple(batched.shape) == (4, 431 * 512) and torch.isfinite(batched).all()
    one = codec.decode(z[2:3])
    torch.testing.assert_close(one[0], batched[2], rtol=0, atol=1e-4)
    torch.testing.assert_close(codec.decode(z[:1]), codec.decode(z[:1]), rtol=0, atol=0)
    # each decode's loudness follows its own latent: tone i starts at 0.3·i s (silent before)
    for i in (1, 2, 3):
        start = int(0.3 * i * CODEC_RATE)
        before = batched[i, : start - 2048].pow(2).mean()
        after = batched[i, start + 2048 : start + 2048 + CODEC_RATE // 4].pow(2).mean()
        assert after > 20 * before, f"tone {i}: decoded audio does not start where its latent does"


@pytest.mark.esc50
def test_round_trip_on_real_clips_stays_within_the_stated_error(esc50_root):
    files = sorted((esc50_root / "audio").glob("*.wav"))[::50][:8]
    clips = np.stack([load_clip(f, CODEC_RATE, 5.0, "pad_or_trim").samples for f in files])
    codec = _codec(clips)
    z = codec.encode(torch.from_numpy(clips))
    z2 = codec.encode(codec.decode(z)[:, : clips.shape[1]])
    err = (z2 - z).abs().mean().item()
    assert err < ROUND_TRIP_MAX_MEAN_ABS, f"mel round trip error {err:.3f} > {ROUND_TRIP_MAX_MEAN_ABS}"
    # the decode is not silence or noise: it correlates band by band with the original's log-mel
    r = np.corrcoef(z.flatten().numpy(), z2.flatten().numpy())[0, 1]
    assert r > 0.9


def test_bad_input_is_one_clear_error():
    codec = _codec(_tones(2))
    with pytest.raises(CodecError, match=r"expected a latent \[batch, 64, frames\]"):
        codec.decode(torch.zeros(1, 32, 10))
    with pytest.raises(CodecError, match="NaN or infinite"):
        codec.decode(torch.full((1, 64, 10), float("nan")))
    with pytest.raises(CodecError, match="no normalisation statistics") as info:
        MelCodec().encode(torch.zeros(1, CODEC_RATE))
    assert "sonieval prepare" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CodecError, match="iterations must be at least 1"):
        MelCodec(iterations=0)
    with pytest.raises(ProtocolError, match="weight-free"):
        parse_protocol({"name": "x", "codec": {"name": "mel", "checkpoint": "x.pth"}})
    with pytest.raises(ProtocolError, match="mel codec only"):
        parse_protocol({"name": "x", "codec": {"name": "dac-vae", "iterations": 8}})


def test_checkpoint_free_path_works_offline(monkeypatch):
    """No hub, no cache, no checkpoint: the mel codec is built from nothing but its parameters."""
    from sonieval.models import weights

    def no_network(*args, **kwargs):
        raise AssertionError("the mel codec must not look for weights")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("hub_file", "hub_snapshot", "resolve_checkpoint", "verify_checksum"):
        monkeypatch.setattr(weights, name, no_network)
    spec = parse_protocol({"name": "x", "codec": {"name": "mel", "iterations": 4}}).primary_codec
    clips = _tones(2)
    codec = load_codec(spec, normalisation=_codec(clips).normalisation)
    assert codec.iterations == 4 and codec.decode(codec.encode(torch.from_numpy(clips))).shape == (2, 431 * 512)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here (the device check runs on the GPU machine)")
def test_decode_on_the_gpu_matches_the_cpu():
    clips = _tones(2)
    cpu = _codec(clips, iterations=8)
    gpu = MelCodec(cpu.normalisation, iterations=8, device="cuda")
    z = cpu.encode(torch.from_numpy(clips))
    torch.testing.assert_close(gpu.decode(z), cpu.decode(z), rtol=0, atol=2e-3)
