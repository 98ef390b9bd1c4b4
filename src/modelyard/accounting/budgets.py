"""Budgets and token quotas, exact under concurrency.

Every budget whose scope matches a request applies to it: ``global``; ``organization``, ``key``,
``route`` and ``model`` either for one ``target`` or, untargeted, for each org / key / route / model
separately.  A request **reserves** its worst case (cost of its input plus its largest possible
output) against all of them at once, or is refused with :class:`BudgetExceededError` (429) when
``used + reserved + request`` would pass ``stop_at * limit`` on any of them; after the call it
**settles** the actual amount (or **releases** everything when the call failed).  Reservations whose
holder died are given back after ``reservation_ttl_s``.

Money is counted in integer nano-dollars, so both backends add up exactly.  Counters are per
period: the UTC calendar day, the UTC calendar month, or ``total``.  Crossing an ``alert_at``
fraction (or ``stop_at``) returns a :class:`BudgetEvent`, once per threshold per period; the caller
logs it, records it and calls the webhook.  Counters start from the spend recorded in the usage
database (:mod:`modelyard.accounting.seeding`, on start and whenever the budgets change): a
counter a request creates keeps when (``born``) until it is seeded, so that the spend recorded
before it is added once.

:class:`MemoryLedger` serves one process (its critical sections never await);
:class:`~modelyard.accounting.budgets_redis.RedisLedger` serves several replicas through atomic Lua
scripts (in its own module, so that only a gateway with a ``redis://`` state imports redis-py).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple, Protocol

from modelyard.config.schema import BudgetConfig
from modelyard.errors import BudgetExceededError

__all__ = [
    "BudgetEvent",
    "BudgetExceededError",
    "BudgetLedger",
    "BudgetStatus",
    "CounterRef",
    "MemoryLedger",
    "Period",
    "Reservation",
    "Scope",
    "SeedResult",
    "make_ledger",
    "period_of",
]

log = logging.getLogger("modelyard.budgets")

NANO = 1_000_000_000
#: Counters outlive their period by this much (a request that straddles midnight still settles).
GRACE = timedelta(days=1)
DEFAULT_RESERVATION_TTL_S = 1800.0

BudgetState = Literal["ok", "alert", "stopped"]


# -- shapes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scope:
    """What one request counts against."""

    org_id: str | None = None
    key_id: str | None = None
    route: str | None = None
    model: str | None = None
    #: production, canary, shadow, comparison or probe: shadow traffic counts against shadow budgets only
    source: str = "production"


@dataclass(frozen=True, slots=True)
class Period:
    """A budget window: ``2025-01-31`` (day), ``2025-01`` (month) or ``total``; bounds in UTC."""

    id: str
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True, slots=True)
class CounterRef:
    """One budget's counter for one target in one period."""

    budget: str
    scope: str  # "global" or "<scope>:<target>"
    period: Period
    key: str
    #: how long the counter must be kept, from when the reservation was made (0: forever)
    ttl_ms: int = 0


class _Match(NamedTuple):
    """A budget a request counts against, its counter, and its caps (nano-USD, tokens; -1: none)."""

    budget: BudgetConfig
    ref: CounterRef
    cap_usd: int
    cap_tokens: int


@dataclass(slots=True)
class Reservation:
    id: str
    usd: float
    tokens: int
    counters: tuple[CounterRef, ...]
    usd_nano: int = 0
    closed: bool = False


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    """A threshold crossed (``kind="alert"``) or the emergency stop reached (``kind="stop"``)."""

    budget: str
    scope: str
    period: str
    threshold: float
    fraction: float
    kind: Literal["alert", "stop"]
    message: str
    webhook: str | None = None


@dataclass(frozen=True, slots=True)
class SeedResult:
    """What :meth:`BudgetLedger.seed` did with the recorded spend it was given.

    ``applied``: the counter was created at that spend, or had it added.  Otherwise ``born`` is
    None when there is nothing to do (the counter was seeded already, by this process or another
    replica), or the ``born`` to seed again with: the counter is not the one the spend was
    computed for (0: there is no counter, seed with all the spend of the period; else the time,
    in ms, an unseeded counter was created: seed with the spend of the requests that ended before).
    """

    applied: bool
    born: int | None = None


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    budget: str
    scope: str
    period: str
    period_start: datetime | None
    period_end: datetime | None
    limit_usd: float | None
    limit_tokens: int | None
    used_usd: float
    used_tokens: int
    reserved_usd: float
    reserved_tokens: int
    fraction: float
    state: BudgetState


