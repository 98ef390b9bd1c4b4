"""D2 (issue #13): an upstream that quotes the key it was sent leaks it nowhere.

Every provider kind's fake answers 401 with a message that quotes the provider's configured key
(of no recognisable shape) and a key-shaped string that is in no config. Neither may appear in the
gateway's error body (plain and streamed requests), ``/v1/status``, the server log or the usage
database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.testing import FakeServer, Fault
from tests.e2e.conftest import CHAT_MODELS, gateway_config
from tests.helpers import ServerProcess

PATTERN_KEY = "sk-proj-Zx9Qw8Er7Ty6Ui5Op4As3Df2"


def provider_key(kind: str) -> str:
    return f"plain{kind}Secret7731"


@pytest.fixture(scope="module")
def srv(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cfg = gateway_config(fakes)
    for kind, provider in cfg["providers"].items():
        provider["api_key"] = provider_key(kind)
    cfg["usage"] = {"flush_interval_ms": 50}
    proc = ServerProcess(cfg, tmp_path_factory.mktemp("secrets"))
    try:
        yield proc
    finally:
        proc.stop()


def leaks(text: str) -> list[str]:
    found = [k for k in (provider_key(kind) for kind in CHAT_MODELS) if k in text]
    return found + ([PATTERN_KEY] if PATTERN_KEY in text else [])


def body(model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "modelyard": {"fallback": False},
        **extra,
    }


@pytest.mark.parametrize("kind", list(CHAT_MODELS))
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_an_upstream_quoting_its_key_leaks_nothing(
    srv: ServerProcess, fakes: dict[str, FakeServer], kind: str, stream: bool
) -> None:
    name, upstream = CHAT_MODELS[kind]
    message = f"Incorrect API key provided: {provider_key(kind)}. Another one: {PATTERN_KEY}"
    fakes[kind].inject(upstream, Fault(status=401, message=message))
    resp = httpx.post(srv.url + "/v1/chat/completions", json=body(name, stream=stream), timeout=30)
    assert resp.status_code >= 400, resp.text
    assert "Incorrect API key provided" in resp.text  # the upstream's message is kept ...
    assert leaks(resp.text) == []  # ... without the keys
    status = httpx.get(srv.url + "/v1/status", timeout=10).text
    assert leaks(status) == []


def test_nothing_leaked_into_the_log_or_the_database(srv: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    for kind, (name, upstream) in CHAT_MODELS.items():
        fakes[kind].inject(upstream, Fault(status=401, message=f"bad key {provider_key(kind)} / {PATTERN_KEY}"))
        httpx.post(srv.url + "/v1/chat/completions", json=body(name), timeout=30)
    srv.stop()  # flushes every queued usage record
    assert leaks(srv.log()) == []
    for path in Path(srv.workdir).glob("modelyard.db*"):
        assert leaks(path.read_bytes().decode("latin-1")) == [], path
