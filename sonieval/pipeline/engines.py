"""Deprecated import path: the executors moved to :mod:`sonieval.engines` (issue 23), below every stage.

``from sonieval.pipeline.engines import make_engine`` keeps working (the same objects); new code imports
``sonieval.engines``. This shim will go in a later release.
"""

from __future__ import annotations

from sonieval import engines as _engines
from sonieval.engines import (  # noqa: F401 - re-exported for old imports
    DEFAULT_MAX_RETRIES,
    ENGINES,
    MEMO_SIZE,
    Answer,
    Engine,
    LocalEngine,
    RayEngine,
    Resources,
    Task,
    attempt,
    call_each,
    chunks,
    item_error,
    light_items,
    make_engine,
    pin_threads,
    resolve_device,
    run_items,
    run_tasks,
    worker_memo,
)

__all__ = list(_engines.__all__)
