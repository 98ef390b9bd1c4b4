"""Active health checks, and the health state of each model (active + passive).

A model is ``unhealthy`` when its breaker is open or its provider failed two active checks in a
row, ``degraded`` when its breaker is half-open, its recent success rate is under 90 % or its
provider failed the last check, and ``healthy`` otherwise.  Unhealthy providers' models are tried
last while another candidate is available.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from modelyard.providers.base import Provider
from modelyard.routing.deployment import Deployment
from modelyard.types import HealthResult

__all__ = ["HealthMonitor", "HealthSharing", "interval_of", "model_health"]

log = logging.getLogger("modelyard.health")


def model_health(dep: Deployment) -> str:
    breaker = dep.state.breaker.state
    provider = dep.provider.health_state
    if breaker == "open" or not provider.ok:
        return "unhealthy"
    stats = dep.state.stats
    if breaker == "half_open" or provider.consecutive_failures or (stats.requests >= 5 and stats.success_rate < 0.9):
        return "degraded"
    return "healthy"


class HealthSharing(Protocol):
    """One replica per interval checks a provider (storage.coordinator.RedisCoordinator)."""

    async def claim_health(self, provider: str, interval_s: float) -> bool: ...

    def share_health(self, provider: str, result: HealthResult) -> None: ...


def interval_of(provider: Provider) -> float:
    cfg = provider.config
    return cfg.health.interval(cfg.health_check_interval_s)


class HealthMonitor:
    """Probes every provider of the current runtime at its ``health_check_interval_s``."""

    def __init__(
        self,
        providers: Callable[[], dict[str, Provider]],
        tick_s: float = 1.0,
        on_change: Callable[[str, str, str, str], None] | None = None,
        shared: HealthSharing | None = None,
    ) -> None:
        self._providers = providers
        #: with shared state, one replica checks a provider per interval and tells the others
        self.shared = shared
        #: called with (provider, before, after, detail) when a check changes a provider's health
        self.on_change = on_change
        #: called with (provider, result) after this replica's chat probe (a billed call: recorded)
        self.on_probe: Callable[[Provider, HealthResult], None] | None = None
        self._tick_s = tick_s
        self._next: dict[int, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        tasks = [t for t in (self._task, *self._running) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            for provider in list(self._providers().values()):
                interval = interval_of(provider)
                if interval <= 0:
                    continue
                due = self._next.get(id(provider))
                if due is None:
                    self._next[id(provider)] = now + interval
                elif now >= due:
                    self._next[id(provider)] = now + interval
                    task = loop.create_task(self.check(provider))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)
            await asyncio.sleep(self._tick_s)

    async def check(self, provider: Provider) -> None:
        interval = interval_of(provider)
        # a chat probe costs a (tiny) completion: skip it while real traffic shows the provider works
        traffic_ok = provider.traffic_ok_at is not None and time.monotonic() - provider.traffic_ok_at < interval
        if provider.config.health.method == "chat_probe" and traffic_ok:
            return
        if self.shared is not None and not await self.shared.claim_health(provider.name, interval):
            return  # another replica checks it this time, and announces the result (apply)
        result = await provider.health()
        if result.probe_model is not None and self.on_probe is not None:
            try:
                self.on_probe(provider, result)
            except Exception:  # recording a probe never stops the checks
                log.exception("cannot record the health probe of provider %s", provider.name)
        if self.shared is not None:
            self.shared.share_health(provider.name, result)
        self.apply(provider, result)

    def apply(self, provider: Provider, result: HealthResult) -> None:
        """Record a check's result (this replica's, or another's through the shared state)."""
        before = provider.health_state.state
        provider.health_state.record(result)
        after = provider.health_state.state
        if after != before:
            log.warning("provider %s is %s (%s)", provider.name, after, result.detail)
            if self.on_change is not None:
                self.on_change(provider.name, before, after, result.detail)
