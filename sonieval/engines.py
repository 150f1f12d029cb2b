"""Executors and the device: where a stage's work runs, with one writer of the run ledger.

This module stands on the ground floor, below every stage (prepare, train, sonify, score, the gallery):
the stages use it, it uses none of them (``tests/foundation/test_foundation_layers.py``).

A stage cuts its work into :class:`Task` s. A task names the ledger items it makes
(:class:`~sonieval.ledger.LedgerItem`), a module-level function and its arguments, and
the resources it needs. An engine runs the tasks; :func:`run_tasks` (the driver) skips the items
already done, records the rest as they come back, and is the only code that writes the ledger.

- ``local`` (:class:`LocalEngine`, the default): the tasks run one after another in this process:
  the behaviour sonieval always had, no extra dependency.
- ``ray`` (:class:`RayEngine`, ``pip install 'sonieval[ray]'``): the tasks run in Ray worker processes
  of a local cluster started for the run, or of a running cluster (``address="auto"`` or
  ``"HOST:PORT"``). One task per GPU for training, decoding and embedding when the cluster has GPUs
  (:meth:`Engine.device_resources`), ``threads`` CPUs per task otherwise.

Threads. Every engine has one thread count, ``threads``: each task runs with torch's intra-op threads
and every BLAS/OpenMP pool of its process (NumPy's OpenBLAS, torch's OpenMP) held to it
(:func:`pin_threads`), and each item a task made records it in the ledger (``extra["threads"]``).
The local engine's count is the process's torch count unless given (torch's default: one per core);
the Ray engine's is 1 unless given, a task holding as many CPUs as it has threads. While a protocol runs
(:func:`~sonieval.pipeline.run.run_protocol`, or an engine used in a ``with``) the driver's own work
(splits, normalisation statistics, reference kernels, the bootstrap; on the local engine, also the
score stage's embedding pass) is held to the same count.

What the engines guarantee to each other (tested on the full demo protocol with a training and a decoding
worker killed mid-task, ``tests/pipeline/test_pipeline_engines_run.py``): on CPU, the same protocol run with
the same ``threads`` on the same machine writes **byte-identical** artifacts under either engine: cache
arrays, checkpoints, sonification WAVs, training curves and score tables; tables that hold paths are equal
row for row once the results folder's own path is set aside. Not byte-identical: the run ledger and
TensorBoard event files (times of day) and ``data_source.json`` (when it was pinned). Why it holds: every
random draw is seeded by the protocol (seed, epoch), not by the worker; both engines cut a stage into the
same batches (kernels may pick their blocking by batch size); a task retried after its worker died remakes
the same items from the same inputs (a gate resumes from its last saved epoch, bit for bit); and CPU kernels
sum in a fixed order for a fixed thread count. With different thread counts (the defaults on a machine of
more than one core: local uses every core, Ray one per task) sums are split differently and results differ
by rounding, which training amplifies; nothing tighter is guaranteed then (the measured
differences on the demo: docs/scaling.md#same-bytes-under-either-engine). On GPUs no equality is claimed:
cuDNN and cuBLAS may pick other kernels run to run (not tested here).

Contract of a task function ``fn(items, *args)``: it makes the artifacts of ``items``, each written
atomically (``sonieval.files.atomic_path``) into the results folder, and returns ``{item key:
ItemOutcome}`` for the items it made and ``{item key: "one-line error"}`` for those that failed for
their input (use :func:`attempt` per item). It never touches the ledger: SQLite's file locks are not
safe on network file systems, and workers on other machines see the results folder through one.

Faults:

- an item whose input is bad (a :class:`~sonieval.errors.SonievalError`) is recorded as failed once,
  with its message; the other items and tasks go on. A task function that raises fails all its items
  once (Ray does not retry application errors: ``retry_exceptions=False``).
- a worker that dies (killed, out of memory, its machine gone) is a system failure: Ray runs the task
  again on another worker, up to ``max_retries`` times, then its items are recorded as failed with
  the reason. A rerun makes them again (failed items are never skipped).

Because every artifact is written atomically under a name fixed by its inputs and the driver
records it only after the task came back, a retried task overwrites the same files with the same
content: every artifact exists once, whatever engine made it, and a run stopped under one engine
resumes under the other (both read the same ledger and skip the same finished items).
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from sonieval.errors import SonievalError
from sonieval.ledger import BatchResult, ItemOutcome, LedgerItem, RunLedger

__all__ = [
    "ENGINES",
    "Engine",
    "LocalEngine",
    "RayEngine",
    "Resources",
    "Task",
    "attempt",
    "chunks",
    "item_error",
    "light_items",
    "make_engine",
    "pin_threads",
    "resolve_device",
    "run_items",
    "run_tasks",
    "worker_memo",
]

ENGINES = ("local", "ray")
DEFAULT_MAX_RETRIES = 3  # Ray's own default for tasks; a worker killed 4 times in a row fails its items
Answer = dict[str, "ItemOutcome | str"]  # item key -> what was made, or why it failed (one line)


@dataclass(frozen=True)
class Resources:
    """What one task holds while it runs (Ray schedules by these; the local engine runs one task at a time)."""

    cpus: float = 1.0
    gpus: float = 0.0


@dataclass
class Task:
    """``fn(items, *args)`` makes the artifacts of ``items`` and answers per item (see the module doc)."""

    name: str
    fn: Callable[..., Answer]
    items: list[LedgerItem]
    args: tuple = ()
    resources: Resources = field(default_factory=Resources)


def item_error(exc: BaseException) -> str:
    """The one line recorded for a failed item: a SonievalError's message, else ``Type: message``."""
    if isinstance(exc, SonievalError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def attempt(fn: Callable[..., ItemOutcome | None], *args: Any) -> ItemOutcome | str:
    """``fn(*args)`` for one item: its outcome, or its error line (the other items go on)."""
    try:
        return fn(*args) or ItemOutcome()
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded for this item, the task goes on
        return item_error(exc)


def resolve_device(option: str | None = "auto") -> str:
    """``auto`` → ``cuda`` when a GPU is there, else ``cpu``; anything else as given."""
    if option in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return option


# ---------------------------------------------------------------------------- threads


@contextlib.contextmanager
def pin_threads(threads: int) -> Iterator[None]:
    """This process's torch intra-op threads and every BLAS/OpenMP pool held to ``threads`` inside the block.

    Float sums are split among threads (torch's reductions and convolutions, OpenBLAS's dot), so the count
    decides the last bits of a result: the same count in every task is what makes two runs byte-identical."""
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    with threadpool_limits(limits=threads):
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def _with_threads(got: ItemOutcome | str, threads: int) -> ItemOutcome | str:
    """An item's outcome with the thread count it was made with (the ledger keeps it in ``extra``)."""
    return replace(got, extra={**(got.extra or {}), "threads": threads}) if isinstance(got, ItemOutcome) else got


def _stamped(answer: Answer, threads: int) -> Answer:
    return {key: _with_threads(got, threads) for key, got in answer.items()} if isinstance(answer, dict) else answer


# ---------------------------------------------------------------------------- worker side

_MEMO: OrderedDict[Any, Any] = OrderedDict()
MEMO_SIZE = 2  # loaded models / training pairs kept per worker process (pairs of a full ESC-50 sweep: ~3 GB)


def worker_memo(key: Any, make: Callable[[], Any]) -> Any:
    """``make()`` once per worker process and ``key`` (least recently used dropped past MEMO_SIZE).

    Ray reuses its worker processes, so consecutive tasks of one encoder or one (encoder, codec) pair load
    the model or the training pairs once per worker, as the local engine does once per run."""
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    value = make()
    _MEMO[key] = value
    while len(_MEMO) > MEMO_SIZE:
        _MEMO.popitem(last=False)
    return value


def _execute(fn: Callable[..., Answer], items: list[LedgerItem], threads: int, *args: Any) -> Answer:
    """What a Ray worker runs: the task with its threads pinned, its answer stamped with them."""
    with pin_threads(threads):
        answer = fn(items, *args)
    return _stamped(answer, threads)


# ---------------------------------------------------------------------------- engines


class Engine:
    """Runs tasks and yields ``(task, answer)`` as they finish; ``answer`` is the task's per-item dict, or
    the exception that stopped the whole task (after the engine's retries)."""

    name = "engine"
    _hold: contextlib.ExitStack | None = None

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, Answer | BaseException]]:
        raise NotImplementedError

    @property
    def threads(self) -> int:
        """Threads of every task (torch and BLAS, :func:`pin_threads`); equal counts give byte-identical runs."""
        raise NotImplementedError

    @contextlib.contextmanager
    def hold_threads(self) -> Iterator[None]:
        """This process (the driver) held to :attr:`threads` for its own work between the tasks."""
        with pin_threads(self.threads):
            yield

    def put(self, obj: Any) -> Any:
        """A handle to pass ``obj`` to many tasks (Ray: stored once in the object store)."""
        return obj

    @property
    def gpus(self) -> int:
        return 0

    @property
    def slots(self) -> int:
        """How many tasks of one CPU (or one GPU) run at once: stages cut their work into at least this many."""
        return 1

    def cpu_resources(self) -> Resources:
        """A task without a GPU: one CPU per thread."""
        return Resources(cpus=float(self.threads))

    def device_resources(self) -> Resources:
        """One GPU per task when there are GPUs (training, decoding, embedding), else :meth:`cpu_resources`."""
        return Resources(cpus=float(self.threads), gpus=1.0) if self.gpus else self.cpu_resources()

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        pass

    def __enter__(self) -> Engine:
        """The engine, with the driver held to its threads until the block ends (then closed)."""
        self._hold = contextlib.ExitStack()
        self._hold.enter_context(self.hold_threads())
        return self

    def __exit__(self, *exc: Any) -> None:
        hold, self._hold = self._hold, None
        try:
            if hold is not None:
                hold.close()
        finally:
            self.close()


