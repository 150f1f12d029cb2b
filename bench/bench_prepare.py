"""Benchmark: the prepare stage's throughput, batched vs one clip at a time (ratios from one run).

Models: the full-size DAC-VAE architecture with *random* weights, saved in the published
checkpoint format and loaded through the real loader (strict keys, checksum), and the small
random AST (the patch embedding is cheap; the codec's encoder dominates prepare). Clips: real
ESC-50 clips (``--esc50`` or $SONIEVAL_ESC50), else synthetic tones (said in the output).
After an untimed warm-up on 3 clips, both runs start from an empty cache in separate folders; each
times the whole stage as a user runs it (model loading included) and, separately, the codec loading.

    .venv/bin/python bench/bench_prepare.py --clips 4
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def full_size_random_dac_vae(folder: Path) -> Path:
    """A full-size DAC-VAE with random weights, in the published checkpoint format."""
    import torch

    from sonieval.models.codec import DAC_VAE_KWARGS, DacVae, save_dac_vae_checkpoint

    torch.manual_seed(0)
    path = folder / "dac_vae_full_random.pth"
    save_dac_vae_checkpoint(DacVae(**DAC_VAE_KWARGS), DAC_VAE_KWARGS, path)
    return path


def esc50_clips(esc50: str | None, n: int) -> tuple[list[Path], str]:
    root = Path(esc50 or os.environ.get("SONIEVAL_ESC50", "") or REPO.parent / "shared" / "esc50")
    meta = root / "meta" / "esc50.csv"
    if meta.is_file():
        files = sorted(pd.read_csv(meta)["filename"])[:n]
        return [root / "audio" / f for f in files], f"ESC-50 clips from {root}"
    return [], "SYNTHETIC tones (no ESC-50 copy found)"


def workspace(
    root: Path, n_listening: int, n_train: int, checkpoint: Path, esc50: str | None, batch_size: int = 1
) -> tuple[Path, str]:
    """Clips table + protocol in ``root``: n_train train clips, 1 validation clip, n_listening test clips."""
    from sonieval.audio import write_wav
    from sonieval.tables import write_table

    n = n_train + 1 + n_listening
    paths, label = esc50_clips(esc50, n)
    if not paths:
        rng = np.random.default_rng(0)
        t = np.arange(5 * 44100) / 44100
        paths = [
            write_wav(
                root / "audio" / f"tone{i}.wav",
                (0.5 * np.sin(2 * np.pi * 220 * (i + 1) * t) * np.exp(-t) + 0.01 * rng.standard_normal(t.size)).astype(
                    np.float32
                ),
                44100,
            )
            for i in range(n)
        ]
    rows = []
    for i, p in enumerate(paths):
        split = "train" if i < n_train else ("validation" if i == n_train else "test")
        rows.append(
            {
                "clip_id": Path(p).stem,
                "filename": Path(p).name,
                "fold": 0,
                "target": 0,
                "category": "bench",
                "path": str(p),
                "split": split,
                "listening": split == "test",
                "status": "ok",
                "error": None,
            }
        )
    write_table(pd.DataFrame(rows), root / "results" / "tables" / "clips.parquet", "clips")
    proto = {
        "name": "bench",
        "results_dir": str(root / "results"),
        "encoders": [{"name": "ast", "size": "small"}],
        "codec": {"name": "dac-vae", "checkpoint": str(checkpoint)},
        "gates": {"variants": ["LIN"], "alignments": ["transpose"]},
        "training": {"learning_rates": [0.005], "epochs": [1], "batch_size": 4, "eval_batch_size": 4},
        "sonify": {
            "postprocess": ["minmax", "minmax+squared"],
            "batch_size": batch_size,
            "codec_reconstruction": False,
        },
    }
    (root / "protocol.yaml").write_text(yaml.safe_dump(proto))
    return root / "protocol.yaml", label


def environment(device: str) -> str:
    import torch

    from sonieval import __version__

    return (
        f"sonieval {__version__}, torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
        f"{platform.processor() or platform.machine()}, load average {os.getloadavg()[0]:.1f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4, help="clips to prepare (default 4)")
    parser.add_argument("--esc50", help="ESC-50 copy (default $SONIEVAL_ESC50 or ../shared/esc50)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    from sonieval.ledger import open_ledger
    from sonieval.models.codec import load_codec
    from sonieval.pipeline.prepare import resolve_device, run_prepare
    from sonieval.protocol import load_protocol

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        tmp = Path(tmp)
        checkpoint = full_size_random_dac_vae(tmp)
        results = {}
        # Warm-up on 3 clips (lazy kernel loading, allocator, file cache), not timed.
        warm_file, _ = workspace(tmp / "warmup", 1, 1, checkpoint, args.esc50)
        warm = load_protocol(warm_file)
        with open_ledger(warm.results_path) as ledger:
            run_prepare(warm, ledger, device=device, batch_size=3, progress=False)
        for batch in (1, args.clips):
            root = tmp / f"batch{batch}"
            # all clips are "listening" so that every one is prepared (n_train 0 is not allowed: 1 + 1 + rest)
            proto_file, label = workspace(root, args.clips - 2, 1, checkpoint, args.esc50)
            proto = load_protocol(proto_file)
            t0 = time.perf_counter()
            load_codec(proto.codec, tmp / "weights", device=device)
            load_s = time.perf_counter() - t0
            with open_ledger(proto.results_path) as ledger:
                t0 = time.perf_counter()
                result = run_prepare(proto, ledger, device=device, batch_size=batch, progress=False)
                stage_s = time.perf_counter() - t0
            assert all(not b.failed for b in result.batches.values()), result.summary()
            results[batch] = (stage_s, load_s)
        one, batched = results[1], results[args.clips]
        n = args.clips
        print(
            f"bench_prepare: {n} clips of 5 s ({label}); small random AST + full-size random DAC-VAE "
            f"(published format, {checkpoint.stat().st_size / 1e6:.0f} MB); {environment(device)}"
        )
        for batch, (stage_s, load_s) in results.items():
            fwd = stage_s - load_s
            print(
                f"  batch {batch:>2}: stage {stage_s:7.1f} s = {n / stage_s:.3f} clips/s "
                f"(codec load {load_s:.1f} s; without it {n / fwd:.3f} clips/s)"
            )
        print(
            f"  batched / one-at-a-time throughput: {one[0] / batched[0]:.2f}x (whole stage), "
            f"{(one[0] - one[1]) / (batched[0] - batched[1]):.2f}x (without model loading)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
