from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import event, select

from modelyard.storage import Database
from modelyard.storage.migrate import migrate
from modelyard.storage.records import RequestRecord
from modelyard.storage.tables import usage_attempts, usage_requests
from modelyard.storage.usage import UsageStore, _sqlite_chunks
from tests.storage.records import T0, attempt, request


def reference_percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (percentile_cont; statistics' 'inclusive' method)."""
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[round(p * 100) - 1]


async def test_insert_writes_requests_and_attempts_and_is_idempotent(db: Database) -> None:
    store = UsageStore(db)
    reqs = [request(i, attempts=2) for i in range(50)]
    atts = [attempt(r, n) for r in reqs for n in (1, 2)]
    await store.insert(reqs, atts)
    assert await store.count() == (50, 100)
    await store.insert(reqs, atts)  # a replay of the same records changes nothing
    await store.insert(reqs[:10], [])
    assert await store.count() == (50, 100)
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(usage_requests).where(usage_requests.c.request_id == "req-000007"))).one()
        stored = RequestRecord(**{k: row._mapping[k] for k in row._mapping})
    assert stored == reqs[7]
    assert stored.ts.tzinfo is not None and stored.ts.utcoffset() == timedelta(0)


def test_sqlite_inserts_take_few_statement_sizes() -> None:
    """#19: the sqlite3 module keeps each distinct statement compiled per connection, so a batch is
    cut into power-of-two statements (a table has at most nine sizes), covering every row once."""
    sizes: set[int] = set()
    for rows in range(1100):
        for columns in (22, 30, 2000):
            chunks = _sqlite_chunks(rows, columns)
            assert [start for start, _ in chunks] == [sum(n for _, n in chunks[:i]) for i in range(len(chunks))]
            assert sum(n for _, n in chunks) == rows
            assert all(n * columns <= 32766 or n == 1 for _, n in chunks)
            sizes |= {n for _, n in chunks if columns == 30}
    assert sizes == {1, 2, 4, 8, 16, 32, 64, 128, 256}
    assert len(_sqlite_chunks(37, 30)) == 3  # 32 + 4 + 1
    assert _sqlite_chunks(340, 30) == [(0, 256), (256, 64), (320, 16), (336, 4)]
    assert [n for _, n in _sqlite_chunks(600, 2000)] == [16] * 37 + [8]  # 16 rows of 2000 columns fit