class LocalEngine(Engine):
    """Every task in this process, in order.

    ``threads``: None (the default) runs the tasks with this process's torch thread count as the caller set
    it (torch's default: one per core), the BLAS pools held to the same count; a number pins both to it."""

    name = "local"

    def __init__(self, threads: int | None = None):
        self._threads = _checked_threads(threads) if threads is not None else None

    @property
    def threads(self) -> int:
        if self._threads is not None:
            return self._threads
        import torch

        return torch.get_num_threads()

    @property
    def gpus(self) -> int:
        import sys

        if "torch" not in sys.modules:
            return 0
        import torch

        return torch.cuda.device_count()

    def device_resources(self) -> Resources:
        return Resources(cpus=float(self.threads), gpus=1.0 if self.gpus else 0.0)

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, Answer | BaseException]]:
        threads = self.threads
        try:
            for task in tasks:
                try:
                    with pin_threads(threads):
                        answer: Answer | BaseException = _stamped(task.fn(task.items, *task.args), threads)
                except KeyboardInterrupt:
                    raise
                except Exception as exc:  # noqa: BLE001 - the task's items fail, the others go on
                    answer = exc
                yield task, answer
        finally:
            _MEMO.clear()  # this process is the driver: hold no model or pairs past the stage


def _ray():
    try:
        import ray
    except ImportError:
        raise SonievalError(
            "engine ray: Ray is not installed",
            hint="pip install 'sonieval[ray]' (or the ray pin of requirements/lock.txt)",
        ) from None
    return ray


