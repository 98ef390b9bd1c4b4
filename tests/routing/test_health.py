"""Active health checks over real HTTP: a provider that stops answering goes unhealthy, then recovers."""

from __future__ import annotations

import asyncio
import socket

from modelyard import Gateway
from modelyard.routing.health import HealthMonitor, model_health
from modelyard.testing import FakeOpenAI


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_monitor_marks_providers_and_models_and_orders_candidates_last() -> None:
    async with FakeOpenAI() as fake:
        down = f"http://127.0.0.1:{closed_port()}/v1"
        cfg = {
            "providers": {
                "good": {"kind": "openai", "base_url": fake.base_url, "health_check_interval_s": 0.05},
                "bad": {"kind": "openai", "base_url": down, "health_check_interval_s": 0.05, "connect_timeout_s": 0.2},
            },
            "models": {"b": {"provider": "bad", "model": "gpt-4o"}, "g": {"provider": "good", "model": "gpt-4o"}},
            "routes": {"r": {"models": ["b", "g"], "strategy": "priority", "retries": 0}},
        }
        async with Gateway.from_config(cfg, database=None) as gw:
            rt = gw.runtime
            monitor = HealthMonitor(lambda: rt.providers, tick_s=0.02)
            monitor.start()
            try:
                for _ in range(100):
                    if rt.providers["bad"].health_state.state == "unhealthy":
                        break
                    await asyncio.sleep(0.05)
                assert rt.providers["bad"].health_state.state == "unhealthy"
                assert rt.providers["good"].health_state.state == "healthy"
                assert model_health(rt.models["b"]) == "unhealthy" and model_health(rt.models["g"]) == "healthy"
                res = await gw.chat([{"role": "user", "content": "hi"}], route="r", raise_on_error=True)
                assert res.model_used == "g" and len(res.attempts) == 1  # the unhealthy one went last
            finally:
                await monitor.aclose()
