"""Provider credentials added through the admin API, encrypted at rest (see modelyard.storage.crypto).

Rows hold the AES-GCM ciphertext, its nonce and a masked form for display; the associated data
binds each ciphertext to its row id.  Three values live in the ``settings`` table:

* ``credentials.key_verifier``: a salted HMAC of a constant under a key derived from the master key,
  made with the standard library only.  :meth:`CredentialStore.open` (server start-up) creates it on
  first use and, later, refuses a different master key with
  :class:`~modelyard.storage.crypto.WrongMasterKeyError` instead of failing on the first credential
  read, without importing ``cryptography`` (about 8 MB of memory).
* ``credentials.hkdf_salt`` and ``credentials.key_check``: the per-installation HKDF salt of the data
  key and an AES-GCM sealed check value.  They are created, and the check verified, when a credential
  is first encrypted or decrypted: that is when ``cryptography`` is imported and the data key derived
  (once per store).  They are always written together, as earlier versions expect.

A database written by an earlier version has the salt and check but no verifier: ``open`` then
verifies the master key against the AES-GCM check (importing ``cryptography``, that one time) and
adds the verifier.  Plaintext leaves this module only through :meth:`CredentialStore.get_plaintext`,
for server-side use.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, delete, select, update

from modelyard.errors import NotFoundError
from modelyard.storage.aio import AsyncConnection
from modelyard.storage.crypto import Cipher, make_key_verifier, mask, verify_key_verifier
from modelyard.storage.db import Database
from modelyard.storage.tables import provider_credentials, settings

__all__ = ["CredentialRecord", "CredentialStore"]

SALT_SETTING = "credentials.hkdf_salt"
CHECK_SETTING = "credentials.key_check"
VERIFIER_SETTING = "credentials.key_verifier"
_T = provider_credentials


@dataclass(frozen=True, slots=True)
class CredentialRecord:
    """A stored credential as it may be shown: never the secret, only its masked form."""

    id: str
    org_id: str | None
    provider: str
    name: str
    masked: str
    created_at: datetime

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "org_id": self.org_id,
            "provider": self.provider,
            "name": self.name,
            "masked": self.masked,
            "created_at": self.created_at.isoformat(),
        }


def _aad(credential_id: str) -> bytes:
    return b"modelyard/credential/" + credential_id.encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _record(row: Row[Any]) -> CredentialRecord:
    m = row._mapping
    return CredentialRecord(
        id=m["id"],
        org_id=m["org_id"],
        provider=m["provider"],
        name=m["name"],
        masked=m["masked"],
        created_at=m["created_at"],
    )


_PUBLIC_COLUMNS = [_T.c.id, _T.c.org_id, _T.c.provider, _T.c.name, _T.c.masked, _T.c.created_at]


class CredentialStore:
    """Encrypted provider credentials.  Build it with :meth:`open`."""

    def __init__(self, database: Database, master_key: str) -> None:
        self.db = database
        self._master_key = master_key
        self._cipher: Cipher | None = None
        self._cipher_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"CredentialStore({self.db!r})"

    @classmethod
    async def open(cls, database: Database, master_key: str) -> CredentialStore:
        """Verify the master key against the stored key verifier (creating it the first time).

        Does not import ``cryptography``, except once on a database written by an earlier version,
        to verify the master key against its AES-GCM check before adding the verifier.
        """
        async with database.begin_write() as conn:
            stored = await _settings(conn)
            if VERIFIER_SETTING not in stored:
                if SALT_SETTING in stored and CHECK_SETTING in stored:
                    _cipher_from(master_key, stored)  # raises WrongMasterKeyError
                row = {"key": VERIFIER_SETTING, "value": make_key_verifier(master_key), "updated_at": datetime.now(UTC)}
                await conn.execute(database.insert_or_ignore(settings), [row])
                stored = await _settings(conn)
        verify_key_verifier(master_key, stored[VERIFIER_SETTING])
        return cls(database, master_key)

    async def _data_cipher(self) -> Cipher:
        """The AES-GCM cipher of the data key, made on first use (the salt and check too, the first time).

        Call it outside any write transaction of this store's database (it may open one).
        """
        if self._cipher is None:
            async with self._cipher_lock:
                if self._cipher is None:
                    self._cipher = await self._load_cipher()
        return self._cipher

    async def _load_cipher(self) -> Cipher:
        async with self.db.engine.connect() as conn:
            stored = await _settings(conn)
        if SALT_SETTING not in stored or CHECK_SETTING not in stored:
            async with self.db.begin_write() as conn:
                stored = await _settings(conn)
                if SALT_SETTING not in stored or CHECK_SETTING not in stored:
                    salt = secrets.token_bytes(16)
                    ciphertext, nonce = Cipher.from_master_key(self._master_key, salt=salt).make_check()
                    now = datetime.now(UTC)
                    rows = [
                        {"key": SALT_SETTING, "value": _b64(salt), "updated_at": now},
                        {"key": CHECK_SETTING, "value": f"{_b64(nonce)}.{_b64(ciphertext)}", "updated_at": now},
                    ]
                    await conn.execute(self.db.insert_or_ignore(settings), rows)
                    stored = await _settings(conn)
        return _cipher_from(self._master_key, stored)

    async def put(self, provider: str, name: str, secret: str, org_id: str | None = None) -> CredentialRecord:
        """Store a credential (replacing the secret of an existing one with the same org, provider and name)."""
        cipher = await self._data_cipher()
        where = [_T.c.provider == provider, _T.c.name == name]
        where.append(_T.c.org_id.is_(None) if org_id is None else _T.c.org_id == org_id)
        async with self.db.begin_write() as conn:
            existing = (await conn.execute(select(_T.c.id).where(*where))).first()
            credential_id = existing[0] if existing is not None else f"cred_{secrets.token_hex(8)}"
            ciphertext, nonce = cipher.encrypt(secret, _aad(credential_id))
            values = {"ciphertext": ciphertext, "nonce": nonce, "masked": mask(secret)}
            if existing is not None:
                await conn.execute(update(_T).where(_T.c.id == credential_id).values(**values))
            else:
                await conn.execute(
                    _T.insert().values(
                        id=credential_id,
                        org_id=org_id,
                        provider=provider,
                        name=name,
                        created_at=datetime.now(UTC),
                        **values,
                    )
                )
            row = (await conn.execute(select(*_PUBLIC_COLUMNS).where(_T.c.id == credential_id))).one()
        return _record(row)

    async def get_plaintext(self, credential_id: str, *, org_id: str | None = None) -> str:
        """The secret, decrypted (server-side use only: never return it to a client or log it)."""
        query = select(_T.c.ciphertext, _T.c.nonce).where(_T.c.id == credential_id)
        if org_id is not None:
            query = query.where(_T.c.org_id == org_id)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise NotFoundError(f"credential {credential_id!r} not found", code="credential_not_found")
        cipher = await self._data_cipher()
        return cipher.decrypt_str(bytes(row.ciphertext), bytes(row.nonce), _aad(credential_id))

    async def secret_by_name(self, name: str, *, org_id: str | None = None) -> str | None:
        """The secret of the credential called ``name`` (``api_key: credential:NAME``), or None.

        With ``org_id``, that organisation's own credential of that name; without, the global one
        (no organisation).  Server-side use only."""
        where = _T.c.org_id.is_(None) if org_id is None else _T.c.org_id == org_id
        query = (
            select(_T.c.id, _T.c.ciphertext, _T.c.nonce)
            .where(_T.c.name == name, where)
            .order_by(_T.c.created_at.desc(), _T.c.id)
            .limit(1)
        )
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        cipher = await self._data_cipher()
        return cipher.decrypt_str(bytes(row.ciphertext), bytes(row.nonce), _aad(row.id))

    async def org_secrets(self, names: Iterable[str]) -> list[tuple[str, str, str]]:
        """(org id, name, secret) of every organisation's own credential called one of ``names``
        (bring your own key).  Server-side use only."""
        wanted = sorted(set(names))
        if not wanted:
            return []
        query = select(_T.c.id, _T.c.org_id, _T.c.name, _T.c.ciphertext, _T.c.nonce).where(
            _T.c.name.in_(wanted), _T.c.org_id.is_not(None)
        )
        async with self.db.engine.connect() as conn:
            rows = list(await conn.execute(query))
        if not rows:
            return []
        cipher = await self._data_cipher()
        return [(r.org_id, r.name, cipher.decrypt_str(bytes(r.ciphertext), bytes(r.nonce), _aad(r.id))) for r in rows]

    async def list(self, org_id: str | None = None) -> list[CredentialRecord]:
        """Credentials (masked) of one organisation, or all of them when ``org_id`` is None."""
        query = select(*_PUBLIC_COLUMNS).order_by(_T.c.created_at, _T.c.id)
        if org_id is not None:
            query = query.where(_T.c.org_id == org_id)
        async with self.db.engine.connect() as conn:
            return [_record(r) for r in await conn.execute(query)]

    async def delete(self, credential_id: str, *, org_id: str | None = None) -> None:
        query = delete(_T).where(_T.c.id == credential_id)
        if org_id is not None:
            query = query.where(_T.c.org_id == org_id)
        async with self.db.begin_write() as conn:
            result = await conn.execute(query)
        if result.rowcount == 0:
            raise NotFoundError(f"credential {credential_id!r} not found", code="credential_not_found")


async def _settings(conn: AsyncConnection) -> dict[str, str]:
    rows = await conn.execute(select(settings.c.key, settings.c.value).where(settings.c.key.like("credentials.%")))
    return {r.key: r.value for r in rows}


def _cipher_from(master_key: str, stored: dict[str, str]) -> Cipher:
    """The data key's cipher, from the stored salt, verified against the stored AES-GCM check."""
    salt = base64.b64decode(stored[SALT_SETTING])
    nonce_b64, _, ciphertext_b64 = stored[CHECK_SETTING].partition(".")
    cipher = Cipher.from_master_key(master_key, salt=salt)
    cipher.verify_check(base64.b64decode(ciphertext_b64), base64.b64decode(nonce_b64))
    return cipher