def _token_available() -> bool:
    """Whether this machine holds a Ray cluster token (the variable, the file it names, or ~/.ray/auth_token)."""
    from pathlib import Path

    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token"
    return Path(path).is_file()


class RayEngine(Engine):
    """Tasks as Ray remote functions, retried on worker death (``max_retries``), never on their own errors.

    ``address``: None starts a local cluster with this machine's CPUs and GPUs (or joins the one this
    process already started), ``"auto"`` joins the cluster started with ``ray start`` on this machine, and
    ``"HOST:PORT"`` a remote head. Every machine must see the results folder at the same path (shared
    storage) and have sonieval installed in the same environment."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        threads: int = 1,
        max_retries: int = DEFAULT_MAX_RETRIES,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
    ):
        if address and "RAY_AUTH_MODE" not in os.environ and _token_available():
            # a `ray start` cluster asks for its token; a driver sends it only in token mode (read at import)
            os.environ["RAY_AUTH_MODE"] = "token"
        ray = _ray()
        self._threads = _checked_threads(threads)
        self.max_retries = int(max_retries)
        self._owns = False
        if not ray.is_initialized():
            try:
                # "local": a new cluster even when `ray start` left one running on this machine
                ray.init(
                    address=address or "local",
                    num_cpus=num_cpus,
                    num_gpus=num_gpus,
                    include_dashboard=False,
                    logging_level="ERROR",
                    log_to_driver=False,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise SonievalError(
                    f"engine ray: cannot {'join the cluster at ' + address if address else 'start a local cluster'}"
                    f" ({item_error(exc)})",
                    hint="start one with `ray start --head` (its token in ~/.ray/auth_token or "
                    "RAY_AUTH_TOKEN) or leave --address out",
                ) from None
            self._owns = True
        self._remote = ray.remote(_execute)

    @property
    def resources(self) -> dict[str, float]:
        return _ray().cluster_resources()

    @property
    def gpus(self) -> int:
        return int(self.resources.get("GPU", 0))

    @property
    def threads(self) -> int:
        return self._threads

    @property
    def slots(self) -> int:
        res = self.resources
        return max(1, int(res.get("GPU", 0)) or int(res.get("CPU", 1)) // self.threads)

    def describe(self) -> str:
        res = self.resources
        return (
            f"ray ({int(res.get('CPU', 0))} CPUs, {int(res.get('GPU', 0))} GPUs, {len(_ray().nodes())} node(s); "
            f"{self.threads} thread(s) per task)"
        )

    def put(self, obj: Any) -> Any:
        return _ray().put(obj)

    def run(self, tasks: list[Task]) -> Iterator[tuple[Task, Answer | BaseException]]:
        ray = _ray()
        pending = {
            self._remote.options(
                num_cpus=t.resources.cpus,
                num_gpus=t.resources.gpus,
                max_retries=self.max_retries,
                retry_exceptions=False,
                name=t.name[:100],
            ).remote(t.fn, t.items, self.threads, *t.args): t
            for t in tasks
        }
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    task = pending.pop(ref)
                    try:
                        yield task, ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:  # the task's own error, not retried
                        cause = getattr(exc, "cause", None)
                        yield task, cause if isinstance(cause, Exception) else RuntimeError(str(exc).splitlines()[0])
                    except ray.exceptions.RayError as exc:  # the worker (or node) died more than max_retries times
                        yield (
                            task,
                            RuntimeError(
                                f"the worker running task {task.name} died {self.max_retries + 1} times "
                                f"({type(exc).__name__}); rerun to make its items"
                            ),
                        )
        finally:
            for ref in pending:  # the driver stopped (Ctrl-C): do not leave work running on the cluster
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._owns:
            _ray().shutdown()
            self._owns = False


def _checked_threads(threads: Any) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise SonievalError(f"threads must be a whole number of at least 1, got {threads!r}")
    return threads


def make_engine(
    name: str | None = "local", address: str | None = None, threads: int | None = None, **options: Any
) -> Engine:
    """The engine called ``name`` (``local`` or ``ray``); ``address`` only for ray; ``threads`` per task
    (None: local, the process's torch count; ray, 1)."""
    name = name or "local"
    if name not in ENGINES:
        raise SonievalError(f"unknown engine {name!r}; engines are: {', '.join(ENGINES)}")
    if name == "local":
        if address:
            raise SonievalError("--address is for --engine ray (the local engine runs in this process)")
        return LocalEngine(threads)
    return RayEngine(address, **({"threads": threads} if threads is not None else {}), **options)


# ---------------------------------------------------------------------------- driver side


def run_tasks(
    ledger: RunLedger,
    stage: str,
    tasks: list[Task],
    engine: Engine,
    *,
    desc: str | None = None,
    progress: bool = True,
    skip_done: bool = True,
) -> BatchResult:
    """Run ``tasks`` on ``engine``; the driver alone records each item (``stage``, item key) in the ledger.

    Items already done with the same inputs are skipped (whatever engine made them; ``skip_done=False``
    when the stage chose its items itself); a task whose items are all done is not sent. An item the
    task's answer does not name is recorded as failed."""
    from tqdm.auto import tqdm

    result = BatchResult()
    todo = []
    for task in tasks:
        pending = []
        for it in task.items:
            done = skip_done and ledger.is_done(stage, it.key, it.inputs)
            (result.skipped.append(it.key) if done else pending.append(it))
        if pending:
            task.items = pending
            todo.append(task)
    for task in todo:
        for it in task.items:
            ledger.record(stage, it.key, "running", system_id=it.system_id, inputs=it.inputs)
    n_items = sum(len(t.items) for t in todo)
    bar = tqdm(total=n_items, desc=desc or stage, unit="item", disable=not progress or n_items < 2, leave=False)
    for task, answer in engine.run(todo):
        for it in task.items:
            got = (
                answer.get(it.key, f"task {task.name} did not make this item")
                if isinstance(answer, dict)
                else item_error(answer)
            )
            ledger.settle(stage, it, got, result)
        bar.update(len(task.items))
    bar.close()
    return result


def run_items(
    ledger: RunLedger,
    stage: str,
    items: list[LedgerItem],
    fn: Callable[[LedgerItem], Any],
    engine: Engine | None,
    *,
    resources: Resources | None = None,
    desc: str | None = None,
    progress: bool = True,
) -> BatchResult:
    """``ledger.run_batch(stage, items, fn)`` on an engine: one task per item, ``fn(item)`` in the worker.

    The local engine (or None) is ``run_batch`` itself, its threads pinned and recorded as a task's. On Ray
    ``fn`` may be a closure over large read-only state (a reference kernel, embedding frames): it is stored
    once in the object store and shared by the tasks (NumPy arrays without a copy); it must not capture the
    ledger, and what it writes it writes atomically (the driver records)."""
    engine = engine or LocalEngine()
    if engine.name == "local":
        threads = engine.threads
        with pin_threads(threads):
            return ledger.run_batch(
                stage, items, lambda it: _with_threads(fn(it) or ItemOutcome(), threads), desc=desc, progress=progress
            )
    ref = engine.put(fn)
    tasks = [Task(f"{stage} {it.key}", call_each, [it], (ref,), resources or engine.cpu_resources()) for it in items]
    return run_tasks(ledger, stage, tasks, engine, desc=desc, progress=progress)


def call_each(items: list[LedgerItem], fn: Callable[[LedgerItem], Any]) -> Answer:
    """The task of :func:`run_items`: ``fn`` on each item, each answered on its own."""
    return {it.key: attempt(fn, it) for it in items}


def light_items(items: list[LedgerItem]) -> list[LedgerItem]:
    """The items without their payloads (what a task sends; its arguments carry what the worker needs)."""
    return [LedgerItem(it.key, it.inputs, it.system_id) for it in items]


def chunks(seq: list[Any], n_parts: int, *, at_most: int | None = None) -> list[list[Any]]:
    """``seq`` cut into about ``n_parts`` runs of consecutive elements (each at most ``at_most`` long)."""
    if not seq:
        return []
    size = -(-len(seq) // max(1, n_parts))
    if at_most:
        size = min(size, at_most)
    return [seq[i : i + size] for i in range(0, len(seq), max(1, size))]
