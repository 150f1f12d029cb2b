"""The prepare stage: cache format and reuse, batching, bad clips; the three stages through the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pipeline_helpers import write_protocol

from sonieval.cli import main as cli_main
from sonieval.ledger import open_ledger
from sonieval.pipeline import prepare as prepare_mod
from sonieval.pipeline.prepare import FLOAT16_MAX, load_array, run_prepare, save_array
from sonieval.protocol import load_protocol
from sonieval.tables import resolve_table_path


def _prepare(proto, **kw):
    with open_ledger(proto.results_path) as ledger:
        return run_prepare(proto, ledger, progress=False, **kw)


class ForwardCounter:
    """Counts the clips that go through encoder and codec forwards."""

    def __init__(self, monkeypatch):
        self.clips, self.calls, self.layers = 0, 0, []
        for name in ("encoder_forward", "codec_forward"):
            real = getattr(prepare_mod, name)

            def wrapped(model, device, _real=real):
                fwd = _real(model, device)

                def counted(batch, targets):
                    self.calls += 1
                    self.clips += batch.shape[0]
                    self.layers.append([t.layer for t in targets])
                    return fwd(batch, targets)

                return counted

            monkeypatch.setattr(prepare_mod, name, wrapped)


def test_prepare_caches_compactly_and_reuses_the_cache(tiny_protocol, tmp_path, monkeypatch):
    counter = ForwardCounter(monkeypatch)
    result = _prepare(tiny_protocol, batch_size=4)
    table = result.table
    # 11 clips (train, validation and listening), one embedding and one latent each
    assert len(table) == 22 and (table["status"] == "done").all()
    assert counter.clips == 22 and counter.calls == 2 * 3  # batches of 4: 4 + 4 + 3 per model
    emb = np.load(resolve_table_path(table[table["kind"] == "embedding"]["path"].iloc[0], tiny_protocol.results_path))
    lat = np.load(resolve_table_path(table[table["kind"] == "latent"]["path"].iloc[0], tiny_protocol.results_path))
    assert emb.dtype == np.float16 and lat.dtype == np.float32 and lat.shape == (64, 87)
    # the float16 cache is within its documented rounding error of the encoder's float32 output
    from sonieval.audio import load_clip
    from sonieval.models.encoders import load_encoder

    encoder = load_encoder(tiny_protocol.encoders[0])
    clip_id = table[table["kind"] == "embedding"]["clip_id"].iloc[0]
    clips = pd.read_parquet(tiny_protocol.results_path / "tables" / "clips.parquet").set_index("clip_id")
    audio = load_clip(clips.loc[clip_id, "path"], 16000, 1.0).samples
    direct = encoder.embed(torch.from_numpy(audio[None]))[0].numpy()
    assert np.max(np.abs(emb.astype(np.float32) - direct) / (np.abs(direct) + 1e-3)) < 1e-3
    # a rerun and another results folder sharing the cache compute nothing
    again = _prepare(tiny_protocol)
    assert counter.clips == 22 and all(len(b.skipped) == 11 for b in again.batches.values())
    other = load_protocol(
        write_protocol(
            tmp_path / "other", results_dir=str(tmp_path / "other-results"), cache_dir=str(tiny_protocol.cache_path)
        )
    )
    (tmp_path / "other-results" / "tables").mkdir(parents=True)
    (tiny_protocol.results_path / "tables" / "clips.parquet").replace(
        tmp_path / "other-results" / "tables" / "clips.parquet"
    )
    reused = _prepare(other)
    assert counter.clips == 22 and (reused.table["status"] == "done").all()
    assert [resolve_table_path(p, other.results_path) for p in reused.table["path"]] == [
        resolve_table_path(p, tiny_protocol.results_path) for p in table["path"]
    ]


def test_changed_clip_content_is_not_served_from_the_cache(tiny_protocol, monkeypatch):
    counter = ForwardCounter(monkeypatch)
    _prepare(tiny_protocol)
    clips = pd.read_parquet(tiny_protocol.results_path / "tables" / "clips.parquet")
    from sonieval.audio import write_wav

    write_wav(clips["path"].iloc[0], np.zeros(44100, np.float32) + 0.1, 44100)
    before = counter.clips
    result = _prepare(tiny_protocol)
    assert counter.clips == before + 2  # that clip's embedding and latent only
    assert sum(len(b.done) for b in result.batches.values()) == 2


def test_batched_and_one_at_a_time_give_the_same_cache(tiny_protocol, tmp_path):
    one = load_protocol(write_protocol(tmp_path / "one", results_dir=str(tmp_path / "one-results")))
    (tmp_path / "one-results" / "tables").mkdir(parents=True)
    import shutil

    shutil.copy(tiny_protocol.results_path / "tables" / "clips.parquet", tmp_path / "one-results" / "tables")
    a = _prepare(tiny_protocol, batch_size=5).table
    b = _prepare(one, batch_size=1).table
    for pa, pb in zip(a["path"], b["path"]):
        np.testing.assert_allclose(
            np.load(resolve_table_path(pa, tiny_protocol.results_path)).astype(np.float32),
            np.load(resolve_table_path(pb, one.results_path)).astype(np.float32),
            rtol=2e-3,
            atol=2e-3,
        )


def test_unreadable_clip_fails_alone_with_one_line(tiny_protocol):
    clips = pd.read_parquet(tiny_protocol.results_path / "tables" / "clips.parquet")
    bad = clips["path"].iloc[2]
    with open(bad, "r+b") as fh:  # truncate the data chunk: the header promises more than is there
        fh.truncate(2000)
    result = _prepare(tiny_protocol, batch_size=4)
    failed = result.table[result.table["status"] == "failed"]
    assert len(failed) == 2 and set(failed["clip_id"]) == {clips["clip_id"].iloc[2]}
    assert failed["error"].str.contains("truncated WAV").all() and failed["error"].str.contains(bad, regex=False).all()
    assert (result.table["status"] == "done").sum() == 20


def test_cache_refuses_what_float16_cannot_hold(tmp_path):
    with pytest.raises(Exception, match="float16 range"):
        save_array(tmp_path / "e.npy", np.array([[FLOAT16_MAX * 2]], np.float32), "embedding")
    with pytest.raises(Exception, match="NaN or infinite"):
        save_array(tmp_path / "l.npy", np.array([[np.nan]], np.float32), "latent")
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(Exception, match="cannot read cache entry"):
        load_array(tmp_path / "broken.npy")


@pytest.mark.slow
def test_prepare_train_sonify_through_the_cli(tiny_protocol, capsys):
    proto_file = str(tiny_protocol.source)
    assert cli_main(["prepare", proto_file, "--no-progress"]) == 0
    assert cli_main(["train", proto_file, "--no-progress"]) == 0
    assert cli_main(["sonify", proto_file, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "prepare: embedding/ast: 11 entries made" in out and "train: 1 runs made" in out
    assert "sonify: 15 decodes made, 0 already done, 0 failed; table: 27 rows" in out
    # bad input to a command: one line, exit 2
    assert cli_main(["sonify", proto_file, "--shard", "5/4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "k must be between 1 and N" in err[0]


def test_grid_gates_read_the_embedding_at_the_codecs_frame_centres(tmp_path, torch_threads):
    """prepare records where the codec's latent frames sit (codec.json beside the latents); train builds
    grid gates on those centres and keeps them in the checkpoint, which sonify rebuilds from."""
    from pipeline_helpers import make_clips

    from sonieval.pipeline.prepare import read_codec_info
    from sonieval.pipeline.train import load_checkpoint, run_train

    make_clips(tmp_path)
    proto = load_protocol(
        write_protocol(
            tmp_path,
            codec=[{"name": "mel", "iterations": 2}],
            gates={"variants": ["LIN"], "alignments": ["grid"]},
            training={"learning_rates": [0.01], "epochs": [1], "batch_size": 4, "eval_batch_size": 4},
        )
    )
    table = _prepare(proto).table
    latent = resolve_table_path(table[table["kind"] == "latent"]["path"].iloc[0], proto.results_path)
    assert read_codec_info(latent.parent)["first_frame_center_s"] == 0.0  # centred STFT frames
    with open_ledger(proto.results_path) as ledger:
        assert run_train(proto, ledger, progress=False).ok
    ck = next((proto.results_path / "checkpoints").rglob("e1.pt"))
    assert load_checkpoint(ck)["meta"]["latent_first_center_s"] == 0.0
