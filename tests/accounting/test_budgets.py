"""Budgets and quotas: every semantic on both backends (memory, real Redis), and exactness under load."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis

from modelyard.accounting.budgets import (
    BudgetExceededError,
    BudgetLedger,
    MemoryLedger,
    Scope,
    SeedResult,
    make_ledger,
    period_of,
)
from modelyard.accounting.budgets_redis import RedisLedger
from modelyard.accounting.seeding import seed_budgets
from modelyard.config.schema import BudgetConfig, Config
from modelyard.errors import RateLimitError
from modelyard.gateway.services import Services
from modelyard.runtime import RuntimeHolder
from modelyard.storage.db import Database
from modelyard.storage.migrate import migrate
from modelyard.storage.records import RequestRecord
from modelyard.storage.redis import StateUnavailableError, check_redis, redis_client
from modelyard.storage.usage import UsageStore
from tests.accounting.conftest import LedgerFactory
from tests.storage.records import request as record

NOW = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
ANY = Scope(org_id="acme", key_id="k1", route="chat", model="gpt")


def budget(name: str = "b", **kw: Any) -> BudgetConfig:
    return BudgetConfig(name=name, **kw)


async def status(ledger: BudgetLedger, name: str, scope: str | None = None, now: datetime = NOW) -> Any:
    rows = [s for s in await ledger.usage(now) if s.budget == name and (scope is None or s.scope == scope)]
    assert len(rows) == 1, rows
    return rows[0]


# -- reserve / settle / release -------------------------------------------------------------------


async def test_reserve_then_settle_moves_reserved_to_used(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger([budget(limit_usd=1.0, limit_tokens=1000, period="day")])
    res = await ledger.reserve(ANY, usd=0.25, tokens=300, now=NOW)
    s = await status(ledger, "b")
    assert (s.reserved_usd, s.reserved_tokens, s.used_usd, s.used_tokens) == (0.25, 300, 0, 0)
    assert await ledger.settle(res, usd=0.1, tokens=120) == []
    s = await status(ledger, "b")
    assert (s.reserved_usd, s.reserved_tokens, s.used_usd, s.used_tokens) == (0, 0, 0.1, 120)
    assert s.period == "2025-03-14"
    assert (s.period_start, s.period_end) == (datetime(2025, 3, 14, tzinfo=UTC), datetime(2025, 3, 15, tzinfo=UTC))


async def test_refuses_when_worst_case_would_pass_the_limit(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger([budget("team", limit_usd=1.0, period="day")])
    first = await ledger.reserve(ANY, usd=0.6, now=NOW, tokens=0)
    with pytest.raises(BudgetExceededError) as info:
        await ledger.reserve(ANY, usd=0.5, tokens=0, now=NOW)
    err = info.value
    assert isinstance(err, RateLimitError) and err.status == 429 and err.code == "budget_exceeded"
    assert "'team'" in err.message and "$1.0000 per UTC day" in err.message
    assert "Resets: 2025-03-15T00:00:00Z" in err.message
    assert err.budget == "team" and err.resets_at == datetime(2025, 3, 15, tzinfo=UTC)
    assert err.retry_after == 12 * 3600 and err.headers() == {"Retry-After": "43200"}
    # exactly at the limit is allowed; a nano-dollar more is not
    at_limit = await ledger.reserve(ANY, usd=0.4, tokens=0, now=NOW)
    with pytest.raises(BudgetExceededError):
        await ledger.reserve(ANY, usd=0.000000001, tokens=0, now=NOW)
    await ledger.release(first)
    await ledger.release(at_limit)
    await ledger.reserve(ANY, usd=1.0, tokens=0, now=NOW)


async def test_total_budget_never_resets(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger([budget("pool", limit_tokens=100, period="total")])
    res = await ledger.reserve(ANY, usd=0, tokens=100, now=NOW)
    await ledger.settle(res, usd=0, tokens=100)
    with pytest.raises(BudgetExceededError) as info:
        await ledger.reserve(ANY, usd=0, tokens=1, now=NOW + timedelta(days=400))
    assert "Resets: never" in info.value.message and info.value.retry_after is None
    assert "100 tokens used" in info.value.message and "100 tokens in total" in info.value.message


async def test_shared_token_pool_settles_to_actual(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger([budget("shared-pool", scope="global", limit_tokens=20_000_000, period="total")])
    big = await ledger.reserve(ANY, usd=0, tokens=15_000_000, now=NOW)
    with pytest.raises(BudgetExceededError):
        await ledger.reserve(ANY, usd=0, tokens=6_000_000, now=NOW)
    await ledger.settle(big, usd=0, tokens=1_000_000)  # the call wrote far less than its worst case
    await ledger.reserve(ANY, usd=0, tokens=6_000_000, now=NOW)
    s = await status(ledger, "shared-pool")
    assert (s.used_tokens, s.reserved_tokens, s.period, s.period_end) == (1_000_000, 6_000_000, "total", None)


async def test_release_gives_everything_back_once(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger([budget(limit_usd=1.0, limit_tokens=50)])
    res = await ledger.reserve(ANY, usd=0.9, tokens=50, now=NOW)
    await ledger.release(res)
    await ledger.release(res)  # idempotent
    assert await ledger.settle(res, usd=0.9, tokens=50) == []  # a released reservation cannot be billed
    s = await status(ledger, "b")
    assert (s.used_usd, s.used_tokens, s.reserved_usd, s.reserved_tokens) == (0, 0, 0, 0)
    other = await ledger.reserve(ANY, usd=1.0, tokens=50, now=NOW)
    await ledger.settle(other, usd=0.5, tokens=10)
    await ledger.settle(other, usd=0.5, tokens=10)  # settling twice counts once
    s = await status(ledger, "b")
    assert (s.used_usd, s.used_tokens, s.reserved_usd) == (0.5, 10, 0)


async def test_no_matching_budget_is_free(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger([budget(scope="key", target="other-key", limit_usd=0.01)])
    res = await ledger.reserve(ANY, usd=100.0, tokens=10**9, now=NOW)
    assert res.counters == ()
    assert await ledger.settle(res, usd=100.0, tokens=10**9) == []


# -- scopes ---------------------------------------------------------------------------------------


async def test_every_matching_scope_applies(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger(
        [
            budget("all", scope="global", limit_usd=100),
            budget("acme", scope="organization", target="acme", limit_usd=100),
            budget("other-org", scope="organization", target="globex", limit_usd=100),
            budget("per-org", scope="organization", limit_usd=100),
            budget("key", scope="key", target="k1", limit_usd=100),
            budget("route", scope="route", target="chat", limit_usd=100),
            budget("per-model", scope="model", limit_usd=100),
        ]
    )
    res = await ledger.reserve(ANY, usd=1, tokens=1, now=NOW)
    assert {(c.budget, c.scope) for c in res.counters} == {
        ("all", "global"),
        ("acme", "organization:acme"),
        ("per-org", "organization:acme"),
        ("key", "key:k1"),
        ("route", "route:chat"),
        ("per-model", "model:gpt"),
    }
    anonymous = await ledger.reserve(Scope(route="other"), usd=1, tokens=1, now=NOW)
    assert [c.budget for c in anonymous.counters] == ["all"]


async def test_untargeted_scope_counts_each_target_separately(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger([budget("per-key", scope="key", limit_tokens=100, period="month")])
    k1, k2 = Scope(key_id="k1"), Scope(key_id="k2")
    await ledger.settle(await ledger.reserve(k1, usd=0, tokens=100, now=NOW), usd=0, tokens=100)
    with pytest.raises(BudgetExceededError) as info:
        await ledger.reserve(k1, usd=0, tokens=1, now=NOW)
    assert "(key:k1)" in info.value.message and info.value.scope == "key:k1"
    await ledger.settle(await ledger.reserve(k2, usd=0, tokens=40, now=NOW), usd=0, tokens=40)
    rows = {s.scope: (s.used_tokens, s.state) for s in await ledger.usage(NOW)}
    assert rows == {"key:k1": (100, "stopped"), "key:k2": (40, "ok")}


async def test_one_refusing_budget_reserves_nothing_anywhere(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger([budget("roomy", limit_usd=100), budget("tight", scope="route", target="chat", limit_usd=1)])
    with pytest.raises(BudgetExceededError) as info:
        await ledger.reserve(ANY, usd=2, tokens=0, now=NOW)
    assert info.value.budget == "tight"
    assert (await status(ledger, "roomy")).reserved_usd == 0  # all or nothing


# -- periods --------------------------------------------------------------------------------------


async def test_day_budget_rolls_over_at_utc_midnight(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger([budget("daily", limit_usd=1.0, period="day")])
    late = datetime(2025, 1, 31, 23, 59, 59, tzinfo=UTC)
    await ledger.settle(await ledger.reserve(ANY, usd=1.0, tokens=0, now=late), usd=1.0, tokens=0)
    with pytest.raises(BudgetExceededError) as info:
        await ledger.reserve(ANY, usd=0.01, tokens=0, now=late)
    assert "Resets: 2025-02-01T00:00:00Z" in info.value.message and info.value.retry_after == 1
    # a non-UTC clock is converted: 19:00 in UTC-5 on Jan 31 is already Feb 1 00:00 UTC
    next_day = datetime(2025, 1, 31, 19, 0, 1, tzinfo=timezone(timedelta(hours=-5)))
    res = await ledger.reserve(ANY, usd=1.0, tokens=0, now=next_day)
    assert res.counters[0].period.id == "2025-02-01"
    assert (await status(ledger, "daily", now=late)).used_usd == 1.0
    assert (await status(ledger, "daily", now=next_day)).reserved_usd == 1.0


async def test_month_budget_rolls_over_including_the_year(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger([budget("monthly", limit_tokens=10, period="month")])
    dec = datetime(2024, 12, 31, 23, 0, tzinfo=UTC)
    await ledger.settle(await ledger.reserve(ANY, usd=0, tokens=10, now=dec), usd=0, tokens=10)
    with pytest.raises(BudgetExceededError) as info:
        await ledger.reserve(ANY, usd=0, tokens=1, now=datetime(2024, 12, 1, tzinfo=UTC))
    assert "Resets: 2025-01-01T00:00:00Z" in info.value.message
    res = await ledger.reserve(ANY, usd=0, tokens=10, now=datetime(2025, 1, 1, tzinfo=UTC))
    assert res.counters[0].period.id == "2025-01"


def test_period_bounds() -> None:
    naive = datetime(2024, 2, 29, 13, 30)  # naive times are UTC
    assert period_of("day", naive).id == "2024-02-29"
    month = period_of("month", naive)
    assert (month.id, month.start, month.end) == (
        "2024-02",
        datetime(2024, 2, 1, tzinfo=UTC),
        datetime(2024, 3, 1, tzinfo=UTC),
    )
    assert period_of("total", naive).end is None


# -- alerts and the emergency stop ----------------------------------------------------------------


async def test_alerts_fire_once_per_threshold_per_period(new_ledger: LedgerFactory) -> None:
    cfg = budget("ops", limit_usd=1.0, period="day", alert_at=(0.8, 0.5), webhook="https://hooks.example/ops")
    ledger = new_ledger([cfg])

    async def spend(usd: float, now: datetime = NOW) -> list[Any]:
        return await ledger.settle(await ledger.reserve(ANY, usd=usd, tokens=0, now=now), usd=usd, tokens=0)

    assert await spend(0.3) == []
    [half] = await spend(0.3)
    assert (half.budget, half.scope, half.period, half.threshold, half.kind) == (
        "ops",
        "global",
        "2025-03-14",
        0.5,
        "alert",
    )
    assert half.fraction == pytest.approx(0.6) and half.webhook == "https://hooks.example/ops"
    assert "'ops'" in half.message and "50%" in half.message
    assert await spend(0.1) == []
    [eighty] = await spend(0.15)
    assert eighty.threshold == 0.8 and eighty.fraction == pytest.approx(0.85)
    assert (await status(ledger, "ops")).state == "alert"
    [stop] = await spend(0.15)
    assert stop.kind == "stop" and stop.threshold == 1.0 and "refused" in stop.message
    assert (await status(ledger, "ops")).state == "stopped"
    # the next day starts clean, and the same thresholds fire again
    tomorrow = NOW + timedelta(days=1)
    assert (await status(ledger, "ops", now=tomorrow)).state == "ok"
    events = await spend(0.9, tomorrow)
    assert [(e.threshold, e.period) for e in events] == [(0.5, "2025-03-15"), (0.8, "2025-03-15")]


async def test_alert_on_tokens(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger([budget("tok", limit_tokens=1000, alert_at=(0.8,), period="total")])
    [event] = await ledger.settle(await ledger.reserve(ANY, usd=0, tokens=900, now=NOW), usd=0, tokens=850)
    assert event.fraction == pytest.approx(0.85) and event.period == "total"


async def test_stop_at_refuses_below_the_limit(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger([budget("brake", limit_usd=10.0, stop_at=0.5, alert_at=(0.3,))])
    events = await ledger.settle(await ledger.reserve(ANY, usd=4, tokens=0, now=NOW), usd=4, tokens=0)
    assert [e.kind for e in events] == ["alert"]
    await ledger.reserve(ANY, usd=1, tokens=0, now=NOW)  # exactly at 50%
    with pytest.raises(BudgetExceededError) as info:
        await ledger.reserve(ANY, usd=0.01, tokens=0, now=NOW)
    assert "stops at 50%" in info.value.message
    assert (await status(ledger, "brake")).state == "alert"


# -- reservations whose holder died ---------------------------------------------------------------


async def test_stale_reservations_are_given_back(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger([budget(limit_usd=1.0)], reservation_ttl_s=0.05)
    stale = await ledger.reserve(ANY, usd=0.9, tokens=0, now=NOW)
    with pytest.raises(BudgetExceededError):
        await ledger.reserve(ANY, usd=0.9, tokens=0, now=NOW)
    await asyncio.sleep(0.12)
    fresh = await ledger.reserve(ANY, usd=0.9, tokens=0, now=NOW)
    # the late holder still pays what it spent; only its reservation was given back
    await ledger.settle(stale, usd=0.05, tokens=0)
    s = await status(ledger, "b")
    assert (s.used_usd, s.reserved_usd) == (0.05, 0.9)
    await ledger.release(fresh)
    assert (await status(ledger, "b")).reserved_usd == 0


# -- exactness under concurrency ------------------------------------------------------------------


LIMIT, WORST = 0.01, 0.0003
CONTENDED = [budget("tiny", limit_usd=LIMIT, period="day"), budget("per-org", scope="organization", limit_usd=1)]


async def run_contended(ledgers: list[BudgetLedger]) -> None:
    """200 requests, staggered over 30 ms, each reserving $0.0003 against a $0.01 budget, holding it
    up to 5 ms, then settling a random actual <= its reservation (one in ten fails and releases)."""
    rng = random.Random(1234)
    plan = [
        (rng.uniform(0, 0.03), rng.uniform(0, 0.005), rng.uniform(0, WORST), rng.random() < 0.1) for _ in range(200)
    ]
    settled: list[float] = []
    outcome = {"refused": 0, "failed": 0}

    async def one(i: int, start: float, hold: float, actual: float, fails: bool) -> None:
        ledger = ledgers[i % len(ledgers)]
        await asyncio.sleep(start)
        try:
            res = await ledger.reserve(Scope(org_id=f"org{i % 3}"), usd=WORST, tokens=100)
        except BudgetExceededError:
            outcome["refused"] += 1
            return
        await asyncio.sleep(hold)
        if fails:
            outcome["failed"] += 1
            await ledger.release(res)
        else:
            settled.append(actual)
            await ledger.settle(res, usd=actual, tokens=50)

    await asyncio.gather(*(one(i, *p) for i, p in enumerate(plan)))
    spent = sum(settled)
    assert spent <= LIMIT + WORST  # never more than one reservation over (in fact never over)
    assert outcome["refused"] > 0  # the budget was really contended
    assert len(settled) + outcome["failed"] >= round(LIMIT / WORST) - 1
    for ledger in ledgers:  # every replica sees the same exact totals, nothing left reserved
        s = await status(ledger, "tiny", now=datetime.now(UTC))
        assert s.used_usd == pytest.approx(spent, abs=1e-9 * len(settled))
        assert (s.reserved_usd, s.reserved_tokens, s.used_tokens) == (0, 0, 50 * len(settled))
        assert sum(r.used_tokens for r in await ledger.usage() if r.budget == "per-org") == 50 * len(settled)


async def test_200_concurrent_requests_never_overspend(new_ledger: LedgerFactory) -> None:
    await run_contended([new_ledger(CONTENDED)])


async def test_200_concurrent_requests_on_two_replicas_never_overspend(redis_url: str, redis_prefix: str) -> None:
    replicas = [
        RedisLedger(CONTENDED, redis_client(redis_url), key_prefix=redis_prefix, owns_client=True) for _ in "ab"
    ]
    try:
        await run_contended(replicas)
    finally:
        for ledger in replicas:
            await ledger.aclose()


# -- Redis specifics ------------------------------------------------------------------------------


async def test_two_redis_ledgers_share_state(redis_url: str, redis_prefix: str) -> None:
    cfg = [budget("shared", limit_usd=1.0, period="day")]
    a = RedisLedger(cfg, redis_client(redis_url), key_prefix=redis_prefix, owns_client=True)
    b = RedisLedger(cfg, redis_client(redis_url), key_prefix=redis_prefix, owns_client=True)
    try:
        res = await a.reserve(ANY, usd=0.7, tokens=0, now=NOW)
        assert (await status(b, "shared")).reserved_usd == 0.7
        with pytest.raises(BudgetExceededError):
            await b.reserve(ANY, usd=0.4, tokens=0, now=NOW)
        await b.settle(res, usd=0.2, tokens=0)  # any replica can settle
        await b.reserve(ANY, usd=0.8, tokens=0, now=NOW)
        assert (await status(a, "shared")).used_usd == 0.2
    finally:
        await a.aclose()
        await b.aclose()


async def test_redis_keys_carry_the_period_and_expire(redis_url: str, redis_prefix: str) -> None:
    cfg = [budget("d", limit_usd=1, period="day"), budget("t", limit_usd=1, period="total")]
    ledger = RedisLedger(cfg, redis_client(redis_url), key_prefix=redis_prefix, owns_client=True)
    raw = redis.Redis.from_url(redis_url)
    try:
        now = datetime.now(UTC)
        await ledger.settle(await ledger.reserve(ANY, usd=0.1, tokens=1), usd=0.1, tokens=1)
        day = period_of("day", now).id
        day_ttl = raw.pttl(f"{redis_prefix}c|d|global|{day}")
        assert 0 < day_ttl <= (24 + 24) * 3600 * 1000
        assert raw.pttl(f"{redis_prefix}c|t|global|total") == -1  # total budgets never expire
        assert raw.exists(f"{redis_prefix}rexp") == 0  # no open reservations left behind
    finally:
        raw.close()
        await ledger.aclose()


async def test_scripts_reload_after_script_flush(redis_url: str, redis_prefix: str) -> None:
    ledger = RedisLedger([budget(limit_usd=1)], redis_client(redis_url), key_prefix=redis_prefix, owns_client=True)
    try:
        await ledger.release(await ledger.reserve(ANY, usd=0.1, tokens=0))
        await ledger.client.script_flush()  # e.g. Redis restarted: EVALSHA answers NOSCRIPT
        await ledger.settle(await ledger.reserve(ANY, usd=0.1, tokens=0), usd=0.1, tokens=0)
        assert (await status(ledger, "b", now=datetime.now(UTC))).used_usd == 0.1
    finally:
        await ledger.aclose()


async def test_unreachable_redis_is_a_clear_503_without_the_password() -> None:
    url = "redis://:hunter2@127.0.0.1:1/0"
    ledger = make_ledger([budget(limit_usd=1)], url)
    assert isinstance(ledger, RedisLedger)
    try:
        with pytest.raises(StateUnavailableError) as info:
            await ledger.reserve(ANY, usd=0.1, tokens=0)
        assert info.value.status == 503 and "127.0.0.1:1" in info.value.message
        assert "hunter2" not in info.value.message
        with pytest.raises(StateUnavailableError):
            await check_redis(ledger.client, url)
    finally:
        await ledger.aclose()


def test_make_ledger_memory() -> None:
    assert isinstance(make_ledger([budget(limit_usd=1)], "memory"), MemoryLedger)


def test_a_non_finite_usd_limit_caps_nothing_instead_of_crashing() -> None:
    # keys stored before the admin API bounded budget_usd can carry inf; every request with them was a 500
    from modelyard.accounting.budgets import NANO, _cap_usd
    from modelyard.config.schema import BudgetConfig

    assert _cap_usd(BudgetConfig(name="k", limit_usd=float("inf"))) == -1
    assert _cap_usd(BudgetConfig(name="k", limit_usd=2.0)) == 2 * NANO


# -- counters start from the recorded spend (the gateway's start and config reloads) ----------------


async def recorded(path: Path, *records: RequestRecord) -> None:
    """Write usage records to the SQLite file at ``path`` (the database the gateway will use)."""
    db = Database(f"sqlite:///{path}")
    try:
        await migrate(db)
        await UsageStore(db).insert(list(records), [])
    finally:
        await db.aclose()


async def served(ledger: BudgetLedger, i: int, usd: float, *, route: str = "chat") -> RequestRecord:
    """One request served live: reserve, settle, and the record it leaves (ending after the settle)."""
    started = datetime.now(UTC)
    scope = Scope(org_id="acme", key_id="k1", route=route, model="gpt")
    await ledger.settle(await ledger.reserve(scope, usd=usd, tokens=10), usd=usd, tokens=10)
    ms = (datetime.now(UTC) - started).total_seconds() * 1000 + 1
    return record(i, ts=started, route=route, cost_usd=usd, tokens_in=5, tokens_out=5, latency_ms=ms)


def gateway_config(path: Path, state: str, budgets: list[dict[str, Any]]) -> Config:
    return Config.model_validate({"database": {"url": f"sqlite:///{path}"}, "state": state, "budgets": budgets})


async def test_start_adds_recorded_spend_to_a_counter_a_request_made_first(redis_url: str, tmp_path: Path) -> None:
    """The race: a request (here on another replica) reserves and settles before the starting
    gateway seeds the counter, so the counter exists; the seed used to skip it and the spend
    recorded before was lost (0.1 instead of 0.6, and a hard $1 budget let 0.45 more through)."""
    name = f"seed-{uuid.uuid4().hex[:8]}"  # the gateway's own key prefix: a budget of this test's own
    budgets = [{"name": name, "scope": "route", "target": "chat", "limit_usd": 1.0, "period": "total"}]
    path = tmp_path / "usage.db"
    before = datetime.now(UTC) - timedelta(minutes=5)
    await recorded(path, *(record(i, ts=before + timedelta(seconds=i), route="chat", cost_usd=0.25) for i in (1, 2)))
    cfg = gateway_config(path, redis_url, budgets)
    replica = make_ledger(cfg.budgets, redis_url)
    raw = redis.Redis.from_url(redis_url)
    services = None
    try:
        live = await served(replica, 3, 0.1)
        await recorded(path, live)  # counted live already: never added again
        services = await Services.start(cfg, lambda: RuntimeHolder(cfg).current)
        assert (await status(services.ledger, name, now=datetime.now(UTC))).used_usd == pytest.approx(0.6)
        with pytest.raises(BudgetExceededError):
            await replica.reserve(ANY, usd=0.45, tokens=0)
        await services.refresh_budgets()  # again (a reload): nothing is added twice
        assert (await status(replica, name, now=datetime.now(UTC))).used_usd == pytest.approx(0.6)
    finally:
        if services is not None:
            await services.aclose()
        await replica.aclose()
        keys = list(raw.scan_iter(match=f"*{name}*"))
        if keys:
            raw.delete(*keys)
        raw.close()


@pytest.mark.parametrize("state", ["memory", "redis"])
async def test_a_budget_added_by_a_reload_counts_spend_recorded_before_it(
    state: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A reload adds a budget; a request counts against it before its counter is seeded."""
    url = "memory" if state == "memory" else request.getfixturevalue("redis_url")
    name = f"added-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "usage.db"
    today = datetime.now(UTC)
    await recorded(path, record(1, ts=today - timedelta(seconds=30), cost_usd=0.3))
    cfg = gateway_config(path, url, [])
    services = await Services.start(cfg, lambda: RuntimeHolder(cfg).current)
    raw = None if state == "memory" else redis.Redis.from_url(url)
    try:
        added = (BudgetConfig(name=name, scope="global", limit_usd=1.0, period="month"),)
        services.ledger.reconfigure(added)  # what refresh_budgets does first, then the seed awaits the database
        await recorded(path, await served(services.ledger, 2, 0.2))
        await services.rebuild_budgets(added)
        now = datetime.now(UTC)
        expected = 0.5 if period_of("month", now).start <= today - timedelta(seconds=30) else 0.2
        assert (await status(services.ledger, name, now=now)).used_usd == pytest.approx(expected)
    finally:
        await services.aclose()
        if raw is not None:
            keys = list(raw.scan_iter(match=f"*{name}*"))
            if keys:
                raw.delete(*keys)
            raw.close()


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


