"""The sonify stage on small random models: outputs, decode-once, resume, bad input, shards, figures."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pipeline_helpers import make_clips, write_protocol

import sonieval.models.codec  # noqa: E402
from sonieval.audio import CODEC_RATE, load_clip, read_audio
from sonieval.cli import main as cli_main
from sonieval.errors import SonievalError
from sonieval.ledger import open_ledger
from sonieval.pipeline.prepare import run_prepare
from sonieval.pipeline.sonify import codec_system_id, parse_shard, run_sonify
from sonieval.pipeline.train import checkpoint_path, run_train
from sonieval.protocol import load_protocol
from sonieval.tables import SONIFICATIONS_COLUMNS, parse_system_id, resolve_table_path

REAL_LOAD_CODEC = sonieval.models.codec.load_codec
POSTS = ["none", "minmax", "minmax+squared", "embedding_rescale+minmax"]
N_CLIPS, N_SYSTEMS = 3, 2  # listening clips; systems e1 and e2 of one run


@pytest.fixture(scope="module")
def trained_template(tmp_path_factory):
    """Clips, prepare and train once for the module (tests copy the results folder)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("template")
    make_clips(root)
    proto = load_protocol(write_protocol(root))
    with open_ledger(proto.results_path) as ledger:
        run_prepare(proto, ledger, progress=False)
        assert run_train(proto, ledger, progress=False).ok
    return root


@pytest.fixture
def trained(trained_template, tmp_path, torch_threads):
    shutil.copytree(trained_template / "results", tmp_path / "results")
    return load_protocol(write_protocol(tmp_path))


class DecodeCounter:
    """Wraps the small codec's decode: counts decoded latents; optionally dies after ``die_after`` calls."""

    def __init__(self, monkeypatch, die_after: int | None = None):
        import sonieval.models.codec as codec_mod

        self.latents, self.calls, real_load = 0, 0, REAL_LOAD_CODEC

        def load(*args, **kwargs):
            codec = real_load(*args, **kwargs)
            real_decode = codec.decode

            def decode(latent):
                if die_after is not None and self.calls == die_after:
                    raise KeyboardInterrupt
                self.calls += 1
                self.latents += latent.shape[0]
                return real_decode(latent)

            codec.decode = decode
            return codec

        monkeypatch.setattr(codec_mod, "load_codec", load)


def _sonify(proto, shard=None):
    with open_ledger(proto.results_path) as ledger:
        return run_sonify(proto, ledger, shard, progress=False)


def test_sonify_writes_every_system_postprocess_and_the_codec_ceiling(trained, monkeypatch):
    counter = DecodeCounter(monkeypatch)
    result = _sonify(trained)
    assert result.batch.ok, result.batch.failed
    # decoded once per (system, clip) and branch (embedding_rescale changes the gate's input) + codec
    assert counter.latents == N_SYSTEMS * 2 * N_CLIPS + N_CLIPS
    table = pd.read_parquet(trained.results_path / "tables" / "sonifications.parquet")
    assert list(table.columns[: len(SONIFICATIONS_COLUMNS)]) == SONIFICATIONS_COLUMNS
    assert table["random_init"].all()  # small random models: every row says so
    assert len(table) == N_SYSTEMS * len(POSTS) * N_CLIPS + N_CLIPS and (table["status"] == "done").all()
    codec_rows = table[table["postprocess"] == "codec"]
    assert set(codec_rows["system_id"]) == {codec_system_id("dac-vae")} == {"codec/dac-vae/lr0.0/e0/none/codec"}
    for row in table.itertuples():
        key = parse_system_id(row.system_id)
        assert (key.encoder, key.postprocess) == (row.encoder, row.postprocess)
        assert (
            resolve_table_path(row.path, trained.results_path)
            == trained.results_path / "sonifications" / row.system_id / f"{row.clip_id}.wav"
        )
        audio, rate, _ = read_audio(resolve_table_path(row.path, trained.results_path))
        assert rate == CODEC_RATE and audio.size == CODEC_RATE and np.all(np.isfinite(audio))
    clips = pd.read_parquet(trained.results_path / "tables" / "clips.parquet").set_index("clip_id")
    for row in table[table["postprocess"] == "minmax"].itertuples():
        original = load_clip(clips.loc[row.clip_id, "path"], CODEC_RATE, 1.0).samples
        out = read_audio(resolve_table_path(row.path, trained.results_path))[0]
        assert out.min() == pytest.approx(original.min(), abs=1e-6) and out.max() == pytest.approx(
            original.max(), abs=1e-6
        )
    # the plain decode and its post-processings differ; min-max of the rescaled embedding is another decode
    one = table[(table["clip_id"] == table["clip_id"].iloc[0]) & (table["epoch"] == 2)].set_index("postprocess")
    mm = read_audio(resolve_table_path(one.loc["minmax", "path"], trained.results_path))[0]
    rescaled = read_audio(resolve_table_path(one.loc["embedding_rescale+minmax", "path"], trained.results_path))[0]
    assert not np.allclose(mm, rescaled)
    # a rerun decodes nothing
    again = _sonify(trained)
    assert counter.latents == N_SYSTEMS * 2 * N_CLIPS + N_CLIPS and not again.batch.done
    assert len(again.batch.skipped) == N_SYSTEMS * 2 * N_CLIPS + N_CLIPS


