"""Stored Responses API answers (``store: true``), for ``previous_response_id``, ``GET`` and ``DELETE``.

Each row holds one response as the client saw it and the conversation up to it (the input items
of every turn and the output items), scoped to the organisation that made it; a row expires after
``responses.retention_s``.  Another organisation's id is not found, as is an expired one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from modelyard.storage.db import Database
from modelyard.storage.tables import stored_responses

__all__ = ["ResponseStore"]

_T = stored_responses


class ResponseStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def put(
        self,
        response_id: str,
        org_id: str | None,
        conversation: list[Any],
        response: dict[str, Any],
        retention_s: float,
    ) -> None:
        now = datetime.now(UTC)
        async with self.db.begin_write() as conn:
            await conn.execute(delete(_T).where(_T.c.expires_at < now))
            await conn.execute(
                _T.insert().values(
                    id=response_id,
                    org_id=org_id or "",
                    created_at=now,
                    expires_at=now + timedelta(seconds=retention_s),
                    conversation=conversation,
                    response=response,
                )
            )

    async def get(self, response_id: str, org_id: str | None) -> tuple[list[Any], dict[str, Any]] | None:
        now = datetime.now(UTC)
        query = select(_T.c.conversation, _T.c.response).where(
            _T.c.id == response_id, _T.c.org_id == (org_id or ""), _T.c.expires_at >= now
        )
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return (list(row.conversation), dict(row.response)) if row is not None else None

    async def delete(self, response_id: str, org_id: str | None) -> bool:
        async with self.db.begin_write() as conn:
            result = await conn.execute(delete(_T).where(_T.c.id == response_id, _T.c.org_id == (org_id or "")))
        return bool(result.rowcount)
