"""Codecs: published checkpoint format loads strictly, shapes, bad input, offline weights."""

from __future__ import annotations

import pytest
import torch

from sonieval.errors import SonievalError, WeightsUnavailable
from sonieval.models import codec as codec_mod
from sonieval.models import weights
from sonieval.protocol import CodecSpec


def spec(**kw):
    return CodecSpec(**{"name": "dac-vae", "checkpoint": None, "size": "full", **kw})


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory):
    """A full-size DAC-VAE with random weights, saved in the published format."""
    torch.manual_seed(0)
    model = codec_mod.DacVae(**codec_mod.DAC_VAE_KWARGS)
    path = tmp_path_factory.mktemp("ckpt") / codec_mod.DAC_VAE_FILE
    codec_mod.save_dac_vae_checkpoint(model, codec_mod.DAC_VAE_KWARGS, path)
    return path, model


@pytest.mark.slow
def test_full_size_checkpoint_loads_strictly_through_the_loader(torch_threads, full_checkpoint, tmp_path):
    path, model = full_checkpoint
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert set(ckpt) == {"metadata", "state_dict"} and ckpt["metadata"]["kwargs"]["vae_latent_channels"] == 64
    keys = set(ckpt["state_dict"])
    for prefix in (
        "encoder.block.0.weight_v",
        "mean_proj.weight",
        "logs_proj.weight",
        "dec_in_proj.weight",
        "quantizer.codebook.weight",
        "quantizer.in_proj.weight_v",
        "decoder.model.0.weight_g",
    ):
        assert prefix in keys
    assert tuple(ckpt["state_dict"]["mean_proj.weight"].shape) == (64, 1024, 1)
    assert tuple(ckpt["state_dict"]["quantizer.codebook.weight"].shape) == (4096, 8)
    assert tuple(ckpt["state_dict"]["decoder.model.0.weight_v"].shape) == (1536, 1024, 7)
    codec = codec_mod.load_codec(spec(checkpoint=str(path)), cache_dir=tmp_path)
    assert not codec.random_init and codec.latent_shape(220500) == (64, 431) and codec.hop_length == 512
    loaded = codec.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    # the full-size encoder on 20 hops (5 s would take ~10 s here): posterior mean [64, 20]
    assert codec.encode(torch.zeros(1, 20 * 512 - 100)).shape == (1, 64, 20)
    # a different published config (e.g. another latent width) builds from its own metadata.kwargs
    other = {**codec_mod.DAC_VAE_KWARGS, **codec_mod.DAC_VAE_SMALL, "vae_latent_channels": 32}
    p2 = tmp_path / "other.pth"
    codec_mod.save_dac_vae_checkpoint(codec_mod.DacVae(**other), other, p2)
    assert codec_mod.load_codec(spec(checkpoint=str(p2)), cache_dir=tmp_path).latent_dim == 32


def _small_ckpt(tmp_path, mutate=None):
    kwargs = {**codec_mod.DAC_VAE_KWARGS, **codec_mod.DAC_VAE_SMALL}
    model = codec_mod.DacVae(**kwargs)
    state = model.state_dict()
    if mutate:
        mutate(state, kwargs)
    path = tmp_path / "ckpt.pth"
    torch.save({"metadata": {"kwargs": kwargs}, "state_dict": state}, path)
    return path


def test_missing_or_extra_key_is_one_clear_error(torch_threads, tmp_path):
    path = _small_ckpt(tmp_path, lambda s, k: s.pop("logs_proj.bias"))
    with pytest.raises(SonievalError) as exc:
        codec_mod.load_dac_vae_checkpoint(path)
    assert "1 missing key(s), e.g. 'logs_proj.bias'" in str(exc.value) and str(path) in str(exc.value)
    path = _small_ckpt(tmp_path, lambda s, k: s.__setitem__("extra.weight", torch.zeros(1)))
    with pytest.raises(SonievalError, match="1 unexpected key"):
        codec_mod.load_dac_vae_checkpoint(path)
    path = _small_ckpt(tmp_path, lambda s, k: k.__setitem__("vae_latent_channels", 32))
    with pytest.raises(SonievalError, match="has shape .* expects"):
        codec_mod.load_dac_vae_checkpoint(path)
    path = tmp_path / "notadict.pth"
    torch.save([1, 2], path)
    with pytest.raises(SonievalError, match="published DAC-VAE format"):
        codec_mod.load_dac_vae_checkpoint(path)


