"""Live status and alerts: provider health and breaker changes as events, and configured alerts.

The watcher is fed from three places, none of them on a request's critical path:

* every finished request (a listener of the metrics sink: one deque append, only while an
  ``error_rate`` or ``latency_p95`` alert exists);
* the health monitor, when a provider's health changes;
* the budget ledger's alerts.

Once a second it also samples the breakers of the current runtime.  A change becomes an admin
event (``provider.health``, ``breaker.open``/``breaker.half_open``/``breaker.closed``); an alert crossing its
threshold becomes ``alert.firing`` (and ``alert.resolved`` when it no longer holds), is listed
by ``GET /admin/alerts``, and is POSTed to its webhook, signed with HMAC-SHA256, retried 3 times
with backoff; each delivery is in the audit log.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from modelyard.config.schema import AlertConfig
from modelyard.management.events import EventBus
from modelyard.runtime import RuntimeHolder
from modelyard.scrub import scrub
from modelyard.storage.records import RequestRecord
from modelyard.storage.revisions import AuditEntry
from modelyard.transport import make_transport
from modelyard.transport.base import Transport

__all__ = ["AlertWatcher", "sign"]

log = logging.getLogger("modelyard.alerts")

#: delays before the 2nd, 3rd and 4th delivery attempt of a webhook
RETRY_DELAYS_S = (0.5, 1.0, 2.0)
#: samples kept per model or route (the windows are cut by time, this only bounds memory)
MAX_SAMPLES = 20_000


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Modelyard-Signature`` value: ``t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


@dataclass(slots=True)
class _State:
    firing: bool = False
    since: float | None = None
    value: float | None = None
    message: str = ""
    fired: int = 0


@dataclass(slots=True)
class _Samples:
    points: deque[tuple[float, bool, float]] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))

    def window(self, now: float, window_s: float) -> list[tuple[float, bool, float]]:
        horizon = now - 86_400  # the longest window_s an alert may have
        while self.points and self.points[0][0] < horizon:
            self.points.popleft()
        cut = now - window_s
        return [p for p in self.points if p[0] >= cut]


class AlertWatcher:
    def __init__(
        self,
        holder: RuntimeHolder,
        events: EventBus,
        *,
        audit: Callable[[AuditEntry], Awaitable[Any]] | None = None,
        tick_s: float = 1.0,
    ) -> None:
        self.holder = holder
        self.events = events
        self.audit = audit
        self.tick_s = tick_s
        self._states: dict[tuple[str, str], _State] = {}
        self._models: dict[str, _Samples] = {}
        self._routes: dict[str, _Samples] = {}
        self._breakers: dict[str, str] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=200)
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: Transport | None = None

    @property
    def alerts(self) -> tuple[AlertConfig, ...]:
        return self.holder.current.config.alerts

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        if self._http is not None:
            await self._http.aclose()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.tick()
            except Exception:  # the watcher must outlive a bad tick
                log.exception("alert evaluation failed")

    # -- inputs ------------------------------------------------------------------------------

    def observe(self, rec: RequestRecord) -> None:
        """A finished request (from the metrics sink)."""
        alerts = self.holder.current.config.alerts
        if not alerts or (rec.source != "production" and rec.source != "canary"):
            return  # the common case: one attribute read per request
        if not any(a.kind in ("error_rate", "latency_p95") for a in alerts):
            return
        point = (time.time(), rec.success, rec.latency_ms)
        self._models.setdefault(rec.model, _Samples()).points.append(point)
        self._routes.setdefault(rec.route, _Samples()).points.append(point)

    def provider_health(self, provider: str, before: str, after: str, detail: str) -> None:
        """From the health monitor: a provider's health changed."""
        self.events.publish("provider.health", {"provider": provider, "from": before, "to": after, "detail": detail})
        for alert in self.alerts:
            if alert.kind == "provider_down" and alert.target in (None, provider):
                self._set(alert, provider, after == "unhealthy", None, f"provider {provider!r} is {after}: {detail}")

    def budget(self, budget: str, scope: str, fraction: float, message: str) -> None:
        """From the budget ledger: a budget alert or stop."""
        for alert in self.alerts:
            if alert.kind == "budget" and (alert.threshold is None or fraction >= alert.threshold):
                self._set(alert, f"{budget}/{scope}", True, fraction, message)

    # -- evaluation ----------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        now = now if now is not None else time.time()
        rt = self.holder.current
        for name, dep in rt.models.items():
            state = dep.state.breaker.state
            before = self._breakers.get(name, "closed")
            if state != before:
                self._breakers[name] = state
                self.events.publish(f"breaker.{state}", {"model": name, "from": before, "to": state})
        for alert in self.alerts:
            if alert.kind == "breaker_open":
                for name in rt.models if alert.target is None else (alert.target,):
                    now_state = self._breakers.get(name, "closed")
                    self._set(alert, name, now_state == "open", None, f"the breaker of model {name!r} is {now_state}")
            elif alert.kind in ("error_rate", "latency_p95"):
                samples = self._routes if alert.scope == "route" else self._models
                targets = [alert.target] if alert.target is not None else list(samples)
                for target in targets:
                    self._window_alert(alert, target, samples.get(target), now)

    def _window_alert(self, alert: AlertConfig, target: str, samples: _Samples | None, now: float) -> None:
        points = samples.window(now, alert.window_s) if samples is not None else []
        threshold = alert.threshold or 0.0
        if len(points) < alert.min_requests:
            if self._state(alert, target).firing:
                self._set(alert, target, False, None, f"fewer than {alert.min_requests} requests in the window")
            return
        if alert.kind == "error_rate":
            value = sum(1 for _, ok, _ in points if not ok) / len(points)
            message = f"error rate of {target!r} is {value:.1%} over {alert.window_s:g} s (threshold {threshold:.1%})"
        else:
            latencies = sorted(lat for _, _, lat in points)
            value = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
            message = (
                f"p95 latency of {target!r} is {value:.0f} ms over {alert.window_s:g} s (threshold {threshold:g} ms)"
            )
        self._set(alert, target, value > threshold, value, message)

    def _state(self, alert: AlertConfig, target: str) -> _State:
        return self._states.setdefault((alert.name, target), _State())

    def _set(self, alert: AlertConfig, target: str, firing: bool, value: float | None, message: str) -> None:
        state = self._state(alert, target)
        state.value = value
        if firing == state.firing and not (alert.kind == "budget" and firing):
            return
        state.firing = firing
        state.since = time.time()
        state.message = message
        if firing:
            state.fired += 1
        kind = "alert.firing" if firing else "alert.resolved"
        payload = {
            "alert": alert.name,
            "kind": alert.kind,
            "target": target,
            "state": "firing" if firing else "resolved",
            "value": value,
            "threshold": alert.threshold,
            "message": message,
            "ts": state.since,
        }
        self._recent.appendleft(payload)
        self.events.publish(kind, payload)
        log.warning("alert %s %s: %s", alert.name, payload["state"], message)
        if alert.webhook and alert.secret is not None:
            task = asyncio.get_running_loop().create_task(
                self._deliver(alert.name, alert.webhook, alert.secret.get_secret_value(), payload)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- webhooks ------------------------------------------------------------------------------

    async def _deliver(self, name: str, url: str, secret: str, payload: dict[str, Any]) -> None:
        if self._http is None:
            self._http = make_transport(headers={"User-Agent": "modelyard", "Content-Type": "application/json"})
        body = orjson.dumps({"type": f"alert.{payload['state']}", **payload})
        outcome: dict[str, Any] = {"attempts": 0, "status": None, "error": None}
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS_S), start=1):
            if delay:
                await asyncio.sleep(delay)
            outcome["attempts"] = attempt
            stamp = str(int(time.time()))
            headers = {
                "X-Modelyard-Signature": sign(secret, stamp, body),
                "X-Modelyard-Event": f"alert.{payload['state']}",
            }
            try:
                resp, lease = await self._http.send("POST", url, body=body, headers=headers, timeout_s=10.0)
                try:
                    await resp.read()
                finally:
                    lease.release()
                outcome["status"] = resp.status
                if resp.status < 300:
                    outcome["error"] = None
                    break
                outcome["error"] = f"answered {resp.status}"
            except (OSError, TimeoutError, ValueError) as exc:
                outcome["error"] = scrub(f"{type(exc).__name__}: {exc}")
        ok = outcome["error"] is None
        if not ok:
            log.warning(
                "alert %s: webhook delivery failed after %d attempts: %s", name, outcome["attempts"], outcome["error"]
            )
        if self.audit is not None:
            entry = AuditEntry(
                actor="modelyard",
                action="alert.webhook",
                target=f"alert:{name}",
                after={"state": payload["state"], "delivered": ok, **outcome},
            )
            try:
                await self.audit(entry)
            except Exception as exc:
                log.warning("could not audit the webhook delivery of alert %s: %s", name, type(exc).__name__)

    # -- reading -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        rows = []
        for alert in self.alerts:
            targets = {t: s for (n, t), s in self._states.items() if n == alert.name}
            rows.append(
                {
                    "name": alert.name,
                    "kind": alert.kind,
                    "scope": alert.scope,
                    "target": alert.target,
                    "threshold": alert.threshold,
                    "window_s": alert.window_s,
                    "webhook": alert.webhook is not None,
                    "firing": sorted(t for t, s in targets.items() if s.firing),
                    "states": {
                        t: {
                            "firing": s.firing,
                            "since": s.since,
                            "value": s.value,
                            "message": s.message,
                            "fired": s.fired,
                        }
                        for t, s in targets.items()
                    },
                }
            )
        return {"data": rows, "recent": list(self._recent)}
