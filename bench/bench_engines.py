"""bench_engines: the executor layer, side by side in one run (ratios; the machine may be shared and loaded).

1. grid: one protocol (protocols/demo.yaml reduced: synthetic clips, small random AST and HuBERT, the mel
   codec, LIN and CONV gates with their untrained and shuffled controls, 4 epochs) run end to end
   (`run_protocol`) three ways: the local engine with ``--workers`` threads (every core, through torch's
   threads), the local engine with 1 thread, and a local Ray cluster of ``--workers`` workers of 1 thread
   each. Two ratios: local with every core / Ray (what Ray adds to a machine the local engine already fills)
   and local with 1 thread / Ray (the engine's own parallel efficiency: ``--workers`` times the work of one
   thread at best). Each run in a fresh process, paying its own imports and model loads as a user's
   ``sonieval run`` does (a Ray cluster is started before the clock: a running one is joined without it).
   Wall time per stage, CPU time (the local engine: its process; Ray: the driver and every process of the
   cluster, whose ratio bounds what the workers can gain on idle cores), and whether the 1-thread local run
   and the Ray run wrote the same bytes (they must: sonieval.engines). ``--repeats N`` runs the
   three N times, alternating their order, and keeps the fastest of each (the machine may be shared).
2. overhead: ``--noop`` tasks that carry a training task's arguments (the protocol, a train item with its
   paired data) through Ray and do nothing, per task and per slot, against the mean training task of (1).
3. shared passes: ``--gates`` gates of one encoder (full-size AST shapes: embedding [1212, 768], latent
   [64, 431]) trained for one epoch together (one batch load per step) vs one at a time, with the pairs in
   memory and streamed from the cache per batch (as when they exceed SONIEVAL_TRAIN_MEMORY_GB).
4. projection: protocols/thesis.yaml's training wall time on N workers from per-step costs of the full-size
   gates measured here (one training step per variant; CPU unless a GPU is present).

    .venv/bin/python bench/bench_engines.py [--workers 2] [--repeats 1] [--skip grid,overhead,shared,projection]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # harness (engine_helpers imports it)
sys.path.insert(0, str(REPO / "tests" / "pipeline"))  # engine_helpers / pipeline_helpers: test data makers


def cpu_seconds_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_seconds_descendants() -> float:
    """utime + stime of every live descendant of this process (the Ray cluster this driver started)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        parent[pid], cpu[pid] = int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks
    me, total = os.getpid(), 0.0
    for pid in cpu:
        p = parent.get(pid)
        while p and p != me:
            p = parent.get(p)
        if p == me:
            total += cpu[pid]
    return total


def load() -> str:
    return "load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())


# ---------------------------------------------------------------------------- 1. grid