def test_missing_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(WeightsUnavailable) as exc:
        codec_mod.load_codec(spec(checkpoint=str(tmp_path / "nope.pth")), cache_dir=tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg and "nope.pth" in msg and "codec.checkpoint" in msg


def test_offline_without_cached_weights_says_what_to_download(monkeypatch, tmp_path):
    import huggingface_hub

    def refuse(*a, **k):
        raise huggingface_hub.errors.LocalEntryNotFoundError("not in cache and outgoing traffic disabled")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    with pytest.raises(WeightsUnavailable) as exc:
        codec_mod.load_codec(spec(), cache_dir=tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "innnky/vae-dac" in msg and codec_mod.DAC_VAE_FILE in msg and "codec.checkpoint" in msg
    assert "huggingface-cli download" in msg


def test_plain_dac_offline_without_cached_weights(monkeypatch, tmp_path):
    import pathlib

    monkeypatch.setattr(pathlib.Path, "home", classmethod(lambda cls: tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable, match="python -m dac download --model_type 44khz"):
        codec_mod.load_codec(spec(name="dac"), cache_dir=tmp_path)


def test_checksum_recorded_on_first_use_and_verified_later(torch_threads, tmp_path):
    path = _small_ckpt(tmp_path)
    cache = tmp_path / "cache"
    c1 = codec_mod.load_codec(spec(checkpoint=str(path)), cache_dir=cache)
    records = list((cache / "weights").glob("*.sha256.json"))
    assert len(records) == 1 and c1.sha256 in records[0].read_text()
    codec_mod.load_codec(spec(checkpoint=str(path)), cache_dir=cache)  # same file: fine
    with open(path, "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(SonievalError, match="differs from the one recorded on first use"):
        weights.verify_checksum(path, key=str(path.resolve()), cache_dir=cache)
    with pytest.raises(SonievalError, match="differs from the published"):
        weights.verify_checksum(path, key="x", cache_dir=None, published="0" * 64)


@pytest.mark.parametrize("name", ["dac-vae", "dac"])
def test_small_codec_shapes_and_nan_latents(torch_threads, name):
    codec = codec_mod.load_codec(spec(name=name, size="small"))
    assert codec.random_init
    audio = torch.randn(2, 44100) * 0.1
    z = codec.encode(audio)
    assert z.shape == (2, codec.latent_dim, 87)  # ceil(44100 / 512): right-padded to whole hops
    out = codec.decode(z)
    assert out.shape == (2, 87 * 512) and torch.isfinite(out).all() and out.abs().max() <= 1
    z[0, 3, 5] = float("nan")
    with pytest.raises(SonievalError) as exc:
        codec.decode(z)
    assert "1 NaN or infinite value(s)" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(SonievalError, match=rf"expected a latent \[batch, {codec.latent_dim}, frames\]"):
        codec.decode(torch.zeros(1, codec.latent_dim + 1, 10))


def test_dac_vae_small_is_the_same_geometry():
    codec = codec_mod.load_codec(spec(size="small"))
    assert codec.latent_shape(5 * 44100) == (64, 431)
    assert abs(codec.latent_rate - 86.13) < 0.01


def test_plain_dac_loads_through_dacs_own_loader(torch_threads, tmp_path):
    """A DAC saved by dac itself (its .pth format) loads through DAC.load; latent = decoder input z."""
    import warnings

    from dac.model.dac import DAC

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = DAC(**codec_mod.DAC_SMALL)
        model.save(str(tmp_path / "dac.pth"))
    codec = codec_mod.load_codec(spec(name="dac", checkpoint=str(tmp_path / "dac.pth")), cache_dir=tmp_path)
    assert not codec.random_init and codec.latent_dim == model.latent_dim
    audio = torch.randn(1, 512 * 10) * 0.1
    z = codec.encode(audio)
    with torch.no_grad():
        expected = model.eval().encode(audio[:, None, :])[0]
    assert torch.allclose(z, expected, atol=1e-5)
    assert codec.decode(z).shape == (1, 512 * 10)


def test_checkpoint_sources_local_vs_hub(monkeypatch, tmp_path):
    import huggingface_hub

    asked = []

    def fake_download(repo_id, filename, local_files_only=False):
        asked.append((repo_id, filename))
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    for source in ("owner/repo/file.pth", "hf://owner/repo/file.pth"):
        with pytest.raises(WeightsUnavailable, match="owner/repo/file.pth"):
            weights.resolve_checkpoint(
                source,
                default_repo="a/b",
                default_file="c.pth",
                what="X",
                setting="codec.checkpoint",
                cache_dir=tmp_path,
            )
    assert asked == [("owner/repo", "file.pth")] * 2
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    with pytest.raises(WeightsUnavailable, match="checkpoint file not found"):
        weights.resolve_checkpoint(
            "weights/dac/file.pth",
            default_repo="a/b",
            default_file="c.pth",
            what="X",
            setting="codec.checkpoint",
            cache_dir=tmp_path,
        )
    assert len(asked) == 2  # a path under an existing local folder never goes to the hub
