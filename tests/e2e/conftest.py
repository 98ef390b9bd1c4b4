"""End-to-end fixtures: one fake per wire format and a real ``modelyard serve`` in front of them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelyard.testing import FakeServer, fake_class
from tests.helpers import ServerProcess

KINDS = ("openai", "anthropic", "gemini", "ollama")

#: configured chat model per wire format, with the upstream name each fake knows
CHAT_MODELS = {
    "openai": ("gpt", "gpt-4o"),
    "anthropic": ("claude", "claude-sonnet-4-5"),
    "gemini": ("gem", "gemini-2.5-flash"),
    "ollama": ("llama", "llama3.2:latest"),
}


@pytest.fixture(scope="session")
def fakes() -> Iterator[dict[str, FakeServer]]:
    started: dict[str, FakeServer] = {}
    try:
        for kind in KINDS:
            started[kind] = fake_class(kind)().start_in_thread()
        yield started
    finally:
        for fake in started.values():
            fake.stop_thread()


def base_url(fake: FakeServer) -> str:
    return str(getattr(fake, "base_url", fake.url))


def gateway_config(fakes: dict[str, FakeServer], **server: Any) -> dict[str, Any]:
    providers = {
        kind: {"kind": kind, "base_url": base_url(fake), "api_key": f"sk-test-{kind}-secret"}
        for kind, fake in fakes.items()
    }
    models: dict[str, Any] = {
        name: {"provider": kind, "model": upstream} for kind, (name, upstream) in CHAT_MODELS.items()
    }
    models["emb"] = {"provider": "openai", "model": "text-embedding-3-small", "mode": "embedding"}
    models["gpt-mini"] = {"provider": "openai", "model": "gpt-4o-mini"}
    return {
        "server": {"max_body_mb": 1, **server},
        "providers": providers,
        "models": models,
        "routes": {"main": {"models": ["gpt"], "fallbacks": ["gpt-mini", "claude"]}},
        "default_route": "main",
    }


@pytest.fixture(scope="module")
def server(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir: Path = tmp_path_factory.mktemp("gateway")
    proc = ServerProcess(gateway_config(fakes), workdir)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(autouse=True)
def _clean_fakes(fakes: dict[str, FakeServer]) -> Iterator[None]:
    for fake in fakes.values():
        fake.reset()
    yield
    for fake in fakes.values():
        fake.clear_faults()
