"""Config documents: the YAML tree a revision stores, its hash, its diff, and its secrets.

A document is the config as written (a plain JSON-able tree, ``${VAR}`` references kept
verbatim).  Before it is stored every literal secret is replaced by a ``credential:NAME``
reference (the secret itself goes to the encrypted credential store); before it is validated
or run, every ``credential:NAME`` is replaced by its secret again.  Nothing here does I/O: the
credential store is passed in as two callables.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson
import yaml

__all__ = [
    "CREDENTIAL_PREFIX",
    "SecretSlot",
    "canonical",
    "content_hash",
    "diff",
    "externalise_secrets",
    "references",
    "resolve_secrets",
    "secret_slots",
    "to_yaml",
]

CREDENTIAL_PREFIX = "credential:"
#: process-level keys a revision does not carry: the master key decrypts the credentials that the
#: revisions refer to, so it stays with the process (file or environment), never in a revision
_PROCESS_SECRETS = (("server", "master_key"),)


def canonical(doc: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits (YAML allows any): the standard library takes it
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(doc: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(doc)).hexdigest()


def to_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)


def diff(before: dict[str, Any] | None, after: dict[str, Any], before_label: str, after_label: str) -> str:
    """A unified diff of two documents as YAML (keys sorted, so order changes are no noise)."""
    a = yaml.safe_dump(before, sort_keys=True).splitlines(keepends=True) if before is not None else []
    b = yaml.safe_dump(after, sort_keys=True).splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, fromfile=before_label, tofile=after_label))


class SecretSlot:
    """One place in a document that holds a secret: its YAML path and a stable credential name."""

    __slots__ = ("container", "credential_name", "key", "path")

    def __init__(self, container: dict[str, Any], key: str, path: str, credential_name: str) -> None:
        self.container = container
        self.key = key
        self.path = path
        self.credential_name = credential_name

    @property
    def value(self) -> Any:
        return self.container.get(self.key)


def _has_userinfo(url: str) -> bool:
    try:
        return bool(urlsplit(url).username or urlsplit(url).password)
    except ValueError:
        return False


def secret_slots(doc: dict[str, Any]) -> Iterator[SecretSlot]:
    """Every secret-bearing value of a document: provider keys, header values, URLs with userinfo,
    budget webhooks (their URLs often carry a token)."""
    providers = doc.get("providers")
    if isinstance(providers, dict):
        for name, p in providers.items():
            if not isinstance(p, dict):
                continue
            if isinstance(p.get("api_key"), str):
                yield SecretSlot(p, "api_key", f"providers.{name}.api_key", f"{name}.api_key")
            headers = p.get("headers")
            if isinstance(headers, dict):
                for h, v in headers.items():
                    if isinstance(v, str):
                        yield SecretSlot(headers, h, f"providers.{name}.headers.{h}", f"{name}.header.{h.lower()}")
            url = p.get("base_url")
            if isinstance(url, str) and (_has_userinfo(url) or url.startswith(CREDENTIAL_PREFIX)):
                yield SecretSlot(p, "base_url", f"providers.{name}.base_url", f"{name}.base_url")
    alerts = doc.get("alerts")
    if isinstance(alerts, list):
        for i, a in enumerate(alerts):
            if not isinstance(a, dict):
                continue
            label = a.get("name", i)
            for key in ("webhook", "secret"):
                if isinstance(a.get(key), str):
                    yield SecretSlot(a, key, f"alerts[{i}].{key}", f"alert.{label}.{key}")
    budgets = doc.get("budgets")
    if isinstance(budgets, list):
        for i, b in enumerate(budgets):
            if isinstance(b, dict) and isinstance(b.get("webhook"), str):
                label = b.get("name", i)
                yield SecretSlot(b, "webhook", f"budgets[{i}].webhook", f"budget.{label}.webhook")


def _is_reference(value: str) -> bool:
    return "${" in value or value.startswith(CREDENTIAL_PREFIX)


async def externalise_secrets(
    doc: dict[str, Any], store: Callable[[str, str], Awaitable[None]]
) -> tuple[dict[str, Any], list[str]]:
    """A copy of ``doc`` with every literal secret stored (``store(name, secret)``) and replaced by
    ``credential:NAME``; the names stored.  ``${VAR}`` references are kept verbatim; the master key
    is dropped (see ``_PROCESS_SECRETS``)."""
    out = copy.deepcopy(doc)
    for section, key in _PROCESS_SECRETS:
        part = out.get(section)
        if isinstance(part, dict) and isinstance(part.get(key), str) and not _is_reference(part[key]):
            del part[key]
            if not part:
                del out[section]
    stored: list[str] = []
    for slot in list(secret_slots(out)):
        value = slot.value
        if not isinstance(value, str) or not value or _is_reference(value):
            continue
        await store(slot.credential_name, value)
        slot.container[slot.key] = CREDENTIAL_PREFIX + slot.credential_name
        stored.append(slot.credential_name)
    return out, stored


def references(doc: dict[str, Any]) -> dict[str, str]:
    """``{yaml path: credential name}`` of every ``credential:NAME`` in a document."""
    return {
        slot.path: slot.value[len(CREDENTIAL_PREFIX) :]
        for slot in secret_slots(doc)
        if isinstance(slot.value, str) and slot.value.startswith(CREDENTIAL_PREFIX)
    }


async def resolve_secrets(
    doc: dict[str, Any], lookup: Callable[[str], Awaitable[str | None]]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A copy of ``doc`` with every ``credential:NAME`` replaced by its secret, and the
    (YAML path, credential name) of every reference that could not be resolved."""
    out = copy.deepcopy(doc)
    missing: list[tuple[str, str]] = []
    for slot in list(secret_slots(out)):
        value = slot.value
        if isinstance(value, str) and value.startswith(CREDENTIAL_PREFIX):
            name = value[len(CREDENTIAL_PREFIX) :]
            secret = await lookup(name)
            if secret is None:
                missing.append((slot.path, name))
            else:
                slot.container[slot.key] = secret
    return out, missing
