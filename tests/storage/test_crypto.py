from __future__ import annotations

import os
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, text, update

from modelyard.errors import ConfigError, NotFoundError
from modelyard.storage import Database
from modelyard.storage.credentials import CredentialStore
from modelyard.storage.crypto import Cipher, CredentialDecryptionError, WrongMasterKeyError, mask
from modelyard.storage.keys import KeyStore
from modelyard.storage.tables import provider_credentials
from tests.storage.conftest import Target

MASTER = "correct horse battery staple 0123456789abcdef"
SECRET = "sk-proj-PLANTED-5ecret-Value-9f8e7d6c5b4a3210ZZzz"


def test_round_trip_and_fresh_nonces() -> None:
    cipher = Cipher.from_master_key(MASTER, salt=b"s" * 16)
    ct1, n1 = cipher.encrypt(SECRET, b"row-1")
    ct2, n2 = cipher.encrypt(SECRET, b"row-1")
    assert len(n1) == 12 and n1 != n2 and ct1 != ct2
    assert SECRET.encode() not in ct1
    assert cipher.decrypt_str(ct1, n1, b"row-1") == SECRET
    assert cipher.decrypt(ct2, n2, b"row-1") == SECRET.encode()
    # the same master key and salt derive the same key
    assert Cipher.from_master_key(MASTER, salt=b"s" * 16).decrypt_str(ct1, n1, b"row-1") == SECRET
    assert "PLANTED" not in repr(cipher)


def test_tampering_is_detected() -> None:
    cipher = Cipher.from_master_key(MASTER)
    ct, nonce = cipher.encrypt(SECRET, b"row-1")
    flipped = bytes([ct[0] ^ 1]) + ct[1:]
    cases = [(flipped, nonce, b"row-1"), (ct, bytes(12), b"row-1"), (ct, nonce, b"row-2"), (ct[:-1], nonce, b"row-1")]
    for args in cases:
        with pytest.raises(CredentialDecryptionError) as info:
            cipher.decrypt(*args)
        assert "PLANTED" not in str(info.value)


def test_a_wrong_master_key_or_salt_cannot_decrypt() -> None:
    ct, nonce = Cipher.from_master_key(MASTER, salt=b"a" * 16).encrypt(SECRET, b"x")
    for other in (Cipher.from_master_key(MASTER + "!", salt=b"a" * 16), Cipher.from_master_key(MASTER, salt=b"b" * 16)):
        with pytest.raises(CredentialDecryptionError, match="different master key") as info:
            other.decrypt(ct, nonce, b"x")
        assert SECRET not in str(info.value) and MASTER not in str(info.value)


def test_an_empty_master_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="master key"):
        Cipher.from_master_key("")


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ("sk-abcdefghijklmnop1234", "sk-...1234"),
        ("sk-ant-api03-abcdefghijklmnopWXYZ", "sk-ant-...WXYZ"),
        ("AIzaSyA1234567890abcdefgh", "AIza...efgh"),
        ("plain-secret-value-99", "...e-99"),
        ("short", "..."),
        ("sk-1234567", "sk-..."),
        ("", "..."),
    ],
)
def test_mask_examples(secret: str, expected: str) -> None:
    assert mask(secret) == expected


@given(st.text(alphabet=string.ascii_letters + string.digits + "-_", max_size=80))
def test_mask_never_reveals_more_than_the_last_four_characters(secret: str) -> None:
    masked = mask(secret)
    prefix, _, tail = masked.partition("...")
    assert secret.startswith(prefix) and prefix in ("", "sk-", "sk-ant-", "sk-proj-", "gsk_", "xai-", "AIza")
    assert len(tail) <= 4 and secret.endswith(tail)
    if len(secret) < 12:
        assert tail == ""
    assert len(secret) < 8 or secret not in masked


