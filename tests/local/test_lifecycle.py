"""The local-model lifecycle manager: keep_alive parsing, states and events, shared loads, load
timeouts, idle unloads, LRU eviction under max_loaded and a memory budget, busy unloads, close.

The backend here stands in for the inference engine (a scripted load that takes a set time); the
manager under test is the real one.  The same behaviour over real HTTP against a fake Ollama is
in test_ollama_lifecycle.py, and with the real llama.cpp model in test_llamacpp.py.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from modelyard.config.loader import parse_config
from modelyard.config.schema import OllamaProviderConfig
from modelyard.errors import ConfigError, ServiceUnavailableError, UpstreamStatusError, UpstreamTimeoutError
from modelyard.local import (
    LoadResult,
    LocalModelManager,
    ModelBusyError,
    ModelSettings,
    parse_keep_alive,
    provider_settings,
)
from modelyard.local.base import ProgressFn
from modelyard.local.settings import merge_settings
from modelyard.runtime import Runtime, sync_runtime


class Engine:
    """A scripted inference engine: loads take ``load_s`` seconds, may fail, and are counted."""

    in_process = True

    def __init__(self, load_s: float = 0.02, sizes: dict[str, int] | None = None) -> None:
        self.load_s: dict[str, float] = {}
        self.default_load_s = load_s
        self.sizes = sizes or {}
        self.fail: dict[str, Exception] = {}
        self.loads: Counter[str] = Counter()
        self.unloads: Counter[str] = Counter()
        self.resident: set[str] = set()
        self.closed = False

    def canonical(self, name: str) -> str:
        return name.strip().lower()

    async def load(self, name: str, settings: ModelSettings, progress: ProgressFn) -> LoadResult:
        self.loads[name] += 1
        progress({"status": "reading weights", "completed": 1, "total": 2})
        await asyncio.sleep(self.load_s.get(name, self.default_load_s))
        if name in self.fail:
            raise self.fail[name]
        self.resident.add(name)
        return LoadResult(memory_bytes=self.sizes.get(name, 100))

    async def unload(self, name: str) -> None:
        self.unloads[name] += 1
        self.resident.discard(name)

    async def loaded(self) -> dict[str, int] | None:
        return None

    async def estimate_memory(self, name: str) -> int | None:
        return self.sizes.get(name, 100)

    async def close(self) -> None:
        self.closed = True
        self.resident.clear()


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


def manager(stack: AsyncExitStack, engine: Engine, **kw: Any) -> LocalModelManager:
    m = LocalModelManager("p", engine, **kw)
    stack.push_async_callback(m.aclose)
    return m


async def until(predicate: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def states(events: list[dict[str, Any]], model: str) -> list[str]:
    return [e["state"] for e in events if e["type"] == "state" and e["model"] == model]


# -- keep_alive and settings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30m", 1800.0),
        ("90s", 90.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("300ms", 0.3),
        (45, 45.0),
        (2.5, 2.5),
        ("45", 45.0),
        ("0", 0.0),
        (0, 0.0),
        ("-1", math.inf),
        (-1, math.inf),
        ("-5m", math.inf),
        (None, 1800.0),
    ],
)
def test_keep_alive_is_read_like_ollama(value: Any, seconds: float) -> None:
    assert parse_keep_alive(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["soon", "10x", "", "m", True])
def test_bad_keep_alive_is_refused(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_keep_alive(value)


def test_bad_provider_keep_alive_is_a_config_error_with_its_path() -> None:
    with pytest.raises(ConfigError) as info:
        provider_settings("box", OllamaProviderConfig(keep_alive="a while"))
    assert info.value.path == "providers.box.keep_alive"


def test_models_override_the_provider_and_shared_upstreams_merge() -> None:
    cfg = parse_config(
        {
            "providers": {"box": {"kind": "ollama", "keep_alive": "10m"}},
            "models": {
                "a": {"provider": "box", "model": "llama3.2", "keep_alive": "1h", "load_timeout_s": 9},
                "b": {"provider": "box", "model": "llama3.2", "preload": True, "load_timeout_s": 4},
                "c": {"provider": "box", "model": "mistral:7b"},
            },
        }
    )
    rt = Runtime(cfg)
    managers = sync_runtime(rt)
    m = rt.providers["box"].lifecycle
    assert managers == [m] and m is not None
    assert m.settings("llama3.2:latest") == ModelSettings(keep_alive_s=3600, load_timeout_s=4, preload=True)
    assert m.settings("mistral:7b") == ModelSettings(keep_alive_s=600)
    assert m.settings("never-configured") == ModelSettings(keep_alive_s=600)
    assert [s["model"] for s in m.status()] == ["llama3.2:latest", "mistral:7b"]
    assert merge_settings([ModelSettings(0), ModelSettings(math.inf)]).keep_alive_s == math.inf


# -- states and events ----------------------------------------------------------------------


async def test_first_use_loads_then_in_use_then_ready_with_figures(stack: AsyncExitStack) -> None:
    engine = Engine(load_s=0.1, sizes={"m": 12345})
    m = manager(stack, engine)
    events: list[dict[str, Any]] = []
    m.add_listener(events.append)
    before = time.time()
    async with m.use("M") as name:
        during = m.model_status(name)
    after = m.model_status("m")
    assert name == "m" and engine.loads["m"] == 1
    assert during["state"] == "in_use" and during["in_flight"] == 1
    assert after["state"] == "ready" and after["in_flight"] == 0
    assert after["load_time_s"] >= 0.1 and after["memory_bytes"] == 12345
    assert after["last_used"] >= before and after["last_error"] is None
    assert after["keep_alive_s"] == 1800 and 1790 < after["unloads_in_s"] <= 1800
    assert states(events, "m") == ["loading", "ready", "in_use", "ready"]
    assert [e["previous"] for e in events if e["type"] == "state"] == ["not_loaded", "loading", "ready", "in_use"]
    progress = [e for e in events if e["type"] == "progress"]
    assert progress == [
        {"type": "progress", "provider": "p", "model": "m", "status": "reading weights", "completed": 1, "total": 2,
         "time": progress[0]["time"]}
    ]  # fmt: skip


async def test_requests_arriving_during_a_load_share_it(stack: AsyncExitStack) -> None:
    engine = Engine(load_s=0.2)
    m = manager(stack, engine)
    events: list[dict[str, Any]] = []
    m.add_listener(events.append)
    inside = 0
    peak = 0

    async def request() -> None:
        nonlocal inside, peak
        async with m.use("m"):
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.05)
            inside -= 1

    start = time.perf_counter()
    await asyncio.gather(*(request() for _ in range(5)))
    took = time.perf_counter() - start
    assert engine.loads["m"] == 1 and peak == 5
    assert 0.2 <= took < 1.0  # peak == 5 proves the overlap; the bound only catches a serial queue
    assert states(events, "m") == ["loading", "ready", "in_use", "ready"]


async def test_a_load_longer_than_the_timeout_fails_over_and_keeps_loading(stack: AsyncExitStack) -> None:
    engine = Engine(load_s=0.4)
    m = manager(stack, engine)
    start = time.perf_counter()
    with pytest.raises(UpstreamTimeoutError) as info:
        await m.ensure_loaded("m", timeout=0.1)
    assert 0.1 <= time.perf_counter() - start < 0.3
    assert info.value.phase == "load" and info.value.kind == "timeout_load" and info.value.retryable
    assert "load_timeout_s" in info.value.message and m.model_status("m")["state"] == "loading"
    await m.ensure_loaded("m", timeout=2.0)  # the same load finishes
    assert engine.loads["m"] == 1 and m.model_status("m")["state"] == "ready"


async def test_a_wait_known_to_exceed_the_timeout_fails_at_once(stack: AsyncExitStack) -> None:
    engine = Engine(load_s=0.3)
    m = manager(stack, engine)
    await m.load("m")
    await m.unload("m")
    reload = asyncio.create_task(m.load("m"))
    await until(lambda: m.model_status("m")["state"] == "loading")
    start = time.perf_counter()
    with pytest.raises(UpstreamTimeoutError, match="last load took") as info:
        await m.ensure_loaded("m", timeout=0.1)
    assert time.perf_counter() - start < 0.25 and info.value.phase == "load"  # the load takes 0.3 s
    await reload


async def test_a_failed_load_is_an_error_state_and_the_next_use_retries(stack: AsyncExitStack) -> None:
    engine = Engine()
    engine.fail["m"] = RuntimeError("corrupt weights")
    m = manager(stack, engine)
    with pytest.raises(UpstreamStatusError) as info:
        async with m.use("m"):
            pass
    err = info.value
    assert err.upstream_status == 503 and err.code == "load_failed" and err.retryable
    assert "corrupt weights" in err.message
    status = m.model_status("m")
    assert status["state"] == "error" and "corrupt weights" in status["last_error"]
    del engine.fail["m"]
    async with m.use("m"):
        pass
    assert engine.loads["m"] == 2 and m.model_status("m")["last_error"] is None


async def test_a_backend_error_keeps_its_class(stack: AsyncExitStack) -> None:
    engine = Engine()
    engine.fail["m"] = UpstreamStatusError("no such model", upstream_status=404, code="model_not_found")
    m = manager(stack, engine)
    with pytest.raises(UpstreamStatusError) as info:
        await m.ensure_loaded("m")
    assert info.value.upstream_status == 404 and not info.value.retryable
    assert m.model_status("m")["state"] == "error"


# -- keep_alive -----------------------------------------------------------------------------


async def test_idle_model_unloads_after_keep_alive(stack: AsyncExitStack) -> None:
    engine = Engine()
    m = manager(stack, engine, defaults=ModelSettings(keep_alive_s=0.2))
    events: list[dict[str, Any]] = []
    m.add_listener(events.append)
    async with m.use("m"):
        await asyncio.sleep(0.3)  # in use the whole time: not unloaded
    assert engine.unloads["m"] == 0
    await until(lambda: m.model_status("m")["state"] == "not_loaded")
    assert states(events, "m") == ["loading", "ready", "in_use", "ready", "not_loaded"]
    assert events[-1]["reason"] == "idle for 0.2 s" and "m" not in engine.resident


async def test_keep_alive_zero_unloads_after_each_use_and_never_keeps_it(stack: AsyncExitStack) -> None:
    engine = Engine()
    m = manager(stack, engine, defaults=ModelSettings(keep_alive_s=0))
    m.configure({"forever": ModelSettings(keep_alive_s=math.inf)})
    for _ in range(2):
        async with m.use("m"):
            pass
        await until(lambda: m.model_status("m")["state"] == "not_loaded")
    async with m.use("forever"):
        pass
    await asyncio.sleep(0.1)
    assert engine.loads["m"] == 2 and engine.unloads["m"] == 2
    assert m.model_status("forever")["state"] == "ready" and m.model_status("forever")["keep_alive_s"] is None


# -- capacity -------------------------------------------------------------------------------


async def test_max_loaded_evicts_the_least_recently_used_idle_model(stack: AsyncExitStack) -> None:
    engine = Engine()
    m = manager(stack, engine, max_loaded=2)
    for name in ("a", "b"):
        async with m.use(name):
            pass
    async with m.use("a"):  # a is now more recent than b
        pass
    async with m.use("c"):
        pass
    assert engine.unloads == Counter({"b": 1}) and engine.resident == {"a", "c"}
    evicted = m.model_status("b")
    assert evicted["state"] == "not_loaded"


async def test_a_model_in_use_is_never_evicted(stack: AsyncExitStack) -> None:
    engine = Engine()
    m = manager(stack, engine, max_loaded=2)
    async with m.use("a"):
        async with m.use("b"):
            pass
        # a is the least recently used but in use: b goes
        async with m.use("c"):
            pass
        assert engine.resident == {"a", "c"}
        async with m.use("c"):
            with pytest.raises(UpstreamStatusError) as info:
                await m.ensure_loaded("d")
    err = info.value
    assert err.upstream_status == 503 and err.code == "out_of_memory" and err.retryable
    assert "max_loaded=2" in err.message and "none of them is idle" in err.message
    status = m.model_status("d")
    assert status["state"] == "not_loaded" and status["last_error"] == err.message
    assert engine.loads["d"] == 0 and engine.resident == {"a", "c"}
    await m.ensure_loaded("d")  # both idle now: c was released before a, so c goes
    assert engine.resident == {"a", "d"}


async def test_memory_budget_evicts_until_the_model_fits(stack: AsyncExitStack) -> None:
    engine = Engine(sizes={"a": 100, "b": 100, "c": 150, "huge": 1000})
    m = manager(stack, engine, memory_budget_bytes=260)
    for name in ("a", "b"):
        async with m.use(name):
            pass
    async with m.use("c"):  # 200 + 150 > 260: evict a (the older); 250 fits
        pass
    assert engine.resident == {"b", "c"}
    with pytest.raises(UpstreamStatusError, match="more than memory_budget_mb") as info:
        await m.ensure_loaded("huge")
    assert info.value.code == "out_of_memory" and engine.resident == {"b", "c"}


# -- explicit load/unload, preload, close -----------------------------------------------------


async def test_unload_refuses_a_busy_model_and_unloads_an_idle_one(stack: AsyncExitStack) -> None:
    engine = Engine()
    m = manager(stack, engine)
    async with m.use("m"):
        with pytest.raises(ModelBusyError) as info:
            await m.unload("m")
    assert info.value.status == 409 and info.value.code == "model_in_use"
    await m.unload("m")
    await m.unload("never-loaded")
    assert m.model_status("m")["state"] == "not_loaded" and engine.unloads["m"] == 1


async def test_preload_loads_at_start_in_the_background(stack: AsyncExitStack) -> None:
    engine = Engine(load_s=0.1)
    m = manager(stack, engine, preload=["a"])
    m.configure({"b": ModelSettings(preload=True), "c": ModelSettings()})
    assert {s["model"]: s["state"] for s in m.status()} == {"a": "not_loaded", "b": "not_loaded", "c": "not_loaded"}
    await m.start()
    await until(lambda: engine.resident == {"a", "b"})
    m.configure({"c": ModelSettings(preload=True)})  # a reload flags another one
    await until(lambda: engine.resident == {"a", "b", "c"})


async def test_close_ends_subscriptions_and_frees_in_process_models(stack: AsyncExitStack) -> None:
    engine = Engine()
    m = manager(stack, engine)
    sub = m.subscribe()
    seen: list[dict[str, Any]] = []

    async def read() -> None:
        async for event in sub:
            seen.append(event)

    reader = asyncio.create_task(read())
    async with m.use("m"):
        pass
    await m.aclose()
    await asyncio.wait_for(reader, 2)
    assert [(e["type"], e.get("state")) for e in seen] == [
        ("state", "loading"), ("progress", None), ("state", "ready"), ("state", "in_use"), ("state", "ready"),
        ("state", "not_loaded"), ("closed", None),
    ]  # fmt: skip
    assert engine.closed and m.closed and not m.started
    with pytest.raises(ServiceUnavailableError, match="shutting down"):
        await m.ensure_loaded("m")
    late = [e async for e in m.subscribe()]
    assert [e["type"] for e in late] == ["closed"]
