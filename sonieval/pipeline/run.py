"""`sonieval run PROTOCOL`: every stage in order, each reading the previous stages' tables.

Stages are resumable (the run ledger skips finished items), so rerunning after an
interruption or after adding a variant to the protocol only does the missing work. An item
that fails (a clip that cannot be read, a run that cannot train) does not stop the others; the
items that failed in this run are returned (:class:`RunResult`) and written to
``<results>/run_failures.csv``, and ``sonieval run`` lists them and exits 1.

This module runs every stage, so it stands a floor above them (the stages of pipeline, metrics' score and
the gallery never import it; tests/foundation/test_foundation_layers.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sonieval.data.esc50 import prepare_clips
from sonieval.errors import SonievalError
from sonieval.gallery.build import run_gallery
from sonieval.ledger import RunLedger, open_ledger
from sonieval.metrics.leaderboard import run_score
from sonieval.pipeline.prepare import run_prepare
from sonieval.pipeline.sonify import run_sonify
from sonieval.pipeline.train import run_train
from sonieval.protocol import Protocol

FAILURES_SHOWN = 10


@dataclass(frozen=True)
class Stage:
    """One stage of a run: ``run(proto, ledger, *, engine)`` (every stage takes the engine; None: local)."""

    name: str
    run: Callable[..., Any]
    summary: str


STAGES = [
    Stage("clips", prepare_clips, "read and check every clip; splits and listening set"),
    Stage("prepare", run_prepare, "encoder embeddings and codec latents, cached"),
    Stage("train", run_train, "gate sweep: variants x learning rates x epochs"),
    Stage("sonify", run_sonify, "decode every system's listening-set clips, post-process"),
    Stage("score", run_score, "KAD/FAD leaderboard and per-item scores"),
    Stage("gallery", run_gallery, "listening gallery: loudness-aligned copies, thumbnails, the page"),
]
STAGE_NAMES = [s.name for s in STAGES]


def select_stages(only: list[str] | None = None, until: str | None = None) -> list[Stage]:
    for name in (only or []) + ([until] if until else []):
        if name not in STAGE_NAMES:
            raise SonievalError(f"unknown stage {name!r}; stages are: {', '.join(STAGE_NAMES)}")
    stages = [s for s in STAGES if not only or s.name in only]
    if until:
        stages = stages[: [s.name for s in stages].index(until) + 1] if until in [s.name for s in stages] else stages
    return stages


@dataclass
class RunResult:
    """What ``run_protocol`` did: seconds per stage, and the items that failed in this run."""

    timings: dict[str, float] = field(default_factory=dict)
    failures: pd.DataFrame = field(default_factory=pd.DataFrame)  # stage, key, system_id, error
    failures_path: Path | None = None  # the CSV listing all of them (None when nothing failed)

    def failure_lines(self, limit: int | None = None) -> list[str]:
        """The first ``limit`` failures (default FAILURES_SHOWN), one line each (stage, item key, error),
        then where the rest are."""
        limit = FAILURES_SHOWN if limit is None else limit
        lines = [f"  [{r.stage}] {r.key}: {r.error}" for r in self.failures.head(limit).itertuples()]
        if len(self.failures) > limit:
            lines.append(f"  ... and {len(self.failures) - limit} more, all listed in {self.failures_path}")
        elif len(self.failures):
            lines.append(f"  (also listed in {self.failures_path})")
        return lines


def stage_failures(ledger: RunLedger, stage: str, since: float) -> pd.DataFrame:
    """Items of ``stage`` (and its sub-stages, e.g. score-items) that failed at or after ``since``.

    Older failures of items no longer planned stay in the ledger; they are not this run's."""
    df = ledger.failures()
    mine = (df["stage"] == stage) | df["stage"].str.startswith(f"{stage}-")
    df = df[mine & (df["finished_at"].fillna(0) >= since)]
    return df[["stage", "key", "system_id", "error"]].reset_index(drop=True)


def write_failures(proto: Protocol, failures: pd.DataFrame) -> Path | None:
    """``<results>/run_failures.csv`` with this run's failures; removed after a run without any."""
    from sonieval.tables import write_table

    path = proto.layout.run_failures
    if failures.empty:
        path.unlink(missing_ok=True)
        return None
    return write_table(failures, path)


def run_protocol(
    proto: Protocol,
    *,
    only: list[str] | None = None,
    until: str | None = None,
    echo: Callable[[str], None] = print,
    engine: Any = None,
) -> RunResult:
    """Run the selected stages in order; one failed item does not stop the others (see the result).

    ``engine`` (sonieval.engines; default local) runs the stages' tasks: prepare, train, sonify, score.
    This process is held to the engine's thread count meanwhile, so the driver's own work (splits, statistics,
    the bootstrap) is done as under any engine of the same ``threads`` (byte-identical runs: see engines)."""
    import contextlib

    result = RunResult()
    parts = []
    hold = engine.hold_threads() if engine is not None else contextlib.nullcontext()
    with hold, open_ledger(proto.results_path) as ledger:
        for stage in select_stages(only, until):
            echo(f"[{stage.name}] {stage.summary}")
            t0 = time.perf_counter()
            since = time.time()
            out = stage.run(proto, ledger, engine=engine)
            result.timings[stage.name] = time.perf_counter() - t0
            failed = stage_failures(ledger, stage.name, since)
            parts.append(failed)
            for note in getattr(out, "notes", None) or []:
                echo(f"[{stage.name}] warning: {note}")
            note = f", {len(failed)} item(s) failed (listed at the end)" if len(failed) else ""
            echo(f"[{stage.name}] done in {result.timings[stage.name]:.1f} s{note}")
    result.failures = pd.concat(parts, ignore_index=True) if parts else result.failures
    result.failures_path = write_failures(proto, result.failures)
    return result