async def test_credentials_round_trip_masked_listing_and_isolation(db: Database) -> None:
    await KeyStore(db).create_org("A", org_id="a")
    store = await CredentialStore.open(db, MASTER)
    rec = await store.put("openai", "main", SECRET, org_id="a")
    glob = await store.put("anthropic", "shared", "sk-ant-global-secret-0000abcd")
    assert rec.masked == "sk-proj-...ZZzz" and rec.org_id == "a"
    assert await store.get_plaintext(rec.id) == SECRET
    assert await store.get_plaintext(glob.id) == "sk-ant-global-secret-0000abcd"
    listed = await store.list()
    assert {c.id for c in listed} == {rec.id, glob.id}
    assert SECRET not in repr(listed) and SECRET not in str([c.public() for c in listed])
    assert [c.id for c in await store.list("a")] == [rec.id]
    with pytest.raises(NotFoundError):
        await store.get_plaintext(glob.id, org_id="a")
    with pytest.raises(NotFoundError):
        await store.delete(glob.id, org_id="a")
    # put again with the same org, provider and name: the secret is replaced, the id kept
    again = await store.put("openai", "main", "sk-rotated-0000000000009999", org_id="a")
    assert again.id == rec.id and again.masked == "sk-...9999"
    assert await store.get_plaintext(rec.id) == "sk-rotated-0000000000009999"
    await store.delete(glob.id)
    assert [c.id for c in await store.list()] == [rec.id]


async def test_a_ciphertext_moved_to_another_row_does_not_decrypt(db: Database) -> None:
    store = await CredentialStore.open(db, MASTER)
    one = await store.put("openai", "one", SECRET)
    two = await store.put("openai", "two", "sk-another-secret-value-1234")
    async with db.begin() as conn:
        row = (await conn.execute(select(provider_credentials).where(provider_credentials.c.id == one.id))).one()
        await conn.execute(
            update(provider_credentials)
            .where(provider_credentials.c.id == two.id)
            .values(ciphertext=row.ciphertext, nonce=row.nonce)
        )
    with pytest.raises(CredentialDecryptionError):
        await store.get_plaintext(two.id)


async def test_a_wrong_master_key_is_refused_at_open(target: Target, db: Database) -> None:
    store = await CredentialStore.open(db, MASTER)
    await store.put("openai", "main", SECRET)
    # a restart with the same key works; with another key it is refused before any credential is read
    reopened = await CredentialStore.open(target.open(), MASTER)
    assert [await reopened.get_plaintext(c.id) for c in await reopened.list()] == [SECRET]
    with pytest.raises(WrongMasterKeyError, match="not the one the stored provider credentials") as info:
        await CredentialStore.open(target.open(), "a different master key, 32 chars long")
    assert SECRET not in str(info.value) and MASTER not in str(info.value)
    # the per-installation salt, check value and key verifier are stored once
    async with db.engine.connect() as conn:
        keys = (await conn.execute(text("SELECT key FROM settings ORDER BY key"))).scalars().all()
    assert keys == ["credentials.hkdf_salt", "credentials.key_check", "credentials.key_verifier"]


async def test_two_installations_with_the_same_master_key_derive_different_keys(target: Target, db: Database) -> None:
    first = await CredentialStore.open(db, MASTER)
    rec = await first.put("openai", "main", SECRET)
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(provider_credentials))).one()
    other_install = Cipher.from_master_key(MASTER, salt=os.urandom(16))
    with pytest.raises(CredentialDecryptionError):
        other_install.decrypt(bytes(row.ciphertext), bytes(row.nonce), b"modelyard/credential/" + rec.id.encode())


async def test_the_database_never_holds_the_secret_in_clear(target: Target, db: Database) -> None:
    store = await CredentialStore.open(db, MASTER)
    await store.put("openai", "main", SECRET)
    await store.put("openai", "other", SECRET, org_id=None)
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(provider_credentials))).all()
    for row in rows:
        for value in row:
            raw = value if isinstance(value, (bytes, memoryview)) else str(value).encode()
            assert SECRET.encode() not in bytes(raw)
            assert b"PLANTED-5ecret" not in bytes(raw)
    if target.backend == "sqlite":
        await db.aclose()  # flush the WAL into the main file, then scan every file of the database
        assert target.sqlite_path is not None
        files = [p for p in target.sqlite_path.parent.iterdir() if p.name.startswith(target.sqlite_path.name)]
        assert files
        for path in files:
            data = path.read_bytes()
            assert SECRET.encode() not in data, path
            assert b"PLANTED-5ecret" not in data, path
            assert b"sk-proj-...ZZzz" in data or path.suffix != ".db"  # the scan does see the table's contents
