"""Hourly usage rollups: ``/v1/stats`` over 30 days reads a few thousand rows instead of millions.

``usage_rollups`` holds, per complete hour, organisation (and all of them together), source and
dimension value (the hour's totals, and per model, route, provider, key and error class) the sums
``/v1/stats`` reports and latency histograms (storage/sketch.py).  ``usage_rollup_dirty`` lists the hours whose raw rows
changed since they were last rolled up: every usage insert marks the hours of its records there,
in the same transaction.  :meth:`Rollups.run` (every minute, on every replica) rolls up the dirty
hours that are over, and a stats query (:meth:`Rollups.split`) reads complete hours that are not
dirty from the rollups and everything else (the current hour, dirty hours, partial hours at the
range's edges) from usage_requests, so an hour is never counted twice nor missed.

Rolling up an hour is safe against concurrent writers and other replicas without locks: it reads
the hour's mark (a random ``gen``), computes from the raw rows, then in one write transaction
deletes the mark only if ``gen`` is unchanged and replaces the hour's rollup rows.  A record
written meanwhile changed ``gen`` (its insert sets a new one), so the rollup is dropped and the
hour stays dirty; on PostgreSQL the delete waits for an uncommitted insert's row lock first.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, false, func, insert, literal, or_, select, true, union_all

from modelyard.storage import sketch
from modelyard.storage.aio import AsyncConnection
from modelyard.storage.db import Database, placeholders
from modelyard.storage.tables import usage_requests, usage_rollup_dirty, usage_rollups

__all__ = ["ALL_ORGS", "DIMENSIONS", "SUMS", "Rollups", "Split", "floor_hour", "within"]

HOUR = timedelta(hours=1)
_T = usage_requests
_R = usage_rollups
_D = usage_rollup_dirty
#: the rollups' dimensions ("" is the hour's totals) and the usage_requests column of each
DIMENSIONS: dict[str, str | None] = {
    "": None,
    "model": "model",
    "route": "route",
    "provider": "provider",
    "key": "key_id",
    "error_class": "error_class",
}
_FINE = ("org_id", "source", "model", "route", "provider", "key_id", "error_class")
#: the summed figures, in the order both usage_requests and usage_rollups give them
SUMS = (
    "requests",
    "successes",
    "fallbacks",
    "cache_hits",
    "tokens_in",
    "tokens_out",
    "tokens_cached",
    "cost_usd",
    "baseline_cost_usd",
    "savings_usd",
    "judged",
    "judge_sum",
)
_NULLABLE = frozenset({"baseline_cost_usd", "savings_usd"})
#: the org_id of the rows that add up every organisation (org ids never hold "*"): a query
#: without an organisation reads those, a few times fewer rows than all of the organisations'
ALL_ORGS = "*"
HISTOGRAMS = ("latency_hist", "ttft_hist", "ttft_reasoning_hist")
#: beyond this many separate runs of rolled-up hours, a query reads the raw rows instead
_MAX_RUNS = 64


def floor_hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _ceil_hour(t: datetime) -> datetime:
    f = floor_hour(t)
    return f if f == t else f + HOUR


Interval = tuple[datetime | None, datetime | None]


def within(column: ColumnElement[Any], intervals: Sequence[Interval]) -> ColumnElement[bool]:
    """``column`` in any of the half-open intervals (None: unbounded on that side)."""
    parts: list[ColumnElement[bool]] = []
    for lo, hi in intervals:
        conds = [
            c for c in (None if lo is None else column >= lo, None if hi is None else column < hi) if c is not None
        ]
        parts.append(and_(*conds) if conds else true())
    return or_(*parts) if parts else false()


def sum_columns(t: Any) -> list[ColumnElement[Any]]:
    """SUMS over usage_requests (``t`` is usage_requests)."""
    return [
        func.count().label("requests"),
        func.sum(case((t.c.success, 1), else_=0)).label("successes"),
        func.sum(case((t.c.fallback, 1), else_=0)).label("fallbacks"),
        func.sum(case((t.c.cache_hit, 1), else_=0)).label("cache_hits"),
        func.sum(t.c.tokens_in).label("tokens_in"),
        func.sum(t.c.tokens_out).label("tokens_out"),
        func.sum(t.c.tokens_cached).label("tokens_cached"),
        func.sum(t.c.cost_usd).label("cost_usd"),
        func.sum(t.c.baseline_cost_usd).label("baseline_cost_usd"),
        func.sum(t.c.baseline_cost_usd - t.c.cost_usd).label("savings_usd"),
        func.count(t.c.judge_score).label("judged"),
        func.sum(t.c.judge_score).label("judge_sum"),
    ]


def metric_values(t: Any) -> tuple[ColumnElement[Any], ColumnElement[Any], ColumnElement[Any]]:
    """The values of the three histograms, in HISTOGRAMS order: successful requests' latency and
    first-token times of plain and of reasoning requests (contracts: "First token")."""
    return (
        case((t.c.success, t.c.latency_ms), else_=None),
        case((t.c.reasoning.is_(False), t.c.ttft_ms), else_=None),
        case((t.c.reasoning, t.c.ttft_ms), else_=None),
    )


def bucket_counts(keys: Sequence[ColumnElement[Any]], conds: Sequence[ColumnElement[bool]]) -> Any:
    """One query giving ``(*keys, metric, bucket, n)`` rows: the raw rows' histograms per group."""
    parts = []
    for i, value in enumerate(metric_values(_T)):
        bucket = sketch.bucket_sql(value)
        parts.append(
            select(*keys, literal(i).label("metric"), bucket.label("bucket"), func.count().label("n"))
            .where(*conds, value.is_not(None))
            .group_by(*keys, bucket)
        )
    return union_all(*parts)