def grid_protocol(root: Path):
    import yaml

    from sonieval.protocol import load_protocol

    data = yaml.safe_load((REPO / "protocols" / "demo.yaml").read_text(encoding="utf-8"))
    data["results_dir"] = str(root / "results")
    data["data"].update(esc50="synthetic", listening_set={"n_clips": 8, "seed": 42, "at_least_one_per_class": False})
    data["encoders"] = [{"name": "ast", "size": "small"}, {"name": "hubert", "size": "small"}]
    data["codec"] = [{"name": "mel", "iterations": 16}]
    data["gates"].update(variants=["LIN", "CONV"])
    data["training"].update(learning_rates=[0.005], epochs=[4])
    data["metrics"].update(bootstrap=20, item_metrics=["logmel_l1"])
    root.mkdir(parents=True, exist_ok=True)
    (root / "grid.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    return load_protocol(root / "grid.yaml")


def run_grid(root: Path, engine_name: str, threads: int, workers: int) -> dict:
    """One grid run in a fresh process, so that every run pays its own imports and model loads, as a user's
    `sonieval run` does (a run in this process would find the modules of the runs before it loaded)."""
    import json
    import subprocess

    cmd = [sys.executable, __file__, "--grid-run", engine_name, str(threads), str(workers), str(root)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise SystemExit(f"grid run on {engine_name} ({threads} threads) failed: {done.stdout[-2000:]}")
    got = json.loads(lines[-1])
    return {**got, "results": Path(got["results"])}


def grid_child(engine_name: str, threads: int, workers: int, root: Path) -> None:
    """The child of run_grid: the run, timed from before sonieval's pipeline is imported (a Ray cluster is
    started first and not timed: a running cluster is joined without it); prints what it measured as JSON."""
    import json

    if engine_name == "ray":
        from sonieval.engines import RayEngine

        engine = RayEngine(num_cpus=workers, threads=threads)
    c0, t0 = cpu_seconds_self(), time.perf_counter()
    from sonieval.pipeline.run import run_protocol

    if engine_name == "local":
        from sonieval.engines import LocalEngine

        engine = LocalEngine(threads)
    proto = grid_protocol(root / f"{engine_name}-{threads}")
    try:
        result = run_protocol(proto, engine=engine, echo=lambda s: None)
        wall = time.perf_counter() - t0
        cluster = cpu_seconds_descendants() if engine_name == "ray" else 0.0
    finally:
        engine.close()
    if not result.failures.empty:
        raise SystemExit(f"grid run on {engine_name} had failures:\n{result.failures}")
    measured = {
        "wall": wall,
        "cpu": cpu_seconds_self() - c0 + cluster,
        "stages": result.timings,
        "training_tasks": training_tasks(proto),
        "results": str(proto.results_path),
    }
    print(json.dumps(measured))


ARTIFACT_FOLDERS = ("cache", "checkpoints", "sonifications", "scores")


def same_bytes(a: Path, b: Path) -> tuple[int, int]:
    """How many artifact files of results folder ``a`` are byte-identical in ``b``, of how many."""
    files = [p for folder in ARTIFACT_FOLDERS for p in (a / folder).rglob("*") if p.is_file()]
    same = sum(
        (b / p.relative_to(a)).is_file() and p.read_bytes() == (b / p.relative_to(a)).read_bytes() for p in files
    )
    return same, len(files)


def training_tasks(proto) -> int:
    """How many tasks of the train stage train gates (the untrained controls, one evaluation each, aside)
    on the local engine: the grouping of sonieval.pipeline.train_tasks."""
    from sonieval.pipeline.train import plan_runs
    from sonieval.pipeline.train_tasks import gates_per_task

    runs = [r for r in plan_runs(proto) if r.control != "untrained"]
    groups: dict[tuple, int] = {}
    for r in runs:
        key = (r.slot, r.codec, r.seed, r.max_epochs)
        groups[key] = groups.get(key, 0) + 1
    size = gates_per_task(len(plan_runs(proto)), 1)
    return sum(math.ceil(n / size) for n in groups.values())


GRID_RUNS = {"local": ("local", None), "local-1": ("local", 1), "ray": ("ray", 1)}  # (engine, threads); None: --workers


def bench_grid(workers: int, repeats: int) -> dict:
    print(f"\n== 1. grid: reduced demo end to end, local engine vs Ray ({workers} workers)  [{load()}]")
    print(
        f"   local: this process with {workers} threads (every core) and with 1 thread; Ray: {workers} workers, "
        f"1 thread per task; fastest of {repeats} run(s) each, in alternating order"
    )
    runs: dict[str, list[dict]] = {name: [] for name in GRID_RUNS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            for name in list(GRID_RUNS)[:: 1 if r % 2 == 0 else -1]:
                engine, threads = GRID_RUNS[name]
                runs[name].append(run_grid(Path(tmp) / str(r), engine, threads or workers, workers))
        best = {name: min(got, key=lambda g: g["wall"]) for name, got in runs.items()}
        same, total = same_bytes(best["local-1"]["results"], best["ray"]["results"])
        same_all, _ = same_bytes(best["local"]["results"], best["ray"]["results"])
    local, one, ray = best["local"], best["local-1"], best["ray"]
    print(f"   {'stage':<10}{'local s':>10}{'local-1 s':>11}{'ray s':>10}{'local/ray':>11}{'local-1/ray':>13}")
    for stage in local["stages"]:
        a, b, c = local["stages"][stage], one["stages"][stage], ray["stages"].get(stage, float("nan"))
        print(f"   {stage:<10}{a:>10.1f}{b:>11.1f}{c:>10.1f}{a / c:>11.2f}{b / c:>13.2f}")
    print(
        f"   {'total':<10}{local['wall']:>10.1f}{one['wall']:>11.1f}{ray['wall']:>10.1f}"
        f"{local['wall'] / ray['wall']:>11.2f}{one['wall'] / ray['wall']:>13.2f}"
    )
    print(
        f"   local ({workers} threads) / Ray: {local['wall'] / ray['wall']:.2f}x (goal >= 1.7 on {workers} workers); "
        f"local (1 thread) / Ray: {one['wall'] / ray['wall']:.2f}x (goal >= 1.8: the engine's own parallel "
        f"efficiency, {100 * one['wall'] / ray['wall'] / workers:.0f} % of {workers} workers)"
    )
    print(
        f"   CPU time: local {local['cpu']:.1f} s, local-1 {one['cpu']:.1f} s, Ray {ray['cpu']:.1f} s (driver + cluster "
        f"processes): with Ray's CPU cost, {workers} workers gain at most {workers * one['cpu'] / ray['cpu']:.2f}x "
        f"over 1 thread, on idle cores   [{load()}]"
    )
    print(
        f"   same bytes: local (1 thread) and Ray (1 thread per task) {same}/{total} artifact files; local "
        f"({workers} threads) and Ray {same_all}/{total} (different thread counts round differently)"
    )
    return {"local": local, "local-1": one, "ray": ray}


# ---------------------------------------------------------------------------- 2. overhead


def noop(items, *args):
    """A task that does nothing (what Ray costs per task: scheduling, arguments, answer)."""
    from sonieval.ledger import ItemOutcome

    return {it.key: ItemOutcome() for it in items}


def bench_overhead(n: int, workers: int, train_task_s: float | None) -> None:
    from engine_helpers import sweep_protocol, synthetic_pairs

    from sonieval.engines import RayEngine, Task, run_tasks
    from sonieval.ledger import RunLedger
    from sonieval.pipeline.train import _train_item, paired_data, plan_runs

    print(f"\n== 2. Ray overhead per task: {n} no-op tasks carrying a train task's arguments  [{load()}]")
    with tempfile.TemporaryDirectory() as tmp:
        proto = sweep_protocol(Path(tmp))
        synthetic_pairs(Path(tmp))
        run = plan_runs(proto)[1]
        item = _train_item(proto, run, paired_data(proto, run.encoder))
        engine = RayEngine(num_cpus=workers)
        try:
            ref = engine.put(proto)
            warm = [Task(f"warm{i}", noop, [item], (ref, "auto")) for i in range(workers * 2)]
            with RunLedger(Path(tmp) / "warm.sqlite") as m:
                run_tasks(m, "noop", warm, engine, progress=False, skip_done=False)  # start the workers
            tasks = [
                Task(
                    f"noop{i}", noop, [type(item)(f"{item.key}#{i}", item.inputs, payload=item.payload)], (ref, "auto")
                )
                for i in range(n)
            ]
            with RunLedger(Path(tmp) / "noop.sqlite") as m:
                t0 = time.perf_counter()
                run_tasks(m, "noop", tasks, engine, progress=False)
                wall = time.perf_counter() - t0
        finally:
            engine.close()
    per_task = wall / n
    print(
        f"   {per_task * 1000:.1f} ms per task end to end (driver records included), "
        f"{per_task * workers * 1000:.1f} ms of a slot per task"
    )
    if train_task_s:
        print(
            f"   mean training task of the grid on the local engine: {train_task_s:.2f} s -> overhead "
            f"{100 * per_task * workers / train_task_s:.2f} % of a training task (goal < 5 %)"
        )


# ---------------------------------------------------------------------------- 3. shared passes


AST_EMB, DAC_LAT = (1212, 768), (64, 431)


def full_size_pairs(root: Path, n_train: int, n_validation: int) -> None:
    """Random pairs of full-size AST embeddings and DAC-VAE latents, as the prepare stage leaves them."""
    import pandas as pd
    from pipeline_helpers import cached_pair_row, make_clips

    from sonieval.pipeline.prepare import PREPARED_COLUMNS
    from sonieval.tables import write_table

    make_clips(root, n_train=2, n_validation=1, n_test=1)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_train + n_validation):
        split = "train" if i < n_train else "validation"
        for kind, key, shape in (("embedding", "ast-full", AST_EMB), ("latent", "dac-full", DAC_LAT)):
            rows.append(cached_pair_row(root, i, split, kind, key, rng.standard_normal(shape).astype(np.float32)))
    write_table(pd.DataFrame(rows, columns=PREPARED_COLUMNS), root / "results" / "tables" / "prepared.parquet")


def shared_protocol(root: Path, gates: int):
    from pipeline_helpers import write_protocol

    from sonieval.protocol import load_protocol

    lrs = [0.01 / (i + 1) for i in range(gates)]
    return load_protocol(
        write_protocol(
            root,
            gates={"variants": ["LIN"], "alignments": ["transpose"], "controls": []},
            training={
                "learning_rates": lrs,
                "epochs": [1],
                "batch_size": 16,
                "eval_batch_size": 16,
                "gradient_accumulation": 1,
            },
        )
    )


def _time_training(root: Path, gates: int, together: bool, streamed: bool) -> tuple[float, float]:
    import shutil

    from sonieval.pipeline import trainer as train_mod
    from sonieval.pipeline.train import paired_data, plan_runs, train_one_run
    from sonieval.pipeline.train_tasks import train_together

    proto = shared_protocol(root, gates)
    for folder in ("checkpoints", "training"):
        shutil.rmtree(proto.results_path / folder, ignore_errors=True)
    saved, train_mod.TRAIN_MEMORY_BYTES = train_mod.TRAIN_MEMORY_BYTES, 0 if streamed else train_mod.TRAIN_MEMORY_BYTES
    try:
        runs = plan_runs(proto)
        c0, t0 = cpu_seconds_self(), time.perf_counter()
        data = paired_data(proto, "ast")  # loading the pairs is part of the cost (once for all gates, in both ways)
        if together:
            train_together(proto, [(r.run_id, r, "b") for r in runs], data, "cpu")
        else:
            for r in runs:
                train_one_run(proto, r, data, "cpu", fingerprint="b", progress=False)
        return time.perf_counter() - t0, cpu_seconds_self() - c0
    finally:
        train_mod.TRAIN_MEMORY_BYTES = saved


def bench_shared(gates: int, n_train: int) -> None:
    import torch

    print(
        f"\n== 3. gate training: {gates} LIN gates (full-size AST -> DAC-VAE shapes, {n_train} clips, batch 16, "
        f"1 epoch) together vs one at a time; torch {torch.get_num_threads()} threads  [{load()}]"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        full_size_pairs(root, n_train, 16)
        for streamed in (False, True):
            # alternated (alone, together, together, alone) and the least of each kept: the machine is shared
            runs = {False: [], True: []}
            for together in (False, True, True, False):
                runs[together].append(_time_training(root, gates, together, streamed))
            alone, together = (min(runs[k], key=lambda r: r[0]) for k in (False, True))
            where = "streamed from the cache per batch" if streamed else "pairs in memory"
            print(
                f"   {where:<34} one at a time {alone[0]:6.1f} s wall {alone[1]:6.1f} s CPU | together "
                f"{together[0]:6.1f} s wall {together[1]:6.1f} s CPU | ratio {alone[0] / together[0]:.2f} wall, "
                f"{alone[1] / together[1]:.2f} CPU"
            )
            load_s, step_s = _batch_costs(root, gates, streamed)
            print(
                f"   {'':<34} per batch of 16: loading the pairs {1000 * load_s:.0f} ms, one gate's step "
                f"{1000 * step_s:.0f} ms: sharing can save at most {gates - 1}/{gates} of the loading"
            )
    print(f"   [{load()}]")


def _batch_costs(root: Path, gates: int, streamed: bool) -> tuple[float, float]:
    """Least of 3: seconds to load one batch of pairs, and one LIN gate's training step on it."""
    from sonieval.pipeline import trainer as train_mod
    from sonieval.pipeline.train import GateTrainer, paired_data, plan_runs

    proto = shared_protocol(root, gates)
    saved, train_mod.TRAIN_MEMORY_BYTES = train_mod.TRAIN_MEMORY_BYTES, 0 if streamed else train_mod.TRAIN_MEMORY_BYTES
    try:
        trainer = GateTrainer(proto, plan_runs(proto)[0], paired_data(proto, "ast"), "cpu", "b")
        idx = list(range(16))
        loads, steps = [], []
        for _ in range(3):
            t0 = time.perf_counter()
            x, y = trainer.train.pairs(idx)
            loads.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            trainer.step_on(x, y, 1)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad()
            steps.append(time.perf_counter() - t0)
        return min(loads), min(steps)
    finally:
        train_mod.TRAIN_MEMORY_BYTES = saved


# ---------------------------------------------------------------------------- 4. projection


def step_seconds(variant: str, emb: tuple[int, int], batch: int, device: str) -> float:
    """Seconds per clip of one training step (forward, backward, AdamW) of a full-size gate."""
    import torch

    from sonieval.models.gates import build_gate

    gate = build_gate(variant, embedding_shape=emb, latent_shape=DAC_LAT, alignment="transpose").to(device)
    opt = torch.optim.AdamW(gate.parameters(), lr=1e-3)
    x, y = torch.randn(batch, *emb, device=device), torch.randn(batch, *DAC_LAT, device=device)

    def step():
        loss = torch.nn.functional.mse_loss(gate(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()

    step()  # warm-up
    best = math.inf
    for _ in range(2):  # the least of two: the machine is shared
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best / batch


def bench_projection(workers_list: list[int], batch: int) -> None:
    """Makespan of thesis.yaml's train stage: its runs cut into tasks as train_tasks cuts them for N slots, each
    task's cost the sum of its gates' (they train in lockstep on one worker), tasks handed to the first free
    worker in submission order (as Ray does)."""
    import heapq

    import torch

    from sonieval.pipeline.train import plan_runs
    from sonieval.pipeline.train_tasks import gates_per_task
    from sonieval.protocol import load_protocol

    device = "cuda" if torch.cuda.is_available() else "cpu"
    proto = load_protocol(REPO / "protocols" / "thesis.yaml")
    n_train, n_val, epochs = 1600, 200, max(proto.training.epochs)  # full ESC-50, 80/10/10
    shapes = {"ast": AST_EMB, "hubert": (249, 768)}
    print(
        f"\n== 4. projection: protocols/thesis.yaml's train stage on N workers ({device}, torch "
        f"{torch.get_num_threads()} threads, least of 2 steps of batch {batch} per gate)  [{load()}]"
    )
    cost = {}
    for enc, emb in shapes.items():
        per_clip = {v: step_seconds(v, emb, batch, device) for v in proto.gates.variants}
        print(f"   {enc}: " + ", ".join(f"{v} {1000 * c:.0f}" for v, c in per_clip.items()) + " ms per clip-step")
        for v, c in per_clip.items():  # training steps + a validation forward (about a third of a step) per epoch
            cost[(enc, v)] = c * epochs * (n_train + n_val / 3)
    runs = plan_runs(proto)
    total = sum(cost[(r.encoder, r.variant)] for r in runs)
    print(f"   {len(runs)} runs x {epochs} epochs x {n_train} clips: {total / 3600:.0f} worker-hours on this {device}")
    for n in workers_list:
        size = gates_per_task(len(runs), n)
        tasks = []
        for enc in shapes:
            mine = [r for r in runs if r.encoder == enc]
            tasks += [sum(cost[(r.encoder, r.variant)] for r in mine[i : i + size]) for i in range(0, len(mine), size)]
        free = [0.0] * n
        for t in tasks:  # first free worker, in submission order
            heapq.heappush(free, heapq.heappop(free) + t)
        print(
            f"   N = {n:>3}: {max(free) / 3600:8.1f} h ({len(tasks)} tasks of up to {size} gates; "
            f"perfect split {total / 3600 / n:.1f} h)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="runs of each grid configuration (the fastest kept)")
    ap.add_argument("--noop", type=int, default=200)
    ap.add_argument("--gates", type=int, default=4)
    ap.add_argument("--clips", type=int, default=32, help="training clips for the shared-pass comparison")
    ap.add_argument("--step-batch", type=int, default=8, help="batch of the per-step costs (projection)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: grid,overhead,shared,projection")
    ap.add_argument("--grid-run", nargs=4, metavar=("ENGINE", "THREADS", "WORKERS", "ROOT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.grid_run:  # a child of run_grid
        engine, threads, workers, root = args.grid_run
        grid_child(engine, int(threads), int(workers), Path(root))
        return
    import torch

    import sonieval

    print(
        f"bench_engines: sonieval {sonieval.__version__}, torch {torch.__version__}, {os.cpu_count()} cores, {load()}"
    )
    grid = bench_grid(args.workers, args.repeats) if "grid" not in skip else None
    if "overhead" not in skip:
        train_task = None
        if grid:  # the mean training task of the grid: the train stage's wall time over its tasks (local engine)
            train_task = grid["local"]["stages"]["train"] / grid["local"]["training_tasks"]
        bench_overhead(args.noop, args.workers, train_task)
    if "shared" not in skip:
        bench_shared(args.gates, args.clips)
    if "projection" not in skip:
        bench_projection([1, 2, 4, 8, 16], batch=args.step_batch)


if __name__ == "__main__":
    main()