def test_interrupted_sonify_resumes_without_redoing_finished_items(trained, monkeypatch):
    proto = load_protocol(write_protocol(trained.results_path.parent, sonify={"batch_size": 1}))
    total = N_SYSTEMS * 2 * N_CLIPS + N_CLIPS
    DecodeCounter(monkeypatch, die_after=5)
    with pytest.raises(KeyboardInterrupt):
        _sonify(proto)
    counter = DecodeCounter(monkeypatch)
    result = _sonify(proto)
    assert counter.calls == total - 5, "finished decodes were redone"
    assert len(result.batch.skipped) == 5 and len(result.batch.done) == total - 5 and result.batch.ok


def test_nan_latent_fails_that_system_only_with_one_line(trained):
    path = checkpoint_path(trained, "ast", "LIN", 0.01, 1, "transpose")
    ck = torch.load(path, weights_only=True)
    ck["state_dict"] = {k: torch.full_like(v, float("nan")) for k, v in ck["state_dict"].items()}
    torch.save(ck, path)
    result = _sonify(trained)
    bad = {k: v for k, v in result.batch.failed.items()}
    assert len(bad) == 2 * N_CLIPS and all(k.startswith("ast/LIN/lr0.01/e1/") for k in bad)
    msg = next(iter(bad.values()))
    assert "gate produced NaN or infinite latent values" in msg and str(path) in msg and "\n" not in msg
    assert len(result.batch.done) == 2 * N_CLIPS + N_CLIPS  # e2 and the codec went on
    table = result.table
    failed = table[table["status"] == "failed"]
    assert set(failed["epoch"]) == {1} and len(failed) == len(POSTS) * N_CLIPS and failed["path"].isna().all()


def test_wrong_embedding_shape_is_one_clear_error(trained):
    prepared_path = trained.results_path / "tables" / "prepared.parquet"
    prepared = pd.read_parquet(prepared_path)
    row = prepared[(prepared["kind"] == "embedding") & prepared["listening"]].index[0]
    folder = trained.results_path / "badcache" / Path(prepared.loc[row, "path"]).parent.name
    folder.mkdir(parents=True)
    good = np.load(resolve_table_path(prepared.loc[row, "path"], trained.results_path))
    np.save(folder / "wrong.npy", good[:-3])
    prepared.loc[row, "path"] = str(folder / "wrong.npy")
    prepared.to_parquet(prepared_path)
    result = _sonify(trained)
    clip = prepared.loc[row, "clip_id"]
    assert set(result.batch.failed) == {
        f"ast/LIN/lr0.01/e{e}/transpose/{b}/{clip}" for e in (1, 2) for b in ("plain", "embedding_rescale")
    }
    msg = next(iter(result.batch.failed.values()))
    assert f"embedding of clip {clip} has shape [{good.shape[0] - 3}, {good.shape[1]}]" in msg
    assert f"the gate expects [{good.shape[0]}, {good.shape[1]}]" in msg and "sonieval prepare" in msg


def test_missing_checkpoint_is_one_clear_error(trained, capsys):
    path = checkpoint_path(trained, "ast", "LIN", 0.01, 2, "transpose")
    path.unlink()
    result = _sonify(trained)
    assert len(result.batch.failed) == 2 * N_CLIPS
    assert {m for m in result.batch.failed.values()} == {
        f"{path}: gate checkpoint not found (run `sonieval train PROTOCOL` for this system first)"
    }
    assert len(result.batch.done) == 2 * N_CLIPS + N_CLIPS


def test_shards_are_disjoint_and_the_table_merges_them(trained, monkeypatch):
    total = N_SYSTEMS * 2 * N_CLIPS + N_CLIPS
    counter = DecodeCounter(monkeypatch)
    first = _sonify(trained, parse_shard("1/2"))
    after_first = len(first.table)
    second = _sonify(trained, parse_shard("2/2"))
    assert set(first.batch.done).isdisjoint(second.batch.done)
    assert len(first.batch.done) + len(second.batch.done) == total == counter.latents
    assert 0 < after_first < len(second.table) == N_SYSTEMS * len(POSTS) * N_CLIPS + N_CLIPS
    assert not second.table.duplicated(["system_id", "clip_id"]).any()
    for bad in ("0/2", "3/2", "a/b", "2"):
        with pytest.raises(SonievalError, match="--shard"):
            parse_shard(bad)


def test_waveform_stack_figure_through_the_cli(trained, capsys, monkeypatch):
    import sonieval.pipeline.figures as figures

    seen = {}
    original_stack = figures.waveform_stack

    def spy(original, stack, rate, path, **kw):
        seen.update(labels=[label for label, _ in stack], note=kw.get("note"))
        return original_stack(original, stack, rate, path, **kw)

    monkeypatch.setattr(figures, "waveform_stack", spy)
    _sonify(trained)
    table = pd.read_parquet(trained.results_path / "tables" / "sonifications.parquet")
    clip = table["clip_id"].iloc[0]
    systems = [
        "ast/LIN/lr0.01/e2/transpose/minmax",
        "ast/LIN/lr0.01/e2/transpose/minmax+squared",
        "codec/dac-vae/lr0.0/e0/none/codec",
    ]
    proto_file = str(trained.source)
    assert cli_main(["sonify", proto_file, "--figure", clip, "--systems", *systems]) == 0
    png = trained.results_path / "figures" / f"waveforms_{clip}.png"
    assert png.stat().st_size > 20_000
    # the random DAC-VAE (and whatever was decoded by it) is marked, and the mark explained on the figure
    assert all(label.endswith(" †") for label in seen["labels"]) and "RANDOMLY INITIALISED codec" in seen["note"]
    assert cli_main(["sonify", proto_file, "--figure", clip, "--systems", "ast/LIN/lr0.01/e9/transpose/none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no finished sonification" in err[0] and "e9" in err[0]