async def test_seed_creates_or_adds_once_and_says_which_counter_it_found(new_ledger: LedgerFactory) -> None:
    ledger = new_ledger([budget("a", limit_usd=10.0, period="day"), budget("b", limit_usd=10.0, period="day")])
    # no counter: created at the whole period's spend, then seeded for good
    assert await ledger.seed("a", "global", usd=1.0, tokens=5, now=NOW) == SeedResult(True)
    assert await ledger.seed("a", "global", usd=1.0, tokens=5, now=NOW) == SeedResult(False)
    assert (await status(ledger, "a")).used_usd == 1.0
    # a request created the counter first: the seed is told when, and adds what was recorded before
    await ledger.settle(await ledger.reserve(ANY, usd=0.5, tokens=1, now=NOW), usd=0.5, tokens=1)
    assert await ledger.seed("b", "global", usd=2.0, tokens=9, now=NOW) == SeedResult(False, ms(NOW))
    assert await ledger.seed("b", "global", usd=0.25, tokens=3, born=ms(NOW) - 1, now=NOW) == SeedResult(False, ms(NOW))
    assert await ledger.seed("b", "global", usd=0.25, tokens=3, born=ms(NOW), now=NOW) == SeedResult(True)
    assert await ledger.seed("b", "global", usd=0.25, tokens=3, born=ms(NOW), now=NOW) == SeedResult(False)
    s = await status(ledger, "b")
    assert (s.used_usd, s.used_tokens) == (0.75, 4)
    assert (await status(ledger, "a")).used_usd == 1.5  # the live request counts on seeded counters too
    # the counter of the next day is a new one, not seeded yet
    tomorrow = NOW + timedelta(days=1)
    await ledger.settle(await ledger.reserve(ANY, usd=0.5, tokens=1, now=tomorrow), usd=0.5, tokens=1)
    assert await ledger.seed("a", "global", usd=1.0, tokens=5, now=tomorrow) == SeedResult(False, ms(tomorrow))
    assert await ledger.seed("gone", "global", usd=1.0, tokens=5, now=NOW) == SeedResult(False)


