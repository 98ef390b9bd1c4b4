"""The lifecycle of Ollama models, over real HTTP against FakeOllama: load on first use with its
load time and /api/ps size, shared loads, load timeouts, keep_alive expiry, reconciliation with
/api/ps, a missing model, auto_pull with progress, load failures, and max_loaded LRU eviction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from modelyard.config.loader import parse_config
from modelyard.config.schema import OllamaProviderConfig
from modelyard.errors import UpstreamStatusError, UpstreamTimeoutError
from modelyard.providers import CallOptions, build_provider
from modelyard.providers.ollama.provider import OllamaProvider
from modelyard.runtime import Runtime, sync_runtime
from modelyard.testing.fake_ollama import FakeOllama
from modelyard.types import ChatChunk, ChatRequest, Message

CALL = CallOptions(timeout_s=5.0, connect_timeout_s=2.0)
LLAMA = "llama3.2:latest"
MISTRAL = "mistral:7b"


def req(text: str = "hello") -> ChatRequest:
    return ChatRequest(model="route", messages=[Message("user", text)])


@pytest.fixture
async def fake() -> AsyncIterator[FakeOllama]:
    async with FakeOllama() as f:
        yield f


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


async def managed(
    stack: AsyncExitStack, fake: FakeOllama, **config: Any
) -> tuple[OllamaProvider, list[dict[str, Any]]]:
    """A provider whose lifecycle manager is started (as the gateway does), and its events."""
    p = build_provider("box", OllamaProviderConfig(base_url=fake.base_url, **config))
    assert isinstance(p, OllamaProvider)
    stack.push_async_callback(p.aclose)
    events: list[dict[str, Any]] = []
    p.lifecycle.add_listener(events.append)
    await p.lifecycle.start()
    return p, events


def states(events: list[dict[str, Any]], model: str) -> list[str]:
    return [e["state"] for e in events if e["type"] == "state" and e["model"] == model]


async def until(predicate: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_first_use_loads_explicitly_with_load_time_and_size(stack: AsyncExitStack, fake: FakeOllama) -> None:
    fake.set_load_time(LLAMA, 0.3)
    p, events = await managed(stack, fake)
    answer = await p.chat(req("hi"), "llama3.2", CALL)
    status = p.lifecycle.model_status("llama3.2")
    assert answer.choices[0].message.content == "llama3.2:latest says: hi"
    assert [r["path"] for r in fake.requests] == ["/api/generate", "/api/chat"]
    assert fake.requests[0]["body"] == {"model": LLAMA, "keep_alive": 1800}  # the 30 min default, in seconds
    assert fake.requests[1]["body"]["keep_alive"] == 1800
    assert status["model"] == LLAMA and status["state"] == "ready"
    assert status["load_time_s"] >= 0.3 and status["memory_bytes"] == fake.installed[LLAMA].size
    assert status["last_used"] is not None and fake.load_count(LLAMA) == 1
    assert states(events, LLAMA) == ["loading", "ready", "in_use", "ready"]
    await p.chat(req(), "llama3.2", CALL)  # loaded: no second load request
    assert [r["path"] for r in fake.requests][2:] == ["/api/chat"]


async def test_concurrent_requests_share_one_load(stack: AsyncExitStack, fake: FakeOllama) -> None:
    fake.set_load_time(LLAMA, 0.3)
    p, events = await managed(stack, fake)

    async def stream() -> list[ChatChunk]:
        return [c async for c in p.stream(req("b"), LLAMA, CALL)]

    start = time.perf_counter()
    results = await asyncio.gather(*(p.chat(req("a"), LLAMA, CALL) for _ in range(3)), stream())
    assert 0.3 <= time.perf_counter() - start < 1.5  # load_count == 1 proves the sharing
    assert len(results) == 4 and fake.load_count(LLAMA) == 1
    assert [r["path"] for r in fake.requests].count("/api/generate") == 1
    assert states(events, LLAMA)[:3] == ["loading", "ready", "in_use"] and states(events, LLAMA)[-1] == "ready"


async def test_load_timeout_from_the_model_config_fails_over_with_phase_load(
    stack: AsyncExitStack, fake: FakeOllama
) -> None:
    fake.set_load_time(LLAMA, 0.6)
    cfg = parse_config(
        {
            "providers": {"box": {"kind": "ollama", "base_url": fake.base_url}},
            "models": {"llama": {"provider": "box", "model": "llama3.2", "load_timeout_s": 0.15}},
        }
    )
    rt = Runtime(cfg)
    stack.push_async_callback(rt.close_unused, None)
    sync_runtime(rt)
    dep = rt.models["llama"]
    await dep.provider.lifecycle.start()  # type: ignore[attr-defined]
    start = time.perf_counter()
    with pytest.raises(UpstreamTimeoutError) as info:
        await dep.provider.chat(req(), dep.upstream, CALL)
    waited = time.perf_counter() - start
    assert info.value.phase == "load" and info.value.retryable and 0.15 <= waited < 0.58  # the load takes 0.6 s
    assert info.value.provider == "box" and info.value.model == LLAMA
    await until(lambda: fake.is_loaded(LLAMA))  # the load went on in the background
    await dep.provider.chat(req(), dep.upstream, CALL)
    assert fake.load_count(LLAMA) == 1


async def test_keep_alive_expiry_unloads_and_the_next_request_reloads(stack: AsyncExitStack, fake: FakeOllama) -> None:
    p, events = await managed(stack, fake, keep_alive="300ms")
    await p.chat(req(), LLAMA, CALL)
    assert fake.requests[-1]["body"]["keep_alive"] == 0.3
    await until(lambda: p.lifecycle.model_status(LLAMA)["state"] == "not_loaded")
    assert not fake.is_loaded(LLAMA)
    assert states(events, LLAMA) == ["loading", "ready", "in_use", "ready", "not_loaded"]
    assert events[-1]["reason"] == "idle for 0.3 s"
    await p.chat(req(), LLAMA, CALL)
    assert fake.load_count(LLAMA) == 2


async def test_keep_alive_zero_unloads_after_each_use(stack: AsyncExitStack, fake: FakeOllama) -> None:
    p, _ = await managed(stack, fake, keep_alive=0)
    await p.chat(req(), LLAMA, CALL)
    assert fake.requests[0]["body"]["keep_alive"] == 300  # a load with 0 would unload at once
    assert fake.requests[1]["body"]["keep_alive"] == 0
    await until(lambda: p.lifecycle.model_status(LLAMA)["state"] == "not_loaded")
    assert not fake.is_loaded(LLAMA)


async def test_states_follow_api_ps(stack: AsyncExitStack, fake: FakeOllama) -> None:
    p, events = await managed(stack, fake)
    await p.chat(req(), LLAMA, CALL)
    await p.unload(LLAMA)  # behind the manager's back
    await p.load(MISTRAL)
    await p.lifecycle.refresh()
    status = {s["model"]: s for s in p.lifecycle.status()}
    assert status[LLAMA]["state"] == "not_loaded" and status[LLAMA]["memory_bytes"] is None
    assert status[MISTRAL]["state"] == "ready" and status[MISTRAL]["memory_bytes"] == fake.installed[MISTRAL].size
    reasons = {e["model"]: e["reason"] for e in events if e["type"] == "state"}
    assert reasons[MISTRAL] == "loaded outside modelyard" and "no longer loaded" in reasons[LLAMA]


async def test_a_missing_model_is_an_error_that_says_how_to_pull_it(stack: AsyncExitStack, fake: FakeOllama) -> None:
    p, _ = await managed(stack, fake)
    with pytest.raises(UpstreamStatusError) as info:
        await p.chat(req(), "phi4:14b", CALL)
    err = info.value
    assert err.upstream_status == 404 and err.code == "model_not_found" and not err.retryable
    status = p.lifecycle.model_status("phi4:14b")
    assert status["state"] == "error" and "run `ollama pull phi4:14b`" in status["last_error"]
    assert "/api/chat" not in [r["path"] for r in fake.requests]  # the failed load stopped it


async def test_auto_pull_installs_a_missing_model_with_progress(stack: AsyncExitStack, fake: FakeOllama) -> None:
    p, events = await managed(stack, fake, auto_pull=True)
    answer = await p.chat(req("hi"), "qwen2.5:0.5b", CALL)
    assert answer.choices[0].message.content == "qwen2.5:0.5b says: hi"
    assert "qwen2.5:0.5b" in fake.installed
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[0]["status"] == "pulling (auto_pull)" and progress[-1]["status"] == "success"
    downloads = [e for e in progress if "completed" in e]
    assert downloads and downloads[-1]["completed"] == downloads[-1]["total"] == 2_000_000
    assert states(events, "qwen2.5:0.5b") == ["loading", "ready", "in_use", "ready"]
    with pytest.raises(UpstreamStatusError, match="could not be pulled") as info:
        await p.chat(req(), "no-such-model:1b", CALL)
    assert info.value.upstream_status == 404 and info.value.code == "model_not_found"
    assert p.lifecycle.model_status("no-such-model:1b")["state"] == "error"


async def test_a_load_that_runs_out_of_memory_is_a_retryable_503(stack: AsyncExitStack, fake: FakeOllama) -> None:
    fake.inject(LLAMA, status=500, message="model requires more system memory (9.1 GiB) than is available", times=1)
    p, _ = await managed(stack, fake)
    with pytest.raises(UpstreamStatusError) as info:
        await p.chat(req(), LLAMA, CALL)
    err = info.value
    assert err.upstream_status == 503 and err.code == "out_of_memory" and err.retryable
    assert p.lifecycle.model_status(LLAMA)["state"] == "error"
    fake.inject(LLAMA, status=500, message="llama runner process has terminated", times=1)
    with pytest.raises(UpstreamStatusError) as again:
        await p.chat(req(), LLAMA, CALL)
    assert again.value.code == "load_failed" and again.value.upstream_status == 503
    await p.chat(req(), LLAMA, CALL)  # the next use retries the load
    assert p.lifecycle.model_status(LLAMA)["state"] == "ready"


async def test_max_loaded_evicts_the_idle_model_never_the_one_in_use(stack: AsyncExitStack, fake: FakeOllama) -> None:
    p, events = await managed(stack, fake, max_loaded=1)
    await p.chat(req(), LLAMA, CALL)
    await p.chat(req(), MISTRAL, CALL)
    assert not fake.is_loaded(LLAMA) and fake.is_loaded(MISTRAL)
    assert "evicted" in next(e["reason"] for e in events if e["model"] == LLAMA and e["state"] == "not_loaded")
    held = p.stream(req("x"), MISTRAL, CALL).__aiter__()
    await held.__anext__()  # a stream on mistral is open: it is in use
    assert p.lifecycle.model_status(MISTRAL)["state"] == "in_use"
    with pytest.raises(UpstreamStatusError) as info:
        await p.chat(req(), LLAMA, CALL)
    assert info.value.upstream_status == 503 and info.value.code == "out_of_memory"
    assert fake.is_loaded(MISTRAL) and not fake.is_loaded(LLAMA)
    rest = [c async for c in held]
    assert rest[-1].usage is not None
    await p.chat(req(), LLAMA, CALL)
    assert fake.is_loaded(LLAMA) and not fake.is_loaded(MISTRAL)


async def test_preload_at_start_and_unload_on_request(stack: AsyncExitStack, fake: FakeOllama) -> None:
    fake.set_load_time(MISTRAL, 0.1)
    p, events = await managed(stack, fake, preload=["mistral:7b"])
    await until(lambda: p.lifecycle.model_status(MISTRAL)["state"] == "ready")
    assert fake.is_loaded(MISTRAL)
    await p.lifecycle.unload(MISTRAL)
    assert not fake.is_loaded(MISTRAL) and p.lifecycle.model_status(MISTRAL)["state"] == "not_loaded"
    await p.aclose()  # closing the provider leaves Ollama's models to Ollama
    assert events[-1]["type"] == "closed"
