"""The train stage's tasks: gates that read the same pairs are trained together, several per task.

Runs of one encoder slot (encoder and layer), codec, seed and epoch count read the same training pairs
in the same order (the shuffle is seeded by seed and epoch; variant, alignment, learning rate and control
do not change it). A task trains up to ``gates_per_task`` of them **in lockstep**: each micro batch is
loaded (and moved to the device) once and fed to every gate of the task, instead of once per gate. Each
gate keeps its own random state (dropout masks, blur σ) and its own optimiser, schedule, checkpoints and
resume state, so a gate trained with others is bit for bit the gate trained alone (same thread count;
tested), and a run killed midway resumes each gate from its own last epoch.

How many gates a task trains: enough that the sweep makes about :data:`TASKS_PER_SLOT` tasks per engine
slot (GPU or CPU), so that every slot stays busy while tasks of unequal cost (a CONV gate costs ten LIN
gates) even out, and at most :data:`MAX_GATES_PER_TASK`: every gate in a task holds its weights, AdamW's
two moments and its activations for one micro batch at once (the largest full-size AST gates are the limit
on a GPU), and a task that holds more gates loses more work when its worker dies. On the local engine (one
slot) that is 8 gates per task for any sweep of 16 runs or more. The untrained controls (no training, one
evaluation) are tasks of their own.
"""

from __future__ import annotations

import math
from typing import Any

from sonieval.engines import Answer, Engine, Task, attempt, item_error, resolve_device, worker_memo
from sonieval.errors import SonievalError
from sonieval.ledger import ItemOutcome, LedgerItem
from sonieval.pipeline.trainer import GateTrainer, PairedData, run_summary, train_one_run, write_losses
from sonieval.protocol import Protocol

MAX_GATES_PER_TASK = 8
TASKS_PER_SLOT = 2  # bench_engines' projection: 1 task per slot leaves 16 GPUs waiting on the costliest task


def gates_per_task(n_runs: int, slots: int) -> int:
    """About TASKS_PER_SLOT tasks per slot, at most MAX_GATES_PER_TASK gates each."""
    return max(1, min(MAX_GATES_PER_TASK, math.ceil(n_runs / (TASKS_PER_SLOT * max(1, slots)))))


def _group_key(item: LedgerItem) -> tuple:
    run, data = item.payload
    return run.slot, run.codec or "", run.seed, run.max_epochs, run.fitted_once, id(data)


def train_tasks(
    proto: Protocol, items: list[LedgerItem], engine: Engine, device: str = "auto", progress: bool = False
) -> list[Task]:
    """The sweep's items (payload: ``(TrainRun, PairedData | SonievalError)``) as tasks of gates sharing data."""
    groups: dict[tuple, list[LedgerItem]] = {}
    for it in items:
        groups.setdefault(_group_key(it), []).append(it)
    size = gates_per_task(len(items), engine.slots)
    proto_ref = engine.put(proto)
    tasks = []
    for group in groups.values():
        for i in range(0, len(group), size):
            part = group[i : i + size]
            name = f"train {part[0].payload[0].slot} {len(part)} gate(s) from {part[0].key}"
            tasks.append(Task(name, train_gates, part, (proto_ref, device, progress), engine.device_resources()))
    return tasks


def train_gates(items: list[LedgerItem], proto: Protocol, device: str = "auto", progress: bool = False) -> Answer:
    """The task: train the items' gates together (untrained controls one by one); answers per item."""
    from sonieval.ledger import inputs_hash

    device = resolve_device(device)
    data = items[0].payload[1]
    if not isinstance(data, PairedData):  # the pairs of this encoder and codec could not be read
        return {it.key: item_error(data) for it in items}
    data = worker_memo(
        (
            "pairs",
            str(proto.results_path),
            data.embedding_model_key,
            data.latent_model_key,
            tuple(data.clip_ids.get("train", ())),
            tuple(data.clip_ids.get("validation", ())),
            tuple(data.clip_ids.get("test", ())),
        ),
        lambda: data,
    )  # the pairs stay loaded in this worker for its next task
    answer: Answer = {}
    together = []
    for it in items:
        run = it.payload[0]
        if run.fitted_once:  # the untrained control, a closed-form gate: no epochs to share
            answer[it.key] = attempt(_one, proto, run, data, device, inputs_hash(it.inputs), progress, train_one_run)
        else:
            together.append((it.key, run, inputs_hash(it.inputs)))
    for key, got in train_together(proto, together, data, device, progress=progress).items():
        run = next(r for k, r, _ in together if k == key)
        answer[key] = (
            got
            if isinstance(got, str)
            else ItemOutcome(path=run.checkpoint(proto, max(run.snapshot_epochs)), extra=got)
        )
    return answer


def _one(proto, run, data, device, fingerprint, progress, train_one_run) -> ItemOutcome:
    summary = train_one_run(proto, run, data, device, fingerprint=fingerprint, progress=progress)
    return ItemOutcome(path=run.checkpoint(proto, max(run.snapshot_epochs)), extra=summary)


# ---------------------------------------------------------------------------- lockstep training


