"""Encryption at rest for provider credentials, and masking for display.

The data key is derived from the master key (``server.master_key``) with HKDF-SHA256, a fixed
``info`` string (:data:`HKDF_INFO`) and a salt.  The credential store uses a random 16-byte salt
made once per installation and kept in the ``settings`` table (so two installations with the same
master key still have different data keys); without a salt, a fixed application salt is used.
Values are sealed with AES-256-GCM, a fresh random 96-bit nonce per value, and associated data
that binds each ciphertext to its row (a ciphertext copied to another row does not decrypt).

The master key is verified at start-up with a *key verifier* made with the standard library only
(:func:`make_key_verifier`, :func:`verify_key_verifier`): HMAC-SHA256, under a key derived with
HKDF-SHA256 (RFC 5869, :func:`hkdf_sha256`) from the master key, its own random salt and another
``info`` string (:data:`VERIFIER_INFO`), over a constant.  It reveals nothing about the data key.
The ``cryptography`` package (about 8 MB of memory) is imported only when a :class:`Cipher` is made,
that is when a credential is first encrypted or decrypted, never just to start the gateway.

The master key should be long and random (``openssl rand -base64 32``): HKDF is a key derivation
function for high-entropy input, not a password hash.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import TYPE_CHECKING

from modelyard.errors import ConfigError, CredentialDecryptionError, WrongMasterKeyError

if TYPE_CHECKING:  # imported in Cipher(), on first use: cryptography costs about 8 MB of memory
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "HKDF_INFO",
    "VERIFIER_INFO",
    "Cipher",
    "CredentialDecryptionError",
    "WrongMasterKeyError",
    "hkdf_sha256",
    "make_key_verifier",
    "mask",
    "verify_key_verifier",
]

HKDF_INFO = b"modelyard/provider-credentials/aes-256-gcm/v1"
_DEFAULT_SALT = b"modelyard/default-salt/v1"
NONCE_BYTES = 12
#: the sealed value kept next to the salt, to tell a wrong master key from a damaged value
CHECK_PLAINTEXT = b"modelyard master key check v1"
CHECK_AAD = b"modelyard/master-key-check"
#: the key verifier: HMAC-SHA256(HKDF-SHA256(master_key, salt, VERIFIER_INFO), VERIFIER_MESSAGE)
VERIFIER_INFO = b"modelyard/master-key-verifier/hmac-sha256/v1"
VERIFIER_MESSAGE = b"modelyard master key verifier v1"
VERIFIER_SALT_BYTES = 16

#: public vendor prefixes that ``mask`` may keep (they say which kind of key it is, nothing secret)
_PUBLIC_PREFIXES = ("sk-ant-", "sk-proj-", "sk-", "gsk_", "xai-", "AIza")
_MIN_LEN_FOR_TAIL = 12
_TAIL = 4


def _require(master_key: str) -> bytes:
    if not master_key:
        raise ConfigError("a master key is needed to encrypt provider credentials", path="server.master_key")
    return master_key.encode()


def _wrong_master_key() -> WrongMasterKeyError:
    return WrongMasterKeyError(
        "the master key (server.master_key) is not the one the stored provider credentials were "
        "encrypted with; start with the previous master key (credentials cannot be read otherwise)"
    )


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256 (RFC 5869) with the standard library: extract, then expand to ``length`` bytes."""
    if not 0 < length <= 255 * hashlib.sha256().digest_size:
        raise ValueError("HKDF-SHA256 output length must be 1 to 8160 bytes")
    prk = hmac.digest(salt or bytes(hashlib.sha256().digest_size), ikm, "sha256")
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        okm += block
        counter += 1
    return okm[:length]


def _verifier_tag(master_key: str, salt: bytes) -> bytes:
    key = hkdf_sha256(_require(master_key), salt=salt, info=VERIFIER_INFO)
    return hmac.digest(key, VERIFIER_MESSAGE, "sha256")


def make_key_verifier(master_key: str) -> str:
    """A value to store, that :func:`verify_key_verifier` checks the master key against (``salt.tag``, base64)."""
    salt = os.urandom(VERIFIER_SALT_BYTES)
    tag = _verifier_tag(master_key, salt)
    return f"{base64.b64encode(salt).decode()}.{base64.b64encode(tag).decode()}"


def verify_key_verifier(master_key: str, verifier: str) -> None:
    """Raise :class:`WrongMasterKeyError` unless ``verifier`` was made with this master key (standard library only)."""
    salt_b64, _, tag_b64 = verifier.partition(".")
    try:
        salt = base64.b64decode(salt_b64, validate=True)
        tag = base64.b64decode(tag_b64, validate=True)
    except ValueError:  # binascii.Error: not base64
        salt, tag = b"", b""
    expected = _verifier_tag(master_key, salt)
    if not (salt and hmac.compare_digest(expected, tag)):
        raise _wrong_master_key()


class Cipher:
    """AES-256-GCM with a key derived from the master key.  Holds no plaintext of the key itself.

    Making one imports ``cryptography`` (on first use only; see the module docstring).
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the data key must be 32 bytes")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead: AESGCM = AESGCM(key)

    @classmethod
    def from_master_key(cls, master_key: str, *, salt: bytes | None = None) -> Cipher:
        """Derive the data key: HKDF-SHA256(master_key, salt, info=HKDF_INFO), 32 bytes."""
        ikm = _require(master_key)
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt or _DEFAULT_SALT, info=HKDF_INFO)
        return cls(hkdf.derive(ikm))

    def encrypt(self, plaintext: str | bytes, aad: bytes) -> tuple[bytes, bytes]:
        """Seal a value; return ``(ciphertext_with_tag, nonce)``."""
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        nonce = os.urandom(NONCE_BYTES)
        return self._aead.encrypt(nonce, data, aad), nonce

    def decrypt(self, ciphertext: bytes, nonce: bytes, aad: bytes) -> bytes:
        """Open a sealed value; raise :class:`CredentialDecryptionError` when it does not authenticate."""
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise CredentialDecryptionError(
                "a stored credential failed authentication: it was altered, copied from another row, "
                "or encrypted under a different master key"
            ) from None

    def decrypt_str(self, ciphertext: bytes, nonce: bytes, aad: bytes) -> str:
        return self.decrypt(ciphertext, nonce, aad).decode()

    def make_check(self) -> tuple[bytes, bytes]:
        """A sealed constant, stored once, that :meth:`verify_check` opens to test the master key."""
        return self.encrypt(CHECK_PLAINTEXT, CHECK_AAD)

    def verify_check(self, ciphertext: bytes, nonce: bytes) -> None:
        """Raise :class:`WrongMasterKeyError` unless this cipher's key sealed the check value."""
        from cryptography.exceptions import InvalidTag

        try:
            ok = hmac.compare_digest(self._aead.decrypt(nonce, ciphertext, CHECK_AAD), CHECK_PLAINTEXT)
        except InvalidTag:
            ok = False
        if not ok:
            raise _wrong_master_key()

    def __repr__(self) -> str:
        return "Cipher(<AES-256-GCM>)"


def mask(secret: str) -> str:
    """A display form of a secret: ``sk-...abcd``.

    Shows at most the last 4 characters (none for secrets shorter than 12), plus a known public
    vendor prefix such as ``sk-`` when the secret starts with one.
    """
    prefix = next((p for p in _PUBLIC_PREFIXES if secret.startswith(p)), "")
    rest = secret[len(prefix) :]
    tail = rest[-_TAIL:] if len(secret) >= _MIN_LEN_FOR_TAIL and len(rest) >= 2 * _TAIL else ""
    return f"{prefix}...{tail}"