async def test_sqlite_file_batches_go_through_the_direct_connection(tmp_path: Path) -> None:
    """A usage batch on a SQLite file is one transaction on the writer's own connection and thread
    (storage.sqlite_direct), not a trip to aiosqlite's thread per statement (which fell behind the
    traffic under load); the engine runs none of its inserts, and the rows and rollup marks land."""
    db = Database(f"sqlite:///{tmp_path / 'u.db'}")
    await migrate(db)
    seen: list[str] = []
    event.listen(db.engine.sync_engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    try:
        store = UsageStore(db)
        reqs = [request(i) for i in range(500)]
        await store.insert(reqs, [attempt(r) for r in reqs])
        assert await store.count() == (500, 500)
        assert not [s for s in seen if "INSERT" in s.upper()]
        assert db.direct is not None and db.direct.path == str(tmp_path / "u.db")
        async with db.engine.connect() as conn:
            dirty = (await conn.exec_driver_sql("SELECT count(*) FROM usage_rollup_dirty")).scalar_one()
        assert dirty >= 1
        # the batch's statement journals stay in memory (no temporary file per statement); the
        # engine's connections keep the default
        assert await db.direct.write(lambda c: c.execute("PRAGMA temp_store").fetchone()[0]) == 2
        async with db.engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA temp_store")).scalar_one() == 0
    finally:
        await db.aclose()


async def test_sqlite_stores_booleans_as_integers_and_none_as_null(tmp_path: Path) -> None:
    """The SQLite insert binds booleans as 0/1 and None through a registered adapter (both to skip
    sqlite3's slow adapter lookup): the stored types are SQLAlchemy Boolean's integers and NULLs,
    and every field reads back as written, on the writer's connection and on the engine's."""
    db = Database(f"sqlite:///{tmp_path / 'u.db'}")
    await migrate(db)
    try:
        store = UsageStore(db)
        flags = {"cost_estimated": True, "success": False, "fallback": True, "cache_hit": True, "stream": True}
        full = request(1, **flags, reasoning=True, ttft_ms=3.5, error_class="timeout", status=504, tier="small",
                       complexity=0.25, tier_reason="short", judge_score=0.5, baseline_cost_usd=0.002)  # fmt: skip
        bare = request(2, org_id=None, key_id=None)
        for memory in (False, True):
            target = store if not memory else UsageStore(Database("sqlite:///:memory:"))
            if memory:
                await migrate(target.db)
            att_flags = {k: v for k, v in flags.items() if k != "cache_hit"}
            await target.insert([full, bare], [attempt(full, **att_flags), attempt(bare)])
            async with target.db.engine.connect() as conn:
                types = (await conn.exec_driver_sql(
                    "SELECT typeof(success), success, typeof(cost_estimated), typeof(error_class), typeof(tier), "
                    "typeof(org_id) FROM usage_requests ORDER BY request_id"
                )).all()  # fmt: skip
                assert [tuple(r) for r in types] == [
                    ("integer", 0, "integer", "text", "text", "text"),
                    ("integer", 1, "integer", "null", "null", "null"),
                ]
                rows = (await conn.execute(select(usage_requests).order_by(usage_requests.c.request_id))).all()
                stored = [RequestRecord(**dict(row._mapping)) for row in rows]
                att = (await conn.execute(select(usage_attempts).order_by(usage_attempts.c.request_id))).all()
            assert stored == [full, bare]
            assert [(r.success, r.fallback, r.stream, r.error_message) for r in att] == [
                (False, True, True, None),
                (True, False, False, None),
            ]
            assert all(type(r.success) is bool for r in stored)
            if memory:
                await target.db.aclose()
    finally:
        await db.aclose()


async def test_sqlite_in_memory_has_no_direct_connection() -> None:
    db = Database("sqlite:///:memory:")
    try:
        await migrate(db)
        assert db.direct is None
        store = UsageStore(db)
        await store.insert([request(1)], [attempt(request(1))])
        assert await store.count() == (1, 1)
    finally:
        await db.aclose()


async def test_insert_of_odd_sized_batches_writes_every_row(db: Database) -> None:
    store = UsageStore(db)
    reqs = [request(i) for i in range(203)]
    await store.insert(reqs[:77], [attempt(r) for r in reqs[:77]])
    await store.insert(reqs[77:], [attempt(r, n) for r in reqs[77:] for n in (1, 2, 3)])
    assert await store.count() == (203, 77 + 126 * 3)


async def test_insert_is_one_transaction(db: Database) -> None:
    """If the attempts cannot be written, the requests of the batch are not written either."""
    store = UsageStore(db)
    reqs = [request(i) for i in range(5)]
    bad = [attempt(r) for r in reqs]
    bad[3].route = None  # type: ignore[assignment]  # NOT NULL
    with pytest.raises(Exception, match=r"(?i)null"):
        await store.insert(reqs, bad)
    assert await store.count() == (0, 0)


async def test_stats_numbers_on_a_known_dataset(db: Database) -> None:
    store = UsageStore(db)
    # model "a": 4 successes with latencies 10, 20, 30, 40 and one failure with latency 1000
    reqs = [
        request(1, model="a", latency_ms=10.0, ttft_ms=5.0, cost_usd=0.10, baseline_cost_usd=0.50),
        request(2, model="a", latency_ms=20.0, ttft_ms=7.0, cost_usd=0.20, baseline_cost_usd=0.50, fallback=True),
        request(3, model="a", latency_ms=30.0, cost_usd=0.30, baseline_cost_usd=None, tokens_in=50, tokens_out=5),
        request(4, model="a", latency_ms=40.0, ttft_ms=9.0, cost_usd=0.0, cache_hit=True, baseline_cost_usd=0.25),
        request(5, model="a", latency_ms=1000.0, success=False, error_class="timeout", status=504, cost_usd=0.0),
        request(6, model="b", provider="anthropic", latency_ms=300.0, cost_usd=1.0, tokens_in=1000, tokens_out=500),
    ]
    await store.insert(reqs, [attempt(r) for r in reqs])
    by_model = {row["key"]: row for row in await store.stats(group_by="model")}
    a = by_model["a"]
    assert a["requests"] == 5
    assert a["successes"] == 4 and a["failures"] == 1
    assert a["success_rate"] == pytest.approx(0.8)
    assert a["fallbacks"] == 1 and a["fallback_rate"] == pytest.approx(0.2)
    assert a["cache_hits"] == 1 and a["cache_hit_rate"] == pytest.approx(0.2)
    # percentiles of successful requests only: [10, 20, 30, 40]
    assert a["latency_p50_ms"] == pytest.approx(25.0)
    assert a["latency_p95_ms"] == pytest.approx(38.5)  # 30 + (40 - 30) * 0.85
    assert a["ttft_p50_ms"] == pytest.approx(7.0)  # of [5, 7, 9]
    assert a["tokens_in"] == 4 * 100 + 50 and a["tokens_out"] == 4 * 20 + 5
    assert a["cost_usd"] == pytest.approx(0.60)
    # savings over the requests that have a baseline: 1.25 baseline, 0.30 spent
    assert a["baseline_cost_usd"] == pytest.approx(1.25)
    assert a["savings_usd"] == pytest.approx(0.95)
    assert a["savings_percent"] == pytest.approx(76.0)
    b = by_model["b"]
    assert (b["requests"], b["latency_p50_ms"], b["latency_p95_ms"], b["ttft_p50_ms"]) == (1, 300.0, 300.0, None)
    assert b["baseline_cost_usd"] is None and b["savings_usd"] is None and b["savings_percent"] is None
    providers = {row["key"]: row["requests"] for row in await store.stats(group_by="provider")}
    assert providers == {"openai": 5, "anthropic": 1}
    [total] = await store.stats(group_by=None)
    assert total["key"] is None and total["requests"] == 6 and total["cost_usd"] == pytest.approx(1.6)
    assert total["latency_p50_ms"] == pytest.approx(30.0)  # of [10, 20, 30, 40, 300]


async def test_percentiles_match_the_reference_on_random_data(db: Database) -> None:
    rng = random.Random(7)
    store = UsageStore(db)
    latencies: dict[str, list[float]] = {"r1": [], "r2": [], "r3": []}
    reqs = []
    for i in range(900):
        route = rng.choice(sorted(latencies))
        latency = round(rng.lognormvariate(5, 1), 3)
        reqs.append(request(i, route=route, latency_ms=latency, ttft_ms=latency / 3))
        latencies[route].append(latency)
    reqs.append(request(10_000, route="r4", latency_ms=42.0))  # a group of one
    latencies["r4"] = [42.0]
    await store.insert(reqs, [])
    rows = {row["key"]: row for row in await store.stats(group_by="route")}
    assert set(rows) == set(latencies)
    for route, values in latencies.items():
        assert rows[route]["requests"] == len(values)
        assert rows[route]["latency_p50_ms"] == pytest.approx(reference_percentile(values, 0.5), rel=1e-9)
        assert rows[route]["latency_p95_ms"] == pytest.approx(reference_percentile(values, 0.95), rel=1e-9)
        if route != "r4":  # r4's one request has no ttft
            thirds = [v / 3 for v in values]
            assert rows[route]["ttft_p50_ms"] == pytest.approx(reference_percentile(thirds, 0.5), rel=1e-9)
    assert rows["r4"]["ttft_p50_ms"] is None
    # groups come busiest first
    assert [row["requests"] for row in rows.values()] == sorted((len(v) for v in latencies.values()), reverse=True)


async def test_first_token_of_reasoning_requests_is_kept_apart(db: Database) -> None:
    """Contracts "First token": a reasoning request's first token is its first reasoning delta, so its
    figure would drag the plain one; /v1/stats keeps the two apart."""
    store = UsageStore(db)
    reqs = [request(i, ttft_ms=float(i)) for i in (10, 20, 30)]
    reqs += [request(i, ttft_ms=float(i), reasoning=True) for i in (900, 1100)]
    await store.insert(reqs, [attempt(r) for r in reqs])
    (total,) = await store.stats(group_by=None)
    assert total["ttft_p50_ms"] == pytest.approx(20.0)
    assert total["ttft_reasoning_p50_ms"] == pytest.approx(1000.0)
    async with db.engine.connect() as conn:
        flags = sorted((await conn.execute(select(usage_requests.c.reasoning))).scalars())
    assert flags == [False, False, False, True, True]


async def test_stats_are_isolated_per_organisation(db: Database) -> None:
    store = UsageStore(db)
    reqs = [request(i, org_id="org-a", cost_usd=1.0) for i in range(3)]
    reqs += [request(100 + i, org_id="org-b", cost_usd=10.0, model="secret-model") for i in range(2)]
    reqs += [request(200, org_id=None, cost_usd=100.0)]
    await store.insert(reqs, [])
    a = await store.stats(group_by="model", org_id="org-a")
    assert [(r["key"], r["requests"], r["cost_usd"]) for r in a] == [("gpt", 3, 3.0)]
    b = await store.stats(group_by="model", org_id="org-b")
    assert [(r["key"], r["requests"]) for r in b] == [("secret-model", 2)]
    assert await store.stats(group_by="model", org_id="org-c") == []
    by_org = {r["key"]: r["requests"] for r in await store.stats(group_by="org")}
    assert by_org == {"org-a": 3, "org-b": 2, None: 1}
    assert await store.spend(org_id="org-b") == (20.0, 240)


async def test_time_buckets_are_utc_hours_and_days_in_order(db: Database) -> None:
    store = UsageStore(db)
    plus2 = timezone(timedelta(hours=2))
    reqs = [
        request(1, ts=datetime(2026, 3, 1, 23, 59, 59, 999999, tzinfo=UTC)),
        request(2, ts=datetime(2026, 3, 2, 0, 0, 0, tzinfo=UTC)),
        request(3, ts=datetime(2026, 3, 2, 1, 30, tzinfo=plus2)),  # 2026-03-01 23:30 UTC
        request(4, ts=datetime(2026, 3, 2, 0, 45)),  # naive: taken as UTC
        request(5, ts=datetime(2026, 3, 2, 5, 0, tzinfo=UTC)),
    ]
    await store.insert(reqs, [])
    hours = [(r["key"], r["requests"]) for r in await store.stats(group_by="hour")]
    assert hours == [("2026-03-01T23:00:00Z", 2), ("2026-03-02T00:00:00Z", 2), ("2026-03-02T05:00:00Z", 1)]
    days = [(r["key"], r["requests"]) for r in await store.stats(group_by="day")]
    assert days == [("2026-03-01", 2), ("2026-03-02", 3)]


async def test_since_until_window(db: Database) -> None:
    store = UsageStore(db)
    await store.insert([request(i, ts=T0 + timedelta(minutes=i)) for i in range(10)], [])
    rows = await store.stats(group_by=None, since=T0 + timedelta(minutes=3), until=T0 + timedelta(minutes=7))
    assert rows[0]["requests"] == 4  # minutes 3, 4, 5, 6: since inclusive, until exclusive
    assert await store.stats(group_by=None, since=T0 + timedelta(days=1)) == []
    cost, tokens = await store.spend(since=T0 + timedelta(minutes=8), model="gpt")
    assert cost == pytest.approx(0.002) and tokens == 240


async def test_attempt_rows_keep_every_try(db: Database) -> None:
    store = UsageStore(db)
    req = request(1, model="backup", fallback=True, attempts=3)
    tries = [
        attempt(req, 1, model="primary", success=False, error_class="status", status=503, cost_usd=0.0),
        attempt(req, 2, model="primary", success=False, error_class="timeout", cost_usd=0.0),
        attempt(req, 3, model="backup", fallback=True),
    ]
    await store.insert([req], tries)
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(usage_attempts).order_by(usage_attempts.c.attempt_number))).all()
    assert [(r.attempt_number, r.model, r.success, r.error_class, r.status) for r in rows] == [
        (1, "primary", False, "status", 503),
        (2, "primary", False, "timeout", None),
        (3, "backup", True, None, None),
    ]


