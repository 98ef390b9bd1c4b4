"""Start-up verification of the master key without ``cryptography``, and the upgrade of older databases.

``CredentialStore.open`` (run by ``modelyard serve`` with a master key) checks the master key against
a standard-library key verifier; ``cryptography`` is imported only when a credential is first
encrypted or decrypted, or once to upgrade a database written before the verifier existed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select, text

from modelyard.errors import ConfigError
from modelyard.storage import Database
from modelyard.storage.credentials import CHECK_SETTING, SALT_SETTING, VERIFIER_SETTING, CredentialStore
from modelyard.storage.crypto import (
    Cipher,
    WrongMasterKeyError,
    hkdf_sha256,
    make_key_verifier,
    verify_key_verifier,
)
from modelyard.storage.tables import provider_credentials, settings
from tests.storage.conftest import Target

ROOT = Path(__file__).resolve().parents[2]
MASTER = "correct horse battery staple 0123456789abcdef"
WRONG = "a different master key, 32 chars long"
WRONG_MESSAGE = "not the one the stored provider credentials"

# A database written by the version before the key verifier: values made with that version's code
# (``git show <before>:src/modelyard/security/crypto.py``), master key OLD_MASTER.
OLD_MASTER = "pre-verifier master key 0123456789abcdef"
OLD_SALT = "AAECAwQFBgcICQoLDA0ODw=="
OLD_CHECK = "XV2SOoiYerSpZ4fM.VnYsGeELvy8CIz8eaRy5LMrhrQ5xfFIEH5PDky7RY5Om5dhh0/Q0BFwdGy8A"
OLD_ID = "cred_00112233aabbccdd"
OLD_SECRET = "sk-proj-stored-before-the-change-0000WXYZ"
OLD_CIPHERTEXT = bytes.fromhex(
    "21b98c92cdfec68404aa5145b9c7b3d8fb1fefa024624c3434593b55ffb4303542ffb5ffee8b655258189fcd02dc9a185629b6b44a422f5094"
)
OLD_NONCE = bytes.fromhex("faf48161bfc9f5c59d6852fb")


async def write_old_database(db: Database) -> None:
    """What the previous version left: the salt and AES-GCM check, no verifier, one stored credential."""
    now = datetime.now(UTC)
    async with db.begin() as conn:
        await conn.execute(
            settings.insert(),
            [
                {"key": SALT_SETTING, "value": OLD_SALT, "updated_at": now},
                {"key": CHECK_SETTING, "value": OLD_CHECK, "updated_at": now},
            ],
        )
        await conn.execute(
            provider_credentials.insert().values(
                id=OLD_ID,
                org_id=None,
                provider="openai",
                name="main",
                ciphertext=OLD_CIPHERTEXT,
                nonce=OLD_NONCE,
                masked="sk-proj-...WXYZ",
                created_at=now,
            )
        )


async def stored_settings(db: Database) -> dict[str, str]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(select(settings.c.key, settings.c.value).order_by(settings.c.key))
        return {r.key: r.value for r in rows}


def old_version_verifies(master_key: str, stored: dict[str, str]) -> None:
    """The previous version's start-up check (what a downgrade would run)."""
    nonce_b64, _, ciphertext_b64 = stored[CHECK_SETTING].partition(".")
    cipher = Cipher.from_master_key(master_key, salt=base64.b64decode(stored[SALT_SETTING]))
    cipher.verify_check(base64.b64decode(ciphertext_b64), base64.b64decode(nonce_b64))


# -- the standard-library HKDF and key verifier --------------------------------------------------


