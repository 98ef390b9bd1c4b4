"""Config revisions and the audit log, in the gateway's database.

A revision is immutable once written.  Which one is active is one ``settings`` row
(``config.active_revision``), changed only by a compare-and-set on the revision a writer based
its change on: of two concurrent writers based on the same revision, one wins and the other
gets :class:`StaleRevisionError` naming the revision that won (no lost update, on SQLite and
PostgreSQL alike, and across replicas sharing the database).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, func, select, update

from modelyard.errors import ConflictError
from modelyard.storage.aio import AsyncConnection
from modelyard.storage.db import Database
from modelyard.storage.tables import audit_log, config_revisions, settings

__all__ = ["ACTIVE_SETTING", "AuditEntry", "AuditStore", "Revision", "RevisionStore", "StaleRevisionError"]

ACTIVE_SETTING = "config.active_revision"
_R = config_revisions
_A = audit_log


class StaleRevisionError(ConflictError):
    """A write based on a revision that is no longer the active one (409)."""

    def __init__(self, based_on: int | None, current: int | None) -> None:
        super().__init__(
            f"the change was based on revision {based_on} but revision {current} is active now: "
            f"read revision {current}, apply the change to it and send it again with If-Match: {current}",
            code="revision_conflict",
        )
        self.current = current


@dataclass(frozen=True, slots=True)
class Revision:
    id: int
    parent_id: int | None
    source: str
    actor: str
    message: str
    created_at: datetime
    content_hash: str
    document: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent_id": self.parent_id,
            "source": self.source,
            "actor": self.actor,
            "message": self.message,
            "created_at": self.created_at.isoformat(),
            "content_hash": self.content_hash,
        }


def _revision(row: Row[Any]) -> Revision:
    m = row._mapping
    return Revision(
        id=m["id"],
        parent_id=m["parent_id"],
        source=m["source"],
        actor=m["actor"],
        message=m["message"],
        created_at=m["created_at"],
        content_hash=m["content_hash"],
        document=m["document"],
    )


class RevisionStore:
    def __init__(self, database: Database) -> None:
        self.db = database

    async def active_id(self) -> int | None:
        async with self.db.engine.connect() as conn:
            return await _active(conn)

    async def active(self) -> Revision | None:
        async with self.db.engine.connect() as conn:
            rid = await _active(conn)
            if rid is None:
                return None
            row = (await conn.execute(select(_R).where(_R.c.id == rid))).first()
        return _revision(row) if row is not None else None

    async def get(self, revision_id: int) -> Revision | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(_R).where(_R.c.id == revision_id))).first()
        return _revision(row) if row is not None else None

    async def list(self, *, limit: int = 50, before: int | None = None) -> list[Revision]:
        query = select(_R).order_by(_R.c.id.desc()).limit(limit)
        if before is not None:
            query = query.where(_R.c.id < before)
        async with self.db.engine.connect() as conn:
            return [_revision(r) for r in await conn.execute(query)]

    async def last(self, source: str) -> Revision | None:
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(select(_R).where(_R.c.source == source).order_by(_R.c.id.desc()).limit(1))
            ).first()
        return _revision(row) if row is not None else None

    async def changed_since(self, revision_id: int, sources: tuple[str, ...]) -> bool:
        """Whether a revision of one of ``sources`` was made after ``revision_id``."""
        async with self.db.engine.connect() as conn:
            n = (
                await conn.execute(
                    select(func.count()).select_from(_R).where(_R.c.id > revision_id, _R.c.source.in_(sources))
                )
            ).scalar_one()
        return bool(n)

    async def commit(
        self,
        document: dict[str, Any],
        *,
        content_hash: str,
        source: str,
        actor: str,
        message: str,
        base: int | None,
        activate: bool = True,
    ) -> Revision:
        """Store a revision whose parent is ``base`` and (with ``activate``) make it the active one.

        Raises :class:`StaleRevisionError` when ``base`` is not the active revision any more (the
        revision is then not stored).  ``base=None`` is only accepted while no revision is active.
        """
        now = datetime.now(UTC)
        async with self.db.begin_write() as conn:
            current = await _active(conn)
            if activate and current != base:
                raise StaleRevisionError(base, current)
            result = await conn.execute(
                _R.insert().values(
                    parent_id=base,
                    source=source,
                    actor=actor[:200],
                    message=message,
                    created_at=now,
                    content_hash=content_hash,
                    document=document,
                )
            )
            pk = result.inserted_primary_key
            assert pk is not None
            rid = int(pk[0])
            if activate:
                if current is None:
                    inserted = await conn.execute(
                        self.db.insert_or_ignore(settings),
                        [{"key": ACTIVE_SETTING, "value": str(rid), "updated_at": now}],
                    )
                    swapped = inserted.rowcount == 1
                else:
                    done = await conn.execute(
                        update(settings)
                        .where(settings.c.key == ACTIVE_SETTING, settings.c.value == str(current))
                        .values(value=str(rid), updated_at=now)
                    )
                    swapped = done.rowcount == 1
                if not swapped:  # another writer got there between our read and our write
                    raise StaleRevisionError(base, await _active(conn))
            row = (await conn.execute(select(_R).where(_R.c.id == rid))).one()
        return _revision(row)


async def _active(conn: AsyncConnection) -> int | None:
    value = (await conn.execute(select(settings.c.value).where(settings.c.key == ACTIVE_SETTING))).scalar_one_or_none()
    return int(value) if value is not None else None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor: str
    action: str
    target: str
    before: Any = None
    after: Any = None
    org_id: str | None = None
    revision_id: int | None = None
    request_id: str | None = None
    client: str | None = None
    ts: datetime | None = None
    id: int | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": self.ts.isoformat() if self.ts else None,
            "actor": self.actor,
            "org_id": self.org_id,
            "action": self.action,
            "target": self.target,
            "before": self.before,
            "after": self.after,
            "revision_id": self.revision_id,
            "request_id": self.request_id,
            "client": self.client,
        }


class AuditStore:
    """The append-only audit log (no update or delete here, by design)."""

    def __init__(self, database: Database) -> None:
        self.db = database

    async def record(self, entry: AuditEntry) -> int:
        async with self.db.begin_write() as conn:
            result = await conn.execute(
                _A.insert().values(
                    ts=entry.ts or datetime.now(UTC),
                    actor=entry.actor[:200],
                    org_id=entry.org_id,
                    action=entry.action[:64],
                    target=entry.target[:300],
                    before=entry.before,
                    after=entry.after,
                    revision_id=entry.revision_id,
                    request_id=(entry.request_id or None) and entry.request_id[:64],
                    client=(entry.client or None) and entry.client[:100],
                )
            )
        pk = result.inserted_primary_key
        assert pk is not None
        return int(pk[0])

    async def list(
        self,
        *,
        actor: str | None = None,
        target: str | None = None,
        action: str | None = None,
        org_id: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        query = select(_A).order_by(_A.c.id.desc()).limit(limit)
        if actor is not None:
            query = query.where(_A.c.actor == actor)
        if target is not None:
            query = query.where(_A.c.target == target)
        if action is not None:
            query = query.where(_A.c.action.startswith(action, autoescape=True))
        if org_id is not None:
            query = query.where(_A.c.org_id == org_id)
        if since is not None:
            query = query.where(_A.c.ts >= since)
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(query)
            return [
                AuditEntry(
                    id=m["id"],
                    ts=m["ts"],
                    actor=m["actor"],
                    org_id=m["org_id"],
                    action=m["action"],
                    target=m["target"],
                    before=m["before"],
                    after=m["after"],
                    revision_id=m["revision_id"],
                    request_id=m["request_id"],
                    client=m["client"],
                )
                for m in (r._mapping for r in rows)
            ]
