"""Stored Responses on SQLite and PostgreSQL: scoped to an organisation, expiring, deletable."""

from __future__ import annotations

import asyncio

from modelyard.storage import Database
from modelyard.storage.responses import ResponseStore


async def test_scoped_expiring_and_deletable(db: Database) -> None:
    store = ResponseStore(db)
    await store.put("resp_a", "org_a", [{"role": "user", "content": "hi"}], {"id": "resp_a"}, retention_s=60)
    await store.put("resp_anon", None, [], {"id": "resp_anon"}, retention_s=60)
    assert await store.get("resp_a", "org_a") == ([{"role": "user", "content": "hi"}], {"id": "resp_a"})
    assert await store.get("resp_a", "org_b") is None  # another organisation's id is not found
    assert await store.get("resp_a", None) is None
    assert (await store.get("resp_anon", None)) is not None
    assert not await store.delete("resp_a", "org_b")
    assert await store.delete("resp_a", "org_a") and await store.get("resp_a", "org_a") is None
    await store.put("resp_short", "org_a", [], {}, retention_s=0.05)
    await asyncio.sleep(0.1)
    assert await store.get("resp_short", "org_a") is None  # expired