async def test_a_redis_counter_from_before_seeding_had_born_is_never_added_to(
    redis_url: str, redis_prefix: str
) -> None:
    ledger = RedisLedger(
        [budget("old", limit_usd=1.0, period="total")], redis_client(redis_url), key_prefix=redis_prefix
    )
    raw = redis.Redis.from_url(redis_url)
    try:  # a counter an older version created (no born): as before, the seed leaves it alone
        raw.hset(f"{redis_prefix}c|old|global|total", mapping={"uusd": 10**8, "utok": 1, "rusd": 0, "rtok": 0})
        assert await ledger.seed("old", "global", usd=0.5, tokens=1, now=NOW) == SeedResult(False)
        assert (await status(ledger, "old")).used_usd == 0.1
    finally:
        raw.close()
        await ledger.client.aclose()


async def usage_store(path: Path) -> UsageStore:
    db = Database(f"sqlite:///{path}")
    await migrate(db)
    return UsageStore(db)


async def test_seed_adds_what_ended_before_the_counter_was_born_in_its_period(
    new_ledger: LedgerFactory, tmp_path: Path
) -> None:
    """Per route, each counter its own birth: the spend of the requests that ended before it, of
    this day only; a request that ended after it was counted live and is not added again."""
    usage = await usage_store(tmp_path / "usage.db")
    per_route = budget("routes", scope="route", limit_usd=10.0, period="day")
    ledger = new_ledger([per_route])
    born = {"chat": NOW, "code": NOW + timedelta(minutes=5)}
    hour = timedelta(hours=1)
    await usage.insert(
        [
            record(1, ts=NOW - timedelta(days=1), route="chat", cost_usd=4.0),  # yesterday: another period
            record(2, ts=NOW - hour, route="chat", cost_usd=0.5, latency_ms=1000.0),
            record(3, ts=NOW - timedelta(seconds=2), route="chat", cost_usd=0.25, latency_ms=1500.0),
            record(4, ts=NOW - timedelta(seconds=1), route="chat", cost_usd=2.0, latency_ms=1500.0),  # ended after
            record(5, ts=NOW, route="code", cost_usd=0.125, latency_ms=100.0),  # ended before code's counter
            record(6, ts=NOW + timedelta(minutes=4, seconds=59), route="code", cost_usd=1.0, latency_ms=2000.0),
            record(7, ts=NOW + hour, route="chat", cost_usd=3.0),  # after the seed's "now": still this day
        ],
        [],
    )
    for route, at in born.items():  # the live requests that created the counters (records 4 and 6)
        scope = Scope(route=route, model="gpt")
        await ledger.settle(await ledger.reserve(scope, usd=0.0, tokens=0, now=at), usd=1.0, tokens=0)
    try:
        assert await seed_budgets(ledger, usage, [per_route], now=NOW + timedelta(minutes=10)) == 2
        assert await seed_budgets(ledger, usage, [per_route], now=NOW + timedelta(minutes=10)) == 0
        assert (await status(ledger, "routes", "route:chat")).used_usd == pytest.approx(1.0 + 0.5 + 0.25)
        assert (await status(ledger, "routes", "route:code")).used_usd == pytest.approx(1.0 + 0.125)
    finally:
        await usage.db.aclose()


