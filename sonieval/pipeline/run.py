"""`sonieval run PROTOCOL`: every stage in order, each reading the previous stages' tables.

Stages are resumable (the run manifest skips finished items), so rerunning after an
interruption or after adding a variant to the protocol only does the missing work.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from typing import Callable

from sonieval.errors import SonievalError
from sonieval.pipeline.manifest import RunManifest
from sonieval.protocol import Protocol


@dataclass(frozen=True)
class Stage:
    name: str
    target: str  # "module:function", called as function(proto, manifest)
    summary: str

    def load(self) -> Callable:
        module, func = self.target.split(":")
        return getattr(importlib.import_module(module), func)


STAGES = [
    Stage("clips", "sonieval.data.esc50:prepare_clips", "read and check every clip; splits and listening set"),
    Stage("prepare", "sonieval.pipeline.prepare:run_prepare", "encoder embeddings and codec latents, cached"),
    Stage("train", "sonieval.pipeline.train:run_train", "gate sweep: variants x learning rates x epochs"),
    Stage("sonify", "sonieval.pipeline.sonify:run_sonify", "decode every system's listening-set clips, post-process"),
    Stage("score", "sonieval.metrics.leaderboard:run_score", "KAD/FAD leaderboard and per-item scores"),
]
STAGE_NAMES = [s.name for s in STAGES]


def open_manifest(proto: Protocol) -> RunManifest:
    return RunManifest(proto.results_path / "manifest.sqlite")


def select_stages(only: list[str] | None = None, until: str | None = None) -> list[Stage]:
    for name in (only or []) + ([until] if until else []):
        if name not in STAGE_NAMES:
            raise SonievalError(f"unknown stage {name!r}; stages are: {', '.join(STAGE_NAMES)}")
    stages = [s for s in STAGES if not only or s.name in only]
    if until:
        stages = stages[: [s.name for s in stages].index(until) + 1] if until in [s.name for s in stages] else stages
    return stages


def run_protocol(
    proto: Protocol,
    *,
    only: list[str] | None = None,
    until: str | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, float]:
    """Run the selected stages in order; returns seconds per stage."""
    timings: dict[str, float] = {}
    with open_manifest(proto) as manifest:
        for stage in select_stages(only, until):
            echo(f"[{stage.name}] {stage.summary}")
            t0 = time.perf_counter()
            stage.load()(proto, manifest)
            timings[stage.name] = time.perf_counter() - t0
            failed = manifest.failures(stage.name)
            note = f", {len(failed)} item(s) failed (see manifest)" if len(failed) else ""
            echo(f"[{stage.name}] done in {timings[stage.name]:.1f} s{note}")
    return timings
