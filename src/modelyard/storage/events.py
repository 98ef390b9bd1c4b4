"""Budget events (alerts and emergency stops), recorded once per budget, scope, period, kind and fraction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select

from modelyard.storage.db import Database
from modelyard.storage.tables import budget_events

__all__ = ["BudgetEvent", "BudgetEventStore"]

_T = budget_events


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    ts: datetime
    budget: str
    scope_key: str
    period_start: datetime
    kind: Literal["alert", "stop"]
    fraction: float
    message: str
    org_id: str | None = None


class BudgetEventStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def record(self, event: BudgetEvent) -> bool:
        """Store the event; False when the same one (budget, scope, period, kind, fraction) is already there."""
        query = self.db.insert_or_ignore(_T).values(
            ts=event.ts,
            org_id=event.org_id,
            budget=event.budget,
            scope_key=event.scope_key,
            period_start=event.period_start,
            kind=event.kind,
            fraction=event.fraction,
            message=event.message,
        )
        async with self.db.begin_write() as conn:
            result = await conn.execute(query)
        return bool(result.rowcount)

    async def list(
        self, *, org_id: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[BudgetEvent]:
        """Newest first."""
        query = select(_T).order_by(_T.c.ts.desc(), _T.c.id.desc()).limit(limit)
        if org_id is not None:
            query = query.where(_T.c.org_id == org_id)
        if since is not None:
            query = query.where(_T.c.ts >= since)
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(query)
            return [
                BudgetEvent(
                    ts=r.ts,
                    budget=r.budget,
                    scope_key=r.scope_key,
                    period_start=r.period_start,
                    kind=r.kind,
                    fraction=r.fraction,
                    message=r.message,
                    org_id=r.org_id,
                )
                for r in rows
            ]
