"""The study database's schema version, and the migrations that bring an older database up to it.

A database records each version applied to it in ``schema_version``. Opening one
(:func:`ensure_schema`): a new database gets every table at :data:`SCHEMA_VERSION`; an older one is
migrated in place, one version at a time, each in one transaction that first claims the new version's
row (so that of several processes opening it at once, one migrates and the others find it done); a
newer one (made by a later sonieval), or one no migration leads from, is refused.

- **2** (issue 23): the ratings table no longer holds ``attribute`` to visual and audio (CHECK
  ``ck_ratings_attribute``): a study asks the attributes of the rating-attribute catalogue and its
  protocol (:mod:`sonieval.rating_attributes`), and every submission is checked against the rater's
  plan. PostgreSQL drops the constraint; SQLite cannot drop one, so the table is rebuilt the way
  SQLite's documentation describes for changes ALTER TABLE cannot make (renamed, created anew,
  rows copied, the old one dropped; no other table refers to it). Every other constraint stays.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from sonieval.study.store.connection import redact_url
from sonieval.study.store.records import StudyError
from sonieval.study.store.schema import SCHEMA_VERSION, dialect_insert, metadata, ratings, schema_version


def _drop_attribute_check(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ALTER TABLE ratings DROP CONSTRAINT IF EXISTS ck_ratings_attribute")
        return
    cols = ", ".join(c.name for c in ratings.columns)
    conn.exec_driver_sql("ALTER TABLE ratings RENAME TO ratings_v1")
    ratings.create(conn)
    conn.exec_driver_sql(f"INSERT INTO ratings ({cols}) SELECT {cols} FROM ratings_v1")
    conn.exec_driver_sql("DROP TABLE ratings_v1")


# version -> the step that brings a database of the version before it to it
MIGRATIONS: dict[int, Callable[[Connection], None]] = {2: _drop_attribute_check}


def ensure_schema(engine: Engine, url: str, clock: Callable[[], float]) -> None:
    """Create the missing tables, then record, migrate or refuse the database's version (see the module)."""
    metadata.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        found = conn.execute(select(func.max(schema_version.c.version))).scalar()
        if found is None:
            try:
                _claim(conn, SCHEMA_VERSION, clock)
            except IntegrityError:
                pass
            return
    if found == SCHEMA_VERSION:
        return
    if found > SCHEMA_VERSION or any(v not in MIGRATIONS for v in range(found + 1, SCHEMA_VERSION + 1)):
        raise StudyError(
            f"storage {redact_url(url)}: schema version {found}, this sonieval reads version {SCHEMA_VERSION}",
            hint="use the sonieval version that created the study, or export and recreate it",
        )
    for version in range(found + 1, SCHEMA_VERSION + 1):
        with engine.begin() as conn:
            # The claim comes first: on SQLite the INSERT opens the write transaction (the driver
            # begins one only before a data change), so the DDL after it runs inside it.
            if _claim(conn, version, clock):
                MIGRATIONS[version](conn)


def _claim(conn: Connection, version: int, clock: Callable[[], float]) -> bool:
    """Record ``version``; False when another process recorded it first."""
    res = conn.execute(
        dialect_insert(conn.dialect.name, schema_version)
        .values(version=version, applied_at=clock())
        .on_conflict_do_nothing()
        .returning(schema_version.c.version)
    )
    return bool(res.fetchall())


__all__ = ["MIGRATIONS", "ensure_schema"]
