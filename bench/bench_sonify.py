"""Benchmark: ``sonify`` clips per second at full model size, and its overhead beyond the decoder.

Full-size DAC-VAE architecture with *random* weights (published checkpoint format, real loader),
a LIN gate trained for one epoch on the small random AST's embeddings, ``--clips`` listening
clips of 5 s (real ESC-50 clips when found). In one run, on the same latents:

- bare: ``--clips`` × the decoder's forward alone (``DacVae.decode`` on one latent, inference mode),
  timed before and after the stage and averaged (the load of a shared machine drifts);
- sonify: the whole stage (``run_sonify``: codec loading and checksum, gate, decode, two
  post-processings (minmax, minmax+squared), WAV writing, ledger and table), batch size 1.

Overhead = sonify / bare − 1 (goal < 10 %), reported with and without the codec's loading.

    .venv/bin/python bench/bench_sonify.py --clips 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_prepare import environment, full_size_random_dac_vae, workspace  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2, help="listening clips to sonify (default 2)")
    parser.add_argument("--esc50", help="ESC-50 copy (default $SONIEVAL_ESC50 or ../shared/esc50)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import torch

    from sonieval.ledger import open_ledger
    from sonieval.models.codec import load_codec
    from sonieval.pipeline.prepare import load_array, read_prepared, resolve_device, run_prepare
    from sonieval.pipeline.sonify import run_sonify
    from sonieval.pipeline.train import checkpoint_path, load_checkpoint, run_train, time_axis_from
    from sonieval.protocol import load_protocol

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench-sonify-") as tmp:
        tmp = Path(tmp)
        checkpoint = full_size_random_dac_vae(tmp)
        proto_file, label = workspace(tmp / "ws", args.clips, 1, checkpoint, args.esc50, batch_size=1)
        proto = load_protocol(proto_file)
        with open_ledger(proto.results_path) as ledger:
            run_prepare(proto, ledger, device=device, batch_size=4, progress=False)
            assert run_train(proto, ledger, device=device, progress=False).ok

        # The same latents the stage will decode: cached embedding -> trained gate.
        from sonieval.models.gates import build_gate
        from sonieval.tables import resolve_table_path

        ck = load_checkpoint(checkpoint_path(proto, "ast", "LIN", 0.005, 1, "transpose"))
        meta = ck["meta"]
        gate = build_gate(
            "LIN",
            tuple(meta["embedding_shape"]),
            tuple(meta["latent_shape"]),
            "transpose",
            time_axis=time_axis_from(meta.get("time_axis")),
        )
        gate.load_state_dict(ck["state_dict"])
        gate.eval()
        prepared = read_prepared(proto)
        emb = prepared[(prepared["kind"] == "embedding") & prepared["listening"]].sort_values("clip_id")
        with torch.inference_mode():
            latents = [
                gate(torch.from_numpy(load_array(resolve_table_path(p, proto.results_path))[None])) for p in emb["path"]
            ]
        codec = load_codec(proto.codec, tmp / "weights", device=device)

        def sync():
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        def bare() -> float:
            with torch.inference_mode():
                t0 = time.perf_counter()
                for z in latents:
                    codec.model.decode(z.to(device))
                sync()
                return time.perf_counter() - t0

        with torch.inference_mode():  # warm-up (allocator, kernels), not timed
            codec.model.decode(latents[0].to(device))
            sync()
        bare_before = bare()

        t0 = time.perf_counter()
        load_codec(proto.codec, tmp / "weights", device=device)
        load_s = time.perf_counter() - t0
        with open_ledger(proto.results_path) as ledger:
            t0 = time.perf_counter()
            result = run_sonify(proto, ledger, device=device, progress=False)
            sonify_s = time.perf_counter() - t0
        assert result.batch.ok and len(result.batch.done) == args.clips, result.summary()
        # bare forwards before and after the stage, averaged: the machine's load drifts
        bare_after = bare()
        bare_s = (bare_before + bare_after) / 2
        n = args.clips
        print(
            f"bench_sonify: {n} clips of 5 s ({label}); LIN gate (1 epoch, small random AST embeddings) + "
            f"full-size random DAC-VAE (published format); {environment(device)}"
        )
        print(
            f"  bare decoder forward: {bare_s:7.2f} s for {n} clips = {bare_s / n:.2f} s/clip "
            f"(mean of {bare_before:.2f} s before and {bare_after:.2f} s after the stage)"
        )
        print(
            f"  whole sonify stage:   {sonify_s:7.2f} s = {n / sonify_s:.3f} clips/s "
            f"(2 post-processings per clip, {len(result.table)} WAVs; codec load {load_s:.2f} s of it)"
        )
        print(
            f"  overhead beyond the decoder: {sonify_s / bare_s - 1:+.1%} (whole stage), "
            f"{(sonify_s - load_s) / bare_s - 1:+.1%} (without loading the codec)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