class _Changed(Exception):
    pass


@dataclass(slots=True)
class Split:
    """Where a time range's figures come from: complete, rolled-up hours and raw intervals."""

    rolled: list[Interval] = field(default_factory=list)
    raw: list[Interval] = field(default_factory=list)


@dataclass(slots=True)
class _Acc:
    sums: list[Any]
    hists: list[int]


class Rollups:
    """Marks, rolls up and splits; the stats query itself is in storage/usage.py."""

    def __init__(self, database: Database) -> None:
        self.db = database

    # -- the write side -------------------------------------------------------------------------

    @staticmethod
    @functools.cache
    def mark_sql(paramstyle: str) -> str:
        """The upsert that marks an hour dirty with a new ``gen`` (run with the usage inserts)."""
        return (
            f"INSERT INTO usage_rollup_dirty (hour, gen) VALUES ({placeholders(paramstyle, 2)}) "
            "ON CONFLICT (hour) DO UPDATE SET gen = excluded.gen"
        )

    @staticmethod
    def new_gen() -> int:
        return secrets.randbits(62)

    async def run(self, now: datetime, *, limit: int = 2000) -> int:
        """Roll up the dirty hours before ``now``'s hour (oldest first, at most ``limit``); returns
        how many were rolled up.  Safe to run on several replicas at once."""
        done = 0
        async with self.db.engine.connect() as conn:
            pending = (
                await conn.execute(
                    select(_D.c.hour, _D.c.gen).where(_D.c.hour < floor_hour(now)).order_by(_D.c.hour).limit(limit)
                )
            ).all()
        for hour, gen in pending:
            if await self.roll(hour, gen):
                done += 1
        return done

    async def roll(self, hour: datetime, gen: int) -> bool:
        """Roll up one hour marked with ``gen``; False when it changed meanwhile (still dirty)."""
        async with self.db.engine.connect() as conn:
            rows = await self._compute(conn, hour)
        try:
            async with self.db.begin_write() as conn:
                cleared = await conn.execute(delete(_D).where(_D.c.hour == hour, _D.c.gen == gen))
                if cleared.rowcount != 1:
                    raise _Changed
                await conn.execute(delete(_R).where(_R.c.hour == hour))
                if rows:
                    await conn.execute(insert(_R), rows)
        except _Changed:  # rolled back: a record came in meanwhile, or another replica did it
            return False
        return True

    async def _compute(self, conn: AsyncConnection, hour: datetime) -> list[dict[str, Any]]:
        fine = [_T.c[name] for name in _FINE]
        conds = [_T.c.ts >= hour, _T.c.ts < hour + HOUR]
        acc: dict[tuple[str, str, str, str], _Acc] = {}

        def groups(row: Sequence[Any]) -> list[_Acc]:
            source = row[1] or ""
            values = dict(zip(_FINE, row, strict=False))
            out = []
            for org in (row[0] or "", ALL_ORGS):
                for dim, column in DIMENSIONS.items():
                    value = "" if column is None else (values[column] or "")
                    key = (org, source, dim, value)
                    a = acc.get(key)
                    if a is None:
                        a = acc[key] = _Acc([None if name in _NULLABLE else 0 for name in SUMS], [0, 0, 0])
                    out.append(a)
            return out

        for row in await conn.execute(select(*fine, *sum_columns(_T)).where(*conds).group_by(*fine)):
            figures = row[len(_FINE) :]
            for a in groups(row):
                for i, value in enumerate(figures):
                    if value is not None:
                        a.sums[i] = value if a.sums[i] is None else a.sums[i] + value
        for row in await conn.execute(bucket_counts(fine, conds)):
            metric, bucket, n = row[-3:]
            for a in groups(row):
                a.hists[metric] += sketch.counted(int(bucket), int(n))
        return [
            {
                "hour": hour,
                "org_id": org,
                "source": source,
                "dim": dim,
                "value": value,
                **{name: (a.sums[i] if name in _NULLABLE else a.sums[i] or 0) for i, name in enumerate(SUMS)},
                **{name: sketch.encode(a.hists[i]) for i, name in enumerate(HISTOGRAMS)},
            }
            for (org, source, dim, value), a in acc.items()
        ]

    # -- the read side --------------------------------------------------------------------------

    async def split(self, since: datetime | None, until: datetime | None, now: datetime) -> Split:
        """The complete hours of ``[since, until)`` read from the rollups, and the rest."""
        start = None if since is None else _ceil_hour(since)
        end = floor_hour(now) if until is None else min(floor_hour(until), floor_hour(now))
        if start is not None and start >= end:
            return Split(raw=[(since, until)])
        query = select(_D.c.hour).where(_D.c.hour < end).order_by(_D.c.hour)
        if start is not None:
            query = query.where(_D.c.hour >= start)
        async with self.db.engine.connect() as conn:
            dirty = [h for (h,) in await conn.execute(query)]
            split = self._runs(start, end, dirty)
            if split.rolled:  # hours with nothing rolled up are read raw, exactly
                there = (
                    select(_R.c.hour)
                    .where(_R.c.dim == "", _R.c.org_id == ALL_ORGS, within(_R.c.hour, split.rolled))
                    .limit(1)
                )
                if (await conn.execute(there)).first() is None:
                    split.rolled = []
        if not split.rolled or len(split.rolled) > _MAX_RUNS:
            return Split(raw=[(since, until)])
        # the raw rest: before the first rolled hour, between runs (dirty hours), after the last
        edges: list[Interval] = []
        first = split.rolled[0][0]
        if first is not None and (since is None or since < first):
            edges.append((since, first))
        edges += [(a[1], b[0]) for a, b in zip(split.rolled, split.rolled[1:], strict=False)]
        last = split.rolled[-1][1]
        if until is None or (last is not None and last < until):
            edges.append((last, until))
        split.raw = edges
        return split

    @staticmethod
    def _runs(start: datetime | None, end: datetime, dirty: list[datetime]) -> Split:
        split = Split()
        cursor: datetime | None = start
        for h in dirty:
            if cursor is None or h > cursor:
                split.rolled.append((cursor, h))
            cursor = h + HOUR
        if cursor is None or cursor < end:
            split.rolled.append((cursor, end))
        return split
