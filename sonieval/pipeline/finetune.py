"""Fine-tune an encoder (AST, HuBERT, wav2vec 2.0: those whose catalogue card names a classification head,
:mod:`sonieval.models.catalogue`) for ESC-50 classification on the train split only.

The reference work fine-tuned AST and HuBERT on ESC-50 itself rather than using hub checkpoints,
so that no test or validation clip had been seen by the encoder whose embeddings are sonified
(thesis §3.0.1, §4.6). This does the same with the protocol's own split
(:func:`sonieval.data.esc50.assign_splits`, stratified, seeded): it trains on ``split == "train"``,
measures accuracy on ``split == "validation"`` after every epoch and keeps the epoch with the best
validation accuracy (ties: the earlier one). The test split is never read.

Model: transformers' ``ASTForAudioClassification`` / ``HubertForSequenceClassification`` (a new
classification head on the pretrained base; the whole network is trained, including HuBERT's
convolutional feature encoder, because that is what the sonified embedding is made of —
``freeze_feature_encoder=True`` keeps it fixed). Optimiser AdamW (Loshchilov & Hutter 2019),
cross-entropy loss.

Output: a ``save_pretrained`` folder (model + feature extractor) that ``encoders[i].finetuned``
loads, with ``finetune.json`` beside it: base model, data set label, split seed, clip counts, per-epoch
training loss and validation accuracy, chance level, versions.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sonieval.errors import DataError, SonievalError
from sonieval.models.catalogue import finetune_heads
from sonieval.versions import package_versions

FINETUNE_INFO = "finetune.json"
# encoder name -> the transformers classification class trained on it: declared on each encoder's card
CLASSIFIERS = finetune_heads()


@dataclass
class FinetuneSettings:
    epochs: int = 5
    learning_rate: float = 5e-5
    batch_size: int = 8
    seed: int = 42
    weight_decay: float = 0.01
    freeze_feature_encoder: bool = False
    max_train_clips: int | None = None  # for smoke runs; None = every training clip


@dataclass
class FinetuneResult:
    output_dir: str
    encoder: str
    base_model: str
    random_init: bool
    dataset: str
    n_classes: int
    n_train: int
    n_validation: int
    best_epoch: int
    validation_accuracy: float
    chance_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        note = " (SMALL RANDOM-INIT MODEL)" if self.random_init else ""
        return (
            f"{self.encoder} fine-tuned from {self.base_model}{note} on {self.dataset}: validation accuracy "
            f"{self.validation_accuracy:.3f} (epoch {self.best_epoch}, n={self.n_validation}, chance "
            f"{self.chance_accuracy:.3f}); trained on {self.n_train} train-split clips; saved to {self.output_dir}"
        )


def _versions() -> dict[str, str | None]:
    return package_versions(["torch", "transformers"])


def _load_audio(paths: list[str], rate: int, seconds: float, policy: str) -> np.ndarray:
    from tqdm import tqdm

    from sonieval.audio import load_clip

    out = np.zeros((len(paths), int(round(seconds * rate))), dtype=np.float32)
    for i, p in enumerate(tqdm(paths, desc="reading clips", unit="clip", leave=False, disable=len(paths) < 50)):
        out[i] = load_clip(p, rate, seconds, policy).samples
    return out


def _build_classifier(encoder_cls, spec, n_classes: int, id2label: dict[int, str]):
    """(classifier, feature extractor, base label, random_init) for an encoder spec."""
    import torch
    import transformers

    from sonieval.models import weights

    clf_cls = getattr(transformers, CLASSIFIERS[encoder_cls.name])
    label2id = {v: k for k, v in id2label.items()}
    if spec.size == "small" and not spec.finetuned:
        torch.manual_seed(0)
        config = encoder_cls.small_config()
        config.num_labels, config.id2label, config.label2id = n_classes, id2label, label2id
        model = clf_cls(config)
        folder, base, random_init = None, f"{encoder_cls.name}-small-random", True
    else:
        base = spec.finetuned or spec.model or encoder_cls.default_model_id
        local = Path(os.path.expanduser(base))
        if local.exists() or base.startswith((".", "/", "~")):
            if not (local / "config.json").is_file():
                raise SonievalError("not a save_pretrained folder (no config.json)", path=local)
            folder = local
        else:
            folder = weights.hub_snapshot(base, what=f"{encoder_cls.name} encoder", setting="encoders[i].model")
        model = clf_cls.from_pretrained(
            folder, num_labels=n_classes, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True
        )
        random_init = False
    feature_extractor = encoder_cls.feature_extractor_for(model.config, folder)
    return model, feature_extractor, base, random_init


def _inputs(feature_extractor, audio: np.ndarray, rate: int):
    return feature_extractor(list(audio), sampling_rate=rate, return_tensors="pt")["input_values"]


def _save_atomic(model, feature_extractor, out_dir: Path, info: dict[str, Any]) -> None:
    """save_pretrained into a sibling temp folder, then swap it in (a killed run leaves the old one)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    feature_extractor.save_pretrained(tmp)
    (tmp / FINETUNE_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")
    old = out_dir.parent / f".{out_dir.name}.old"
    if out_dir.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old.exists():
        shutil.rmtree(old)


def finetune_encoder(
    proto,
    encoder_name: str,
    output_dir: str | os.PathLike,
    settings: FinetuneSettings | None = None,
    *,
    device: str = "cpu",
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``encoder_name`` (one of the protocol's encoders, or its defaults) on the protocol's train split."""
    import torch
    from tqdm import tqdm

    from sonieval.data.esc50 import assign_splits, dataset_for_protocol
    from sonieval.models.encoders import encoder_class
    from sonieval.protocol import EncoderSpec

    settings = settings or FinetuneSettings()
    if encoder_name not in CLASSIFIERS:
        raise SonievalError(f"--encoder: fine-tuning supports {', '.join(CLASSIFIERS)}, not {encoder_name!r}")
    encoder_cls = encoder_class(encoder_name)
    spec = next((e for e in proto.resolved_encoders() if e.name == encoder_name), None) or EncoderSpec(
        name=encoder_name
    )

    ds = dataset_for_protocol(proto)
    clips = assign_splits(ds.clips, proto.data.split)
    train = clips[clips["split"] == "train"].reset_index(drop=True)
    val = clips[clips["split"] == "validation"].reset_index(drop=True)
    if settings.max_train_clips is not None:
        train = (
            train.groupby("category", group_keys=False)
            .head(max(1, math.ceil(settings.max_train_clips / train["category"].nunique())))
            .reset_index(drop=True)
        )
    if train.empty or val.empty:
        raise DataError(
            f"{ds.label}: the split leaves {len(train)} training and {len(val)} validation clips",
            hint="fine-tuning needs both; use more clips per class (data.max_clips_per_class)",
        )
    categories = sorted(clips["category"].unique())
    id2label = dict(enumerate(categories))
    label_of = {c: i for i, c in id2label.items()}

    rate = encoder_cls.sample_rate
    x_train = _load_audio(train["path"].tolist(), rate, proto.data.clip_seconds, proto.data.length_policy)
    x_val = _load_audio(val["path"].tolist(), rate, proto.data.clip_seconds, proto.data.length_policy)
    y_train = torch.tensor([label_of[c] for c in train["category"]])
    y_val = np.array([label_of[c] for c in val["category"]])

    model, feature_extractor, base, random_init = _build_classifier(encoder_cls, spec, len(categories), id2label)
    if settings.freeze_feature_encoder and hasattr(model, "freeze_feature_encoder"):
        model.freeze_feature_encoder()
    model.to(device)
    torch.manual_seed(settings.seed)
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
    )

    def validation_accuracy() -> float:
        model.eval()
        preds = []
        with torch.no_grad():
            for s in range(0, len(x_val), settings.batch_size):
                logits = model(_inputs(feature_extractor, x_val[s : s + settings.batch_size], rate).to(device)).logits
                preds.append(logits.argmax(-1).cpu().numpy())
        return float((np.concatenate(preds) == y_val).mean())

    out_dir = Path(output_dir)
    history: list[dict[str, float]] = []
    best_acc, best_epoch = -1.0, 0
    gen = torch.Generator().manual_seed(settings.seed)
    info_base = {
        "encoder": encoder_name,
        "base_model": base,
        "random_init": random_init,
        "dataset": ds.label,
        "split_seed": proto.data.split.seed,
        "categories": categories,
        "n_train": len(train),
        "n_validation": len(val),
        "train_clips": train["clip_id"].tolist(),
        "validation_clips": val["clip_id"].tolist(),
        "settings": asdict(settings),
        "versions": _versions(),
        "protocol": str(proto.source or proto.name),
    }
    for epoch in range(1, settings.epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=gen).numpy()
        losses = []
        steps = range(0, len(order), settings.batch_size)
        for s in tqdm(
            steps,
            desc=f"fine-tune {encoder_name} epoch {epoch}/{settings.epochs}",
            unit="batch",
            disable=not progress,
            leave=False,
        ):
            idx = order[s : s + settings.batch_size]
            logits = model(_inputs(feature_extractor, x_train[idx], rate).to(device)).logits
            loss = torch.nn.functional.cross_entropy(logits, y_train[idx].to(device))
            if not torch.isfinite(loss):
                raise SonievalError(
                    f"fine-tuning {encoder_name}: the training loss became {loss.item()} at epoch {epoch}",
                    hint="lower --lr",
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        acc = validation_accuracy()
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "validation_accuracy": acc})
        if progress:
            print(f"epoch {epoch}: train loss {np.mean(losses):.4f}, validation accuracy {acc:.3f} (n={len(val)})")
        if acc > best_acc:
            best_acc, best_epoch = acc, epoch
            info = {
                **info_base,
                "best_epoch": epoch,
                "validation_accuracy": acc,
                "history": history,
                "chance_accuracy": 1.0 / len(categories),
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            _save_atomic(model, feature_extractor, out_dir, info)
    # the history of later epochs is kept in the record too
    record = json.loads((out_dir / FINETUNE_INFO).read_text(encoding="utf-8"))
    record["history"] = history
    (out_dir / FINETUNE_INFO).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return FinetuneResult(
        output_dir=str(out_dir),
        encoder=encoder_name,
        base_model=base,
        random_init=random_init,
        dataset=ds.label,
        n_classes=len(categories),
        n_train=len(train),
        n_validation=len(val),
        best_epoch=best_epoch,
        validation_accuracy=best_acc,
        chance_accuracy=1.0 / len(categories),
        history=history,
        settings=asdict(settings),
        versions=info_base["versions"],
    )