async def test_seeding_keeps_shadow_spend_to_shadow_budgets(new_ledger: LedgerFactory, tmp_path: Path) -> None:
    """Shadow requests count towards shadow budgets only when served (target_of); a seed does the
    same, so a restart neither adds shadow traffic to the global budget nor forgets it in its own."""
    usage = await usage_store(tmp_path / "usage.db")
    everything = budget("all", limit_usd=100.0, period="day")
    shadows = budget("shadows", scope="shadow", limit_usd=100.0, period="day")
    chat_shadow = budget("chat-shadow", scope="shadow", target="chat", limit_usd=100.0, period="day")
    ledger = new_ledger([everything, shadows, chat_shadow])
    await usage.insert(
        [
            record(1, ts=NOW - timedelta(minutes=3), route="chat", cost_usd=1.0),
            record(2, ts=NOW - timedelta(minutes=2), route="chat", cost_usd=0.5, source="shadow"),
            record(3, ts=NOW - timedelta(minutes=1), route="code", cost_usd=0.25, source="shadow"),
            record(4, ts=NOW - timedelta(minutes=1), route="code", cost_usd=2.0, source="canary"),
            record(5, ts=NOW - timedelta(minutes=1), route="health", cost_usd=4.0, source="probe"),  # no budget's
        ],
        [],
    )
    try:
        assert await seed_budgets(ledger, usage, [everything, shadows, chat_shadow], now=NOW) == 3
        assert (await status(ledger, "all")).used_usd == pytest.approx(3.0)
        assert (await status(ledger, "shadows")).used_usd == pytest.approx(0.75)
        assert (await status(ledger, "chat-shadow")).used_usd == pytest.approx(0.5)
    finally:
        await usage.db.aclose()


