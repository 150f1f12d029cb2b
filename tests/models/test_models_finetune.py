"""`sonieval finetune`: trains on the train split only, reports validation accuracy, saves a loadable checkpoint."""

from __future__ import annotations

import json

import pytest

from sonieval.cli import main
from sonieval.data.esc50 import assign_splits, dataset_for_protocol
from sonieval.models.encoders import load_encoder
from sonieval.protocol import EncoderSpec, load_protocol


def write_protocol(tmp_path, data: str, encoder: str, extra: str = "") -> str:
    path = tmp_path / "ft.yaml"
    path.write_text(
        f"name: ft\nresults_dir: {tmp_path / 'results'}\n"
        f"data:\n  esc50: {data}\n{extra}"
        f"encoders:\n  - name: {encoder}\n    size: small\n",
        encoding="utf-8",
    )
    return str(path)


def check_output(out, proto, encoder_name):
    info = json.loads((out / "finetune.json").read_text())
    assert (out / "config.json").is_file() and (out / "preprocessor_config.json").is_file()
    assert any(out.glob("model*.safetensors")) or (out / "pytorch_model.bin").is_file()
    assert 0.0 <= info["validation_accuracy"] <= 1.0 and info["random_init"] is True
    assert len(info["history"]) == 2 and info["best_epoch"] in (1, 2)
    # train split only: no validation or test clip was trained on
    splits = assign_splits(dataset_for_protocol(proto).clips, proto.data.split).set_index("clip_id")["split"]
    assert {splits[c] for c in info["train_clips"]} == {"train"}
    assert {splits[c] for c in info["validation_clips"]} == {"validation"}
    # the checkpoint is an encoder the pipeline can load
    enc = load_encoder(EncoderSpec(name=encoder_name, finetuned=str(out)))
    assert not enc.random_init and enc.model_id == str(out)
    return info


@pytest.mark.slow
def test_finetune_small_hubert_on_the_synthetic_set(torch_threads, tmp_path, capsys):
    classes = "synthetic_glide, synthetic_engine, synthetic_struck, synthetic_texture, synthetic_clicks"
    proto_path = write_protocol(
        tmp_path, "synthetic", "hubert", f"  categories: [{classes}]\n  max_clips_per_class: 8\n"
    )
    out = tmp_path / "ft-hubert"
    code = main(
        [
            "finetune",
            proto_path,
            "--encoder",
            "hubert",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--lr",
            "1e-3",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "validation accuracy" in printed and "SMALL RANDOM-INIT" in printed and "SYNTHETIC" in printed
    info = check_output(out, load_protocol(proto_path), "hubert")
    assert info["n_train"] == 30 and info["n_validation"] == 5  # 5 classes x 8 clips: 6/1/1 per class


@pytest.mark.slow
def test_finetune_small_ast_on_real_esc50_clips(torch_threads, tmp_path, esc50_root, capsys):
    extra = "  categories: [dog, rain, siren]\n"
    proto_path = write_protocol(tmp_path, str(esc50_root), "ast", extra)
    out = tmp_path / "ft-ast"
    code = main(
        [
            "finetune",
            proto_path,
            "--encoder",
            "ast",
            "--epochs",
            "2",
            "--batch-size",
            "6",
            "--lr",
            "1e-3",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert code == 0
    assert "validation accuracy" in capsys.readouterr().out
    info = check_output(out, load_protocol(proto_path), "ast")
    assert info["categories"] == ["dog", "rain", "siren"] and info["n_validation"] == 3


def test_finetune_bad_arguments_are_one_line(tmp_path, capsys):
    proto_path = write_protocol(tmp_path, "synthetic", "hubert")
    assert main(["finetune", proto_path, "--encoder", "hubert", "--epochs", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--epochs must be at least 1" in err
