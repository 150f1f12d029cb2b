"""End to end on a few real ESC-50 clips (fold 4 subset) with small random models."""

from __future__ import annotations

import numpy as np
import pytest
from pipeline_helpers import write_protocol

from sonieval.audio import read_audio
from sonieval.ledger import open_ledger
from sonieval.pipeline.figures import sonification_figure
from sonieval.pipeline.prepare import run_prepare
from sonieval.pipeline.sonify import run_sonify
from sonieval.pipeline.train import run_train
from sonieval.protocol import load_protocol
from sonieval.tables import resolve_table_path


@pytest.mark.esc50
@pytest.mark.slow
def test_real_clips_prepare_train_sonify(esc50_root, tmp_path, torch_threads):
    from sonieval.data.esc50 import prepare_clips

    proto = load_protocol(
        write_protocol(
            tmp_path,
            data={
                "esc50": str(esc50_root),
                "clip_seconds": 5.0,
                "categories": ["dog", "rooster"],
                "max_clips_per_class": 4,
                "listening_set": {"n_clips": 2},
            },
            training={"learning_rates": [0.005], "epochs": [1], "batch_size": 4, "eval_batch_size": 4},
            sonify={"postprocess": ["minmax", "minmax+squared"], "batch_size": 2},
        )
    )
    with open_ledger(proto.results_path) as ledger:
        clips = prepare_clips(proto, ledger, progress=False)
        assert clips["listening"].sum() == 2
        prepared = run_prepare(proto, ledger, progress=False).table
        assert (prepared["status"] == "done").all()
        lat = np.load(resolve_table_path(prepared[prepared["kind"] == "latent"]["path"].iloc[0], proto.results_path))
        assert lat.shape == (64, 431)  # 5 s at 44.1 kHz, right-padded to 431 hops of 512
        assert run_train(proto, ledger, progress=False).ok
        result = run_sonify(proto, ledger, progress=False)
    assert result.batch.ok, result.batch.failed
    table = result.table
    assert len(table) == 2 * 2 + 2 and (table["status"] == "done").all()
    listening = clips[clips["listening"]].set_index("clip_id")
    assert set(table["clip_id"]) == set(listening.index)
    assert set(table["category"]) <= {"dog", "rooster"}
    for row in table.itertuples():
        audio, rate, _ = read_audio(resolve_table_path(row.path, proto.results_path))
        assert rate == 44100 and audio.size == 5 * 44100 and np.all(np.isfinite(audio))
    clip = table["clip_id"].iloc[0]
    png = sonification_figure(proto.results_path, clip)
    assert png.exists() and png.stat().st_size > 20_000
