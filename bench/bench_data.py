"""Benchmark of the ESC-50 data layer, measured side by side in one run.

Uses $SONIEVAL_ESC50 (e.g. ../shared/esc50) when set, else the built-in SYNTHETIC clip set
(said so in the output). Prints:
- verification from headers (what `sonieval data esc50` does for PCM files) vs decoding every clip;
- verification with vs without the checksum manifest;
- the clips stage: first run vs a resumed rerun (everything skipped by the run ledger).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sonieval.audio import audio_info, read_audio  # noqa: E402
from sonieval.data.esc50 import open_esc50, prepare_clips, verify_esc50, write_checksums  # noqa: E402
from sonieval.data.synthetic import make_synthetic_esc50  # noqa: E402
from sonieval.ledger import open_ledger  # noqa: E402
from sonieval.protocol import parse_protocol  # noqa: E402


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_data."))
    try:
        source = os.environ.get("SONIEVAL_ESC50")
        if source:
            # A writable copy, so the checksum manifest can be written without touching the shared one.
            root = work / "esc50"
            shutil.copytree(source, root)
        else:
            root = make_synthetic_esc50(work / "synthetic")
        ds = open_esc50(root)
        print(f"data: {ds.label}")
        paths = list(ds.clips["path"])

        t_headers = timed(lambda: [audio_info(p) for p in paths])
        t_decode = timed(lambda: [read_audio(p) for p in paths])
        print(
            f"conformance from headers: {t_headers:.3f} s; decoding every clip: {t_decode:.3f} s; "
            f"ratio decode/headers = {t_decode / t_headers:.1f}x  (n={len(paths)})"
        )

        t_verify = timed(lambda: verify_esc50(root, progress=False))
        write_checksums(root, progress=False)
        t_verify_sums = timed(lambda: verify_esc50(root, progress=False))
        print(
            f"verify_esc50 without checksum manifest: {t_verify:.3f} s; with checksums.sha256: "
            f"{t_verify_sums:.3f} s; ratio = {t_verify_sums / t_verify:.2f}x  "
            f"({len(paths) / t_verify:.0f} clips/s without)"
        )

        proto = parse_protocol({"name": "bench", "results_dir": str(work / "results"), "data": {"esc50": str(root)}})
        with open_ledger(work / "results") as ledger:
            t0 = time.perf_counter()
            prepare_clips(proto, ledger, progress=False)
            t_first = time.perf_counter() - t0
            t0 = time.perf_counter()
            table = prepare_clips(proto, ledger, progress=False)
            t_resume = time.perf_counter() - t0
        print(
            f"clips stage first run: {t_first:.3f} s; resumed rerun: {t_resume:.3f} s; "
            f"ratio first/rerun = {t_first / t_resume:.1f}x  ({table.attrs['batch']})"
        )
        print(f"versions: python {sys.version.split()[0]}; cores {os.cpu_count()}; machine shared with other jobs")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