class BudgetLedger(Protocol):
    async def reserve(self, scope: Scope, *, usd: float, tokens: int, now: datetime | None = None) -> Reservation: ...

    async def settle(self, reservation: Reservation, *, usd: float, tokens: int) -> list[BudgetEvent]: ...

    async def release(self, reservation: Reservation) -> None: ...

    async def usage(self, now: datetime | None = None) -> list[BudgetStatus]: ...

    def reconfigure(self, budgets: Sequence[BudgetConfig]) -> None: ...

    async def seed(
        self, budget: str, scope: str, *, usd: float, tokens: int, born: int = 0, now: datetime | None = None
    ) -> SeedResult:
        """Start the counter of ``budget`` for ``scope`` in its period (at ``now``) from recorded spend.

        ``born=0``: ``usd``/``tokens`` are all the spend recorded in the period, for a counter that
        does not exist; it is created at that spend.  ``born=<ms>``: they are the spend of the
        requests that ended before that time, for the unseeded counter created then (by a request,
        which counted everything after that live); they are added to it.  Either way the counter is
        then seeded, and never added to again; any other state is left alone and reported (see
        :class:`SeedResult`).  Atomic: of several replicas seeding at once, one adds."""
        ...

    async def aclose(self) -> None: ...


# -- shared logic ---------------------------------------------------------------------------


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def period_of(kind: str, now: datetime) -> Period:
    now = _utc(now)
    if kind == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return Period(start.strftime("%Y-%m-%d"), start, start + timedelta(days=1))
    if kind == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return Period(start.strftime("%Y-%m"), start, end)
    return Period("total", None, None)


#: a cached budget match is recomputed at least this often (and whenever a period ends)
_MAX_CACHED_PERIOD = timedelta(minutes=1)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def target_of(b: BudgetConfig, scope: Scope) -> str | None:
    """The scope label a request counts under for budget ``b``, or None when ``b`` does not apply."""
    if (b.scope == "shadow") != (scope.source == "shadow"):
        return None  # shadow spend goes to shadow budgets, and only there (contracts)
    if b.scope == "global":
        return "global"
    if b.scope == "shadow":
        if b.target is not None and b.target != scope.route:
            return None
        return f"shadow:{scope.route}" if b.target is not None else "shadow"
    value = {"organization": scope.org_id, "key": scope.key_id, "route": scope.route, "model": scope.model}[b.scope]
    if value is None or (b.target is not None and b.target != value):
        return None
    return f"{b.scope}:{value}"


def _cap_usd(b: BudgetConfig) -> int:
    # a non-finite limit (a key stored before the admin API bounded budget_usd) caps nothing
    if b.limit_usd is None or not math.isfinite(b.limit_usd):
        return -1
    return round(b.stop_at * b.limit_usd * NANO)


def _cap_tokens(b: BudgetConfig) -> int:
    return -1 if b.limit_tokens is None else int(b.stop_at * b.limit_tokens)


def _fraction(b: BudgetConfig, used_nano: float, used_tokens: float) -> float:
    frac = 0.0
    if b.limit_usd:
        frac = max(frac, used_nano / (b.limit_usd * NANO))
    if b.limit_tokens:
        frac = max(frac, used_tokens / b.limit_tokens)
    return frac


def _thresholds(b: BudgetConfig) -> list[tuple[str, float]]:
    return [(repr(t), t) for t in sorted(b.alert_at)] + [("stop", b.stop_at)]


def _limit_text(b: BudgetConfig) -> str:
    parts = []
    if b.limit_usd is not None:
        parts.append(f"${b.limit_usd:,.4f}")
    if b.limit_tokens is not None:
        parts.append(f"{b.limit_tokens:,} tokens")
    per = {"day": " per UTC day", "month": " per UTC month", "total": " in total"}[b.period]
    return " and ".join(parts) + per


