"""The slow-first-token scenario (#19 point 1): a model with a fast history that goes silent
before its first token is cut within its adaptive limit (here 2 s) and the stream is rescued by
the fallback, within 15 s; before it has a history, the cloud default (10 s) applies."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.helpers import ServerProcess


@pytest.fixture(scope="module")
def srv(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cfg = gateway_config(fakes)
    cfg["routes"]["main"] = {"models": ["gpt"], "fallbacks": ["gpt-mini"]}
    proc = ServerProcess(cfg, tmp_path_factory.mktemp("ttft"))
    try:
        yield proc
    finally:
        proc.stop()


def stream(srv: ServerProcess) -> tuple[str, str, float]:
    body = {"model": "main", "stream": True, "messages": [{"role": "user", "content": "hello"}]}
    t0 = time.perf_counter()
    with httpx.stream("POST", srv.url + "/v1/chat/completions", json=body, timeout=60) as resp:
        text = "".join(resp.iter_text())
        model = resp.headers["x-modelyard-model"]
    return model, text, time.perf_counter() - t0


def limit(srv: ServerProcess) -> dict[str, object]:
    return dict(httpx.get(srv.url + "/v1/status", timeout=10).json()["models"]["gpt"]["first_token_timeout"]["plain"])


def test_a_slow_first_token_on_a_fast_model_is_rescued_within_15_s(
    srv: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    assert limit(srv)["source"] == "cloud default" and limit(srv)["seconds"] == 10.0
    for _ in range(25):  # a fast history
        assert stream(srv)[0] == "gpt"
    adaptive = limit(srv)
    assert adaptive["source"] == "adaptive" and adaptive["seconds"] == 2.0 and adaptive["samples"] == 25
    fakes["openai"].inject("gpt-4o", first_token_delay_s=60, times=1)
    model, text, elapsed = stream(srv)
    assert model == "gpt-mini"  # the fallback answered: the client saw one clean stream
    assert text.rstrip().endswith("[DONE]")
    assert 2.0 <= elapsed < 15.0, elapsed  # cut at the adaptive 2 s, not a fixed 20 s
