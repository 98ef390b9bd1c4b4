"""The shared-state coordinator (storage/coordinator.py) against the real Redis: windows, leases,
breaker and key announcements, and failing open while Redis is away."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from modelyard.config import parse_config
from modelyard.runtime import Runtime, sync_runtime
from modelyard.storage.coordinator import RedisCoordinator
from modelyard.storage.redis import redis_client
from modelyard.types import HealthResult
from tests.accounting.conftest import redis_url as redis_url  # the fixture
from tests.helpers import free_port


def runtime() -> Runtime:
    rt = Runtime(
        parse_config(
            {
                "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x"}},
                "models": {"m": {"provider": "p", "model": "gpt-4o", "breaker": {"failure_threshold": 1}}},
                "routes": {"r": {"models": ["m"]}},
            }
        )
    )
    sync_runtime(rt)
    return rt


@pytest.fixture
async def pair(redis_url: str) -> AsyncIterator[tuple[RedisCoordinator, RedisCoordinator, Runtime, Runtime]]:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    rts = (runtime(), runtime())
    made = [
        RedisCoordinator(
            redis_client(redis_url),
            deployments=lambda rt=rt: rt.models,
            providers=lambda rt=rt: rt.providers,
            prefix=prefix,
            lease_ttl_s=0.6,
            owns_client=True,
        )
        for rt in rts
    ]
    for c in made:
        c.start()
    await asyncio.sleep(0.1)  # both subscribed
    yield made[0], made[1], rts[0], rts[1]
    for c in made:
        await c.aclose()
    for rt in rts:
        await rt.close_unused(None)


async def test_rpm_is_one_window_for_every_replica(pair: Any) -> None:
    a, b, _, _ = pair
    got = [await c.admit("m:x", rpm=5, tpm=None, max_concurrency=None, est_tokens=1) for c in (a, b) * 4]
    assert [g.granted for g in got] == [True] * 5 + [False] * 3
    assert {g.reason for g in got[5:]} == {"rpm"}
    assert all(0 < (g.retry_after or 0) <= 60 for g in got[5:])


async def test_tpm_counts_the_actual_tokens_once_known(pair: Any) -> None:
    a, b, _, _ = pair
    first = await a.admit("k:t", rpm=None, tpm=100, max_concurrency=None, est_tokens=80)
    assert first.granted
    assert not (await b.admit("k:t", rpm=None, tpm=100, max_concurrency=None, est_tokens=30)).granted
    a.release(first, 10)  # it used 10, not 80
    await asyncio.sleep(0.1)
    assert (await b.admit("k:t", rpm=None, tpm=100, max_concurrency=None, est_tokens=30)).granted
    never = await a.admit("k:t", rpm=None, tpm=100, max_concurrency=None, est_tokens=500)
    assert (never.granted, never.reason, never.retry_after) == (False, "tpm_never", None)


async def test_concurrency_leases_are_released_renewed_and_expire(pair: Any) -> None:
    a, b, _, _ = pair
    held = [await c.admit("m:c", rpm=None, tpm=None, max_concurrency=2, est_tokens=0) for c in (a, b)]
    assert all(h.granted for h in held)
    refused = await a.admit("m:c", rpm=None, tpm=None, max_concurrency=2, est_tokens=0)
    assert (refused.granted, refused.reason) == (False, "concurrency")
    b.release(held[1])
    await asyncio.sleep(0.1)
    third = await b.admit("m:c", rpm=None, tpm=None, max_concurrency=2, est_tokens=0)
    assert third.granted
    await asyncio.sleep(1.0)  # past the 0.6 s TTL: renewed every 0.2 s while held
    assert not (await a.admit("m:c", rpm=None, tpm=None, max_concurrency=2, est_tokens=0)).granted
    b._held.clear()  # as if b died: its lease is no longer renewed
    await asyncio.sleep(0.9)
    assert (await a.admit("m:c", rpm=None, tpm=None, max_concurrency=2, est_tokens=0)).granted


async def test_breakers_open_and_close_everywhere_and_one_replica_probes(pair: Any) -> None:
    a, b, rt_a, rt_b = pair
    dep_a, dep_b = rt_a.models["m"], rt_b.models["m"]
    a.watch(dep_a)
    b.watch(dep_b)
    dep_a.state.breaker.record_failure()  # failure_threshold 1
    assert dep_a.state.breaker.state == "open"
    for _ in range(50):
        if dep_b.state.breaker.state == "open":
            break
        await asyncio.sleep(0.02)
    assert dep_b.state.breaker.state == "open"
    assert await a.claim_probe(dep_a) and not await b.claim_probe(dep_b)
    dep_a.state.breaker._state = "half_open"  # the cooldown is over here
    dep_a.state.breaker.record_success()
    for _ in range(50):
        if dep_b.state.breaker.state == "closed":
            break
        await asyncio.sleep(0.02)
    assert dep_b.state.breaker.state == "closed"
    assert await b.claim_probe(dep_b)  # the closing replica gave the probe key back


async def test_health_checks_run_on_one_replica_and_reach_the_others(pair: Any) -> None:
    a, b, _, rt_b = pair
    seen: list[tuple[str, HealthResult]] = []
    b.on_health = lambda provider, result: seen.append((provider.name, result))
    assert await a.claim_health("p", 5.0) and not await b.claim_health("p", 5.0)
    a.share_health("p", HealthResult(ok=False, latency_ms=12.5, detail="HTTP 503"))
    for _ in range(50):
        if seen:
            break
        await asyncio.sleep(0.02)
    assert seen == [("p", HealthResult(ok=False, latency_ms=12.5, detail="HTTP 503"))]
    assert rt_b.providers["p"].name == "p"


async def test_key_changes_reach_the_other_replicas(pair: Any) -> None:
    a, b, _, _ = pair
    calls: list[str] = []
    b.on_keys_changed.append(lambda: calls.append("b"))
    a.on_keys_changed.append(lambda: calls.append("a"))
    a.keys_changed()
    for _ in range(50):
        if calls:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    assert calls == ["b"]  # not back to the one that announced it


async def test_without_redis_everything_fails_open_and_says_so() -> None:
    c = RedisCoordinator(
        redis_client(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.2),
        prefix="nowhere",
        op_timeout_s=0.3,
        retry_s=0.2,
        owns_client=True,
    )
    try:
        got = await c.admit("m:x", rpm=1, tpm=None, max_concurrency=1, est_tokens=0)
        assert got.granted and not got.lease  # admitted; the local limiter is what holds now
        status = c.status()
        assert status["ok"] is False and status["outages"] == 1 and "ConnectionError" in status["last_error"]
        assert (await c.admit("m:x", rpm=1, tpm=None, max_concurrency=1, est_tokens=0)).granted  # skipped
        assert await c.claim_health("p", 1.0)  # checks locally
    finally:
        await c.aclose()
