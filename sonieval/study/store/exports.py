"""The study's tables as frames, for the export (:mod:`sonieval.study.export`) and the admin view."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Table, select

from sonieval.study.store.core import StoreCore


class TableReads(StoreCore):
    """Reading one study's rows of a table."""

    def frame(self, table: Table, study_id: str) -> pd.DataFrame:
        with self.engine.connect() as conn:
            rows = conn.execute(select(table).where(table.c.study_id == study_id)).mappings().all()
        return pd.DataFrame([dict(r) for r in rows], columns=[c.name for c in table.columns])


__all__ = ["TableReads"]
