"""The random twin of a pretrained encoder as a control kind: protocol syntax, system ids (``ENCODER.twin
[.layer<k>]``, control ``twin``, the pretrained encoder's family), and a twin that goes through prepare,
train, sonify and score like any system, in its own cache folders."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from sonieval.audio import CODEC_RATE, write_wav
from sonieval.errors import DataError, ProtocolError
from sonieval.protocol import TWIN_SUFFIX, load_protocol, parse_protocol
from sonieval.tables import (
    CONTROL_VALUES,
    CONTROLS,
    TWIN,
    control_of,
    encoder_slot,
    parse_system_id,
    system_parts,
    write_table,
)


def test_twin_protocol_syntax_and_encoder_names():
    proto = parse_protocol(
        {
            "name": "p",
            "encoders": [
                {"name": "crepe", "model": "tiny", "layer": "all", "twin": True},
                {"name": "crepe", "model": "full", "layer": [5, 6], "hop": 0.0697},
                {"name": "crepe", "model": "tiny", "weights": "random", "seed": 3, "id": "crepe-tiny-random"},
                {"name": "ast", "size": "small"},
            ],
        }
    )
    got = [(i, s.system_name, s.weights, s.is_twin) for i, s in proto.sonified_encoders()]
    assert got == [
        (0, "crepe-tiny", "pretrained", False),
        (0, "crepe-tiny.twin", "random", True),  # the twin follows its entry and shares its index
        (1, "crepe-full", "pretrained", False),
        (2, "crepe-tiny-random", "random", False),  # weights: random alone is an encoder, not a control
        (3, "ast", "pretrained", False),
    ]
    assert TWIN_SUFFIX == f".{TWIN}" and TWIN in CONTROLS and TWIN in CONTROL_VALUES
    for entries, message in (
        (
            [{"name": "crepe", "model": "tiny"}, {"name": "crepe", "model": "tiny", "hop": 0.05}],
            "both named 'crepe-tiny'",
        ),
        ([{"name": "crepe", "model": "tiny", "twin": True, "weights": "random"}], "twin: the random twin is a control"),
        ([{"name": "hubert", "size": "small", "twin": True}], "this entry is already random"),
        ([{"name": "crepe", "model": "tiny", "id": "codec"}], "not 'codec'"),
    ):
        with pytest.raises(ProtocolError, match=message):
            parse_protocol({"name": "p", "encoders": entries})


def test_twin_system_ids_control_and_family():
    pre = "crepe-tiny.layer3/LIN/lr0.005/e8/transpose/none"
    twin = "crepe-tiny.twin.layer3/LIN/lr0.005/e8/transpose/none"
    assert encoder_slot("crepe-tiny.twin", "layer3") + "/LIN/lr0.005/e8/transpose/none" == twin
    assert encoder_slot("crepe-tiny.twin") == "crepe-tiny.twin" and encoder_slot("crepe-tiny", "input") == "crepe-tiny"
    k, kp = parse_system_id(twin), parse_system_id(pre)
    assert k.system_id == twin and k.control == TWIN == control_of(twin) and kp.control == "none"
    assert k.family == kp.family == parse_system_id(pre.replace("/LIN/", "/LIN.shuffled/")).family
    assert parse_system_id("crepe-tiny.twin/LIN/lr0.005/e8/transpose/none").family != k.family  # another layer
    parts = system_parts(twin)
    assert (parts["encoder"], parts["layer"], parts["control"], parts["variant"]) == (
        "crepe-tiny",
        "layer3",
        TWIN,
        "LIN",
    )
    # old ids keep their meaning
    assert system_parts("hubert.layer6/LIN.shuffled.s43/lr0.005/e50/grid/none")["control"] == "shuffled"
    assert parse_system_id("ast/LIN/lr0.005/e50/transpose/minmax").family[0] == "ast"
    for bad in ("crepe-tiny.twin.input", "crepe-tiny.layer3.twin"):
        with pytest.raises(DataError):
            parse_system_id(f"{bad}/LIN/lr0.005/e8/transpose/none")
    with pytest.raises(DataError, match="a twin's gate has no control of its own"):
        parse_system_id("crepe-tiny.twin/LIN.untrained/lr0.0/e0/transpose/none")


def test_control_ids_name_the_twin_of_a_pretrained_system():
    from sonieval.metrics.controls import control_ids

    ctrl = control_ids("crepe-tiny.layer3/LIN/lr0.005/e8/transpose/none", "mel")
    assert ctrl[TWIN] == "crepe-tiny.twin.layer3/LIN/lr0.005/e8/transpose/none"
    assert ctrl["shuffled"] == "crepe-tiny.layer3/LIN.shuffled/lr0.005/e8/transpose/none"
    assert control_ids("crepe-tiny.twin.layer3/LIN/lr0.005/e8/transpose/none", "mel") is None  # itself a control


# ----------------------------------------------------------------------------- through the stages

SR = CODEC_RATE


def _tones(root, n_train=6, n_validation=2, n_test=3):
    """1 s harmonic tones of several pitches (what CREPE was trained to tell apart), and the clips table."""
    rng = np.random.default_rng(0)
    rows = []
    t = np.arange(SR) / SR
    for i, split in enumerate(["train"] * n_train + ["validation"] * n_validation + ["test"] * n_test):
        f0 = 110 * 2 ** (i / 4)
        x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 8)) * np.exp(-t * (1 + i % 3))
        x = (0.4 * x / np.abs(x).max() + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
        clip_id = f"{split}-{i:02d}"
        path = write_wav(root / "audio" / f"{clip_id}.wav", x, SR)
        rows.append(
            dict(clip_id=clip_id, filename=path.name, fold=1, target=i % 3, category=f"c{i % 3}", path=str(path))
            | dict(split=split, listening=split == "test", status="ok", error=None)
        )
    write_table(pd.DataFrame(rows), root / "results" / "tables" / "clips.parquet", "clips")


@pytest.fixture(scope="module")
def twin_run(tmp_path_factory):
    """crepe-tiny (layer 5, 20 frames per second) and its twin through prepare, train, sonify and score."""
    import torch

    from sonieval.ledger import open_ledger
    from sonieval.metrics.leaderboard import run_score
    from sonieval.pipeline.prepare import run_prepare
    from sonieval.pipeline.sonify import run_sonify
    from sonieval.pipeline.train import run_train

    root = tmp_path_factory.mktemp("twin")
    _tones(root)
    protocol = {
        "name": "twin-test",
        "results_dir": str(root / "results"),
        "data": {"esc50": "synthetic", "clip_seconds": 1.0},
        "encoders": [{"name": "crepe", "model": "tiny", "layer": [5], "hop": 0.05, "twin": True}],
        "codec": {"name": "mel", "iterations": 2},
        "gates": {"variants": ["LIN"], "alignments": ["grid"], "controls": ["untrained"]},
        "training": {"epochs": [2], "learning_rates": [0.01], "batch_size": 4},
        "sonify": {"postprocess": ["none"]},
        "metrics": {"embeddings": ["logmel"], "metrics": ["kad"], "bootstrap": 50, "item_metrics": ["logmel_l1"]},
    }
    (root / "p.yaml").write_text(yaml.safe_dump(protocol))
    proto = load_protocol(root / "p.yaml")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with open_ledger(proto.results_path) as ledger:
            prepared = run_prepare(proto, ledger, progress=False)
            trained = run_train(proto, ledger, progress=False)
            sonified = run_sonify(proto, ledger, progress=False)
            scored = run_score(proto, ledger, progress=False)
    finally:
        torch.set_num_threads(threads)
    return proto, prepared, trained, sonified, scored


@pytest.mark.slow
def test_the_twin_has_its_own_cache_and_systems(twin_run):
    proto, prepared, trained, sonified, _ = twin_run
    assert trained.ok and sonified.batch.ok, (trained.failed, sonified.batch.failed)
    emb = prepared.table[prepared.table["kind"] == "embedding"]
    assert (emb["status"] == "done").all()
    keys = emb.groupby("model")["model_key"].unique().to_dict()
    assert set(keys) == {"crepe-tiny", "crepe-tiny.twin"}
    (pre_key,), (twin_key,) = keys["crepe-tiny"], keys["crepe-tiny.twin"]
    assert pre_key != twin_key and "-random-" in twin_key and "-random-" not in pre_key
    assert pre_key.endswith("@layer5") and twin_key.endswith("@layer5")
    a = np.load(proto.cache_path / "embeddings" / pre_key / f"{_sha(emb, 'crepe-tiny')}.npy")
    b = np.load(proto.cache_path / "embeddings" / twin_key / f"{_sha(emb, 'crepe-tiny.twin')}.npy")
    assert a.shape == b.shape == (20, 256) and not np.allclose(a, b)
    training = pd.read_parquet(proto.results_path / "tables" / "training.parquet")
    assert sorted(zip(training["encoder"], training["gate_slot"])) == [
        ("crepe-tiny", "LIN"),
        ("crepe-tiny", "LIN.untrained"),
        ("crepe-tiny.twin", "LIN"),  # the twin is a control: no controls of its own
    ]
    son = sonified.table
    by_control = son.groupby("control")["system_id"].unique().map(sorted).to_dict()
    assert by_control[TWIN] == ["crepe-tiny.twin.layer5/LIN/lr0.01/e2/grid/none"]
    assert by_control["none"] == ["crepe-tiny.layer5/LIN/lr0.01/e2/grid/none"]
    twin_rows = son[son["control"] == TWIN]
    assert set(twin_rows["encoder"]) == {"crepe-tiny"} and twin_rows["encoder_random_init"].all()
    assert not son.loc[son["control"] == "none", "encoder_random_init"].any()


def _sha(emb: pd.DataFrame, model: str) -> str:
    from pathlib import Path

    return Path(emb.loc[emb["model"] == model, "path"].iloc[0]).stem


@pytest.mark.slow
def test_score_compares_the_pretrained_system_with_its_twin(twin_run):
    proto, *_, scored = twin_run
    learning = scored.learning
    pre = learning[learning["system_id"] == "crepe-tiny.layer5/LIN/lr0.01/e2/grid/none"]
    assert not pre.empty and {"twin_value", "beats_twin"} <= set(pre.columns)
    kad = pre[pre["measure"] == "kad"].iloc[0]
    assert np.isfinite(kad["twin_value"]) and np.isfinite(kad["twin_paired_difference"])
    assert not learning["system_id"].str.contains(".twin", regex=False).any()  # the twin is no row of its own
    paired = pd.read_csv(proto.results_path / "scores" / "paired_controls.csv")
    assert TWIN in set(paired["control"])


def test_the_twin_of_a_transformers_encoder_is_its_config_with_seeded_weights(tmp_path, torch_threads):
    """weights: random on a checkpoint folder: the same config, weights drawn with the seed (not the file's)."""
    import torch
    import transformers

    from sonieval.models.encoders import encoder_class, load_encoder
    from sonieval.protocol import EncoderSpec

    cls = encoder_class("hubert")
    torch.manual_seed(5)
    getattr(transformers, cls.model_class_name)(cls.small_config()).save_pretrained(tmp_path / "hubert")
    spec = EncoderSpec(name="hubert", model=str(tmp_path / "hubert"), layer=1, twin=True)
    pre, twin, again = (load_encoder(s) for s in (spec, spec.twin_spec(), spec.twin_spec()))
    other = load_encoder(spec.twin_spec().model_copy(update={"seed": 1}))
    assert not pre.random_init and twin.random_init and twin.system_name == "hubert.twin"
    assert twin.config.to_dict() == pre.config.to_dict()
    w = "feature_projection.projection.weight"
    assert not torch.equal(twin.model.state_dict()[w], pre.model.state_dict()[w])
    assert torch.equal(twin.model.state_dict()[w], again.model.state_dict()[w])
    assert not torch.equal(twin.model.state_dict()[w], other.model.state_dict()[w])
    assert len({pre.cache_ident, twin.cache_ident, other.cache_ident}) == 3
    assert load_encoder(EncoderSpec(name="hubert", size="small")).cache_ident == "hubert-small-random"  # as before
