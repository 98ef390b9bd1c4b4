from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from modelyard.errors import InvalidRequestError, NotFoundError, ServiceUnavailableError
from modelyard.storage import Database
from modelyard.storage.keys import KeyStore, hash_key
from modelyard.storage.tables import api_keys
from tests.storage.conftest import Target


async def test_create_key_shows_the_plaintext_once_and_stores_only_its_hash(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    keys = KeyStore(db)
    org = await keys.create_org("Acme")
    with caplog.at_level(logging.DEBUG):
        plaintext, key = await keys.create_key(
            org.id, "ci", allowed_routes=["main"], allowed_models=["gpt"], rpm=60, tpm=1000, budget_usd=5.0
        )
    assert plaintext.startswith("my-") and len(plaintext) == 43
    assert key.org_id == org.id and key.prefix == plaintext[:7] and key.display == plaintext[:7] + "…"
    limits = (key.allowed_routes, key.allowed_models, key.rpm, key.tpm, key.budget_usd)
    assert limits == (("main",), ("gpt",), 60, 1000, 5.0)
    assert plaintext not in repr(key) and plaintext not in str(key.public())
    assert plaintext not in caplog.text
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(api_keys))).all()
        dump = " ".join(str(v) for row in rows for v in row)
        assert plaintext not in dump and plaintext[7:] not in dump
        assert rows[0]._mapping["key_hash"] == hash_key(plaintext)
        assert len(rows[0]._mapping["key_hash"]) == 64
    # no way to get the plaintext back from the store
    listed = await keys.list_keys(org.id)
    assert [k.id for k in listed] == [key.id]
    assert plaintext not in repr(listed)
    second, _ = await keys.create_key(org.id, "other")
    assert second != plaintext


async def test_rate_limits_up_to_the_admin_apis_maximum_are_stored(db: Database) -> None:
    """The admin API accepts rpm/tpm up to 10^12 (a huge tpm means "no token limit"); the columns
    were 32-bit on PostgreSQL, where such a key was a 500 (migration 0010 widens them)."""
    keys = KeyStore(db)
    org = await keys.create_org("Acme")
    plaintext, key = await keys.create_key(org.id, "big", rpm=10**12, tpm=10_000_000_000)
    found = await keys.verify(plaintext)
    assert found is not None and (found.rpm, found.tpm) == (10**12, 10_000_000_000) == (key.rpm, key.tpm)


