"""The event bus and the alert watcher's windows, in process (no server)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from modelyard.config.loader import parse_config
from modelyard.errors import ConfigError
from modelyard.management.alerts import AlertWatcher, sign
from modelyard.management.events import EventBus
from modelyard.runtime import RuntimeHolder
from modelyard.storage.records import RequestRecord


def _holder(alerts: list[dict[str, Any]]) -> RuntimeHolder:
    cfg = parse_config(
        {
            "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"}},
            "models": {"m": {"provider": "p"}, "n": {"provider": "p"}},
            "routes": {"r": {"models": ["m"]}},
            "alerts": alerts,
        },
        env={},
    )
    return RuntimeHolder(cfg)


def _rec(model: str, ok: bool, latency_ms: float, source: str = "production") -> RequestRecord:
    return RequestRecord(
        ts=datetime.now(UTC),
        request_id="x",
        route="r",
        model=model,
        provider="p",
        success=ok,
        latency_ms=latency_ms,
        source=source,
    )


async def test_error_rate_and_latency_fire_and_resolve() -> None:
    bus = EventBus()
    alerts = [
        {"name": "err", "kind": "error_rate", "scope": "model", "threshold": 0.25, "min_requests": 4, "window_s": 10},
        {
            "name": "slow",
            "kind": "latency_p95",
            "scope": "route",
            "target": "r",
            "threshold": 500,
            "min_requests": 4,
            "window_s": 10,
        },
    ]
    w = AlertWatcher(_holder(alerts), bus)
    for ok, lat in ((True, 100), (False, 900), (False, 100), (True, 950)):
        w.observe(_rec("m", ok, lat))
    w.observe(_rec("n", False, 10, source="comparison"))  # not production traffic: ignored
    w.tick()
    firing = {(e.data["alert"], e.data["target"]) for e in bus.recent() if e.kind == "alert.firing"}
    assert firing == {("err", "m"), ("slow", "r")}
    state = w.snapshot()["data"][0]["states"]["m"]
    assert state["firing"] and state["value"] == 0.5
    # the window moves on: fewer than min_requests left, so the alerts resolve
    w.tick(now=time.time() + 60)
    resolved = {e.data["alert"] for e in bus.recent() if e.kind == "alert.resolved"}
    assert resolved == {"err", "slow"}
    assert w.snapshot()["recent"][0]["state"] == "resolved"


async def test_provider_down_and_budget() -> None:
    bus = EventBus()
    alerts = [
        {"name": "down", "kind": "provider_down", "scope": "provider", "target": "p"},
        {"name": "money", "kind": "budget", "threshold": 0.9},
    ]
    w = AlertWatcher(_holder(alerts), bus)
    w.provider_health("p", "healthy", "unhealthy", "connection refused")
    w.budget("monthly", "global", 0.8, "80 %")  # under the alert's threshold
    w.budget("monthly", "global", 0.95, "95 %")
    kinds = [(e.kind, e.data.get("alert")) for e in bus.recent()]
    assert ("provider.health", None) in kinds and ("alert.firing", "down") in kinds
    assert [k for k in kinds if k[1] == "money"] == [("alert.firing", "money")]
    w.provider_health("p", "unhealthy", "healthy", "ok")
    assert bus.recent()[-1].kind == "alert.resolved"


def test_alert_config_errors_name_the_path() -> None:
    with pytest.raises(ConfigError) as info:
        _holder([{"name": "x", "kind": "error_rate"}])
    assert "alerts[0]" in info.value.message and "threshold" in info.value.message
    with pytest.raises(ConfigError) as info:
        _holder([{"name": "x", "kind": "breaker_open", "scope": "model", "target": "nope"}])
    assert "alerts[0].target" in info.value.message
    with pytest.raises(ConfigError) as info:
        _holder([{"name": "x", "kind": "provider_down", "webhook": "https://h.example/x"}])
    assert "secret" in info.value.message


def test_signature_is_hmac_of_timestamp_and_body() -> None:
    assert sign("s", "1", b"{}") == sign("s", "1", b"{}")
    assert sign("s", "1", b"{}") != sign("s", "2", b"{}") != sign("t", "1", b"{}")
    assert sign("s", "1", b"{}").startswith("t=1,v1=")


async def test_bus_filters_by_org_replays_and_ends() -> None:
    bus = EventBus(queue_size=3)
    bus.publish("a", {"n": 1})
    bus.publish("b", {"n": 2}, org_id="org_a")
    got: list[str] = []

    async def read(org: str | None) -> None:
        async for event in bus.subscribe(org_id=org, after=0, heartbeat_s=5):
            if event is not None:
                got.append(f"{org}:{event.kind}")

    tasks = [asyncio.create_task(read(None)), asyncio.create_task(read("org_a"))]
    await asyncio.sleep(0.05)
    bus.publish("c", {}, org_id="org_b")
    for _ in range(5):  # more than the queue holds, without the reader running: the oldest are dropped
        bus.publish("d", {})
    await asyncio.sleep(0.05)
    bus.close()
    await asyncio.wait_for(asyncio.gather(*tasks), 2)
    assert got[:2] == ["None:a", "None:b"] and "org_a:b" in got and "org_a:c" not in got
    # 6 events for a queue of 3 while the reader did not run: the oldest 3 (c and two d) are dropped, and said so
    after_replay = got[got.index("None:events.dropped") :]
    assert "None:c" not in got and after_replay.count("None:d") == 3
