"""Model costs at full size, measured side by side in one run (ratios, not absolute promises).

    .venv/bin/python bench/bench_models.py [--device cpu|cuda] [--threads N] [--batch 4] [--check]

Full-size architectures with random weights (the published weights cannot be fetched here; a
forward pass costs the same with any weights): DAC-VAE decode and encode of 5 s, every gate variant
at the AST→DAC-VAE shape, the AST patch embedder (fbank included) and HuBERT's pre-encoder features.
Prints seconds per clip and ratios to the decoder's forward. ``--check`` (for a GPU) also verifies
that gates, codec and encoders give the same numbers on the device as on the CPU.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def timed(fn, device, repeats: int = 3, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` (CUDA-synchronised)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def check_on_device(device) -> None:
    """Same results on the device as on the CPU (float32; TF32 off)."""
    import types

    from sonieval.models import codec as codec_mod
    from sonieval.models import gates as g
    from sonieval.models.encoders import load_encoder

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    worst = 0.0
    for shape in (g.AST_EMBEDDING, g.HUBERT_EMBEDDING):
        x = torch.randn(2, *shape)
        for variant in g.GATES:
            for alignment in g.ALIGNMENTS:
                gate = g.build_gate(variant, shape, g.DAC_VAE_LATENT, alignment).eval()
                with torch.no_grad():
                    ref = gate(x)
                    out = gate.to(device)(x.to(device)).cpu()
                worst = max(worst, float((out - ref).abs().max() / (ref.abs().max() + 1e-12)))
                gate.train()
                loss = torch.nn.functional.mse_loss(
                    gate(x.to(device)), torch.zeros(2, *g.DAC_VAE_LATENT, device=device)
                )
                loss.backward()
    print(
        f"check: 12 variants x 3 alignments x 2 shapes on {device}: max relative difference to CPU {worst:.2e}; backward ran"
    )
    assert worst < 1e-3, worst
    for name in ("dac-vae", "dac"):
        spec = types.SimpleNamespace(name=name, size="small", checkpoint=None)
        cpu, dev = codec_mod.load_codec(spec), codec_mod.load_codec(spec, device=str(device))
        audio = torch.randn(2, 44100) * 0.1
        z_cpu, z_dev = cpu.encode(audio), dev.encode(audio)
        a_cpu, a_dev = cpu.decode(z_cpu), dev.decode(z_cpu)
        dz = float((z_cpu - z_dev).abs().max() / z_cpu.abs().max())
        da = float((a_cpu - a_dev).abs().max())
        print(f"check: codec {name} (small) on {device}: latent rel. diff {dz:.2e}, audio abs. diff {da:.2e}")
        assert dz < 1e-3 and da < 1e-3
    for name in ("ast", "hubert", "wav2vec2"):
        spec = types.SimpleNamespace(name=name, size="small", model=None, finetuned=None)
        audio = torch.randn(2, 80000) * 0.1
        e_cpu = load_encoder(spec).embed(audio)
        e_dev = load_encoder(spec, device=str(device)).embed(audio)
        d = float((e_cpu - e_dev).abs().max() / e_cpu.abs().max())
        print(f"check: encoder {name} (small) on {device}: embedding shape {tuple(e_dev.shape)}, rel. diff {d:.2e}")
        assert d < 1e-3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    import transformers

    from sonieval.models import codec as codec_mod
    from sonieval.models import gates as g
    from sonieval.models.encoders import ASTEncoder, HubertEncoder

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or 'cpu'}, {args.threads} threads"
    )
    print(
        f"bench_models: {name}; torch {torch.__version__}, transformers {transformers.__version__}; "
        f"full-size architectures, random weights; median of {args.repeats}"
    )
    if args.check and device.type != "cpu":
        check_on_device(device)

    torch.manual_seed(0)
    model = codec_mod.DacVae(**codec_mod.DAC_VAE_KWARGS)
    codec = codec_mod.DacVaeCodec(model, model_id="full-size random", random_init=True, device=device)
    n = 5 * 44100
    audio1, audio_b = torch.randn(1, n) * 0.1, torch.randn(args.batch, n) * 0.1
    z1, zb = codec.encode(audio1), codec.encode(audio_b)
    rows = {}
    rows["DAC-VAE decode, batch 1"] = timed(lambda: codec.decode(z1), device, args.repeats)
    rows[f"DAC-VAE decode, batch {args.batch}"] = timed(lambda: codec.decode(zb), device, args.repeats) / args.batch
    rows["DAC-VAE encode, batch 1"] = timed(lambda: codec.encode(audio1), device, args.repeats)
    rows[f"DAC-VAE encode, batch {args.batch}"] = (
        timed(lambda: codec.encode(audio_b), device, args.repeats) / args.batch
    )

    # Encoders at full width: only the modules the embedding uses (patch embedder; conv features + projection).
    from transformers import ASTConfig, HubertConfig
    from transformers.models.audio_spectrogram_transformer.modeling_audio_spectrogram_transformer import (
        ASTPatchEmbeddings,
    )
    from transformers.models.hubert.modeling_hubert import HubertFeatureEncoder, HubertFeatureProjection

    ast = ASTEncoder.__new__(ASTEncoder)
    ast.config, ast.device, ast.random_init, ast.model_id = ASTConfig(), device, True, "full-size random"
    ast.feature_extractor = ASTEncoder.feature_extractor_for(ast.config, None)
    ast.patch_embeddings = ASTPatchEmbeddings(ast.config).to(device).eval()
    hub = HubertEncoder.__new__(HubertEncoder)
    hub.config, hub.device, hub.random_init, hub.model_id = HubertConfig(), device, True, "full-size random"
    hub.feature_extractor = HubertEncoder.feature_extractor_for(hub.config, None)
    hub.conv_features = HubertFeatureEncoder(hub.config).to(device).eval()
    hub.feature_projection = HubertFeatureProjection(hub.config).to(device).eval()
    a16 = torch.randn(args.batch, 80000) * 0.1
    rows[f"AST patch embeddings (fbank incl.), batch {args.batch}"] = (
        timed(lambda: ast.embed(a16), device, args.repeats) / args.batch
    )
    rows[f"HuBERT pre-encoder features, batch {args.batch}"] = (
        timed(lambda: hub.embed(a16), device, args.repeats) / args.batch
    )

    emb = torch.randn(args.batch, *g.AST_EMBEDDING, device=device)
    for variant in g.GATES:
        for alignment in ("transpose", "grid"):
            gate = g.build_gate(variant, g.AST_EMBEDDING, g.DAC_VAE_LATENT, alignment).to(device).eval()

            def fwd(gate=gate):
                with torch.no_grad():
                    gate(emb)

            rows[f"gate {variant} ({alignment}, AST), batch {args.batch}"] = (
                timed(fwd, device, args.repeats) / args.batch
            )

    base = rows[f"DAC-VAE decode, batch {args.batch}"]
    print(f"{'what':58} {'s/clip':>10} {'÷ decode':>9}")
    for what, sec in rows.items():
        print(f"{what:58} {sec:10.4f} {sec / base:9.4f}")
    print(
        f"batching gain for decode: {rows['DAC-VAE decode, batch 1'] / base:.2f}x per clip; "
        f"largest gate forward = {max(v for k, v in rows.items() if k.startswith('gate')) / base * 100:.2f} % of a decode"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
