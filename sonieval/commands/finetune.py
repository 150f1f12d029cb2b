"""``sonieval finetune PROTOCOL --encoder NAME``: fine-tune an encoder on the train split only (the encoders
whose catalogue card names a classification head: :mod:`sonieval.models.catalogue`)."""

from __future__ import annotations

import argparse

from sonieval.models.catalogue import CARDS, finetune_heads

FINETUNABLE = list(finetune_heads())
HELP = (
    f"fine-tune {', '.join(CARDS[n].display_name for n in FINETUNABLE)} for ESC-50 classification on the "
    "protocol's train split; report validation accuracy"
)
DESCRIPTION = (
    "Fine-tunes the encoder for classification on the protocol's clips, training on split 'train' only and "
    "measuring accuracy on 'validation' after each epoch (the test split is never read), as the reference work "
    "did to respect the split. The best epoch is saved with save_pretrained (model + feature extractor + "
    "finetune.json) to --out (default <results>/finetuned/<encoder>); use it with `encoders[i].finetuned: DIR`."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("protocol", help="protocol file (protocols/*.yaml): data, split and encoder settings")
    parser.add_argument(
        "--encoder",
        required=True,
        choices=FINETUNABLE,
        help="which encoder; its model/size come from the protocol's encoders entry when present",
    )
    parser.add_argument("--out", metavar="DIR", help="output folder (default <results>/finetuned/<encoder>)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate (default 5e-5)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--freeze-feature-encoder",
        action="store_true",
        help="HuBERT/wav2vec 2.0: keep the convolutional feature encoder fixed (the sonified "
        "embedding then changes only through feature_projection)",
    )
    parser.add_argument("--max-train-clips", type=int, default=None, help="use at most N training clips (smoke runs)")
    parser.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, ...")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from sonieval.extras import require

    require("sonieval finetune", "transformers")
    from pathlib import Path

    from sonieval.errors import SonievalError
    from sonieval.pipeline.finetune import FinetuneSettings, finetune_encoder
    from sonieval.protocol import load_protocol

    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise SonievalError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not 0 < args.lr < 1:
        raise SonievalError(f"--lr must be in (0, 1), got {args.lr}")
    proto = load_protocol(args.protocol)
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out) if args.out else proto.layout.finetuned / args.encoder
    settings = FinetuneSettings(
        epochs=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        freeze_feature_encoder=args.freeze_feature_encoder,
        max_train_clips=args.max_train_clips,
    )
    result = finetune_encoder(proto, args.encoder, out, settings, device=device, progress=not args.no_progress)
    print(f"finetune: {result.summary()}")
    print(f"use it: encoders: [{{name: {args.encoder}, finetuned: {out}}}]")
    return 0
