"""Config revisions and the audit log on SQLite and PostgreSQL: compare-and-set, no lost update."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from modelyard.storage import Database
from modelyard.storage.revisions import AuditEntry, AuditStore, RevisionStore, StaleRevisionError


async def _commit(store: RevisionStore, doc: dict[str, object], base: int | None, source: str = "api") -> int:
    rev = await store.commit(doc, content_hash=str(hash(str(doc))), source=source, actor="t", message="m", base=base)
    return rev.id


async def test_first_revision_then_chain(db: Database) -> None:
    store = RevisionStore(db)
    assert await store.active() is None
    r1 = await _commit(store, {"a": 1}, None, "file")
    r2 = await _commit(store, {"a": 2}, r1)
    active = await store.active()
    assert active is not None and active.id == r2 and active.parent_id == r1 and active.document == {"a": 2}
    assert [r.id for r in await store.list()] == [r2, r1]
    last_file = await store.last("file")
    assert last_file is not None and last_file.id == r1
    assert await store.changed_since(r1, ("api",))
    assert not await store.changed_since(r2, ("api",))


async def test_stale_base_is_refused_and_not_stored(db: Database) -> None:
    store = RevisionStore(db)
    r1 = await _commit(store, {"a": 1}, None)
    r2 = await _commit(store, {"a": 2}, r1)
    with pytest.raises(StaleRevisionError) as info:
        await _commit(store, {"a": 3}, r1)
    assert info.value.current == r2 and info.value.status == 409
    assert str(r2) in info.value.message
    assert len(await store.list()) == 2
    with pytest.raises(StaleRevisionError):
        await _commit(store, {"a": 4}, None)  # a second "first" revision


async def test_concurrent_writers_on_one_base_one_wins(db: Database, target: object) -> None:
    """Two stores (two replicas) on the same database, ten writers each on the same base."""
    store = RevisionStore(db)
    base = await _commit(store, {"a": 0}, None)
    other = RevisionStore(target.open())  # type: ignore[attr-defined]

    async def write(s: RevisionStore, i: int) -> int | None:
        try:
            return await _commit(s, {"a": i}, base)
        except StaleRevisionError:
            return None

    results = await asyncio.gather(*(write(store if i % 2 else other, i) for i in range(1, 21)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    active = await store.active()
    assert active is not None and active.id == winners[0] and active.parent_id == base


async def test_audit_is_filtered_and_newest_first(db: Database) -> None:
    audit = AuditStore(db)
    await audit.record(
        AuditEntry(actor="master", action="route.switch", target="route:chat", before={"x": 1}, after={"x": 2})
    )
    await audit.record(
        AuditEntry(actor="key_1", action="key.create", target="key:k1", org_id="org_a", client="127.0.0.1")
    )
    await audit.record(AuditEntry(actor="master", action="route.delete", target="route:old", request_id="r" * 100))
    everything = await audit.list()
    assert [e.action for e in everything] == ["route.delete", "key.create", "route.switch"]
    assert everything[0].request_id == "r" * 64
    assert [e.action for e in await audit.list(action="route.")] == ["route.delete", "route.switch"]
    assert [e.target for e in await audit.list(actor="key_1")] == ["key:k1"]
    assert [e.target for e in await audit.list(org_id="org_a")] == ["key:k1"]
    assert (await audit.list(target="route:chat"))[0].after == {"x": 2}
    assert await audit.list(since=datetime.now(UTC) + timedelta(minutes=1)) == []
    assert len(await audit.list(limit=2)) == 2