async def test_a_time_bucket_by_a_dimension(db: Database) -> None:
    """Stats v2: ``("day", "model")`` gives a row per day and model (the dashboard's series per model),
    with the figures of that day and model only, percentiles included."""
    store = UsageStore(db)
    day = timedelta(days=1)
    reqs = [
        request(1, model="a", latency_ms=10.0),
        request(2, model="a", latency_ms=30.0),
        request(3, model="b", latency_ms=100.0, cost_usd=0.5),
        request(4, ts=T0 + day, request_id="req-d2-a", model="a", latency_ms=50.0),
    ]
    await store.insert(reqs, [attempt(r) for r in reqs])
    rows = await store.stats(group_by=("day", "model"))
    got = [(r["key"], r["group"], r["requests"], r["latency_p50_ms"]) for r in rows]
    d1, d2 = T0.strftime("%Y-%m-%d"), (T0 + day).strftime("%Y-%m-%d")
    assert got == [(d1, "a", 2, pytest.approx(20.0)), (d1, "b", 1, 100.0), (d2, "a", 1, 50.0)]
    assert next(r for r in rows if r["group"] == "b")["cost_usd"] == pytest.approx(0.5)


def test_group_by_parsing() -> None:
    from modelyard.storage.usage import parse_group_by

    assert parse_group_by("model") == "model" and parse_group_by(None) is None
    assert parse_group_by("day,model") == ("day", "model") and parse_group_by("hour, org") == ("hour", "org")
    for bad in ("model,day", "day,day", "week", "day,failed_model", "day,model,org"):
        with pytest.raises(ValueError, match="group_by"):
            parse_group_by(bad)


