"""The crossed REML fits give the same numbers, and say "converged", on every BLAS kernel.

OpenBLAS picks its kernels per CPU, so two machines of one image round differently; the verdict
once came from L-BFGS-B's exit message, which roundoff decides at the optimum (issue 20: on an AMD
EPYC machine the published Penicillin fit said "ABNORMAL" under the SkylakeX kernel OpenBLAS chose,
and "converged" under Haswell). Here each fit runs in a subprocess under every kernel that
the bundled OpenBLAS runs on this CPU for the names in ``KERNELS`` (it maps some names to others and
falls back to the detected kernel for instructions the CPU lacks; the test prints what each name
became), each with OPENBLAS_NUM_THREADS 1, 2 and unset, plus the default kernel: every run
converged and all agree to 1e-6 relative. On the AMD EPYC development machine (AVX-512): SkylakeX
(the default), Haswell (also for Zen), Sandybridge, Nehalem and Katmai (for Prescott).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

CHILD = Path(__file__).with_name("kernel_fits.py")
# OpenBLAS's DYNAMIC_ARCH core names for x86-64, from the newest instruction sets to the oldest
# (SapphireRapids/Cooperlake/SkylakeX: AVX-512; Haswell/Zen: AVX2; Sandybridge: AVX; the rest SSE).
KERNELS = ("SapphireRapids", "Cooperlake", "SkylakeX", "Haswell", "Zen", "Sandybridge", "Nehalem", "Prescott")
THREADS = ("1", "2", None)


def _env(kernel: str | None, threads: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS")}
    if kernel:
        env["OPENBLAS_CORETYPE"] = kernel
    if threads:
        env["OPENBLAS_NUM_THREADS"] = threads
    return env


PROBE = (
    "import numpy, scipy.linalg; from threadpoolctl import threadpool_info; "
    "print(sorted({i['architecture'] for i in threadpool_info() if i['internal_api'] == 'openblas'}))"
)


def _kernel_used(name: str | None) -> str | None:
    """The kernel OpenBLAS really runs when asked for ``name`` (it maps some names to others, e.g.
    Zen to Haswell, and falls back to the detected one for a CPU without the instructions); None
    when the process dies (an instruction set this CPU lacks)."""
    proc = subprocess.run([sys.executable, "-c", PROBE], env=_env(name, None), capture_output=True, text=True)
    used = eval(proc.stdout.strip()) if proc.returncode == 0 else None  # a printed list of names
    return "+".join(used) if used else None


def _run(kernel: str | None, threads: str | None) -> dict:
    proc = subprocess.run([sys.executable, str(CHILD)], env=_env(kernel, threads), capture_output=True, text=True)
    assert proc.returncode == 0, f"OPENBLAS_CORETYPE={kernel} OPENBLAS_NUM_THREADS={threads}: {proc.stderr[-800:]}"
    return {"kernel": kernel or "default", "threads": threads or "unset", **json.loads(proc.stdout.splitlines()[-1])}


def test_crossed_fits_converge_and_agree_under_every_blas_kernel_and_thread_count():
    with ThreadPoolExecutor(max_workers=2) as pool:
        used = dict(zip((None, *KERNELS), pool.map(_kernel_used, (None, *KERNELS))))
        # one run per kernel really used (several names share one; the default first)
        distinct = {u: k for k, u in reversed(used.items()) if u is not None}
        settings = [(k, t) for k in sorted(distinct.values(), key=lambda k: k is not None) for t in THREADS]
        runs = list(pool.map(lambda s: _run(*s), settings))
    print(f"kernel asked -> used: {used}; runs: {len(runs)}")
    assert len(distinct) >= 3, f"too few BLAS kernels run on this CPU: {used}"
    for name, ref in runs[0]["fits"].items():
        for run in runs:
            fit = run["fits"][name]
            where = f"{name} under {run['kernel']} ({'+'.join(run['kernels'])}) with {run['threads']} threads"
            assert fit["converged"], f"{where}: {fit['message']}"
            np.testing.assert_allclose(fit["values"], ref["values"], rtol=1e-6, err_msg=where)
