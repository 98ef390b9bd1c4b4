"""``/v1/stats`` on a big usage table (``make bench-stats``): the dashboard's 30-day queries over
``--rows`` request records (default 1,000,000), on SQLite and on PostgreSQL.

Fills a fresh database through the usage store's own insert path with requests spread over 30 days
(8 models, 4 routes, 3 providers, 5 organisations, 2 % failures, streams with a first-token time),
rolls the hours up (storage/rollup.py, as the gateway does every minute) and times each query the
Usage page makes, ``--repeats`` times, and prints the medians; ``--raw`` also times them before the
rollup (the exact, raw-row queries every range used before rollups existed).
PostgreSQL is the machine's (``--pg``, default ``postgresql://postgres@127.0.0.1:5432/test``), in a
schema of its own that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from modelyard.storage import Database, migrate  # noqa: E402
from modelyard.storage.records import RequestRecord  # noqa: E402
from modelyard.storage.usage import UsageStore  # noqa: E402

MODELS = [("gpt", "openai"), ("gpt-mini", "openai"), ("o3", "openai"), ("claude", "anthropic"),
          ("haiku", "anthropic"), ("gem", "gemini"), ("flash", "gemini"), ("gem-pro", "gemini")]  # fmt: skip
ROUTES = ["chat", "agents", "summaries", "extract"]
QUERIES: list[tuple[str, Any]] = [
    ("totals", None),
    ("by day", "day"),
    ("by hour (24 h)", "hour"),
    ("by model", "model"),
    ("by route", "route"),
    ("by org", "org"),
    ("by day and model", ("day", "model")),
]


def records(n: int, now: datetime, first: int = 0) -> list[RequestRecord]:
    rng = random.Random(first)
    out = []
    span = 30 * 86400
    for i in range(first, first + n):
        model, provider = MODELS[i % len(MODELS)]
        ok = rng.random() > 0.02
        latency = rng.lognormvariate(6, 0.6)
        out.append(
            RequestRecord(
                ts=now - timedelta(seconds=rng.random() * span),
                request_id=f"req-{i:08d}",
                route=ROUTES[i % len(ROUTES)],
                model=model,
                provider=provider,
                org_id=f"org-{i % 5}",
                key_id=f"key-{i % 40}",
                tokens_in=rng.randint(20, 2000),
                tokens_out=rng.randint(5, 800),
                cost_usd=rng.random() / 500,
                baseline_cost_usd=rng.random() / 200,
                latency_ms=latency,
                ttft_ms=latency / 4 if i % 3 == 0 else None,
                stream=i % 3 == 0,
                success=ok,
                status=200 if ok else 502,
                error_class=None if ok else "upstream_error",
                fallback=i % 17 == 0,
            )
        )
    return out


async def fill(db: Database, n: int, now: datetime) -> float:
    store = UsageStore(db)
    t0 = time.perf_counter()
    batch = 20_000
    for start in range(0, n, batch):
        await store.insert(records(min(batch, n - start), now, first=start), [])
    rows, _ = await store.count()
    assert rows == n, f"{rows} rows written, {n} meant"
    return time.perf_counter() - t0


async def measure(db: Database, now: datetime, repeats: int) -> dict[str, float]:
    store = UsageStore(db)
    out = {}
    for name, group_by in QUERIES:
        since = now - (timedelta(hours=24) if group_by == "hour" else timedelta(days=30))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            await store.stats(group_by=group_by, since=since)
            times.append((time.perf_counter() - t0) * 1000)
        out[name] = round(statistics.median(times), 1)
    return out


async def roll_up(db: Database, now: datetime, args: argparse.Namespace, results: dict[str, Any], name: str) -> None:
    if args.raw:
        results[f"{name}_raw_ms"] = await measure(db, now, 1)
    store = UsageStore(db)
    t0 = time.perf_counter()
    hours = await store.rollups.run(now)
    results[f"{name}_rollup_s"] = round(time.perf_counter() - t0, 1)
    results[f"{name}_rollup_hours"] = hours
    results[f"{name}_ms"] = await measure(db, now, args.repeats)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    now = datetime.now(UTC)
    results: dict[str, Any] = {"rows": args.rows, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/stats.db")
        await migrate(db)
        results["sqlite_fill_s"] = round(await fill(db, args.rows, now), 1)
        await roll_up(db, now, args, results, "sqlite")
        await db.aclose()
    if args.pg:
        schema = f"bench_{secrets.token_hex(4)}"
        admin = Database(args.pg)
        async with admin.engine.begin() as conn:
            await conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        db = Database(args.pg, connect_args={"server_settings": {"search_path": schema}})
        try:
            await migrate(db)
            results["postgres_fill_s"] = round(await fill(db, args.rows, now), 1)
            await roll_up(db, now, args, results, "postgres")
        finally:
            await db.aclose()
            async with admin.engine.begin() as conn:
                await conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            await admin.aclose()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--raw", action="store_true", help="also time the queries before rolling up (once)")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test", help="'' to skip PostgreSQL")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    print(f"{args.rows:,} request rows over 30 days; medians of {args.repeats}")
    columns = [("sqlite_ms", "SQLite"), ("postgres_ms", "PostgreSQL")]
    if args.raw:
        columns = [("sqlite_raw_ms", "SQLite raw"), *columns[:1], ("postgres_raw_ms", "PG raw"), *columns[1:]]
    columns = [(key, title) for key, title in columns if key in results]
    print(f"{'query':<20}" + "".join(f"{title:>14}" for _, title in columns))
    for name, _ in QUERIES:
        print(f"{name:<20}" + "".join(f"{results[key][name]:>11.0f} ms" for key, _ in columns))
    rollups = [f"{db} {results[f'{db}_rollup_s']} s" for db in ("sqlite", "postgres") if f"{db}_rollup_s" in results]
    print(f"rolling up {results['sqlite_rollup_hours']} hours: {', '.join(rollups)}")
    out = ROOT / "bench" / "results" / f"stats-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    fills = f"fill: SQLite {results['sqlite_fill_s']} s, PostgreSQL {results.get('postgres_fill_s')} s"
    print(f"{fills}; written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
