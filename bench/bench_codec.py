"""Decode speed: the weight-free mel codec against the full-size DAC-VAE, on the same clips, in one run.

    .venv/bin/python bench/bench_codec.py [--clips 4] [--device cpu|cuda] [--threads N] [--repeats 3]

Both codecs encode the same 5-s clips (real ESC-50 from $SONIEVAL_ESC50 when set, else the synthetic
set) and decode their own latents [64, 431]: the mel codec in one batch (how sonify calls it), the
DAC-VAE one clip at a time (batching gains nothing for it on a CPU, bench_models: 1.00x, and its
1536-channel activations at 44.1 kHz take several GB per clip). The DAC-VAE is the published architecture
with random weights (the weights cannot be fetched here; a forward pass costs the same with any
weights). The two sides alternate (mel, DAC-VAE, mel, ...) so that load on a shared machine hits both
alike; the median of the repeats is reported, with the ratio (goal: mel ≥ 10× faster on the CPU).
Also reports CPU time (user+sys of this process), which is less sensitive to other processes.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def clips(n: int) -> tuple[np.ndarray, str]:
    from sonieval.audio import CODEC_RATE, load_clip
    from sonieval.data.synthetic import make_synthetic_esc50

    root = os.environ.get("SONIEVAL_ESC50")
    label = f"ESC-50 ({root})"
    if not root:
        root = make_synthetic_esc50(Path(tempfile.gettempdir()) / "sonieval-bench-synthetic")
        label = "SYNTHETIC clip set"
    files = sorted((Path(root) / "audio").glob("*.wav"))[::7][:n]
    return np.stack([load_clip(f, CODEC_RATE, 5.0, "pad_or_trim").samples for f in files]), label


def measure(fn, device) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call, CUDA-synchronised."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t, c = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t, time.process_time() - c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    from sonieval.models.codec import DAC_VAE_KWARGS, DacVae, DacVaeCodec
    from sonieval.models.mel_codec import MelCodec, fit_mel_normalisation

    audio, label = clips(args.clips)
    x = torch.from_numpy(audio)
    torch.manual_seed(0)
    dac = DacVaeCodec(DacVae(**DAC_VAE_KWARGS), model_id="dac-vae-full-random", random_init=True, device=device)
    norm = fit_mel_normalisation(MelCodec(), list(audio))
    sides = {f"mel ({it} Griffin-Lim iterations)": MelCodec(norm, iterations=it, device=device) for it in (32, 16)}
    sides["DAC-VAE (full size)"] = dac
    latents = {name: torch.cat([codec.encode(x[i : i + 1]) for i in range(len(x))]) for name, codec in sides.items()}
    for name, codec in sides.items():  # warm up
        codec.decode(latents[name][:1])

    def decode_all(name: str, codec) -> None:
        if codec is dac:
            for i in range(len(x)):
                codec.decode(latents[name][i : i + 1])
        else:
            codec.decode(latents[name])

    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, codec in sides.items():
            runs[name].append(measure(lambda name=name, codec=codec: decode_all(name, codec), device))
    print(
        f"decode of {len(audio)} clips of 5 s ({label}), device {device}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, torch {torch.__version__}"
    )
    dac_wall = float(np.median([w for w, _ in runs["DAC-VAE (full size)"]]))
    dac_cpu = float(np.median([c for _, c in runs["DAC-VAE (full size)"]]))
    for name, r in runs.items():
        wall, cpu = float(np.median([w for w, _ in r])), float(np.median([c for _, c in r]))
        print(
            f"  {name:34s} {wall / len(audio):7.3f} s/clip wall ({dac_wall / wall:5.1f}x)  "
            f"{cpu / len(audio):7.3f} s/clip CPU ({dac_cpu / cpu:5.1f}x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
