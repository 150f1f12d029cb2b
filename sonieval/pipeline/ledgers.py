"""Shard ledgers: ``--shard k/N`` runs that share a results folder without sharing an SQLite file.

A shard (one job of a SLURM array, say) records its items in its own ledger,
``<results>/ledgers/<stage>-shard-<k>-of-<N>.sqlite``, written by that shard alone: no two machines
ever write one SQLite file (its file locks are unsafe on network file systems). The next unsharded
run of the stage (``sonieval sonify PROTOCOL``, or ``sonieval run PROTOCOL``) merges every shard
ledger into the run's ledger (``ledger.sqlite``), skips what the shards made and writes the
stage's table. A shard starts from the run ledger's finished items of its stage, so it does not redo
work finished before the array started.

Merging is idempotent: a row replaces the run ledger's row only when it finished later (or the run
ledger's row is still ``running``), so merging twice, or merging a shard that is still running,
never loses a newer result; rows still ``running`` in a shard are not merged.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sonieval.ledger import RunLedger
from sonieval.results_layout import ResultsLayout

_COLUMNS = (
    "stage",
    "key",
    "system_id",
    "inputs",
    "inputs_hash",
    "path",
    "sha256",
    "status",
    "error",
    "started_at",
    "finished_at",
    "extra",
)


def shard_ledger_path(results: str | os.PathLike, stage: str, shard: tuple[int, int]) -> Path:
    return ResultsLayout(Path(results)).shard_ledger(stage, shard)


def shard_ledgers(results: str | os.PathLike, stage: str) -> list[Path]:
    return sorted(ResultsLayout(Path(results)).shard_ledgers.glob(f"{stage}-shard-*-of-*.sqlite"))


def _rows(path: Path, stage: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM artifacts WHERE stage = ? AND status != 'running'", (stage,)
        ).fetchall()
    finally:
        conn.close()


def merge_rows(dst: RunLedger, src: Path, stage: str) -> int:
    """Copy ``stage``'s finished rows of ledger ``src`` into ``dst`` where they are newer; returns how many."""
    rows = _rows(src, stage)
    placeholders = ", ".join("?" for _ in _COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[2:])
    before = dst._conn.total_changes  # noqa: SLF001 - one writer, the same module family
    dst._conn.executemany(  # noqa: SLF001
        f"""INSERT INTO artifacts ({", ".join(_COLUMNS)}) VALUES ({placeholders})
            ON CONFLICT (stage, key) DO UPDATE SET {updates}
            WHERE artifacts.status = 'running' OR COALESCE(excluded.finished_at, 0) > COALESCE(artifacts.finished_at, 0)""",
        rows,
    )
    return dst._conn.total_changes - before  # noqa: SLF001


def merge_shard_ledgers(ledger: RunLedger, results: str | os.PathLike, stage: str) -> int:
    """Every shard ledger of ``stage`` into the run ledger (the driver's); returns the rows taken."""
    return sum(merge_rows(ledger, path, stage) for path in shard_ledgers(results, stage))


def open_shard_ledger(results: str | os.PathLike, stage: str, shard: tuple[int, int]) -> RunLedger:
    """The shard's own ledger, started from the run ledger's finished items of ``stage`` (read only)."""
    ledger = RunLedger(shard_ledger_path(results, stage, shard))
    main = ResultsLayout(Path(results)).ledger
    if main.exists():
        merge_rows(ledger, main, stage)
    return ledger
