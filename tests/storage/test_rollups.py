"""Hourly usage rollups (storage/rollup.py) against the raw rows, on SQLite and PostgreSQL.

The figures read through the rollups must equal the raw ones: sums exactly, percentiles within the
histograms' relative error (sketch.ALPHA), for every ``group_by``, with an organisation filter,
with ranges that start and end inside hours, and with records that arrive late for an hour that
was already rolled up.
"""

from __future__ import annotations

import dataclasses
import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from modelyard.storage import Database, sketch
from modelyard.storage.records import RequestRecord
from modelyard.storage.tables import usage_rollup_dirty, usage_rollups
from modelyard.storage.usage import UsageStore
from tests.storage.records import request

NOW = datetime(2026, 3, 3, 12, 30, tzinfo=UTC)
START = NOW - timedelta(hours=30)
GROUPINGS: list[Any] = [
    None,
    "model",
    "route",
    "provider",
    "org",
    "key",
    "error_class",
    "hour",
    "day",
    ("hour", "model"),
    ("day", "org"),
    ("day", "error_class"),
]
EXACT = ("requests", "successes", "failures", "fallbacks", "cache_hits", "tokens_in", "tokens_out", "tokens_cached")
APPROX = ("cost_usd", "baseline_cost_usd", "savings_usd")
PERCENTILES = ("latency_p50_ms", "latency_p95_ms", "ttft_p50_ms", "ttft_reasoning_p50_ms")


def dataset(n: int, seed: int, *, first: int = 0) -> list[RequestRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(first, first + n):
        ok = rng.random() > 0.1
        latency = rng.lognormvariate(5, 0.8)
        stream = rng.random() < 0.5
        out.append(
            request(
                i,
                ts=START + timedelta(seconds=rng.random() * 31 * 3600),  # up to after NOW
                model=rng.choice(["gpt", "mini", "claude"]),
                route=rng.choice(["chat", "extract"]),
                provider=rng.choice(["openai", "anthropic"]),
                org_id=rng.choice(["org-a", "org-b", None]),
                key_id=rng.choice(["key-1", "key-2", None]),
                success=ok,
                status=200 if ok else 502,
                error_class=None if ok else rng.choice(["timeout", "upstream_error"]),
                latency_ms=latency,
                ttft_ms=latency / 3 if stream else None,
                stream=stream,
                reasoning=stream and rng.random() < 0.3,
                cost_usd=rng.random() / 100,
                baseline_cost_usd=rng.random() / 50 if rng.random() < 0.7 else None,
                tokens_cached=rng.randint(0, 10),
                fallback=rng.random() < 0.1,
                cache_hit=rng.random() < 0.05,
            )
        )
    return out


def by_group(rows: list[dict[str, Any]]) -> dict[tuple[Any, Any], dict[str, Any]]:
    return {(r["key"], r.get("group")): r for r in rows}


def assert_same(rolled: list[dict[str, Any]], raw: list[dict[str, Any]], what: str) -> None:
    a, b = by_group(rolled), by_group(raw)
    assert set(a) == set(b), what
    for group, exact in b.items():
        got = a[group]
        for name in EXACT:
            assert got[name] == exact[name], (what, group, name)
        for name in APPROX:
            assert (got[name] is None) == (exact[name] is None), (what, group, name)
            if exact[name] is not None:
                assert got[name] == pytest.approx(exact[name], rel=1e-9, abs=1e-12), (what, group, name)
        for name in PERCENTILES:
            assert (got[name] is None) == (exact[name] is None), (what, group, name)
            if exact[name] is not None:
                # every value read back is within ALPHA of itself, so is an interpolation of two
                assert got[name] == pytest.approx(exact[name], rel=sketch.ALPHA * 1.001), (what, group, name)
    assert [(r["key"], r.get("group")) for r in rolled] == [(r["key"], r.get("group")) for r in raw], what


async def dirty_hours(db: Database) -> list[datetime]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(select(usage_rollup_dirty.c.hour).order_by("hour"))).scalars())


