"""Benchmark of the metrics against kadtk 1.1.0, measured side by side in one run.

    .venv/bin/python bench/bench_metrics.py [--repeats 3] [--skip-memory]

1. KAD on identical 2000 x 2048 float32 embeddings: ours vs kadtk's calc_kernel_audio_distance
   (same bandwidth given explicitly; and each with its default bandwidth), and ours per system
   in a leaderboard (reference block computed once). Goal: <= 0.75x kadtk.
2. FAD on the same data: ours (symmetric eigen route) vs kadtk's calc_frechet_distance (scipy
   sqrtm), values compared. Goal: >= 3x faster, equal values.
3. A 1,000-resample frame-level KAD bootstrap (kernel blocks reused) vs one KAD. Goal: < 10x.
4. Peak memory of KAD at 50,000 x 50,000 frames (dim 64, a separate process). Goal: < 2 GiB.
5. Embedding extraction (logmel) clips/s, batched vs one clip at a time (ESC-50 clips from
   $SONIEVAL_ESC50 when set, else generated noise clips; no cache).
6. FAD's interval (bias-corrected jackknife over clips, distances.fad_interval) vs one FAD, on the
   demo's shape (20 clips x 251 log-mel frames, 64 dims) and 50 clips x 431 frames. Goal: < 10x.
   (The 200-resample percentile bootstrap it replaced measured 24-53x one FAD on these shapes, and
   the same cost as the jackknife from 200 clips up: both then refit 200 Gaussians.)

Times are medians over ``--repeats`` runs, the two sides of each comparison run alternately so
that both see the same machine load (the machine may be shared: see the load average printed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def timed_pair(fa, fb, repeats):
    """Median times of two functions run alternately (a, b, a, b, ...), so that both see the
    same machine load; returns (time_a, out_a, time_b, out_b)."""
    ta, tb, oa, ob = [], [], None, None
    for _ in range(repeats):
        t = time.perf_counter()
        oa = fa()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        ob = fb()
        tb.append(time.perf_counter() - t)
    return statistics.median(ta), oa, statistics.median(tb), ob


def _vm_hwm_kib() -> int:
    # VmHWM (peak resident set) is per address space, so unlike ru_maxrss it does not inherit the
    # parent's peak across fork + exec
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_child(n: int, dim: int) -> None:
    from sonieval.metrics.distances import kernel_audio_distance

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((n, dim)).astype(np.float32)
    ev = (rng.standard_normal((n, dim)) + 0.1).astype(np.float32)
    base = _vm_hwm_kib()
    t = time.perf_counter()
    res = kernel_audio_distance(ref, ev)
    elapsed = time.perf_counter() - t
    peak = _vm_hwm_kib()
    print(json.dumps({"peak_kib": peak, "before_kib": base, "seconds": elapsed, "value": res.value}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--memory-frames", type=int, default=50_000)
    args = ap.parse_args()

    import torch

    from sonieval.metrics import distances as D
    from sonieval.metrics.embeddings import embed_files, import_kadtk, load_embedding

    import_kadtk()
    import kadtk

    print(f"load average at start: {os.getloadavg()}; torch threads {torch.get_num_threads()}; cpus {os.cpu_count()}")
    rng = np.random.default_rng(0)
    n, dim = 2000, 2048
    ref = rng.standard_normal((n, dim)).astype(np.float32)
    ev = (rng.standard_normal((n, dim)) * 1.1 + 0.05).astype(np.float32)
    tr, te = torch.from_numpy(ref), torch.from_numpy(ev)
    sigma = D.median_pairwise_distance(ref)
    r = args.repeats

    # 1. KAD
    t_floor, _ = timed(lambda: tr @ te.T, r)
    t_k_bw, v_k, t_o_bw, v_o = timed_pair(
        lambda: float(kadtk.calc_kernel_audio_distance(tr, te, (None, None), "cpu", bandwidth=sigma)),
        lambda: D.kernel_audio_distance(ref, ev, bandwidth=sigma).value,
        r,
    )
    t_k_def, _, t_o_def, _ = timed_pair(
        lambda: float(kadtk.calc_kernel_audio_distance(tr, te, (None, None), "cpu")),
        lambda: D.kernel_audio_distance(ref, ev).value,
        r,
    )
    v_k64 = float(
        kadtk.calc_kernel_audio_distance(
            tr.double(), te.double(), (None, None), "cpu", bandwidth=sigma, precision=torch.float64
        )
    )
    rk = D.ReferenceKernel(ref, bandwidth=sigma)
    t_k_sys, _, t_o_sys, _ = timed_pair(
        lambda: float(kadtk.calc_kernel_audio_distance(tr, te, (None, None), "cpu", bandwidth=sigma)),
        lambda: rk.compare(ev).result().value,
        r,
    )
    print(f"\n1. KAD, 2000 x 2048 float32 (median of {r} runs)")
    print(f"   one 2000x2048 @ 2048x2000 matmul (floor): {t_floor:.3f} s")
    print(
        f"   same bandwidth:    kadtk {t_k_bw:.3f} s | ours {t_o_bw:.3f} s | ratio {t_o_bw / t_k_bw:.2f}x "
        f"| values kadtk {v_k:.6f}, ours {v_o:.6f}, kadtk in float64 {v_k64:.6f} (rel diff ours vs float64 "
        f"{abs(v_o - v_k64) / abs(v_k64):.1e}, kadtk float32 vs float64 {abs(v_k - v_k64) / abs(v_k64):.1e})"
    )
    print(
        f"   default bandwidth: kadtk {t_k_def:.3f} s (sigma from evaluated, pdist) | ours {t_o_def:.3f} s "
        f"(sigma from reference) | ratio {t_o_def / t_k_def:.2f}x"
    )
    print(
        f"   leaderboard, per system (reference block cached): ours {t_o_sys:.3f} s | kadtk {t_k_sys:.3f} s | "
        f"ratio {t_o_sys / t_k_sys:.2f}x"
    )

    # 2. FAD
    t_kf, v_kf, t_of, v_of = timed_pair(
        lambda: float(kadtk.calc_frechet_distance(ref, ev, (None, None), "cpu")),
        lambda: D.frechet_audio_distance(ref, ev, require_full_rank=False).value,
        r,
    )
    t_kf64, v_kf64 = timed(
        lambda: float(kadtk.calc_frechet_distance(ref, ev, (None, None), "cpu", precision=torch.float64)), 1
    )
    print("\n2. FAD, 2000 x 2048 (fewer frames than dimensions: require_full_rank=False)")
    print(f"   kadtk {t_kf:.3f} s | ours {t_of:.3f} s | speed-up {t_kf / t_of:.1f}x")
    print(
        f"   values: ours {v_of:.6f} | kadtk float32 {v_kf:.6f} (rel diff {abs(v_of - v_kf) / v_kf:.1e}) | "
        f"kadtk float64 {v_kf64:.6f} (rel diff {abs(v_of - v_kf64) / v_kf64:.1e})"
    )

    # 3. bootstrap
    def boot():
        return D.kad_bootstrap(ref, ev, bandwidth=sigma, n_resamples=1000)

    t_one, _, t_boot, (res, lo, hi) = timed_pair(
        lambda: D.kernel_audio_distance(ref, ev, bandwidth=sigma).value, boot, max(1, r - 1)
    )
    gr, ge = np.arange(n), np.arange(n)
    comp = D.ReferenceKernel(ref, gr, bandwidth=sigma).compare(ev, ge)
    t_resample, _ = timed(lambda: comp.bootstrap(1000), max(1, r - 1))
    print("\n3. KAD bootstrap, 1000 frame resamples, 2000 x 2048")
    print(
        f"   total (kernel blocks + resamples) {t_boot:.3f} s = {t_boot / t_one:.1f}x one KAD ({t_one:.3f} s) "
        f"(resampling alone {t_resample:.3f} s = {t_resample / t_one:.1f}x); "
        f"KAD {res.value:.4f} [{lo:.4f}, {hi:.4f}]"
    )

    # 4. memory
    if not args.skip_memory:
        m = args.memory_frames
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(m), "64"], capture_output=True, text=True, check=True
        )
        got = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"\n4. KAD at {m} x {m} frames, dim 64 (separate process)")
        print(
            f"   peak RSS {got['peak_kib'] / 2**20:.2f} GiB (process before KAD: {got['before_kib'] / 2**20:.2f} GiB); "
            f"{got['seconds']:.1f} s; KAD {got['value']:.4f}; a dense 50k x 50k float32 matrix alone is 9.3 GiB"
        )

    # 5. extraction
    esc = os.environ.get("SONIEVAL_ESC50")
    with tempfile.TemporaryDirectory() as tmp:
        if esc and (Path(esc) / "audio").is_dir():
            files = sorted((Path(esc) / "audio").glob("*.wav"))[:64]
            source = f"{len(files)} ESC-50 clips (5 s, 44.1 kHz)"
        else:
            from sonieval.audio import write_wav

            files = []
            for i in range(64):
                p = Path(tmp) / f"c{i}.wav"
                write_wav(p, rng.standard_normal(44100 * 5).astype(np.float32) * 0.1, 44100)
                files.append(p)
            source = "64 generated noise clips (5 s, 44.1 kHz)"
        lm = load_embedding("logmel")
        embed_files(lm, files[:2], cache=None, progress=False)  # warm-up: imports, filterbank, file cache
        t_b, _, t_1, _ = timed_pair(
            lambda: embed_files(lm, files, cache=None, progress=False),
            lambda: embed_files(lm, files, cache=None, progress=False, batch_size=1),
            max(1, r - 1),
        )
        print(f"\n5. extraction on {source}, no cache (includes reading + resampling to 16 kHz)")
        print(
            f"   logmel: batched (32): {len(files) / t_b:.1f} clips/s | one at a time: {len(files) / t_1:.1f} "
            f"clips/s | ratio {t_1 / t_b:.2f}x"
        )
        hub = load_embedding("hubert:small")  # random-init small HuBERT: a neural encoder's batching
        hub.load()
        embed_files(hub, files[:2], cache=None, progress=False, batch_size=2)  # warm-up
        few = files[:16]
        t_hb, _, t_h1, _ = timed_pair(
            lambda: embed_files(hub, few, cache=None, progress=False, batch_size=8),
            lambda: embed_files(hub, few, cache=None, progress=False, batch_size=1),
            max(1, r - 1),
        )
        print(
            f"   hubert:small[random-init], {len(few)} clips: batched (8): {len(few) / t_hb:.1f} clips/s | "
            f"one at a time: {len(few) / t_h1:.1f} clips/s | ratio {t_h1 / t_hb:.2f}x"
        )
    fad_interval_cost(D, r)
    print(f"\nload average at end: {os.getloadavg()}")


def fad_interval_cost(D, repeats: int) -> None:
    """6. The FAD interval against one FAD of the same sets, run alternately."""
    print("\n6. FAD interval (jackknife over clips) vs one FAD, reference 4000 frames")
    for clips, frames, dim in ((20, 251, 64), (50, 431, 64)):
        rng = np.random.default_rng(1)
        clip_means = rng.standard_normal((clips, 1, dim)).repeat(frames, 1).reshape(-1, dim)
        ev = (rng.standard_normal((clips * frames, dim)) + clip_means).astype(np.float32)
        groups = np.repeat(np.arange(clips), frames)
        ref = D.gaussian_stats(rng.standard_normal((4000, dim)).astype(np.float32))
        t_one, _, t_iv, got = timed_pair(
            lambda ref=ref, ev=ev: D.frechet_audio_distance(ref, ev),
            lambda ref=ref, ev=ev, groups=groups: D.fad_interval(ref, ev, groups),
            max(3, repeats),
        )
        print(
            f"   {clips} clips x {frames} frames x {dim} dims: one FAD {t_one * 1e3:.1f} ms | interval "
            f"{t_iv * 1e3:.1f} ms = {t_iv / t_one:.1f}x; FAD {got.value:.2f} [{got.ci_low:.2f}, {got.ci_high:.2f}]"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--memory-child":
        memory_child(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
