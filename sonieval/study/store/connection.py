"""Opening a study database: the URL (SQLite file or PostgreSQL), the engine and its settings.

SQLite file by default (embedded, zero setup): WAL journal so readers never block the writer,
a 30 s busy timeout so concurrent submissions wait instead of failing, ``synchronous=FULL``
so a committed mark survives a power cut. PostgreSQL by URL (``postgresql+psycopg://...``;
a plain ``postgresql://`` URL is given the psycopg 3 driver) for deployments with many raters.
A SQLite database (and its -wal and -shm files) is readable by its owner only (0600; an older one
is made so when opened).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

from sonieval.study.store.records import StudyError


def normalise_url(url: str) -> str:
    """Give plain ``postgresql://`` URLs the psycopg 3 driver (psycopg2 is not installed)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def redact_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<storage URL>"


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the pragmas/pool settings the study needs."""
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StudyError(
            f"storage URL {url!r} is not a database URL",
            hint="use sqlite:///path/study.sqlite or postgresql+psycopg://user@host/db",
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        db = parsed.database
        if not db or db == ":memory:":
            raise StudyError(
                "storage: an in-memory SQLite database would lose every mark", hint="use sqlite:///path/study.sqlite"
            )
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        owner_only(Path(db))
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=25, max_overflow=10
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if backend == "postgresql":
        try:
            return create_engine(url, pool_size=25, max_overflow=10, pool_pre_ping=True)
        except ModuleNotFoundError as exc:
            raise StudyError(
                f"storage: PostgreSQL driver missing ({exc.name})", hint="pip install 'psycopg[binary]'"
            ) from None
    raise StudyError(
        f"storage URL backend {backend!r} is not supported", hint="use sqlite:/// or postgresql+psycopg://"
    )


def owner_only(path: Path) -> None:
    """Create ``path`` readable by its owner only (0600), or make an existing one so: the study's
    database holds platform ids and token hashes. SQLite gives its -wal and -shm files the mode of
    the database file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        for extra in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if extra.exists() and extra.stat().st_mode & 0o077:
                os.chmod(extra, 0o600)
    except OSError:  # another user's file (a shared folder): leave it as it is, SQLite says if it cannot open it
        pass


__all__ = ["normalise_url", "redact_url", "make_engine", "owner_only"]