async def test_rolled_up_figures_equal_the_raw_ones(db: Database) -> None:
    store = UsageStore(db)
    await store.insert(dataset(1500, seed=1), [])
    ranges = [
        (None, None),
        (START, None),
        (START + timedelta(minutes=17), NOW - timedelta(minutes=41)),  # edges inside hours
        (NOW - timedelta(hours=24), NOW),
        (NOW - timedelta(minutes=50), NOW),  # no complete hour
    ]
    exact = {
        (g, r, org): await store.stats(group_by=g, since=r[0], until=r[1], org_id=org, now=NOW)
        for g in GROUPINGS
        for r in ranges
        for org in (None, "org-b")
    }
    rolled = await store.rollups.run(NOW)
    assert rolled == 30  # every hour before NOW's, none of NOW's own (it is not over)
    assert await dirty_hours(db) == [NOW.replace(minute=0), NOW.replace(minute=0) + timedelta(hours=1)]
    split = await store.rollups.split(NOW - timedelta(hours=24), NOW, NOW)
    assert split.rolled == [(NOW.replace(minute=0) - timedelta(hours=23), NOW.replace(minute=0))]
    assert split.raw == [
        (NOW - timedelta(hours=24), NOW.replace(minute=0) - timedelta(hours=23)),
        (NOW.replace(minute=0), NOW),
    ]
    for (g, r, org), raw in exact.items():
        assert_same(await store.stats(group_by=g, since=r[0], until=r[1], org_id=org, now=NOW), raw, f"{g} {r} {org}")
    # and the rollups were read: totals over the rolled hours come from a handful of rollup rows
    async with db.engine.connect() as conn:
        totals = (await conn.execute(select(func.count()).where(usage_rollups.c.dim == ""))).scalar_one()
    assert 30 <= totals <= 30 * 4  # per hour: three organisations (one is none) and all of them


async def test_a_late_record_for_a_rolled_up_hour_counts_at_once_and_is_rolled_up_again(db: Database) -> None:
    store = UsageStore(db)
    await store.insert(dataset(400, seed=2), [])
    await store.rollups.run(NOW)
    since = NOW - timedelta(hours=20)
    before = by_group(await store.stats(group_by="model", since=since, now=NOW))
    late_ts = NOW - timedelta(hours=5, minutes=10)
    late = request(999_999, ts=late_ts, model="gpt", cost_usd=5.0, latency_ms=1e6)
    await store.insert([late], [])
    hour = late_ts.replace(minute=0, second=0, microsecond=0)
    assert hour in await dirty_hours(db)
    after = by_group(await store.stats(group_by="model", since=since, now=NOW))
    assert after[("gpt", None)]["requests"] == before[("gpt", None)]["requests"] + 1
    assert after[("gpt", None)]["cost_usd"] == pytest.approx(before[("gpt", None)]["cost_usd"] + 5.0)
    assert await store.rollups.run(NOW) == 1
    assert hour not in await dirty_hours(db)
    again = by_group(await store.stats(group_by="model", since=since, now=NOW))
    assert again[("gpt", None)]["requests"] == after[("gpt", None)]["requests"]
    assert again[("gpt", None)]["cost_usd"] == pytest.approx(after[("gpt", None)]["cost_usd"])


async def test_a_rollup_computed_before_a_change_is_dropped(db: Database) -> None:
    """The mark's gen guards against a record written between reading the raw rows and writing."""
    store = UsageStore(db)
    ts = NOW - timedelta(hours=3)
    await store.insert([request(1, ts=ts)], [])
    hour = ts.replace(minute=0, second=0, microsecond=0)
    async with db.engine.connect() as conn:
        (gen,) = (await conn.execute(select(usage_rollup_dirty.c.gen).where(usage_rollup_dirty.c.hour == hour))).one()
    await store.insert([request(2, ts=ts + timedelta(minutes=1))], [])  # a new gen
    assert await store.rollups.roll(hour, gen) is False
    assert hour in await dirty_hours(db)
    async with db.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(usage_rollups))).scalar_one() == 0
    assert await store.rollups.run(NOW) == 1
    [total] = await store.stats(group_by=None, since=hour, until=hour + timedelta(hours=1), now=NOW)
    assert total["requests"] == 2


