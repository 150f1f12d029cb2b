"""CREPE embedding cost per 5 s clip (issue 19, point 7): tiny and full, every layer from one pass.

    .venv/bin/python bench/bench_crepe.py [--models tiny,full] [--threads 1,2] [--repeats 2] [--reference]

For each model, frame grid and thread count, in a process of its own (so its peak RSS is its own):
``embed_layers(audio, "all")`` (input and the six conv blocks from one pass) against ``embed(audio,
layer=6)`` (the same pass, one output kept), at the codec's 431 frame times (hop 512/44100 s) and at a
sixth of them (72 frames, ``hop: 6·512/44100``). Printed per row: wall and CPU seconds per clip (least
of ``--repeats``, the two sides alternated so both see the same machine load), the ratio all/deepest
of CPU time (goal <= 1.2: the sweep is one pass; CPU time is the figure to trust on a shared machine, where
other processes stretch wall time unevenly), and the process's peak RSS. Then the ratios across rows:
coarse over fine (expected about 72/431 = 0.17), 2 threads over 1 (wall: meaningful on an idle machine). ``--reference`` adds torchcrepe.embed's
own framing (block 5 only, its hop rounded to 185 samples: 433 frames) beside ours at block 5, tiny
only (full's reference runs all 433 frames in one batch: ~450 MB of activations).

Clip: the first ESC-50 clip found ($SONIEVAL_ESC50 or ../shared/esc50), else seeded noise (said in the
output); a forward costs the same on any audio. Weights: the pretrained wheel's (the twin costs the same).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CODEC_HOP = 512 / 44100
GRIDS = {"431 frames": CODEC_HOP, "72 frames": 6 * CODEC_HOP}


def timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def clip():
    """(audio [1, 5 s] at 16 kHz, label)."""
    import pandas as pd
    import torch

    from sonieval.audio import load_clip

    root = Path(os.environ.get("SONIEVAL_ESC50", "") or REPO.parent / "shared" / "esc50")
    meta = root / "meta" / "esc50.csv"
    if meta.is_file():
        name = sorted(pd.read_csv(meta)["filename"])[0]
        return torch.from_numpy(load_clip(root / "audio" / name, 16000, 5.0).samples)[None], f"ESC-50 {name}"
    return torch.randn(1, 80000, generator=torch.Generator().manual_seed(0)) * 0.1, "seeded NOISE (no ESC-50 copy)"


def child(model: str, hop: float, threads: int, repeats: int, reference: bool) -> dict:
    """One configuration, in this (fresh) process: the timings and this process's peak RSS."""
    import torch

    from sonieval.models.encoders import load_encoder
    from sonieval.protocol import EncoderSpec

    torch.set_num_threads(threads)
    audio, label = clip()
    encoder = load_encoder(EncoderSpec(name="crepe", model=model, layer="all", hop=hop))
    frames = encoder.frame_count(audio.shape[-1])
    sides = {"all": lambda: encoder.embed_layers(audio, "all"), "deepest": lambda: encoder.embed(audio, layer=6)}
    if reference:
        import torchcrepe

        sides["block5"] = lambda: encoder.embed(audio, layer=5)
        sides["torchcrepe"] = lambda: torchcrepe.embed(audio, 16000, hop_length=round(hop * 16000), model=model)
    encoder.embed_layers(audio[:, :16000], "all")  # warm-up (allocators, thread pools)
    best = {k: (float("inf"), float("inf")) for k in sides}
    for i in range(repeats):
        for name in list(sides)[:: 1 if i % 2 == 0 else -1]:  # alternate a-b, b-a
            w, c = timed(sides[name])
            best[name] = (min(best[name][0], w), min(best[name][1], c))
    return {
        "frames": frames,
        "clip": label,
        "best": best,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(model: str, hop: float, threads: int, repeats: int, reference: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps([model, hop, threads, repeats, reference])]
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)}
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ratio(a: dict, b: dict) -> str:
    (wa, ca), (wb, cb) = a["best"]["all"], b["best"]["all"]
    return f"wall {wa / wb:.2f}, CPU {ca / cb:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,full")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--reference", action="store_true", help="also time torchcrepe.embed (tiny only)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return 0
    import torch

    models = [m for m in args.models.split(",") if m]
    threads = [int(t) for t in args.threads.split(",") if t]
    print(
        f"bench_crepe: {platform.processor() or 'cpu'}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
        f"torch {torch.__version__}; least of {args.repeats} per side, sides alternated; one process per row"
    )
    print(
        f"{'model':<6}{'grid':<12}{'threads':>8}{'all: wall/CPU s':>18}{'deepest: wall/CPU s':>22}"
        f"{'all/deepest CPU':>17}{'peak RSS MB':>13}"
    )
    rows = {}
    for model in models:
        for grid, hop in GRIDS.items():
            for t in threads:
                r = run_child(model, hop, t, args.repeats, args.reference and model == "tiny" and grid == "431 frames")
                rows[(model, grid, t)] = r
                a, d = r["best"]["all"], r["best"]["deepest"]
                print(
                    f"{model:<6}{grid:<12}{t:>8}{a[0]:>10.2f} /{a[1]:>6.2f}{d[0]:>14.2f} /{d[1]:>6.2f}"
                    f"{a[1] / d[1]:>17.2f}{r['peak_rss_mb']:>13.0f}",
                    flush=True,
                )
                if "torchcrepe" in r["best"]:
                    ours, theirs = r["best"]["block5"], r["best"]["torchcrepe"]
                    print(
                        f"{'':<6}reference: block 5 alone {ours[1]:.2f} CPU s (ours, {r['frames']} frames) vs "
                        f"torchcrepe.embed {theirs[1]:.2f} CPU s (433 frames): ratio {ours[1] / theirs[1]:.2f}"
                    )
    print(f"clip: {next(iter(rows.values()))['clip']}")
    for model in models:
        for t in threads:
            fine, coarse = rows[(model, "431 frames", t)], rows[(model, "72 frames", t)]
            print(f"{model}, {t} thread(s): 72/431 frames {_ratio(coarse, fine)}")
        if len(threads) > 1:
            for grid in GRIDS:
                one, more = rows[(model, grid, threads[0])], rows[(model, grid, threads[-1])]
                print(f"{model}, {grid}: {threads[-1]} threads / {threads[0]}: {_ratio(more, one)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
