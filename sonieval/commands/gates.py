"""``sonieval gates``: the 12 gate variants, their layers and parameter counts."""

from __future__ import annotations

import argparse

HELP = "list the 12 gate variants with their layers and parameter counts per alignment"
DESCRIPTION = (
    "Lists the gate variants (reference names LIN ... LIN-C, versions v0-v11) with their layer lists and "
    "parameter counts for the AST->DAC-VAE ([1212, 768] -> [64, 431]) and HuBERT->DAC-VAE ([249, 768] -> [64, 431]) "
    "shapes under each alignment (reshape, transpose, grid). --embedding/--latent give other shapes. "
    "Counted on PyTorch's meta device: nothing is allocated or downloaded."
)


def _shape(text: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.lower().replace("[", "").replace("]", "").replace(",", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two sizes like 1212x768, got {text!r}") from None
    if a < 1 or b < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return a, b


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--embedding",
        type=_shape,
        metavar="TxD",
        help="an embedding shape to count for instead of AST and HuBERT (e.g. 1500x1280)",
    )
    parser.add_argument(
        "--latent", type=_shape, metavar="CxT", default=None, help="latent shape (default 64x431: DAC-VAE, 5 s)"
    )
    parser.add_argument("--layers", action="store_true", help="also print each variant's layers per alignment")


def run(args: argparse.Namespace) -> int:
    from sonieval.models import gates as g

    latent = args.latent or g.DAC_VAE_LATENT
    targets = (
        [(f"{args.embedding[0]}x{args.embedding[1]}", args.embedding)]
        if args.embedding
        else [("AST", g.AST_EMBEDDING), ("HuBERT", g.HUBERT_EMBEDDING)]
    )
    print("Gate variants (reference names and versions, thesis §4.1/§4.5); parameters per alignment.")
    for label, shape in targets:
        print(f"{label} [{shape[0]}, {shape[1]}] -> latent [{latent[0]}, {latent[1]}]")
    header = f"{'variant':9} {'ref':4} " + " ".join(
        f"{f'{label}/{a}':>18}" for label, _ in targets for a in g.ALIGNMENTS
    )
    print(header)
    print("-" * len(header))
    for name, cls in g.GATES.items():
        counts = [g.gate_parameter_count(name, shape, latent, a) for _, shape in targets for a in g.ALIGNMENTS]
        print(f"{name:9} {cls.reference_version:4} " + " ".join(f"{c:>18,}" for c in counts))
        if args.layers:
            import torch

            for a in g.ALIGNMENTS:
                with torch.device("meta"):
                    gate = g.build_gate(name, targets[0][1], latent, a)
                print(f"    {a:9} {g.layer_summary(gate)}")
    print(
        "Axes: reshape: rows = embedding frames, cols = features, output [T', C] reshaped (not transposed) to "
        "[C, T']; transpose and grid: rows = features -> latent channels, cols = time -> latent frames "
        "(grid: AST's 12x101 patch grid with the 12 frequency rows folded into the features, grid-pool: averaged; "
        "both then interpolated onto latent time)."
    )
    return 0
