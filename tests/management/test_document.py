"""Config documents and edits: secrets out of revisions, hashes, diffs, in-use checks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelyard.errors import ConflictError, NotFoundError
from modelyard.management import edits
from modelyard.management.document import (
    content_hash,
    diff,
    externalise_secrets,
    references,
    resolve_secrets,
    to_yaml,
)


def _doc() -> dict[str, Any]:
    return {
        "server": {"master_key": "sk-master-literal", "port": 4000},
        "providers": {
            "openai": {"kind": "openai", "api_key": "sk-live-abc", "headers": {"X-Org": "org-secret"}},
            "env": {"kind": "anthropic", "api_key": "${ANTHROPIC_API_KEY}"},
            "proxy": {"kind": "openai", "base_url": "https://user:pass@proxy.example/v1"},
            "ref": {"kind": "gemini", "api_key": "credential:gem-prod"},
        },
        "models": {"gpt": {"provider": "openai"}, "claude": {"provider": "env"}, "g": {"provider": "ref"}},
        "routes": {
            "main": {"models": ["gpt"], "fallbacks": ["claude"], "tasks": {"code": "claude"}},
            "alt": {"models": ["claude"]},
        },
        "default_route": "main",
        "budgets": [{"name": "b", "limit_usd": 5, "webhook": "https://hooks.example/T0K3N"}],
    }


async def test_literal_secrets_become_credentials_and_come_back() -> None:
    stored: dict[str, str] = {}

    async def store(name: str, secret: str) -> None:
        stored[name] = secret

    doc, names = await externalise_secrets(_doc(), store)
    text = to_yaml(doc)
    for secret in ("sk-live-abc", "org-secret", "user:pass", "T0K3N", "sk-master-literal"):
        assert secret not in text
    assert doc["providers"]["env"]["api_key"] == "${ANTHROPIC_API_KEY}"  # references are kept verbatim
    assert doc["providers"]["openai"]["api_key"] == "credential:openai.api_key"
    assert "master_key" not in doc["server"]  # the master key stays with the process
    assert sorted(names) == sorted(stored)
    assert references(doc)["providers.ref.api_key"] == "gem-prod"

    async def lookup(name: str) -> str | None:
        return stored.get(name)

    back, missing = await resolve_secrets(doc, lookup)
    assert missing == [("providers.ref.api_key", "gem-prod")]
    assert back["providers"]["openai"]["headers"]["X-Org"] == "org-secret"
    assert back["providers"]["proxy"]["base_url"] == "https://user:pass@proxy.example/v1"
    again, _ = await externalise_secrets(doc, store)
    assert content_hash(again) == content_hash(doc)  # idempotent: export then import keeps the hash


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.integers() | st.text(max_size=5), max_size=6))
def test_hash_ignores_key_order(d: dict[str, Any]) -> None:
    assert content_hash(d) == content_hash(dict(reversed(list(d.items()))))


def test_diff_is_unified_yaml() -> None:
    a = _doc()
    b = edits.merge(a, {"routes": {"main": {"strategy": "priority"}}})
    text = diff(a, b, "r1", "r2")
    assert text.startswith("--- r1\n+++ r2") and "+    strategy: priority" in text
    assert diff(a, a, "r1", "r1") == ""


def test_merge_patch_removes_with_null() -> None:
    merged = edits.merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": None}, "d": [1]})
    assert merged == {"a": {"c": 2}, "d": [1]}


def test_delete_in_use_names_users_and_force_cleans_up() -> None:
    doc = _doc()
    with pytest.raises(ConflictError) as info:
        edits.delete_model("claude", force=False)(doc)
    assert "routes.main.fallbacks" in info.value.message and "routes.main.tasks.code" in info.value.message
    assert "routes.alt.models" in info.value.message
    edits.delete_model("claude", force=True)(doc)
    assert "alt" not in doc["routes"] and doc["routes"]["main"] == {"models": ["gpt"], "fallbacks": [], "tasks": {}}
    with pytest.raises(ConflictError):
        edits.delete_route("main", force=False)(doc)  # the default route
    edits.delete_route("main", force=True)(doc)
    assert "default_route" not in doc
    with pytest.raises(NotFoundError):
        edits.delete_route("main", force=True)(doc)


def test_delete_provider_moves_fallbacks_up() -> None:
    doc = _doc()
    edits.delete_provider("openai", force=True)(doc)
    assert doc["routes"]["main"]["models"] == ["claude"] and doc["routes"]["main"]["fallbacks"] == []


def test_switch_keeps_previous_models_as_fallbacks() -> None:
    doc = _doc()
    edits.switch_route("main", "claude")(doc)
    assert doc["routes"]["main"]["models"] == ["claude"] and doc["routes"]["main"]["fallbacks"] == ["gpt"]
    edits.switch_route("main", "gpt", keep_previous=False)(doc)
    assert doc["routes"]["main"]["models"] == ["gpt"] and "fallbacks" not in doc["routes"]["main"]
    with pytest.raises(NotFoundError):
        edits.switch_route("main", "nope")(doc)


def test_create_existing_is_409_and_update_missing_is_404() -> None:
    doc = _doc()
    with pytest.raises(ConflictError):
        edits.put_entry("models", "gpt", {"provider": "openai"}, create=True)(doc)
    with pytest.raises(NotFoundError):
        edits.put_entry("models", "nope", {"provider": "openai"}, create=False)(doc)
    edits.put_entry("models", "gpt", {"context_window": 5}, create=False, patch=True)(doc)
    assert doc["models"]["gpt"] == {"provider": "openai", "context_window": 5}