@pytest.mark.parametrize(
    ("ikm", "salt", "info", "length", "okm"),
    [  # RFC 5869, appendix A, test cases 1 to 3 (SHA-256)
        (
            "0b" * 22,
            "000102030405060708090a0b0c",
            "f0f1f2f3f4f5f6f7f8f9",
            42,
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        ),
        (
            bytes(range(0x50)).hex(),
            bytes(range(0x60, 0xB0)).hex(),
            bytes(range(0xB0, 0x100)).hex(),
            82,
            "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c59045a99cac7827271cb41c65e590e09"
            "da3275600c2f09b8367793a9aca3db71cc30c58179ec3e87c14c01d5c1f3434f1d87",
        ),
        ("0b" * 22, "", "", 42, "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"),
    ],
)
def test_hkdf_sha256_matches_rfc_5869(ikm: str, salt: str, info: str, length: int, okm: str) -> None:
    out = hkdf_sha256(bytes.fromhex(ikm), salt=bytes.fromhex(salt), info=bytes.fromhex(info), length=length)
    assert out.hex() == okm


@given(st.binary(min_size=1, max_size=80), st.binary(min_size=1, max_size=40), st.binary(max_size=60))
def test_hkdf_sha256_matches_cryptography(ikm: bytes, salt: bytes, info: bytes) -> None:
    for length in (16, 32, 33, 64, 100):
        expected = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)
        assert hkdf_sha256(ikm, salt=salt, info=info, length=length) == expected


def test_the_key_verifier() -> None:
    first, second = make_key_verifier(MASTER), make_key_verifier(MASTER)
    assert first != second  # a fresh salt each time
    verify_key_verifier(MASTER, first)
    verify_key_verifier(MASTER, second)
    assert MASTER not in first and MASTER.encode() not in base64.b64decode(first.partition(".")[2])
    salt_b64, _, tag_b64 = first.partition(".")
    damaged = [
        "",
        ".",
        "not base64.at all!",
        f"{salt_b64}.",
        f".{tag_b64}",
        f"{salt_b64}.{tag_b64[:-4]}AAA=",
        f"{base64.b64encode(b'x' * 16).decode()}.{tag_b64}",
    ]
    for verifier in damaged:
        with pytest.raises(WrongMasterKeyError, match=WRONG_MESSAGE):
            verify_key_verifier(MASTER, verifier)
    for key in (WRONG, MASTER + " ", MASTER[:-1]):
        with pytest.raises(WrongMasterKeyError, match=WRONG_MESSAGE) as info:
            verify_key_verifier(key, first)
        assert MASTER not in str(info.value)
    with pytest.raises(ConfigError, match="master key"):
        make_key_verifier("")
    with pytest.raises(ConfigError, match="master key"):
        verify_key_verifier("", first)


# -- the store, on SQLite and PostgreSQL ---------------------------------------------------------


async def test_a_fresh_database(target: Target, db: Database) -> None:
    store = await CredentialStore.open(db, MASTER)
    stored = await stored_settings(db)
    # start-up writes the verifier only: the salt and AES-GCM check come with the first credential
    assert list(stored) == [VERIFIER_SETTING]
    verifier = stored[VERIFIER_SETTING]
    with pytest.raises(WrongMasterKeyError, match=WRONG_MESSAGE) as info:
        await CredentialStore.open(target.open(), WRONG)
    assert MASTER not in str(info.value)
    # nothing stored yet, and reading a missing credential needs no key
    assert await store.list() == []
    rec = await store.put("openai", "main", "sk-fresh-database-secret-1234")
    stored = await stored_settings(db)
    assert list(stored) == [SALT_SETTING, CHECK_SETTING, VERIFIER_SETTING]
    assert stored[VERIFIER_SETTING] == verifier
    old_version_verifies(MASTER, stored)  # a downgrade still starts, and reads the credential
    with pytest.raises(WrongMasterKeyError):
        old_version_verifies(WRONG, stored)
    reopened = await CredentialStore.open(target.open(), MASTER)
    assert await reopened.get_plaintext(rec.id) == "sk-fresh-database-secret-1234"
    assert await stored_settings(db) == stored
    with pytest.raises(WrongMasterKeyError, match=WRONG_MESSAGE):
        await CredentialStore.open(target.open(), WRONG)
    assert "sk-fresh" not in repr(store) and MASTER not in repr(store)


