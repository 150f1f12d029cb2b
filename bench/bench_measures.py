"""Benchmark of the what-is-kept measures: per-clip cost of each, and pYIN at two resolutions, in one run.

    .venv/bin/python bench/bench_measures.py [--clips 8] [--repeats 3]

Clips: real 5-s ESC-50 clips from $SONIEVAL_ESC50 (pitched and struck classes first), else generated
harmonic tones with glides and click trains; each compared with a degraded copy of itself (white noise at
20 dB SNR, then a 4 kHz low-pass), at 16 kHz, one thread.

1. Each measure alone per (sonification, original) pair, from a cold memo (both clips analysed), and with
   the original's analyses already made (what every system after the first pays: an original is analysed
   once for all the systems scored in one process). The four pitch measures share one pYIN pass per clip,
   as do the loudness, MFCC and centroid measures one spectral pass.
2. All eight what-is-kept measures together per pair, cold and with the original analysed, beside the
   older audio measures (logmel_l1, mrstft, envelope_correlation) on the same pairs.
3. pYIN at the default resolution (0.1 semitone bins) and at the resolution used (0.2), run alternately on
   the same clips (median of --repeats), and how far raw pitch accuracy moves between the two.
4. The one-off cost of the first pYIN call in a process (numba compiles or loads librosa's kernels).

Times are medians over pairs (and repeats); the machine may be shared: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from sonieval.audio import ENCODER_RATE  # noqa: E402

PITCH = ["raw_pitch_accuracy", "raw_chroma_accuracy", "voicing_recall", "voicing_false_alarm"]
SPECTRAL = ["loudness_correlation", "mfcc_correlation", "centroid_distance"]
KEPT = [*PITCH, *SPECTRAL, "onset_f1"]
OLDER = ["logmel_l1", "mrstft", "envelope_correlation"]
CLASSES = ("siren", "car_horn", "rooster", "crying_baby", "cat", "cow", "door_wood_knock", "clock_tick")


def real_clips(n: int) -> list[np.ndarray] | None:
    import pandas as pd

    from sonieval.audio import read_audio

    root = os.environ.get("SONIEVAL_ESC50")
    if not root or not (Path(root) / "meta" / "esc50.csv").is_file():
        return None
    meta = pd.read_csv(Path(root) / "meta" / "esc50.csv").sort_values("filename")
    first = meta[meta["category"].isin(CLASSES)].groupby("category").head(1)
    rest = meta[~meta["filename"].isin(first["filename"])]
    files = list(first["filename"]) + list(rest["filename"])
    return [read_audio(Path(root) / "audio" / f, ENCODER_RATE)[0] for f in files[:n]]


def generated_clips(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(5 * ENCODER_RATE) / ENCODER_RATE
    out = []
    for i in range(n):
        f0 = 150 * 2 ** (i / 5) * 2 ** (0.5 * np.sin(2 * np.pi * 0.3 * t))
        x = 0.3 * np.sin(2 * np.pi * np.cumsum(f0) / ENCODER_RATE) * (t % 1.0 < 0.7)
        for c in rng.uniform(0.1, 4.9, 6):
            j = int(c * ENCODER_RATE)
            x[j : j + 200] += 0.5 * np.hanning(200) * rng.standard_normal(200)
        out.append(x.astype(np.float32))
    return out


def degraded(x: np.ndarray, seed: int) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    rng = np.random.default_rng(seed)
    power = float(np.mean(x**2)) or 1e-8
    noisy = x + rng.standard_normal(x.size) * np.sqrt(power / 100)
    return sosfiltfilt(butter(6, 4000, fs=ENCODER_RATE, output="sos"), noisy).astype(np.float32)


def per_pair(pairs, names, *, warm_original: bool) -> float:
    """Median seconds per pair to compute ``names``; the memo emptied before each pair (``warm_original``:
    the original analysed first, outside the timing)."""
    from sonieval.metrics import attributes as A
    from sonieval.metrics.items import score_item

    times = []
    for ev, orig in pairs:
        A.forget_analyses()
        if warm_original:
            score_item(names, evaluated_audio=orig, original_audio=orig)
            A._EVALUATED._store.clear()  # the sonification is analysed inside the timing
        t = time.perf_counter()
        score_item(names, evaluated_audio=ev, original_audio=orig)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def pyin_resolutions(pairs, repeats: int) -> tuple[float, float, float, float]:
    """(s/clip at 0.1, s/clip at 0.2, median and max |Δ raw pitch accuracy| over pairs with voiced frames)."""
    from sonieval.metrics import attributes as A
    from sonieval.metrics.items import score_item

    def track(x, resolution):
        A.PYIN_RESOLUTION = resolution
        try:
            return A.pitch_track(x)
        finally:
            A.PYIN_RESOLUTION = 0.2

    fine, coarse = [], []
    for _ in range(repeats):
        for ev, _orig in pairs:
            t = time.perf_counter()
            track(ev, 0.1)
            fine.append(time.perf_counter() - t)
            t = time.perf_counter()
            track(ev, 0.2)
            coarse.append(time.perf_counter() - t)
    deltas = []
    for ev, orig in pairs:
        got = {}
        for resolution in (0.1, 0.2):
            A.forget_analyses()
            A.PYIN_RESOLUTION = resolution
            got[resolution] = score_item(["raw_pitch_accuracy"], evaluated_audio=ev, original_audio=orig)
        A.PYIN_RESOLUTION = 0.2
        a, b = got[0.1]["raw_pitch_accuracy"], got[0.2]["raw_pitch_accuracy"]
        if isinstance(a, float) and isinstance(b, float):
            deltas.append(abs(a - b))
    A.forget_analyses()
    worst = max(deltas) if deltas else float("nan")
    return statistics.median(fine), statistics.median(coarse), statistics.median(deltas or [np.nan]), worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import librosa

    from sonieval.metrics import attributes as A

    clips = real_clips(args.clips)
    source = "ESC-50 ($SONIEVAL_ESC50)" if clips else "generated tones and clicks"
    clips = clips or generated_clips(args.clips)
    pairs = [(degraded(x, i), x) for i, x in enumerate(clips)]
    print(f"{len(pairs)} pairs of 5-s clips at 16 kHz from {source}; load average {os.getloadavg()[0]:.1f}")
    t = time.perf_counter()
    librosa.pyin(
        clips[0][:ENCODER_RATE],
        fmin=A.FMIN,
        fmax=A.FMAX,
        sr=ENCODER_RATE,
        frame_length=A.FRAME,
        hop_length=A.PITCH_HOP,
        resolution=A.PYIN_RESOLUTION,
    )
    print(f"first pYIN call in this process (librosa's numba kernels): {time.perf_counter() - t:.2f} s, once")
    print("\nper (sonification, original) pair, median s   cold (both analysed)   original analysed")
    for name, names in [*((m, [m]) for m in KEPT), ("all 8 what-is-kept", KEPT), ("older: " + ", ".join(OLDER), OLDER)]:
        cold, warm = per_pair(pairs, names, warm_original=False), per_pair(pairs, names, warm_original=True)
        print(f"  {name:44s} {cold:8.3f}               {warm:8.3f}")
    fine, coarse, med, worst = pyin_resolutions(pairs, args.repeats)
    print(
        f"\npYIN per 5-s clip: resolution 0.1 (default) {fine:.3f} s, 0.2 (used) {coarse:.3f} s: {fine / coarse:.1f}x"
    )
    print(
        f"raw pitch accuracy, 0.1 vs 0.2: median |difference| {med:.3f}, largest {worst:.3f} (pairs with voiced frames)"
    )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
