"""Comparison runs as stored: one row per run, scoped to its organisation ("" without one).

A run is written when it starts (``running``) and again when it ends, with its result; a row
left ``running`` by a process that died is reported as ``failed`` when the next gateway starts
(:meth:`ComparisonStore.fail_unfinished`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import desc, select, update

from modelyard.storage.db import Database
from modelyard.storage.tables import comparisons

__all__ = ["ComparisonStore"]

_T = comparisons
_LIST = (_T.c.id, _T.c.name, _T.c.status, _T.c.created_at, _T.c.finished_at, _T.c.created_by, _T.c.spent_usd, _T.c.spec)


class ComparisonStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def create(
        self, run_id: str, org_id: str | None, name: str | None, created_by: str, spec: dict[str, Any]
    ) -> None:
        async with self.db.begin_write() as conn:
            await conn.execute(
                _T.insert().values(
                    id=run_id,
                    org_id=org_id or "",
                    name=name,
                    status="running",
                    created_at=datetime.now(UTC),
                    created_by=created_by,
                    spent_usd=0.0,
                    spec=spec,
                )
            )

    async def finish(self, run_id: str, status: str, result: dict[str, Any] | None, spent_usd: float) -> None:
        async with self.db.begin_write() as conn:
            await conn.execute(
                update(_T)
                .where(_T.c.id == run_id)
                .values(status=status, result=result, spent_usd=spent_usd, finished_at=datetime.now(UTC))
            )

    async def fail_unfinished(self) -> int:
        """Runs left ``running`` by a gateway that stopped: ``failed`` (their calls are recorded)."""
        async with self.db.begin_write() as conn:
            res = await conn.execute(
                update(_T).where(_T.c.status == "running").values(status="failed", finished_at=datetime.now(UTC))
            )
        return int(res.rowcount or 0)

    async def get(self, run_id: str, org_id: str | None, *, every_org: bool = False) -> dict[str, Any] | None:
        query = select(_T).where(_T.c.id == run_id)
        if not every_org:
            query = query.where(_T.c.org_id == (org_id or ""))
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        return dict(row) if row is not None else None

    async def list(self, org_id: str | None, *, every_org: bool = False, limit: int = 50) -> list[dict[str, Any]]:
        query = select(*_LIST, _T.c.org_id).order_by(desc(_T.c.created_at)).limit(limit)
        if not every_org:
            query = query.where(_T.c.org_id == (org_id or ""))
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [dict(r) for r in rows]
