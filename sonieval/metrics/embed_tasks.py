"""The score stage's embedding pass as engine tasks (one GPU each when the cluster has GPUs).

``score_sets`` embeds every reference, sonification and original clip with each metric embedding,
through the content-addressed cache (:class:`~sonieval.metrics.embeddings.EmbeddingCache`, written
atomically). On an engine other than the local one, :func:`fill_embedding_cache` first cuts the files
that are not cached yet into tasks; each worker loads the embedding model once and writes the cache
entries, and the driver's own pass then only reads the cache. Files that fail are left to the driver's
pass, which records them as it always did (one line each). The local engine skips this step: its pass
is the one it always made.
"""

from __future__ import annotations

import os
from typing import Any

from sonieval.engines import Answer, Engine, Task, chunks, run_tasks, worker_memo
from sonieval.ledger import ItemOutcome, LedgerItem, RunLedger

STAGE = "score-embed-cache"
FILES_PER_TASK = 64  # a few seconds of a GPU per task, so a lost worker costs little


def fill_embedding_cache(
    ledger: RunLedger,
    engine: Engine | None,
    spec: str,
    paths: list[str],
    cache_dir: str | os.PathLike,
    device: str = "auto",
    *,
    progress: bool = False,
) -> int:
    """Cache the embedding ``spec`` of every file of ``paths`` not cached yet, as tasks on ``engine``;
    returns how many files were sent. The ledger gets one row per task (its files' count and errors)."""
    if engine is None or engine.name == "local":
        return 0
    from sonieval.files import sha256_file
    from sonieval.metrics.embeddings import EmbeddingCache, load_embedding

    backend = load_embedding(spec, device="cpu")  # the cache key only: the workers load their own
    cache = EmbeddingCache(cache_dir)
    todo = []
    for p in dict.fromkeys(os.fspath(p) for p in paths):
        try:
            if not cache.path(backend, sha256_file(p)).is_file():
                todo.append(p)
        except OSError:
            continue  # the driver's pass names it
    parts = chunks(todo, engine.slots * 4, at_most=FILES_PER_TASK)
    ref = engine.put((spec, str(cache_dir), device))
    tasks = [
        Task(
            f"embed {spec} {i}",
            embed_into_cache,
            [LedgerItem(f"{backend.cache_key()}|{part[0]}", {"files": part})],
            (ref,),
            engine.device_resources(),
        )
        for i, part in enumerate(parts)
    ]
    run_tasks(ledger, STAGE, tasks, engine, desc=f"embed ({spec}) on {engine.name}", progress=progress, skip_done=False)
    return len(todo)


def embed_into_cache(items: list[LedgerItem], job: tuple[str, str, str]) -> Answer:
    """The task: embed the item's files into the cache (the backend loaded once per worker)."""
    from sonieval.engines import resolve_device
    from sonieval.metrics.embeddings import EmbeddingCache, embed_files, load_embedding

    spec, cache_dir, device = job
    device = resolve_device(device)
    backend = worker_memo(("embedding", spec, device), lambda: load_embedding(spec, device=device))
    answer: dict[str, Any] = {}
    for it in items:
        got = embed_files(backend, it.inputs["files"], cache=EmbeddingCache(cache_dir), progress=False)
        answer[it.key] = ItemOutcome(extra={"files": len(it.inputs["files"]), "errors": len(got.errors)})
    return answer
