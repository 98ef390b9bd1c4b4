"""Fake providers for testing apps offline: real HTTP servers that speak each wire format.

    from modelyard.testing import FakeOpenAI, Fault

    with FakeOpenAI() as fake:                  # serves on a free loopback port, in a thread
        fake.inject("gpt-4o", status=429, retry_after="1", times=1)
        ...                                     # point a provider's base_url at fake.base_url
        assert fake.attempts("gpt-4o") == 2

Run one from the shell with ``modelyard fake-provider --kind openai --port 9100``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelyard.testing._fake_base import FakeServer, Fault, Profile, Prompt, Reply, make_reply

if TYPE_CHECKING:
    from modelyard.testing.fake_anthropic import FakeAnthropic
    from modelyard.testing.fake_gemini import FakeGemini
    from modelyard.testing.fake_ollama import FakeOllama
    from modelyard.testing.fake_openai import FakeOpenAI

__all__ = [
    "FAKE_KINDS",
    "FakeAnthropic",
    "FakeGemini",
    "FakeOllama",
    "FakeOpenAI",
    "FakeServer",
    "Fault",
    "Profile",
    "Prompt",
    "Reply",
    "fake_class",
    "make_reply",
]

FAKE_KINDS: dict[str, str] = {
    "openai": "modelyard.testing.fake_openai:FakeOpenAI",
    "anthropic": "modelyard.testing.fake_anthropic:FakeAnthropic",
    "gemini": "modelyard.testing.fake_gemini:FakeGemini",
    "ollama": "modelyard.testing.fake_ollama:FakeOllama",
}


def fake_class(kind: str) -> type[FakeServer]:
    import importlib

    module_name, _, cls_name = FAKE_KINDS[kind].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    assert isinstance(cls, type) and issubclass(cls, FakeServer)
    return cls


def __getattr__(name: str) -> Any:
    for kind, target in FAKE_KINDS.items():
        if target.endswith(":" + name):
            return fake_class(kind)
    raise AttributeError(name)