async def test_a_database_written_before_the_verifier_is_upgraded(target: Target, db: Database) -> None:
    await write_old_database(db)
    # a wrong master key is refused against the old check, and nothing is written
    with pytest.raises(WrongMasterKeyError, match=WRONG_MESSAGE) as info:
        await CredentialStore.open(target.open(), WRONG)
    assert OLD_MASTER not in str(info.value) and OLD_SECRET not in str(info.value)
    assert list(await stored_settings(db)) == [SALT_SETTING, CHECK_SETTING]

    store = await CredentialStore.open(db, OLD_MASTER)
    stored = await stored_settings(db)
    assert list(stored) == [SALT_SETTING, CHECK_SETTING, VERIFIER_SETTING]
    assert (stored[SALT_SETTING], stored[CHECK_SETTING]) == (OLD_SALT, OLD_CHECK)
    verify_key_verifier(OLD_MASTER, stored[VERIFIER_SETTING])
    # the credential stored by the previous version still decrypts, and new ones use the same data key
    assert await store.get_plaintext(OLD_ID) == OLD_SECRET
    rec = await store.put("anthropic", "other", "sk-ant-after-the-upgrade-00009876")
    data_key = Cipher.from_master_key(OLD_MASTER, salt=base64.b64decode(OLD_SALT))
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(provider_credentials).where(provider_credentials.c.id == rec.id))).one()
    assert data_key.decrypt_str(bytes(row.ciphertext), bytes(row.nonce), f"modelyard/credential/{rec.id}".encode()) == (
        "sk-ant-after-the-upgrade-00009876"
    )

    # later starts use the verifier (unchanged), still refuse a wrong key, and still decrypt
    again = await CredentialStore.open(target.open(), OLD_MASTER)
    assert await again.get_plaintext(OLD_ID) == OLD_SECRET
    assert await stored_settings(db) == stored
    with pytest.raises(WrongMasterKeyError, match=WRONG_MESSAGE):
        await CredentialStore.open(target.open(), WRONG)


@pytest.mark.parametrize("start", ["fresh", "upgrade"])
async def test_two_gateways_starting_together(target: Target, db: Database, start: str) -> None:
    master = MASTER
    if start == "upgrade":
        await write_old_database(db)
        master = OLD_MASTER
    one, two = await asyncio.gather(
        CredentialStore.open(target.open(), master), CredentialStore.open(target.open(), master)
    )
    stored = await stored_settings(db)
    assert VERIFIER_SETTING in stored
    verify_key_verifier(master, stored[VERIFIER_SETTING])
    # their first credentials, at the same time: one salt and check, and each reads the other's
    a, b = await asyncio.gather(
        one.put("openai", "a", "sk-first-gateway-secret-0001"), two.put("openai", "b", "sk-second-gateway-secret-0002")
    )
    assert await one.get_plaintext(b.id) == "sk-second-gateway-secret-0002"
    assert await two.get_plaintext(a.id) == "sk-first-gateway-secret-0001"
    after = await stored_settings(db)
    assert list(after) == [SALT_SETTING, CHECK_SETTING, VERIFIER_SETTING]
    assert after[VERIFIER_SETTING] == stored[VERIFIER_SETTING]


async def test_the_first_uses_of_a_store_derive_one_cipher(db: Database) -> None:
    store = await CredentialStore.open(db, MASTER)
    recs = await asyncio.gather(*(store.put("openai", f"k{i}", f"sk-concurrent-secret-{i:04d}") for i in range(5)))
    cipher = store._cipher
    assert cipher is not None
    assert await asyncio.gather(*(store.get_plaintext(r.id) for r in recs)) == [
        f"sk-concurrent-secret-{i:04d}" for i in range(5)
    ]
    assert store._cipher is cipher


async def test_an_empty_master_key_is_refused_at_open(db: Database) -> None:
    with pytest.raises(ConfigError, match="master key"):
        await CredentialStore.open(db, "")
    assert await stored_settings(db) == {}