def _state(b: BudgetConfig, frac: float) -> BudgetState:
    if frac >= b.stop_at:
        return "stopped"
    return "alert" if any(frac >= t for t in b.alert_at) else "ok"


def _ttl_ms(period: Period, now: datetime) -> int:
    """How long a counter must live from now: the rest of its period plus the grace (0: forever)."""
    if period.end is None:
        return 0
    return max(1, int((period.end - now + GRACE).total_seconds() * 1000))


class _LedgerBase:
    def __init__(self, budgets: Sequence[BudgetConfig], *, key_prefix: str, reservation_ttl_s: float) -> None:
        self._budgets: dict[str, BudgetConfig] = {}
        self.prefix = key_prefix
        self.reservation_ttl_s = reservation_ttl_s
        self.reconfigure(budgets)

    def reconfigure(self, budgets: Sequence[BudgetConfig]) -> None:
        """Use a new set of budgets (after a config reload); counters of unchanged names carry on."""
        self._budgets = {b.name: b for b in budgets}
        self._thresholds = {b.name: _thresholds(b) for b in budgets}
        #: scope -> (valid from, until, matches): see :meth:`_parts`
        self._match_cache: dict[Scope, tuple[datetime, datetime, list[_Match]]] = {}

    @property
    def budgets(self) -> list[BudgetConfig]:
        return list(self._budgets.values())

    def _counter_key(self, budget: str, scope: str, period: str) -> str:
        return f"{self.prefix}c|{budget}|{scope}|{period}"

    def _targets_key(self, budget: str, period: str) -> str:
        return f"{self.prefix}t|{budget}|{period}"

    def _parts(self, scope: Scope, now: datetime) -> list[_Match]:
        """The budgets a request of ``scope`` counts against now, with their counters (cached: they
        change only with the config or when a period ends, not per request)."""
        cached = self._match_cache.get(scope)
        if cached is not None and cached[0] <= now < cached[1]:
            return cached[2]
        parts = []
        since, until = now, now + _MAX_CACHED_PERIOD
        for b in self._budgets.values():
            label = target_of(b, scope)
            if label is None:
                continue
            period = period_of(b.period, now)
            key = self._counter_key(b.name, label, period.id)
            parts.append(_Match(b, CounterRef(b.name, label, period, key), _cap_usd(b), _cap_tokens(b)))
            if period.end is not None and period.end < until:
                until = period.end
        if len(self._match_cache) >= 4096:
            self._match_cache.clear()
        self._match_cache[scope] = (since, until, parts)
        return parts

    def _matching(self, scope: Scope, now: datetime) -> list[tuple[BudgetConfig, CounterRef]]:
        """:meth:`_parts` with each counter's time to live from ``now`` (the shared ledger's keys)."""
        return [(m.budget, replace(m.ref, ttl_ms=_ttl_ms(m.ref.period, now))) for m in self._parts(scope, now)]

    def _exceeded(
        self,
        b: BudgetConfig,
        ref: CounterRef,
        dim: str,
        used: int,
        reserved: int,
        usd_nano: int,
        tokens: int,
        now: datetime,
    ) -> BudgetExceededError:
        if dim == "usd":
            have = f"${used / NANO:,.4f} used and ${reserved / NANO:,.4f} reserved"
            need = f"up to ${usd_nano / NANO:,.4f}"
        else:
            have = f"{used:,} tokens used and {reserved:,} reserved"
            need = f"up to {tokens:,} tokens"
        end = ref.period.end
        resets = _iso(end) if end is not None else "never"
        stop = f" (stops at {b.stop_at:.0%})" if b.stop_at != 1.0 else ""
        message = (
            f"budget {b.name!r} ({ref.scope}) would be exceeded: limit {_limit_text(b)}{stop}, "
            f"{have} in period {ref.period.id}; this request needs {need}. Resets: {resets}."
        )
        retry = (end - now).total_seconds() if end is not None else None
        return BudgetExceededError(message, budget=b.name, scope=ref.scope, resets_at=end, retry_after=retry)

    def _event(self, ref: CounterRef, label: str, frac: float) -> BudgetEvent | None:
        b = self._budgets.get(ref.budget)
        if b is None:
            return None
        kind: Literal["alert", "stop"]
        if label == "stop":
            threshold, kind = b.stop_at, "stop"
            what = f"reached its stop at {b.stop_at:.0%}: further requests are refused"
        else:
            threshold, kind = float(label), "alert"
            what = f"passed {threshold:.0%}"
        message = (
            f"budget {b.name!r} ({ref.scope}) {what} ({frac:.1%} of {_limit_text(b)} used, period {ref.period.id})"
        )
        return BudgetEvent(b.name, ref.scope, ref.period.id, threshold, frac, kind, message, b.webhook)

    def _status(self, b: BudgetConfig, scope: str, period: Period, raw: Sequence[Any]) -> BudgetStatus:
        uusd, utok, rusd, rtok = (int(x or 0) for x in raw)
        frac = _fraction(b, uusd, utok)
        return BudgetStatus(
            budget=b.name, scope=scope, period=period.id, period_start=period.start, period_end=period.end,
            limit_usd=b.limit_usd, limit_tokens=b.limit_tokens, used_usd=uusd / NANO, used_tokens=utok,
            reserved_usd=rusd / NANO, reserved_tokens=rtok, fraction=frac, state=_state(b, frac),
        )  # fmt: skip