async def test_spend_by_counts_requests_in_the_period_and_those_that_ended_before(db: Database) -> None:
    """Seeding a budget counter: per value of the scope's column, the spend of the requests that
    started in the period, or only of those that ended (ts + latency_ms) before a time."""
    store = UsageStore(db)
    rows = [
        request(1, ts=T0 - timedelta(days=1), key_id="a", cost_usd=8.0, tokens_in=1, tokens_out=0),  # before the period
        request(2, ts=T0, key_id="a", cost_usd=1.0, latency_ms=999.5),  # ends at T0 + 999.5 ms
        request(3, ts=T0, key_id="a", cost_usd=2.0, latency_ms=1000.5),  # ends at T0 + 1000.5 ms
        request(
            4, ts=T0 + timedelta(milliseconds=500), key_id="b", cost_usd=4.0, latency_ms=250.5
        ),  # ends at T0 + 750.5 ms
        request(5, ts=T0 + timedelta(hours=2), key_id="a", cost_usd=16.0),  # after the period
    ]
    await store.insert(rows, [])
    since, until = T0 - timedelta(minutes=1), T0 + timedelta(hours=1)
    assert sorted(await store.spend_by("key", since=since, until=until)) == [("a", 3.0, 240), ("b", 4.0, 120)]
    ended = int((T0 + timedelta(seconds=1)).timestamp() * 1000)
    assert await store.spend_by("key", since=since, target="a", ended_before_ms=ended) == [("a", 1.0, 120)]
    assert await store.spend_by("global", since=since, ended_before_ms=ended) == [(None, 5.0, 240)]
    assert await store.spend_by("global", since=since, ended_before_ms=ended - 1) == [(None, 4.0, 120)]
    assert await store.spend_by("global", since=since, ended_before_ms=ended - 250) == [(None, 0.0, 0)]


