"""The run ledger: the spine every stage writes to.

One SQLite file per results folder (``<results_dir>/ledger.sqlite``, :func:`open_ledger`; a folder
made before the ledger had one name keeps ``manifest.sqlite``, which is opened as its ledger) with one
row per artifact (embedding/latent cache entry, checkpoint, sonification, score table, export):

    stage, key, system_id, inputs (JSON), inputs_hash, path, sha256, status, error,
    started_at, finished_at, extra (JSON)

``(stage, key)`` is unique. Status is ``running`` while an item is being made, then ``done`` or
``failed``. A rerun skips items that are ``done`` with the same inputs and whose file still
exists; ``failed`` and ``running`` items (a run killed midway) are made again. Files are
written atomically by the stages (sonieval.files.atomic_path), so a killed run leaves no
half-written file under a final name.

Each item's error is recorded and the batch goes on with the others (:meth:`run_batch`).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sonieval.errors import SonievalError
from sonieval.files import sha256_file
from sonieval.results_layout import ledger_path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS artifacts (
    stage TEXT NOT NULL,
    key TEXT NOT NULL,
    system_id TEXT,
    inputs TEXT,
    inputs_hash TEXT,
    path TEXT,
    sha256 TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    error TEXT,
    started_at REAL,
    finished_at REAL,
    extra TEXT,
    PRIMARY KEY (stage, key)
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
"""
SCHEMA_VERSION = "1"


def inputs_hash(inputs: dict[str, Any] | None) -> str:
    text = json.dumps(inputs or {}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class LedgerItem:
    """One unit of work in a batch."""

    key: str
    inputs: dict[str, Any] = field(default_factory=dict)
    system_id: str | None = None
    payload: Any = None  # anything the stage's function needs; not stored


@dataclass
class ItemOutcome:
    """What a stage function returns for one item."""

    path: str | os.PathLike | None = None
    extra: dict[str, Any] | None = None
    sha256: str | None = None


@dataclass
class BatchResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self, what: str = "items") -> str:
        return f"{len(self.done)} {what} made, {len(self.skipped)} already done, {len(self.failed)} failed"


class RunLedger:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> RunLedger:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ rows

    def get(self, stage: str, key: str) -> dict[str, Any] | None:
        cur = self._conn.execute("SELECT * FROM artifacts WHERE stage = ? AND key = ?", (stage, key))
        row = cur.fetchone()
        if row is None:
            return None
        cols = [d[0] for d in cur.description]
        out = dict(zip(cols, row))
        out["inputs"] = json.loads(out["inputs"]) if out["inputs"] else {}
        out["extra"] = json.loads(out["extra"]) if out["extra"] else {}
        return out

    def is_done(self, stage: str, key: str, inputs: dict[str, Any] | None = None, *, verify_hash: bool = False) -> bool:
        row = self.get(stage, key)
        if row is None or row["status"] != "done":
            return False
        if inputs is not None and row["inputs_hash"] != inputs_hash(inputs):
            return False
        if row["path"]:
            p = Path(row["path"])
            if not p.exists():
                return False
            if verify_hash and row["sha256"] and sha256_file(p) != row["sha256"]:
                return False
        return True

    def record(
        self,
        stage: str,
        key: str,
        status: str,
        *,
        system_id: str | None = None,
        inputs: dict[str, Any] | None = None,
        path: str | os.PathLike | None = None,
        sha256: str | None = None,
        error: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        now = time.time()
        # Absolute, so a rerun from another working directory still finds the file.
        path_s = os.fspath(Path(path).resolve()) if path is not None else None
        if status == "done" and path_s and sha256 is None and Path(path_s).is_file():
            sha256 = sha256_file(path_s)
        self._conn.execute(
            """INSERT INTO artifacts (stage, key, system_id, inputs, inputs_hash, path, sha256, status, error,
                                      started_at, finished_at, extra)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (stage, key) DO UPDATE SET
                 system_id = excluded.system_id, inputs = excluded.inputs, inputs_hash = excluded.inputs_hash,
                 path = excluded.path, sha256 = excluded.sha256, status = excluded.status, error = excluded.error,
                 started_at = CASE WHEN excluded.status = 'running' THEN excluded.started_at ELSE artifacts.started_at END,
                 finished_at = excluded.finished_at, extra = excluded.extra""",
            (
                stage,
                key,
                system_id,
                json.dumps(inputs or {}, sort_keys=True, default=str),
                inputs_hash(inputs),
                path_s,
                sha256,
                status,
                error,
                now,
                None if status == "running" else now,
                json.dumps(extra, default=str) if extra else None,
            ),
        )

    def table(self, stage: str | None = None) -> pd.DataFrame:
        query = "SELECT * FROM artifacts" + (" WHERE stage = ?" if stage else "") + " ORDER BY stage, key"
        return pd.read_sql_query(query, self._conn, params=(stage,) if stage else ())

    def failures(self, stage: str | None = None) -> pd.DataFrame:
        df = self.table(stage)
        return df[df["status"] == "failed"]

    # ------------------------------------------------------------------ batches

    def run_batch(
        self,
        stage: str,
        items: Iterable[LedgerItem],
        fn: Callable[[LedgerItem], ItemOutcome | None],
        *,
        desc: str | None = None,
        progress: bool = True,
    ) -> BatchResult:
        """Run ``fn`` on each item not yet done; record each outcome; never stop on one item's error.

        ``fn`` raises :class:`SonievalError` for bad input (its one-line message is recorded);
        any other exception is recorded as ``<Type>: <message>`` as well, so a bug in one clip
        does not lose the rest of the batch.
        """
        from tqdm.auto import tqdm

        items = list(items)
        result = BatchResult()
        bar = tqdm(items, desc=desc or stage, unit="item", disable=not progress or len(items) < 2, leave=False)
        for item in bar:
            if self.is_done(stage, item.key, item.inputs):
                result.skipped.append(item.key)
                continue
            self.record(stage, item.key, "running", system_id=item.system_id, inputs=item.inputs)
            try:
                outcome: ItemOutcome | str = fn(item) or ItemOutcome()
            except KeyboardInterrupt:
                raise
            except SonievalError as exc:
                outcome = str(exc)
            except Exception as exc:  # noqa: BLE001 - recorded, batch continues
                outcome = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.settle(stage, item, outcome, result)
        return result

    def settle(self, stage: str, item: LedgerItem, outcome: ItemOutcome | str, result: BatchResult) -> None:
        """Record one item's outcome (an :class:`ItemOutcome`, or its one-line error) and add it to ``result``."""
        if isinstance(outcome, str):
            self.record(stage, item.key, "failed", system_id=item.system_id, inputs=item.inputs, error=outcome)
            result.failed[item.key] = outcome
            return
        self.record(
            stage,
            item.key,
            "done",
            system_id=item.system_id,
            inputs=item.inputs,
            path=outcome.path,
            sha256=outcome.sha256,
            extra=outcome.extra,
        )
        result.done.append(item.key)


def open_ledger(folder: str | os.PathLike) -> RunLedger:
    """The run ledger of a results folder (or of a folder-mode ``score`` or ``study`` folder)."""
    return RunLedger(ledger_path(folder))