async def test_a_damaged_verifier_is_refused(target: Target, db: Database) -> None:
    await CredentialStore.open(db, MASTER)
    async with db.begin() as conn:
        await conn.execute(text("UPDATE settings SET value = 'AAAA.AAAA' WHERE key = :k"), {"k": VERIFIER_SETTING})
    with pytest.raises(WrongMasterKeyError, match=WRONG_MESSAGE):
        await CredentialStore.open(target.open(), MASTER)


async def test_an_aes_check_made_with_another_key_is_refused_on_first_use(target: Target, db: Database) -> None:
    """A verifier and an AES-GCM check that disagree (a downgrade started with another key, then an upgrade):
    the credentials stay unreadable, and the first use says why."""
    await CredentialStore.open(db, MASTER)
    await write_old_database(db)  # salt and check under OLD_MASTER, the verifier under MASTER
    store = await CredentialStore.open(target.open(), MASTER)
    with pytest.raises(WrongMasterKeyError, match=WRONG_MESSAGE):
        await store.get_plaintext(OLD_ID)
    with pytest.raises(WrongMasterKeyError, match=WRONG_MESSAGE):
        await store.put("openai", "new", "sk-never-stored-000000000000")


# -- what start-up imports -------------------------------------------------------------------------

CHILD = """
import asyncio, json, sys

url, connect_args, master, wrong, old_id = sys.argv[1], json.loads(sys.argv[2]), *sys.argv[3:6]

import modelyard.gateway.services  # noqa: F401
from modelyard.storage.crypto import WrongMasterKeyError
from modelyard.storage.credentials import CredentialStore
from modelyard.storage.db import Database

def loaded():
    return any(name == "cryptography" or name.startswith("cryptography.") for name in sys.modules)

async def main():
    out = {"after_import": loaded()}
    db = Database(url, connect_args=connect_args)
    try:
        store = await CredentialStore.open(db, master)
        out["after_open"] = loaded()
        try:
            await CredentialStore.open(db, wrong)
            out["wrong_refused"] = False
        except WrongMasterKeyError:
            out["wrong_refused"] = True
        await store.list()
        out["after_list"] = loaded()
        if old_id:
            out["old_secret"] = await store.get_plaintext(old_id)
        else:
            rec = await store.put("openai", "main", "sk-subprocess-secret-00001234")
            out["round_trip"] = await store.get_plaintext(rec.id) == "sk-subprocess-secret-00001234"
        out["after_use"] = loaded()
    finally:
        await db.aclose()
    print(json.dumps(out))

asyncio.run(main())
"""


async def run_child(target: Target, master: str, old_id: str = "") -> dict[str, object]:
    args = [target.url, json.dumps(target.connect_args), master, WRONG, old_id]
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", CHILD, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


async def test_start_up_does_not_import_cryptography(target: Target, db: Database) -> None:
    first = await run_child(target, MASTER)  # a fresh database
    assert first == {
        "after_import": False,
        "after_open": False,
        "wrong_refused": True,
        "after_list": False,
        "round_trip": True,
        "after_use": True,
    }
    again = await run_child(target, MASTER)  # a restart, with credentials stored
    assert again["after_open"] is False and again["wrong_refused"] is True and again["after_use"] is True


async def test_the_upgrade_imports_cryptography_once(target: Target, db: Database) -> None:
    await write_old_database(db)
    first = await run_child(target, OLD_MASTER, OLD_ID)
    assert first["after_open"] is True  # the old AES-GCM check had to be opened
    assert first["wrong_refused"] is True and first["old_secret"] == OLD_SECRET
    again = await run_child(target, OLD_MASTER, OLD_ID)
    assert again == {
        "after_import": False,
        "after_open": False,
        "wrong_refused": True,
        "after_list": False,
        "old_secret": OLD_SECRET,
        "after_use": True,
    }