async def test_spend_by_model_counts_each_attempt_to_its_own_model(db: Database) -> None:
    """A model budget is charged per attempt: a request whose first answer (gpt, $0.3) a validator
    rejected and whose fallback (gpt-mini, $0.1) answered is $0.3 to gpt and $0.1 to gpt-mini, not
    $0.4 to gpt-mini; shadow requests count towards no model budget."""
    store = UsageStore(db)
    failed_over = request(1, ts=T0, model="gpt-mini", cost_usd=0.4, tokens_in=10, tokens_out=10)
    plain = request(2, ts=T0, model="gpt", cost_usd=1.0, tokens_in=5, tokens_out=5)
    shadow = request(3, ts=T0, model="gpt", cost_usd=8.0, source="shadow")
    attempts = [
        attempt(failed_over, 1, model="gpt", cost_usd=0.3, tokens_in=10, tokens_out=6, success=False),
        attempt(failed_over, 2, model="gpt-mini", cost_usd=0.1, tokens_in=10, tokens_out=4),
        attempt(plain),
        attempt(shadow),
    ]
    await store.insert([failed_over, plain, shadow], attempts)
    since = T0 - timedelta(minutes=1)
    assert sorted(await store.spend_by("model", since=since)) == [("gpt", 1.3, 26), ("gpt-mini", 0.1, 14)]
    assert await store.spend_by("model", since=since, target="gpt-mini") == [("gpt-mini", 0.1, 14)]
    ended = int((T0 + timedelta(seconds=1)).timestamp() * 1000)
    assert await store.spend_by("model", since=since, target="gpt", ended_before_ms=ended) == [("gpt", 1.3, 26)]