async def test_replicas_seeding_at_once_add_the_recorded_spend_once(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    usage = await usage_store(tmp_path / "usage.db")
    budgets = [budget(f"t{i}", scope="key", limit_usd=100.0, period="month") for i in range(8)]
    await usage.insert([record(i, ts=NOW - timedelta(minutes=i + 1), key_id=f"k{i % 3}") for i in range(30)], [])
    replicas = [
        RedisLedger(budgets, redis_client(redis_url), key_prefix=redis_prefix, owns_client=True) for _ in range(3)
    ]
    try:
        # half the budgets have counters that requests created (on a replica with only those), the others none
        early = RedisLedger(budgets[:4], redis_client(redis_url), key_prefix=redis_prefix, owns_client=True)
        replicas.append(early)
        for key in ("k0", "k1", "k2"):
            await early.reserve(Scope(key_id=key), usd=0.0, tokens=0, now=NOW)
        assert {(s.budget, s.used_usd) for s in await early.usage(NOW)} == {(b.name, 0.0) for b in budgets[:4]}
        rounds = [seed_budgets(r, usage, budgets, now=NOW) for r in replicas[:3] for _ in range(3)]
        assert sum(await asyncio.gather(*rounds)) == 8 * 3
        for b in budgets:
            rows = [s for s in await replicas[1].usage(NOW) if s.budget == b.name]
            assert sorted((s.scope, round(s.used_usd, 9), s.used_tokens) for s in rows) == [
                ("key:k0", 0.01, 1200),
                ("key:k1", 0.01, 1200),
                ("key:k2", 0.01, 1200),
            ]
    finally:
        for ledger in replicas:
            await ledger.aclose()
        await usage.db.aclose()