# -- one process ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Counter:
    budget: str = ""
    scope: str = ""
    period: str = ""
    used_usd: int = 0
    used_tokens: int = 0
    reserved_usd: int = 0
    reserved_tokens: int = 0
    expires: datetime | None = None
    alerted: set[str] = field(default_factory=set)
    #: when a request created the counter (ms), until it is seeded; None: seeded
    born: int | None = None


def _ms(t: datetime) -> int:
    return max(1, int(t.timestamp() * 1000))


def _new_counter(ref: CounterRef, born: int | None) -> _Counter:
    end = ref.period.end
    return _Counter(ref.budget, ref.scope, ref.period.id, expires=None if end is None else end + GRACE, born=born)


class MemoryLedger(_LedgerBase):
    """Budgets for one process. Each operation runs without awaiting, so it is atomic in asyncio."""

    def __init__(self, budgets: Sequence[BudgetConfig], *, reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S):
        super().__init__(budgets, key_prefix="", reservation_ttl_s=reservation_ttl_s)
        self._counters: dict[str, _Counter] = {}
        #: reservation ids: they only need to be unique within this process
        self._ids = itertools.count(1)
        #: open reservations, in deadline order (the TTL is the same for all)
        self._open: dict[str, tuple[float, Reservation]] = {}

    def _purge_stale(self) -> None:
        clock = time.monotonic()
        while self._open:
            rid, (deadline, res) = next(iter(self._open.items()))
            if deadline > clock:
                break
            del self._open[rid]
            self._unreserve(res)

    def _unreserve(self, res: Reservation) -> None:
        for ref in res.counters:
            c = self._counters.get(ref.key)
            if c is not None:
                c.reserved_usd -= res.usd_nano
                c.reserved_tokens -= res.tokens

    def _counter(self, ref: CounterRef, now: datetime) -> _Counter:
        c = self._counters.get(ref.key)
        if c is None:
            # a new counter is rare (once per target per period): drop the ones past their grace
            for key in [k for k, v in self._counters.items() if v.expires is not None and v.expires < now]:
                del self._counters[key]
            c = self._counters[ref.key] = _new_counter(ref, _ms(now))
        return c

    async def seed(
        self, budget: str, scope: str, *, usd: float, tokens: int, born: int = 0, now: datetime | None = None
    ) -> SeedResult:
        b = self._budgets.get(budget)
        if b is None:
            return SeedResult(False)
        at = _utc(now)
        period = period_of(b.period, at)
        key = self._counter_key(b.name, scope, period.id)
        c = self._counters.get(key)
        if c is not None and c.born is None:
            return SeedResult(False)  # seeded already: never added to again
        if (0 if c is None else c.born) != born:
            return SeedResult(False, 0 if c is None else c.born)
        if c is None:
            c = self._counters[key] = _new_counter(CounterRef(b.name, scope, period, key), None)
        c.used_usd += max(0, round(usd * NANO))
        c.used_tokens += max(0, int(tokens))
        c.born = None
        return SeedResult(True)

    async def reserve(self, scope: Scope, *, usd: float, tokens: int, now: datetime | None = None) -> Reservation:
        at = _utc(now)
        usd_nano, tokens = max(0, round(usd * NANO)), max(0, int(tokens))
        self._purge_stale()
        matched = self._parts(scope, at)
        counters = [self._counter(m.ref, at) for m in matched]
        for m, c in zip(matched, counters, strict=True):
            if m.cap_usd >= 0 and c.used_usd + c.reserved_usd + usd_nano > m.cap_usd:
                raise self._exceeded(m.budget, m.ref, "usd", c.used_usd, c.reserved_usd, usd_nano, tokens, at)
            if m.cap_tokens >= 0 and c.used_tokens + c.reserved_tokens + tokens > m.cap_tokens:
                raise self._exceeded(m.budget, m.ref, "tokens", c.used_tokens, c.reserved_tokens, usd_nano, tokens, at)
        for c in counters:
            c.reserved_usd += usd_nano
            c.reserved_tokens += tokens
        res = Reservation(f"r{next(self._ids)}", usd, tokens, tuple(m.ref for m in matched), usd_nano)
        if res.counters:
            self._open[res.id] = (time.monotonic() + self.reservation_ttl_s, res)
        return res

    async def settle(self, reservation: Reservation, *, usd: float, tokens: int) -> list[BudgetEvent]:
        if reservation.closed:
            return []
        reservation.closed = True
        if self._open.pop(reservation.id, None) is not None:
            self._unreserve(reservation)
        usd_nano, tokens = max(0, round(usd * NANO)), max(0, int(tokens))
        events: list[BudgetEvent] = []
        for ref in reservation.counters:
            c = self._counters.get(ref.key)
            if c is None:
                c = self._counters[ref.key] = _new_counter(ref, _ms(datetime.now(UTC)))
            c.used_usd += usd_nano
            c.used_tokens += tokens
            b = self._budgets.get(ref.budget)
            if b is None:
                continue
            frac = _fraction(b, c.used_usd, c.used_tokens)
            for label, threshold in self._thresholds[b.name]:
                if frac >= threshold and label not in c.alerted:
                    c.alerted.add(label)
                    event = self._event(ref, label, frac)
                    if event is not None:
                        events.append(event)
        return events

    async def release(self, reservation: Reservation) -> None:
        if reservation.closed:
            return
        reservation.closed = True
        if self._open.pop(reservation.id, None) is not None:
            self._unreserve(reservation)

    async def usage(self, now: datetime | None = None) -> list[BudgetStatus]:
        at = _utc(now)
        self._purge_stale()
        out = []
        for b in self._budgets.values():
            period = period_of(b.period, at)
            scopes = sorted(c.scope for c in self._counters.values() if c.budget == b.name and c.period == period.id)
            if b.scope == "global":
                scopes = ["global"]
            elif b.target is not None:
                scopes = [f"{b.scope}:{b.target}"]
            for label in scopes:
                c = self._counters.get(self._counter_key(b.name, label, period.id)) or _Counter()
                raw = (c.used_usd, c.used_tokens, c.reserved_usd, c.reserved_tokens)
                out.append(self._status(b, label, period, raw))
        return out

    async def aclose(self) -> None:
        return None


def make_ledger(budgets: Sequence[BudgetConfig], state_url: str, **kwargs: Any) -> BudgetLedger:
    """A ledger for the ``state`` setting: ``memory`` (one process) or a ``redis://`` URL (shared)."""
    if state_url == "memory":
        return MemoryLedger(budgets, **kwargs)
    # imported here: only a shared-state gateway pays for redis-py
    from modelyard.accounting.budgets_redis import RedisLedger
    from modelyard.storage.redis import redis_client

    return RedisLedger(budgets, redis_client(state_url), url=state_url, owns_client=True, **kwargs)
