"""A codec's fitted state has one save path and one load path (sonieval.pipeline.cache): prepare saves what the
codec learnt beside its latents, every later reader restores it from there. docs/extending.md, "Adding a
codec": its example (a codec with a fitted state) runs as written through that path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from harness.readme import api_examples

from sonieval.errors import DataError
from sonieval.models.codec import load_codec
from sonieval.pipeline.cache import CODEC_INFO, restore_codec_state, save_codec_state
from sonieval.protocol import CodecSpec

DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"
RATE = 44_100


def _tones(seconds: float = 1.0) -> list[np.ndarray]:
    t = np.arange(int(seconds * RATE)) / RATE
    return [(a * np.sin(2 * np.pi * f * t)).astype(np.float32) for a, f in ((0.3, 220.0), (0.05, 1500.0))]


def test_the_adding_a_codec_example_runs_through_the_one_save_and_load_path(tmp_path, monkeypatch, capsys):
    (code,) = api_examples(DOC.read_text(encoding="utf-8"), "codec")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/extending.md (codec example)", "exec"), {"__name__": "__docs__"})
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "cache/latents/pooled/codec.json pooled-64x8-rms0.141421"
    assert lines[1] == "(1, 64, 431) True"  # 5 s at hop 512, and the restored codec encodes as the fitted one
    error = float(lines[2].rsplit(": ", 1)[1])
    assert 0 < error < 0.05  # an 8-sample hold keeps a 110 Hz tone (a 5.5 kHz low-pass, not an identity)
    assert lines[3] == (
        "cache/latents/elsewhere/codec.json: the pooled codec's fitted state (its record beside the latents) "
        "is missing or damaged (rerun `sonieval prepare PROTOCOL`)"
    )
    assert len(lines) == 4
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == [
        "cache/latents/pooled/codec.json"
    ]
    assert json.loads((tmp_path / "cache/latents/pooled/codec.json").read_text())["scale"] == pytest.approx(
        0.2 / 2**0.5
    )


def test_the_mel_codec_is_restored_with_the_statistics_it_was_fitted_with(tmp_path):
    """The built-in fitted codec through the same path: prepare's fit, its record, the restored codec."""
    spec = CodecSpec(name="mel", iterations=2)
    fitted = load_codec(spec)
    fitted.fit(_tones(), source="train split (2 clips)")
    record = save_codec_state(tmp_path / "latents" / "mel-key", fitted)
    assert record.read_text() == json.dumps(fitted.describe(), indent=1)  # the record prepare always wrote

    restored = restore_codec_state(load_codec(spec), tmp_path / "latents" / "mel-key")
    assert restored.model_id == fitted.model_id and "-norm" in restored.model_id
    assert restored.normalisation == fitted.normalisation and restored.describe() == fitted.describe()
    clip = torch.from_numpy(_tones()[0][None])
    assert torch.equal(restored.encode(clip), fitted.encode(clip))
    # a control: a codec fitted on other clips is another codec (another id, other latents)
    other = load_codec(spec)
    other.fit(_tones()[1:], source="train split (1 clip)")
    assert other.model_id != fitted.model_id and not torch.equal(other.encode(clip), fitted.encode(clip))


def test_a_codec_that_learns_nothing_is_loaded_as_it_is_and_a_damaged_record_is_one_line(tmp_path):
    dac = load_codec(CodecSpec(name="dac-vae", size="small"))
    assert not dac.fits_data and restore_codec_state(dac, tmp_path / "nowhere") is dac

    folder = tmp_path / "latents" / "mel-key"
    folder.mkdir(parents=True)
    (folder / CODEC_INFO).write_text('{"codec": "mel", "normalisation": {"mean": [0.0]')
    with pytest.raises(DataError) as info:
        restore_codec_state(load_codec(CodecSpec(name="mel")), folder)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{folder / CODEC_INFO}: the mel codec's fitted state")
