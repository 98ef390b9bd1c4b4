"""Organisations and their virtual API keys.

A key is ``my-`` followed by 40 URL-safe random characters (240 bits).  Only its SHA-256 (hex)
is stored, with the first characters for display; the plaintext is returned once, by
:meth:`KeyStore.create_key`, and never logged.  :meth:`KeyStore.verify` is on the request hot
path: it answers from an in-memory cache (``cache_ttl_s``, a few seconds) and goes to the
database only on a miss.  Any change made through this store clears the cache at once; a change
made by another process is seen within ``cache_ttl_s``.

The cache never makes a burst of requests wait on the database together: one load per key is in
flight at a time (concurrent misses share it), and a key in use is read again in the background
once half its time to live has passed, so under steady traffic its entry never expires.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Row, delete, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from modelyard.errors import InvalidRequestError, NotFoundError, ServiceUnavailableError
from modelyard.storage.db import Database
from modelyard.storage.tables import api_keys, organizations, provider_credentials

__all__ = ["KEY_PREFIX", "UNSET", "KeyCheck", "KeyRecord", "KeyStore", "OrgRecord", "hash_key"]

log = logging.getLogger("modelyard.keys")

KEY_PREFIX = "my-"
#: characters of the key kept for display (``my-abcd``)
DISPLAY_CHARS = 7
_CACHE_MAX = 10_000


class _Unset(enum.Enum):
    UNSET = enum.auto()


#: "leave this field as it is" in :meth:`KeyStore.update_key` (``None`` clears a limit)
UNSET = _Unset.UNSET


def hash_key(plaintext: str) -> str:
    """The stored form of a key: SHA-256, hex."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class OrgRecord:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A virtual key as stored (never the plaintext)."""

    id: str
    org_id: str
    name: str
    prefix: str
    allowed_routes: tuple[str, ...] | None
    allowed_models: tuple[str, ...] | None
    rpm: int | None
    tpm: int | None
    budget_usd: float | None
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None
    #: "app" or "org_admin" (see docs/management.md#roles)
    role: str = "app"
    #: admin grants: providers:write, models:write, routes:write
    scopes: tuple[str, ...] = ()

    @property
    def display(self) -> str:
        """What an admin UI shows: ``my-abcd…``."""
        return f"{self.prefix}…"

    def public(self) -> dict[str, Any]:
        """The key as the admin API returns it."""
        return {
            "id": self.id,
            "org_id": self.org_id,
            "name": self.name,
            "key": self.display,
            "allowed_routes": list(self.allowed_routes) if self.allowed_routes is not None else None,
            "allowed_models": list(self.allowed_models) if self.allowed_models is not None else None,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "budget_usd": self.budget_usd,
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "created_at": _iso(self.created_at),
            "last_used_at": _iso(self.last_used_at),
            "role": self.role,
            "scopes": list(self.scopes),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


KeyReason = Literal["ok", "unknown", "revoked", "expired", "malformed"]


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """The outcome of :meth:`KeyStore.check`: the key when valid, and why not otherwise."""

    key: KeyRecord | None
    reason: KeyReason

    @property
    def ok(self) -> bool:
        return self.key is not None


def _tuple(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(str(v) for v in value)


def _key_from_row(row: Row[Any]) -> KeyRecord:
    m = row._mapping
    return KeyRecord(
        id=m["id"],
        org_id=m["org_id"],
        name=m["name"],
        prefix=m["prefix"],
        allowed_routes=_tuple(m["allowed_routes"]),
        allowed_models=_tuple(m["allowed_models"]),
        rpm=m["rpm"],
        tpm=m["tpm"],
        budget_usd=m["budget_usd"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        created_at=m["created_at"],
        last_used_at=m["last_used_at"],
        role=m["role"],
        scopes=_tuple(m["scopes"]) or (),
    )


def _org_from_row(row: Row[Any]) -> OrgRecord:
    m = row._mapping
    return OrgRecord(id=m["id"], name=m["name"], created_at=m["created_at"])


_KEY_COLUMNS = [c for c in api_keys.c if c.name != "key_hash"]


class KeyStore:
    """Organisations and virtual keys, with a short-lived cache in front of :meth:`verify`."""

    def __init__(self, database: Database, *, cache_ttl_s: float = 5.0, stale_ttl_s: float = 300.0) -> None:
        self.db = database
        self.cache_ttl_s = cache_ttl_s
        #: while the database cannot be read, a key looked up less than this long ago is still served
        #: as it was then (a revocation made before the outage holds)
        self.stale_ttl_s = stale_ttl_s
        #: key hash -> (monotonic expiry, the stored key or None when unknown, monotonic load time)
        self._cache: dict[str, tuple[float, KeyRecord | None, float]] = {}
        #: key hash -> the load in flight (misses and background refreshes share it)
        self._loading: dict[str, asyncio.Task[KeyRecord | None]] = {}
        self._tasks: set[asyncio.Task[KeyRecord | None]] = set()
        self._generation = 0
        #: key id -> when it was last used (written by flush_last_used)
        self._used: dict[str, datetime] = {}
        #: called after every change made through this store (the coordinator tells other replicas)
        self.on_change: list[Callable[[], None]] = []

    def invalidate(self) -> None:
        """Forget every cached key (called after any change made through this store)."""
        self._cache.clear()
        self._loading.clear()  # later lookups must not join a load that started before the change
        self._generation += 1  # and such a load must not refill the cache

    def _changed(self) -> None:
        self.invalidate()
        for listener in self.on_change:
            listener()

    # -- organisations ------------------------------------------------------------------------

    async def create_org(self, name: str, *, org_id: str | None = None) -> OrgRecord:
        org = OrgRecord(id=org_id or f"org_{secrets.token_hex(8)}", name=name, created_at=_now())
        try:
            async with self.db.begin_write() as conn:
                await conn.execute(organizations.insert().values(id=org.id, name=org.name, created_at=org.created_at))
        except IntegrityError:
            raise InvalidRequestError(f"organisation {org.id!r} already exists", code="org_exists") from None
        return org

    async def get_org(self, org_id: str) -> OrgRecord | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(organizations).where(organizations.c.id == org_id))).first()
        return _org_from_row(row) if row is not None else None

    async def list_orgs(self) -> list[OrgRecord]:
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(select(organizations).order_by(organizations.c.created_at, organizations.c.id))
            return [_org_from_row(r) for r in rows]

    async def update_org(self, org_id: str, *, name: str) -> OrgRecord:
        async with self.db.begin_write() as conn:
            result = await conn.execute(update(organizations).where(organizations.c.id == org_id).values(name=name))
            if result.rowcount == 0:
                raise _org_not_found(org_id)
            row = (await conn.execute(select(organizations).where(organizations.c.id == org_id))).one()
        return _org_from_row(row)

    async def delete_org(self, org_id: str) -> None:
        """Delete an organisation and its keys and credentials (its usage history stays)."""
        async with self.db.begin_write() as conn:
            await conn.execute(delete(api_keys).where(api_keys.c.org_id == org_id))
            await conn.execute(delete(provider_credentials).where(provider_credentials.c.org_id == org_id))
            result = await conn.execute(delete(organizations).where(organizations.c.id == org_id))
            if result.rowcount == 0:
                raise _org_not_found(org_id)
        self._changed()

    # -- keys ---------------------------------------------------------------------------------

    async def create_key(
        self,
        org_id: str,
        name: str,
        *,
        allowed_routes: Sequence[str] | None = None,
        allowed_models: Sequence[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        budget_usd: float | None = None,
        expires_at: datetime | None = None,
        role: str = "app",
        scopes: Sequence[str] | None = None,
    ) -> tuple[str, KeyRecord]:
        """Create a key; return its plaintext (show it once: it cannot be recovered) and the record."""
        plaintext = KEY_PREFIX + secrets.token_urlsafe(30)
        values: dict[str, Any] = {
            "id": f"key_{secrets.token_hex(8)}",
            "org_id": org_id,
            "name": name,
            "key_hash": hash_key(plaintext),
            "prefix": plaintext[:DISPLAY_CHARS],
            "allowed_routes": list(allowed_routes) if allowed_routes is not None else None,
            "allowed_models": list(allowed_models) if allowed_models is not None else None,
            "rpm": rpm,
            "tpm": tpm,
            "budget_usd": budget_usd,
            "expires_at": expires_at,
            "revoked_at": None,
            "created_at": _now(),
            "last_used_at": None,
            "role": role,
            "scopes": list(scopes) if scopes else None,
        }
        async with self.db.begin_write() as conn:
            exists = (await conn.execute(select(organizations.c.id).where(organizations.c.id == org_id))).first()
            if exists is None:
                raise _org_not_found(org_id)
            await conn.execute(api_keys.insert().values(**values))
            row = (await conn.execute(select(*_KEY_COLUMNS).where(api_keys.c.id == values["id"]))).one()
        self._changed()
        log.info("created key %s (%s…) for organisation %s", values["id"], values["prefix"], org_id)
        return plaintext, _key_from_row(row)

    async def get_key(self, key_id: str, *, org_id: str | None = None) -> KeyRecord | None:
        query = select(*_KEY_COLUMNS).where(api_keys.c.id == key_id)
        if org_id is not None:
            query = query.where(api_keys.c.org_id == org_id)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _key_from_row(row) if row is not None else None

    async def list_keys(self, org_id: str | None = None) -> list[KeyRecord]:
        """The keys of one organisation (of all when ``org_id`` is None)."""
        query = select(*_KEY_COLUMNS).order_by(api_keys.c.created_at, api_keys.c.id)
        if org_id is not None:
            query = query.where(api_keys.c.org_id == org_id)
        async with self.db.engine.connect() as conn:
            return [_key_from_row(r) for r in await conn.execute(query)]

    async def update_key(
        self,
        key_id: str,
        *,
        org_id: str | None = None,
        name: str | _Unset = UNSET,
        allowed_routes: Sequence[str] | _Unset | None = UNSET,
        allowed_models: Sequence[str] | _Unset | None = UNSET,
        rpm: int | _Unset | None = UNSET,
        tpm: int | _Unset | None = UNSET,
        budget_usd: float | _Unset | None = UNSET,
        expires_at: datetime | _Unset | None = UNSET,
        role: str | _Unset = UNSET,
        scopes: Sequence[str] | _Unset | None = UNSET,
    ) -> KeyRecord:
        """Change the given fields (``None`` removes a limit).  ``org_id`` scopes the change to one org."""
        changes: dict[str, Any] = {}
        if role is not UNSET:
            changes["role"] = role
        if scopes is not UNSET:
            changes["scopes"] = list(scopes) if scopes else None
        for field, value in (("name", name), ("rpm", rpm), ("tpm", tpm), ("budget_usd", budget_usd)):
            if value is not UNSET:
                changes[field] = value
        for field, names in (("allowed_routes", allowed_routes), ("allowed_models", allowed_models)):
            if names is not UNSET:
                changes[field] = None if names is None else list(names)
        if expires_at is not UNSET:
            changes["expires_at"] = expires_at
        return await self._change(key_id, org_id, changes)

    async def revoke_key(self, key_id: str, *, org_id: str | None = None) -> KeyRecord:
        """Revoke a key: it stops working at once in this process, within ``cache_ttl_s`` in others."""
        key = await self._change(key_id, org_id, {"revoked_at": _now()}, only_if_active=True)
        log.info("revoked key %s", key_id)
        return key

    async def delete_key(self, key_id: str, *, org_id: str | None = None) -> None:
        query = delete(api_keys).where(api_keys.c.id == key_id)
        if org_id is not None:
            query = query.where(api_keys.c.org_id == org_id)
        async with self.db.begin_write() as conn:
            result = await conn.execute(query)
        self._changed()
        if result.rowcount == 0:
            raise _key_not_found(key_id)

    async def _change(
        self, key_id: str, org_id: str | None, changes: dict[str, Any], *, only_if_active: bool = False
    ) -> KeyRecord:
        where = [api_keys.c.id == key_id]
        if org_id is not None:
            where.append(api_keys.c.org_id == org_id)
        async with self.db.begin_write() as conn:
            if changes:
                query = update(api_keys).where(*where)
                if only_if_active:
                    query = query.where(api_keys.c.revoked_at.is_(None))
                await conn.execute(query.values(**changes))
            row = (await conn.execute(select(*_KEY_COLUMNS).where(*where))).first()
        self._changed()
        if row is None:
            raise _key_not_found(key_id)
        return _key_from_row(row)

    # -- the hot path -------------------------------------------------------------------------

    async def check(self, plaintext: str, *, now: datetime | None = None) -> KeyCheck:
        """Look a presented key up (cached); say whether it is valid and, if not, why."""
        if not plaintext.startswith(KEY_PREFIX) or len(plaintext) > 200:
            return KeyCheck(None, "malformed")
        return await self.check_digest(hash_key(plaintext), now=now)

    async def check_digest(self, digest: str, *, now: datetime | None = None) -> KeyCheck:
        """:meth:`check` for a key known by its digest (a dashboard session names its key so)."""
        hit = self._cache.get(digest)
        now_m = time.monotonic()
        if hit is not None and hit[0] > now_m:
            key = hit[1]
            if hit[0] - now_m < self.cache_ttl_s / 2 and digest not in self._loading:
                self._start_load(digest)  # refresh ahead: this entry will not expire under traffic
        else:
            try:
                key = await asyncio.shield(self._loading.get(digest) or self._start_load(digest))
            except (DBAPIError, OSError, TimeoutError) as exc:
                if hit is None or now_m - hit[2] > self.stale_ttl_s:
                    raise ServiceUnavailableError(
                        "the key store (the database) cannot be read now, and this key was not looked up in the "
                        f"last {self.stale_ttl_s:g} s (keys.stale_ttl_s); retry shortly",
                        code="key_store_unavailable",
                    ) from exc
                key = hit[1]  # the database is away: serve what it said last (keys.stale_ttl_s)
                log.warning("key lookup failed (%s); serving the key as cached", type(exc).__name__)
        if key is None:
            return KeyCheck(None, "unknown")
        if key.revoked_at is not None:
            return KeyCheck(None, "revoked")
        now = now or _now()
        if key.expires_at is not None and key.expires_at <= now:
            return KeyCheck(None, "expired")
        self._used[key.id] = now
        return KeyCheck(key, "ok")

    async def verify(self, plaintext: str) -> KeyRecord | None:
        """The key when it is valid (known, not revoked, not expired); None otherwise (see :meth:`check`)."""
        return (await self.check(plaintext)).key

    def _start_load(self, digest: str) -> asyncio.Task[KeyRecord | None]:
        task = asyncio.get_running_loop().create_task(self._load(digest, self._generation))
        self._loading[digest] = task
        self._tasks.add(task)  # held until done, also after invalidate() forgets it
        task.add_done_callback(lambda t: self._loaded(digest, t))
        return task

    def _loaded(self, digest: str, task: asyncio.Task[KeyRecord | None]) -> None:
        self._tasks.discard(task)
        if self._loading.get(digest) is task:
            del self._loading[digest]
        if not task.cancelled() and task.exception() is not None:
            log.debug("key lookup failed: %s", type(task.exception()).__name__)

    async def _load(self, digest: str, generation: int) -> KeyRecord | None:
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(select(*_KEY_COLUMNS).where(api_keys.c.key_hash == digest))).first()
        key = _key_from_row(row) if row is not None else None
        if generation == self._generation:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            loaded = time.monotonic()
            self._cache[digest] = (loaded + self.cache_ttl_s, key, loaded)
        return key

    async def flush_last_used(self) -> int:
        """Write the ``last_used_at`` of keys used since the last call (call it every minute or so)."""
        used, self._used = self._used, {}
        if not used:
            return 0
        async with self.db.begin_write() as conn:
            for key_id, ts in used.items():
                await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=ts))
        return len(used)


def _org_not_found(org_id: str) -> NotFoundError:
    return NotFoundError(f"organisation {org_id!r} not found", code="org_not_found")


def _key_not_found(key_id: str) -> NotFoundError:
    return NotFoundError(f"key {key_id!r} not found", code="key_not_found")
