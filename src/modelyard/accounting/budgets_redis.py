"""Budgets shared by every replica through one Redis: :class:`RedisLedger` (see :mod:`modelyard.accounting.budgets`).

A module of its own so that redis-py is imported only when ``state`` is a ``redis://`` URL:
:func:`modelyard.accounting.budgets.make_ledger` imports it then.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from modelyard.accounting.budgets import (
    DEFAULT_RESERVATION_TTL_S,
    GRACE,
    NANO,
    BudgetEvent,
    BudgetStatus,
    Period,
    Reservation,
    Scope,
    SeedResult,
    _cap_tokens,
    _cap_usd,
    _LedgerBase,
    _ms,
    _thresholds,
    _ttl_ms,
    _utc,
    period_of,
)
from modelyard.config.schema import BudgetConfig
from modelyard.storage.lua import RESERVE_LUA, SEED_LUA, SETTLE_LUA
from modelyard.storage.redis import LuaScript, RedisError, unavailable

__all__ = ["RedisLedger"]


class RedisLedger(_LedgerBase):
    """Budgets shared by every replica through one Redis. All checks and updates are Lua scripts."""

    def __init__(
        self,
        budgets: Sequence[BudgetConfig],
        client: Redis,
        *,
        url: str = "redis",
        key_prefix: str = "{modelyard}:budget:",
        reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S,
        owns_client: bool = False,
    ) -> None:
        super().__init__(budgets, key_prefix=key_prefix, reservation_ttl_s=reservation_ttl_s)
        self.client = client
        self.url = url
        self._owns_client = owns_client
        self._reserve = LuaScript(RESERVE_LUA)
        self._settle = LuaScript(SETTLE_LUA)
        self._seed = LuaScript(SEED_LUA)

    async def seed(
        self, budget: str, scope: str, *, usd: float, tokens: int, born: int = 0, now: datetime | None = None
    ) -> SeedResult:
        """See :meth:`~modelyard.accounting.budgets.BudgetLedger.seed`: one ``SEED_LUA``, atomic in Redis."""
        b = self._budgets.get(budget)
        if b is None:
            return SeedResult(False)
        at = _utc(now)
        period = period_of(b.period, at)
        spec = {
            "usd": str(max(0, round(usd * NANO))),
            "tok": str(max(0, int(tokens))),
            "born": str(born),
            "target": scope,
            "ttl": _ttl_ms(period, at),
        }
        keys = [self._counter_key(b.name, scope, period.id), self._targets_key(b.name, period.id)]
        status, found = await self._run(self._seed, keys, spec)
        if int(status) == 2:
            return SeedResult(False, int(found))
        return SeedResult(int(status) == 1)

    def _res_key(self, rid: str) -> str:
        return f"{self.prefix}r|{rid}"

    async def _run(self, script: LuaScript, keys: list[str], spec: dict[str, Any]) -> Any:
        try:
            return await script(self.client, keys, [orjson.dumps(spec)])
        except (RedisError, OSError) as exc:
            raise unavailable(self.url, exc) from exc

    async def reserve(self, scope: Scope, *, usd: float, tokens: int, now: datetime | None = None) -> Reservation:
        at = _utc(now)
        usd_nano, tokens = max(0, round(usd * NANO)), max(0, int(tokens))
        matched = self._matching(scope, at)
        res = Reservation(uuid.uuid4().hex, usd, tokens, tuple(ref for _, ref in matched), usd_nano)
        if not matched:
            return res
        wall_ms = int(time.time() * 1000)
        ttl_ms = int(self.reservation_ttl_s * 1000)
        spec = {
            "id": res.id,
            "now": wall_ms,
            "born": str(_ms(at)),
            "deadline": wall_ms + ttl_ms,
            "rttl": ttl_ms + int(GRACE.total_seconds() * 1000),
            "rp": self._res_key(""),
            "usd": usd_nano,
            "tok": tokens,
            "usds": str(usd_nano),
            "toks": str(tokens),
            "nusds": str(-usd_nano),
            "ntoks": str(-tokens),
            "c": [
                {"cu": _cap_usd(b), "ct": _cap_tokens(b), "ttl": _ttl_ms(ref.period, at), "t": ref.scope}
                for b, ref in matched
            ],
        }
        keys = [f"{self.prefix}rexp", self._res_key(res.id)]
        keys += [ref.key for _, ref in matched]
        keys += [self._targets_key(b.name, ref.period.id) for b, ref in matched]
        reply = await self._run(self._reserve, keys, spec)
        index = int(reply[0])
        if index:
            b, ref = matched[index - 1]
            dim = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
            raise self._exceeded(b, ref, dim, int(reply[2]), int(reply[3]), usd_nano, tokens, at)
        return res

    async def _finish(self, reservation: Reservation, *, usd_nano: int, tokens: int, settle: bool) -> list[Any]:
        counters = []
        for ref in reservation.counters:
            b = self._budgets.get(ref.budget)
            counters.append({
                "ttl": ref.ttl_ms,
                "lu": b.limit_usd * NANO if b is not None and b.limit_usd else 0,
                "lt": b.limit_tokens if b is not None and b.limit_tokens else 0,
                "th": _thresholds(b) if b is not None else [],
            })  # fmt: skip
        spec = {
            "id": reservation.id,
            "settle": 1 if settle else 0,
            "born": str(int(time.time() * 1000)),
            "usds": str(usd_nano),
            "toks": str(tokens),
            "nusds": str(-reservation.usd_nano),
            "ntoks": str(-reservation.tokens),
            "c": counters,
        }
        keys = [f"{self.prefix}rexp", self._res_key(reservation.id)] + [ref.key for ref in reservation.counters]
        reply = await self._run(self._settle, keys, spec)
        return list(reply or [])

    async def settle(self, reservation: Reservation, *, usd: float, tokens: int) -> list[BudgetEvent]:
        if reservation.closed:
            return []
        reservation.closed = True
        if not reservation.counters:
            return []
        usd_nano, tokens = max(0, round(usd * NANO)), max(0, int(tokens))
        reply = await self._finish(reservation, usd_nano=usd_nano, tokens=tokens, settle=True)
        events = []
        for index, label, frac in reply:
            name = label.decode() if isinstance(label, bytes) else str(label)
            event = self._event(reservation.counters[int(index) - 1], name, float(frac))
            if event is not None:
                events.append(event)
        return events

    async def release(self, reservation: Reservation) -> None:
        if reservation.closed:
            return
        reservation.closed = True
        if reservation.counters:
            await self._finish(reservation, usd_nano=0, tokens=0, settle=False)

    async def usage(self, now: datetime | None = None) -> list[BudgetStatus]:
        at = _utc(now)
        budgets = list(self._budgets.values())
        periods = [period_of(b.period, at) for b in budgets]
        try:
            pipe = self.client.pipeline(transaction=False)
            for b, period in zip(budgets, periods, strict=True):
                pipe.smembers(self._targets_key(b.name, period.id))
            members = await pipe.execute()
            rows: list[tuple[BudgetConfig, str, Period]] = []
            for b, period, found in zip(budgets, periods, members, strict=True):
                if b.scope == "global":
                    labels = ["global"]
                elif b.target is not None:
                    labels = [f"{b.scope}:{b.target}"]
                else:
                    labels = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in found)
                rows += [(b, label, period) for label in labels]
            pipe = self.client.pipeline(transaction=False)
            for b, label, period in rows:
                pipe.hmget(self._counter_key(b.name, label, period.id), ["uusd", "utok", "rusd", "rtok"])
            values = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise unavailable(self.url, exc) from exc
        return [self._status(b, label, period, raw) for (b, label, period), raw in zip(rows, values, strict=True)]

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()