async def test_verify_ok_unknown_malformed_revoked_expired(db: Database) -> None:
    keys = KeyStore(db)
    org = await keys.create_org("Acme", org_id="acme")
    plaintext, key = await keys.create_key(org.id, "app")
    check = await keys.check(plaintext)
    assert check.ok and check.reason == "ok" and check.key == key
    assert await keys.verify(plaintext) == key
    assert (await keys.check("my-" + "x" * 40)).reason == "unknown"
    assert (await keys.check(plaintext[:-1])).reason == "unknown"
    assert (await keys.check("sk-not-ours")).reason == "malformed"
    assert await keys.verify("") is None

    soon, _ = await keys.create_key(org.id, "short", expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert (await keys.check(soon)).ok
    assert (await keys.check(soon, now=datetime.now(UTC) + timedelta(hours=2))).reason == "expired"
    past, _ = await keys.create_key(org.id, "old", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert (await keys.check(past)).reason == "expired"
    assert await keys.verify(past) is None

    revoked = await keys.revoke_key(key.id)
    assert revoked.revoked_at is not None
    assert (await keys.check(plaintext)).reason == "revoked"
    assert await keys.verify(plaintext) is None
    again = await keys.revoke_key(key.id)  # idempotent: keeps the first revocation time
    assert again.revoked_at == revoked.revoked_at


async def test_verify_is_served_from_the_cache_and_revoke_invalidates_it(target: Target, db: Database) -> None:
    admin = KeyStore(db, cache_ttl_s=60)
    org = await admin.create_org("Acme")
    plaintext, key = await admin.create_key(org.id, "app")
    # a second process (its own store on its own connection pool) verifies the key
    other_db = target.open()
    gateway = KeyStore(other_db, cache_ttl_s=60)
    assert await gateway.verify(plaintext) == key
    # the row changes behind the gateway's back: the gateway answers from its cache (the old name)
    async with db.begin() as conn:
        await conn.execute(text("UPDATE api_keys SET name = 'renamed' WHERE id = :id"), {"id": key.id})
    cached = await gateway.verify(plaintext)
    assert cached is not None and cached.name == "app"
    # revoking through a store clears that store's cache at once
    assert (await admin.verify(plaintext)) is not None
    await admin.revoke_key(key.id)
    assert await admin.verify(plaintext) is None


async def test_other_processes_see_a_revocation_within_the_ttl(target: Target, db: Database) -> None:
    admin = KeyStore(db)
    org = await admin.create_org("Acme")
    plaintext, key = await admin.create_key(org.id, "app")
    gateway = KeyStore(target.open(), cache_ttl_s=0.2)
    assert await gateway.verify(plaintext) is not None
    await admin.revoke_key(key.id)
    assert await gateway.verify(plaintext) is not None  # cached
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    while await gateway.verify(plaintext) is not None:
        assert datetime.now(UTC) < deadline, "revocation never seen"
    assert (await gateway.check(plaintext)).reason == "revoked"


async def test_update_key_changes_limits_and_invalidates(db: Database) -> None:
    keys = KeyStore(db, cache_ttl_s=60)
    org = await keys.create_org("Acme")
    plaintext, key = await keys.create_key(org.id, "app", rpm=10, allowed_models=["a"])
    assert (await keys.verify(plaintext)) == key
    updated = await keys.update_key(key.id, rpm=None, tpm=500, allowed_models=["a", "b"], name="renamed")
    assert (updated.rpm, updated.tpm, updated.allowed_models, updated.name) == (None, 500, ("a", "b"), "renamed")
    assert updated.allowed_routes is None
    assert await keys.verify(plaintext) == updated
    expired = await keys.update_key(key.id, expires_at=datetime.now(UTC) - timedelta(minutes=1))
    assert expired.expires_at is not None
    assert (await keys.check(plaintext)).reason == "expired"
    with pytest.raises(NotFoundError):
        await keys.update_key("key_missing", rpm=1)


async def test_organisations_crud(db: Database) -> None:
    keys = KeyStore(db)
    a = await keys.create_org("A", org_id="a")
    b = await keys.create_org("B")
    assert b.id.startswith("org_")
    with pytest.raises(InvalidRequestError, match="already exists"):
        await keys.create_org("again", org_id="a")
    assert [o.id for o in await keys.list_orgs()] == [a.id, b.id]
    assert (await keys.update_org("a", name="A2")).name == "A2"
    assert (await keys.get_org("a")) is not None
    assert await keys.get_org("nope") is None
    plaintext, _ = await keys.create_key("a", "k")
    await keys.delete_org("a")
    assert await keys.get_org("a") is None
    assert await keys.list_keys("a") == []
    assert await keys.verify(plaintext) is None
    with pytest.raises(NotFoundError):
        await keys.delete_org("a")
    with pytest.raises(NotFoundError):
        await keys.create_key("a", "k")


async def test_keys_are_isolated_per_organisation(db: Database) -> None:
    keys = KeyStore(db)
    await keys.create_org("A", org_id="a")
    await keys.create_org("B", org_id="b")
    pa, ka = await keys.create_key("a", "a-key")
    pb, kb = await keys.create_key("b", "b-key")
    assert [k.id for k in await keys.list_keys("a")] == [ka.id]
    assert [k.id for k in await keys.list_keys("b")] == [kb.id]
    assert {k.id for k in await keys.list_keys()} == {ka.id, kb.id}
    # an admin scoped to org a cannot see, change, revoke or delete org b's key
    assert await keys.get_key(kb.id, org_id="a") is None
    with pytest.raises(NotFoundError):
        await keys.update_key(kb.id, org_id="a", rpm=1)
    with pytest.raises(NotFoundError):
        await keys.revoke_key(kb.id, org_id="a")
    with pytest.raises(NotFoundError):
        await keys.delete_key(kb.id, org_id="a")
    assert (await keys.verify(pb)) == kb
    verified_a = await keys.verify(pa)
    assert verified_a is not None and verified_a.org_id == "a"
    await keys.delete_key(ka.id, org_id="a")
    assert await keys.verify(pa) is None


async def test_last_used_is_written_in_the_background(db: Database) -> None:
    keys = KeyStore(db)
    await keys.create_org("A", org_id="a")
    plaintext, key = await keys.create_key("a", "k")
    assert key.last_used_at is None
    assert await keys.flush_last_used() == 0
    await keys.verify(plaintext)
    assert await keys.flush_last_used() == 1
    stored = await keys.get_key(key.id)
    assert stored is not None and stored.last_used_at is not None


async def test_a_burst_of_misses_shares_one_lookup_and_refresh_keeps_the_entry_warm(db: Database) -> None:
    keys = KeyStore(db, cache_ttl_s=0.4)
    org = await keys.create_org("Acme")
    plaintext, key = await keys.create_key(org.id, "ci")
    loads = 0
    real = keys._load

    async def counting(digest: str, generation: int) -> object:
        nonlocal loads
        loads += 1
        return await real(digest, generation)

    keys._load = counting  # type: ignore[method-assign]
    checks = await asyncio.gather(*(keys.check(plaintext) for _ in range(64)))
    assert {c.key.id for c in checks if c.key is not None} == {key.id}
    assert loads == 1  # 64 concurrent misses, one database read
    # steady use: every entry is refreshed in the background before it expires, nobody waits on a miss
    for _ in range(12):
        await asyncio.sleep(0.1)
        hit = keys._cache[hash_key(plaintext)]
        assert (await keys.check(plaintext)).key is not None
        assert hit[0] > time.monotonic()  # the entry the check used was still valid
    assert 2 <= loads <= 8
    # a change made through the store wins over a lookup that started before it
    keys._load = real  # type: ignore[method-assign]
    pending = keys._start_load(hash_key(plaintext))
    await keys.revoke_key(key.id)
    await pending
    assert (await keys.check(plaintext)).reason == "revoked"


async def test_keys_are_served_stale_while_the_database_is_away(db: Database, target: Any, outage: Any) -> None:
    """keys.stale_ttl_s: a key looked up before an outage keeps working through it, a key revoked
    before it stays refused, and a key never seen is an error (not a guess)."""
    store = KeyStore(db, cache_ttl_s=0.05, stale_ttl_s=300)
    org = await store.create_org("stale")
    good, _ = await store.create_key(org.id, "good")
    bad, bad_key = await store.create_key(org.id, "bad")
    never, _ = await store.create_key(org.id, "never looked up")
    await store.revoke_key(bad_key.id)
    assert (await store.check(good)).reason == "ok"
    assert (await store.check(bad)).reason == "revoked"
    await outage.begin()
    try:
        await asyncio.sleep(0.1)  # the cache entries are past their 0.05 s
        assert (await store.check(good)).reason == "ok"
        assert (await store.check(bad)).reason == "revoked"
        if target.backend == "postgres":  # (SQLite reads go on during its outage, a write lock)
            with pytest.raises(ServiceUnavailableError, match="stale_ttl_s"):
                await store.check(never)
        strict = KeyStore(db, cache_ttl_s=0.05, stale_ttl_s=0)
        if target.backend == "postgres":
            with pytest.raises(ServiceUnavailableError):
                await strict.check(good)
    finally:
        await outage.end()
    assert (await store.check(never)).reason == "ok"