def train_together(
    proto: Protocol, runs: list[tuple[str, Any, str]], data: Any, device: str, *, progress: bool = False
) -> dict[str, dict[str, Any] | str]:
    """Train ``runs`` (key, TrainRun, fingerprint), all of one seed and epoch count, on shared batches.

    Returns per key the run's summary (as ``train_one_run``) or its one-line error."""
    from tqdm.auto import tqdm

    if not runs:
        return {}
    out: dict[str, dict[str, Any] | str] = {}
    trainers = _start(proto, runs, data, device, out)
    writers = {key: _writer(proto, tr) for key, tr in trainers.items()}
    try:
        first = min((tr.state.epoch for tr in trainers.values()), default=0) + 1
        last = max((tr.run.max_epochs for tr in trainers.values()), default=0)
        bar = tqdm(
            range(first, last + 1),
            desc=f"train {len(trainers)} gate(s) together",
            unit="epoch",
            disable=not progress,
            leave=False,
        )
        for epoch in bar:
            active = {k: tr for k, tr in trainers.items() if k not in out and tr.state.epoch < epoch}
            _epoch(active, epoch, writers, out)
            for key, tr in active.items():
                if key not in out:
                    got = attempt(_end_epoch, tr, epoch, writers[key])
                    if isinstance(got, str):
                        out[key] = got
    finally:
        for w in writers.values():
            w.close()
    for key, tr in trainers.items():
        if key not in out:
            got = attempt(_finish, proto, tr)
            out[key] = got if isinstance(got, str) else got.extra
    return out


def _start(proto, runs, data, device, out) -> dict[str, Any]:
    """One GateTrainer per run, resumed from its own state; the validation pairs are held once."""

    trainers: dict[str, Any] = {}
    shared = None
    for key, run, fingerprint in runs:
        try:
            tr = GateTrainer(proto, run, data, device, fingerprint)
            tr.resume()
        except Exception as exc:  # noqa: BLE001 - this gate fails, the others train
            out[key] = item_error(exc)
            continue
        if shared is None:
            shared = (tr.x_val, tr.y_val, tr.x_heldout, tr.y_heldout, tr.baseline)
        # same pairs, same normalisation: one copy for the task
        tr.x_val, tr.y_val, tr.x_heldout, tr.y_heldout, tr.baseline = shared
        trainers[key] = tr
    return trainers


def _writer(proto, tr):
    from torch.utils.tensorboard import SummaryWriter

    logdir = proto.layout.training_run(tr.run.run_id)
    logdir.mkdir(parents=True, exist_ok=True)
    step = tr.state.step
    return SummaryWriter(log_dir=str(logdir / "tensorboard"), purge_step=step if step else None)


def _rng_state(device: str) -> tuple:
    import torch

    return torch.get_rng_state(), (torch.cuda.get_rng_state() if str(device).startswith("cuda") else None)


def _set_rng(state: tuple) -> None:
    import torch

    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1])


def _epoch(trainers: dict[str, Any], epoch: int, writers: dict[str, Any], out: dict[str, Any]) -> None:
    """One epoch of every gate: each micro batch loaded once; each gate with its own random state."""
    import torch

    if not trainers:
        return
    one = next(iter(trainers.values()))
    t, device, store = one.t, one.device, one.train
    gen = torch.Generator().manual_seed(one.run.seed * 100_003 + epoch)  # as GateTrainer.run_epoch
    order = torch.randperm(len(store), generator=gen).tolist()
    micro = [order[i : i + t.batch_size] for i in range(0, len(order), t.batch_size)]
    rng, acc = {}, {}
    for key, tr in trainers.items():
        tr.gate.train()
        torch.manual_seed(tr.run.seed + epoch)
        rng[key], acc[key] = _rng_state(device), [0.0, 0]
        tr.optimizer.zero_grad()
    for i, idx in enumerate(micro):
        batch = _Batch(store, idx, device)
        for key, tr in trainers.items():
            if key in out:
                continue
            _set_rng(rng[key])
            try:
                acc[key][0] += tr.step_on(batch.x, batch.y(tr.partners), epoch)
            except Exception as exc:  # noqa: BLE001 - this gate stops, the others go on
                out[key] = item_error(exc)
                continue
            rng[key] = _rng_state(device)
            acc[key][1] += 1
            if acc[key][1] == t.gradient_accumulation or i == len(micro) - 1:
                tr.optimizer_step(acc[key][0] / acc[key][1], epoch, writers[key])
                acc[key] = [0.0, 0]


class _Batch:
    """One micro batch, loaded once: the embeddings on the device, the latents per pairing (real or shuffled)."""

    def __init__(self, store, idx: list[int], device: str):
        self.store, self.idx, self.device = store, idx, device
        x, y = store.pairs(idx)
        self.x = x.to(device)
        self._y = {None: y}

    def y(self, partners: list[int] | None):
        key = None if partners is None else tuple(partners[j] for j in self.idx)
        if key not in self._y:
            self._y[key] = self.store.pairs(self.idx, list(key))[1]
        return self._y[key]


def _end_epoch(tr, epoch: int, writer) -> None:
    """As ``train_one_run`` after each epoch: validate, snapshots, resume state, losses."""

    tr.validate(epoch, writer)
    writer.flush()
    tr.save_snapshots(epoch)
    tr.save_state(epoch)
    write_losses(tr.proto.layout.training_run(tr.run.run_id), tr.run.run_id, tr.state.history)


def _finish(proto, tr) -> ItemOutcome:
    """As ``train_one_run`` at the end: the loss curves figure; the run's summary."""
    import pandas as pd

    from sonieval.pipeline.figures import plot_loss_curves

    logdir = proto.layout.training_run(tr.run.run_id)
    losses_path = logdir / "losses.csv"
    if not losses_path.exists():
        raise SonievalError(f"run {tr.run.run_id}: no epoch was trained", path=losses_path)
    title = f"{tr.run.run_id} ({len(tr.train)} training clips{', SHUFFLED pairs (control)' if tr.partners else ''})"
    plot_loss_curves(pd.read_csv(losses_path), logdir / "loss_curves.png", title=title)
    return ItemOutcome(extra=run_summary(tr))