async def test_rolling_up_twice_and_on_two_replicas_at_once_counts_once(db: Database, target: Any) -> None:
    import asyncio

    store = UsageStore(db)
    await store.insert(dataset(300, seed=3), [])
    raw = await store.stats(group_by="route", now=NOW)
    other = target.open()
    try:
        done = await asyncio.gather(store.rollups.run(NOW), UsageStore(other).rollups.run(NOW))
    finally:
        await other.aclose()
    assert sum(done) == 30
    assert_same(await store.stats(group_by="route", now=NOW), raw, "two replicas")
    assert await store.rollups.run(NOW) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=5e6, allow_nan=False), min_size=1, max_size=60))
def test_histogram_percentiles_are_within_alpha(values: list[float]) -> None:
    packed = sketch.pack((sketch.bucket_of(v), 1) for v in values)
    assert sketch.decode(sketch.encode(packed)) == packed
    ordered = sorted(values)
    for p in (0.0, 0.5, 0.95, 1.0):
        pos = p * (len(ordered) - 1)
        lo = math.floor(pos)
        want = ordered[lo] + (ordered[min(lo + 1, len(ordered) - 1)] - ordered[lo]) * (pos - lo)
        [got] = sketch.quantiles(packed, (p,))
        assert got is not None
        floor = sketch.MIN_MS * (1 + sketch.ALPHA)  # values under MIN_MS read as MIN_MS
        assert abs(got - want) <= sketch.ALPHA * 1.001 * max(want, floor) + floor


async def test_the_database_buckets_values_as_python_does(db: Database) -> None:
    values = [0.0, 0.004, 0.01, 0.5, 1.0, 1.0408, 99.9, 100.0, 2500.25, 61_000.0, 3.6e6, 5e8]
    async with db.engine.connect() as conn:
        from sqlalchemy import literal

        got = [(await conn.execute(select(sketch.bucket_sql(literal(v))))).scalar_one() for v in values]
    assert got == [sketch.bucket_of(v) for v in values]
    assert all(0 <= b < sketch.BUCKETS for b in got)


async def test_upgrading_marks_the_history_for_rolling_up(raw_db: Database) -> None:
    """Migration 0007 marks every hour that already holds usage rows; the first run rolls them up."""
    import asyncio

    from alembic.runtime.environment import EnvironmentContext
    from sqlalchemy import insert

    from modelyard.storage.migrate import _alembic_config, _load_script, run_in_context, upgrade
    from modelyard.storage.tables import usage_requests

    script = await asyncio.to_thread(_load_script)

    def to_0006(connection: Any) -> None:
        env = EnvironmentContext(
            _alembic_config(), script, fn=lambda rev, _ctx: script._upgrade_revs("0006", rev), destination_rev="0006"
        )
        with env:
            run_in_context(env, connection)

    async with raw_db.begin_write() as conn:
        await conn.run_sync(to_0006)
    records = dataset(200, seed=4)
    async with raw_db.begin() as conn:
        later = {"tier", "complexity", "tier_reason", "judge_score", "judge_cost_usd"}  # columns of 0008
        rows = [{k: v for k, v in dataclasses.asdict(r).items() if k not in later} for r in records]
        await conn.execute(insert(usage_requests), rows)
    await upgrade(raw_db)
    hours = sorted({r.ts.replace(minute=0, second=0, microsecond=0) for r in records})
    assert await dirty_hours(raw_db) == hours
    store = UsageStore(raw_db)
    raw = await store.stats(group_by=("day", "model"), now=NOW)
    assert await store.rollups.run(NOW) == len([h for h in hours if h < NOW.replace(minute=0)])
    assert (await store.rollups.split(None, None, NOW)).rolled
    assert_same(await store.stats(group_by=("day", "model"), now=NOW), raw, "after upgrading")
