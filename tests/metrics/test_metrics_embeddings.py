"""Embedding backends: logmel, transformers from local random checkpoints, kadtk registry, cache."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from sonieval.audio import write_wav
from sonieval.errors import WeightsUnavailable
from sonieval.metrics import embeddings as E


def _tone(seconds=1.0, rate=16000, freq=440.0, seed=0):
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.01
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


def test_logmel_is_weight_free_frame_level_and_documented():
    lm = E.load_embedding("logmel")
    assert lm.embedding_id == "logmel[weight-free]" and lm.weights == "weight-free"
    frames = lm.embed_batch([_tone(5.0)])[0]
    assert frames.shape == (251, 64) and frames.dtype == np.float32 and np.all(np.isfinite(frames))
    # silence is finite too (log offset), and a 440 Hz tone peaks in a low band
    silent = lm.embed_batch([np.zeros(16000, np.float32)])[0]
    assert np.all(np.isfinite(silent)) and np.allclose(silent, np.log(1e-6))
    assert 2 < int(np.argmax(frames[100])) < 20
    p = lm.params()
    assert (p["n_fft"], p["hop_length"], p["n_mels"], p["fmin"], p["fmax"], p["log_offset"]) == (
        1024,
        320,
        64,
        50.0,
        8000.0,
        1e-6,
    )
    with pytest.raises(E.EmbeddingError, match="takes no source"):
        E.load_embedding("logmel:foo")


def test_unknown_embedding_names_the_choices():
    with pytest.raises(E.EmbeddingError, match="unknown embedding 'logmell'.*did you mean 'logmel'"):
        E.load_embedding("logmell")
    with pytest.raises(E.EmbeddingError, match="unknown kadtk model 'vgish'.*kadtk:vggish"):
        E.load_embedding("kadtk:vgish")


def test_kadtk_loaders_fail_with_one_clear_line_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = list(warnings.filters)
    for name in ("kadtk:panns-cnn14-16k", "kadtk:vggish", "kadtk:clap-laion-audio"):
        backend = E.load_embedding(name)
        assert backend.embedding_id == f"{name}[pretrained]"
        with pytest.raises(WeightsUnavailable, match="weights are not cached") as info:
            backend.load()
        assert "\n" not in str(info.value) and "logmel" in str(info.value)
    assert backend.sample_rate == 48000
    assert list(warnings.filters) == before  # kadtk's filterwarnings("ignore") was undone


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hubert", "ast"])
def test_transformers_encoder_from_a_local_random_checkpoint(name, tmp_path, torch_threads):
    small = E.load_embedding(f"{name}:small")
    assert small.weights == "random-init"
    model = small.load()
    model.config.sonieval_random_init = True
    model.save_pretrained(tmp_path / name)
    local = E.load_embedding(f"{name}:{tmp_path / name}")
    assert local.embedding_id == f"{name}:{tmp_path / name}[random-init]"
    audio = [_tone(1.0), _tone(1.0, freq=880.0, seed=1)]
    a = small.embed_batch(audio)
    b = local.embed_batch(audio)
    assert a[0].ndim == 2 and a[0].shape[0] > 1
    np.testing.assert_allclose(a[0], b[0], rtol=1e-4, atol=1e-5)
    if name == "ast":
        assert a[0].shape[0] == 1212  # patch tokens only (cls and distillation dropped)


def test_transformers_hub_id_offline_is_weights_unavailable(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backend = E.load_embedding("hubert:nobody/not-a-cached-model")
    assert backend.weights == "pretrained"
    with pytest.raises(WeightsUnavailable, match="cannot load hubert weights"):
        backend.load()


def test_embed_files_batches_caches_by_content_and_isolates_bad_files(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"clip{i}.wav"
        write_wav(p, _tone(1.0, freq=300 + 100 * i, seed=i), 16000)
        paths.append(p)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    lm = E.load_embedding("logmel")
    cache = E.EmbeddingCache(tmp_path / "cache")
    first = E.embed_files(lm, paths + [bad], cache=cache, progress=False)
    assert set(first.frames) == {str(p) for p in paths} and first.from_cache == 0
    assert list(first.errors) == [str(bad)] and "broken.wav" in first.errors[str(bad)]
    again = E.embed_files(lm, paths, cache=cache, progress=False)
    assert again.from_cache == 3
    np.testing.assert_array_equal(again.frames[str(paths[0])], first.frames[str(paths[0])])
    meta = json.loads(next((tmp_path / "cache" / "metric_embeddings").glob("*/embedding.json")).read_text())
    assert meta["embedding"] == "logmel[weight-free]" and meta["n_mels"] == 64
    # new content under the same name is not served stale from the cache
    write_wav(paths[0], _tone(1.0, freq=2000, seed=9), 16000)
    third = E.embed_files(lm, paths, cache=cache, progress=False)
    assert third.from_cache == 2
    assert not np.allclose(third.frames[str(paths[0])], first.frames[str(paths[0])])


def test_a_folder_of_another_model_is_a_clear_error(tmp_path, torch_threads):
    ast = E.load_embedding("ast:small").load()
    ast.save_pretrained(tmp_path / "ast")
    backend = E.load_embedding(f"hubert:{tmp_path / 'ast'}")
    with pytest.raises(E.EmbeddingError, match="is not a hubert checkpoint|cannot load hubert"):
        backend.load()
