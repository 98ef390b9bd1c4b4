"""Secrets handling: encryption at rest of provider credentials, and masking for display."""

from __future__ import annotations

from modelyard.security.crypto import Cipher, CredentialDecryptionError, WrongMasterKeyError, mask

__all__ = ["Cipher", "CredentialDecryptionError", "WrongMasterKeyError", "mask"]
