"""State shared by every replica through Redis (``state: redis://``): limits, leases, breakers,
health checks and key changes.  The router's side of it is :mod:`modelyard.routing.shared`.

* **Limits.** A model's (or a key's) rpm and tpm hold over one 60-second sliding window for the
  whole fleet, and its ``max_concurrency`` over leases that expire ``lease_ttl_s`` (10 s) after
  their replica stops renewing them (it renews every ``lease_ttl_s / 3`` while a request runs): a
  replica that dies gives its slots back within 10 s.  One Lua script per admission, one round
  trip, and the releases since the previous admission ride along with it (or go after 20 ms);
  the window uses Redis' clock, so the replicas' clocks do not matter.  Every limit key shares
  one hash tag, so the scripts run on Redis Cluster too.
* **Breakers.** A breaker that opens or closes on one replica is announced on the events channel;
  the others open (for the rest of its cooldown) or close theirs.  When a cooldown ends, one
  replica only sends the half-open probe (``SET NX`` on a probe key).
* **Health checks.** An active check of a provider runs on one replica per interval (a lock key);
  its result is announced and recorded by every replica.
* **Keys.** A key created, changed or revoked on one replica is dropped from every replica's key
  cache at once (instead of within the cache's few seconds).

**When Redis is unreachable** every shared operation fails open: limits fall back to each
replica's own (``max_concurrency``, rpm and tpm then hold per process), breakers and health checks
act locally, and Redis is tried again after ``retry_s``.  ``/v1/status`` shows it under
``shared_state``.  Budgets do not fail open: they are refused while their Redis is away (see
docs/accounting.md).  Everything comes back by itself when Redis does.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from redis.asyncio import Redis

from modelyard.providers.base import Provider
from modelyard.routing.breaker import BreakerState, CircuitBreaker
from modelyard.routing.deployment import Deployment
from modelyard.routing.shared import Admission
from modelyard.scrub import redact_url, scrub
from modelyard.storage.lua import ADMIT_LUA
from modelyard.storage.redis import LuaScript, RedisError
from modelyard.types import HealthResult

__all__ = ["RedisCoordinator"]

log = logging.getLogger("modelyard.shared")

_WINDOW_MS = 60_000
#: a release waits at most this long for an admission to ride along with
_RELEASE_DELAY_S = 0.02
#: ... or until this many are waiting
_MAX_PENDING = 64
#: KEYS: leases zset.  ARGV: ttl ms, then lease ids.  Extends the leases that still exist.
_RENEW_LUA = """
local t = redis.call('TIME')
local deadline = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', deadline, ARGV[i])
end
if #ARGV > 1 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) * 2) end
return 1
"""


class RedisCoordinator:
    """Shared limits, breakers, health checks and key changes (see the module docs)."""

    def __init__(
        self,
        client: Redis,
        *,
        url: str = "redis",
        deployments: Callable[[], Mapping[str, Deployment]] = dict,
        providers: Callable[[], Mapping[str, Provider]] = dict,
        prefix: str = "modelyard",
        lease_ttl_s: float = 10.0,
        op_timeout_s: float = 0.5,
        retry_s: float = 1.0,
        owns_client: bool = False,
    ) -> None:
        self.client = client
        self.url = url
        self.prefix = prefix
        self.replica = uuid.uuid4().hex[:12]
        self.channel = f"{prefix}:events"
        self.lease_ttl_s = lease_ttl_s
        self.op_timeout_s = op_timeout_s
        self.retry_s = retry_s
        self._deployments = deployments
        self._providers = providers
        self._owns_client = owns_client
        self._admit = LuaScript(ADMIT_LUA)
        self._renew = LuaScript(_RENEW_LUA)
        #: releases not sent yet: (scope, admission id, actual tokens or -1); they ride along with
        #: the next admission, or go on their own after _RELEASE_DELAY_S
        self._pending: list[tuple[str, str, int]] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        #: lease id -> its admission, renewed until released
        self._held: dict[str, Admission] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._down_since: float | None = None
        self._skip_until = 0.0
        self._last_error: str | None = None
        self._outages = 0
        #: called with every key change another replica announces (the key store's invalidate)
        self.on_keys_changed: list[Callable[[], None]] = []
        #: called with (provider, result) for every health check another replica ran
        self.on_health: Callable[[Provider, HealthResult], None] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._listen()), loop.create_task(self._renew_leases())]

    async def aclose(self) -> None:
        if self._pending:
            await self._flush()
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)
        if self._owns_client:
            await self.client.aclose()

    def status(self) -> dict[str, Any]:
        down = self._down_since
        return {
            "backend": "redis",
            "ok": down is None,
            "down_for_s": None if down is None else round(time.monotonic() - down, 1),
            "last_error": self._last_error,
            "outages": self._outages,
            "policy": (
                "limits, breakers and health checks are shared; while Redis is unreachable they hold per "
                "process (fail open) and budgets are refused (fail closed)"
            ),
            "leases_held": len(self._held),
        }

    # -- limits -----------------------------------------------------------------------------

    def _keys(self, scope: str) -> list[str]:
        # one hash tag for every limit key, so an admission and the releases riding along with it
        # are one script on one Redis Cluster slot (the budgets use the same tag)
        base = f"{{{self.prefix}}}:lim:{scope}"
        return [f"{base}:l", f"{base}:w", f"{base}:t", f"{base}:s"]

    def _script_call(self, scope: str | None, args: list[str | bytes | int | float]) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of ADMIT_LUA for an admission (``scope``; None: releases only) plus
        every release pending."""
        pending, self._pending = self._pending, []
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        keys = self._keys(scope or "-")
        argv: list[Any] = [*args, len(pending)]
        for rscope, lease, actual in pending:
            keys += self._keys(rscope)
            argv += [lease, actual]
        return keys, argv

    async def admit(
        self,
        scope: str,
        *,
        rpm: int | None,
        tpm: int | None,
        max_concurrency: int | None,
        est_tokens: int,
    ) -> Admission:
        if (rpm is None and tpm is None and max_concurrency is None) or self._skipping():
            return Admission(True)
        lease = uuid.uuid4().hex
        keys, argv = self._script_call(
            scope,
            [
                _WINDOW_MS,
                -1 if rpm is None else rpm,
                -1 if tpm is None else tpm,
                -1 if max_concurrency is None else max_concurrency,
                lease,
                max(est_tokens, 0),
                int(self.lease_ttl_s * 1000),
            ],
        )
        try:
            async with asyncio.timeout(self.op_timeout_s):
                answer = await self._admit(self.client, keys, argv)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)  # the releases that rode along are lost: their leases expire
            return Admission(True)  # fail open: the local limiter still holds per process
        self._ok()
        if int(answer[0]) == 1:
            keep = max_concurrency is not None or tpm is not None
            admission = Admission(True, scope=scope if keep else "", lease=lease if keep else "")
            if max_concurrency is not None:
                self._held[lease] = admission
            return admission
        reason = answer[1].decode() if isinstance(answer[1], bytes) else str(answer[1])
        wait = int(answer[2])
        return Admission(False, reason=reason, retry_after=None if wait < 0 else max(wait, 1) / 1000)

    def release(self, admission: Admission, actual_tokens: int | None = None) -> None:
        """End an admission: its lease and token estimate are corrected with the next admission
        of this process, or within _RELEASE_DELAY_S (a lease is held that much longer at most)."""
        if not admission.lease:
            return
        self._held.pop(admission.lease, None)
        self._pending.append((admission.scope, admission.lease, -1 if actual_tokens is None else actual_tokens))
        if len(self._pending) >= _MAX_PENDING:
            self._spawn(self._flush())
        elif self._flush_timer is None:
            loop = asyncio.get_running_loop()
            self._flush_timer = loop.call_later(_RELEASE_DELAY_S, lambda: self._spawn(self._flush()))

    async def _flush(self) -> None:
        self._flush_timer = None
        if not self._pending:
            return
        if self._skipping():
            self._pending.clear()  # Redis is away: the leases expire by themselves
            return
        keys, argv = self._script_call(None, [_WINDOW_MS, -1, -1, -1, "", 0, 0])
        try:
            async with asyncio.timeout(self.op_timeout_s * 4):
                await self._admit(self.client, keys, argv)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)

    async def _renew_leases(self) -> None:
        ttl_ms = int(self.lease_ttl_s * 1000)
        while True:
            await asyncio.sleep(self.lease_ttl_s / 3)
            by_scope: dict[str, list[str | bytes | int | float]] = {}
            for lease, admission in list(self._held.items()):
                by_scope.setdefault(admission.scope, []).append(lease)
            for scope, leases in by_scope.items():
                try:
                    async with asyncio.timeout(self.op_timeout_s * 4):
                        await self._renew(self.client, self._keys(scope)[:1], [ttl_ms, *leases])
                except (RedisError, OSError, TimeoutError) as exc:
                    self._failed(exc)
                    break

    # -- breakers ---------------------------------------------------------------------------

    def watch(self, dep: Deployment) -> None:
        breaker = dep.state.breaker
        if breaker.on_transition is None:
            name = dep.name
            breaker.on_transition = lambda state: self._breaker_changed(name, breaker, state)

    def _probe_key(self, model: str) -> str:
        return f"{self.prefix}:probe:{model}"

    def _breaker_changed(self, model: str, breaker: CircuitBreaker, state: BreakerState) -> None:
        message = {"t": "breaker", "r": self.replica, "m": model, "s": state, "rem": breaker.settings.cooldown_s}
        self._spawn(self._announce(message, forget=self._probe_key(model)))

    async def claim_probe(self, dep: Deployment) -> bool:
        if self._skipping():
            return True
        ttl_ms = int(max(dep.call.timeout_s, 5.0) * 1000)
        try:
            async with asyncio.timeout(self.op_timeout_s):
                got = await self.client.set(self._probe_key(dep.name), self.replica, nx=True, px=ttl_ms)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return True
        self._ok()
        return bool(got)

    # -- health checks ----------------------------------------------------------------------

    async def claim_health(self, provider: str, interval_s: float) -> bool:
        """True when this replica runs the provider's check of this interval."""
        if self._skipping():
            return True
        key = f"{self.prefix}:health:{provider}"
        try:
            async with asyncio.timeout(self.op_timeout_s):
                got = await self.client.set(key, self.replica, nx=True, px=max(int(interval_s * 900), 100))
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return True
        self._ok()
        return bool(got)

    def share_health(self, provider: str, result: HealthResult) -> None:
        message = {
            "t": "health",
            "r": self.replica,
            "p": provider,
            "ok": result.ok,
            "ms": result.latency_ms,
            "d": result.detail,
        }
        self._spawn(self._announce(message))

    # -- keys -------------------------------------------------------------------------------

    def keys_changed(self) -> None:
        self._spawn(self._announce({"t": "keys", "r": self.replica}))

    # -- the events channel -----------------------------------------------------------------

    async def _announce(self, message: dict[str, Any], forget: str | None = None) -> None:
        if self._skipping():
            return
        try:
            async with asyncio.timeout(self.op_timeout_s * 4):
                if forget is not None:
                    await self.client.delete(forget)
                await self.client.publish(self.channel, orjson.dumps(message))
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)

    async def _listen(self) -> None:
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._received(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._failed(exc)
                await asyncio.sleep(self.retry_s)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass

    def _received(self, data: bytes) -> None:
        try:
            message = orjson.loads(data)
            if message.get("r") == self.replica:
                return
            kind = message.get("t")
            if kind == "breaker":
                dep = self._deployments().get(str(message["m"]))
                if dep is not None:
                    if message["s"] == "open":
                        dep.state.breaker.force_open(float(message["rem"]))
                    else:
                        dep.state.breaker.force_close()
            elif kind == "health":
                provider = self._providers().get(str(message["p"]))
                if provider is not None and self.on_health is not None:
                    ok, ms, detail = bool(message["ok"]), float(message["ms"]), str(message["d"])
                    self.on_health(provider, HealthResult(ok=ok, latency_ms=ms, detail=detail))
            elif kind == "keys":
                for listener in self.on_keys_changed:
                    listener()
        except Exception as exc:  # a malformed message must not stop the listener
            log.warning("ignored a shared-state message: %s", type(exc).__name__)

    # -- outages ----------------------------------------------------------------------------

    def _skipping(self) -> bool:
        return self._down_since is not None and time.monotonic() < self._skip_until

    def _failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._skip_until = now + self.retry_s
        self._last_error = scrub(f"{type(exc).__name__}: {exc}")[:300]
        if self._down_since is None:
            self._down_since = now
            self._outages += 1
            log.warning(
                "shared state: Redis at %s unreachable (%s); limits, breakers and health checks hold per process "
                "until it is back",
                redact_url(self.url),
                type(exc).__name__,
            )

    def _ok(self) -> None:
        if self._down_since is not None:
            log.warning("shared state: Redis is back after %.1f s", time.monotonic() - self._down_since)
            self._down_since = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
