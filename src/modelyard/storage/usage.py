"""Usage records in the database: batched inserts and the ``GET /v1/stats`` aggregates.

Inserts are idempotent: the request id (and, for attempts, the attempt number) is the primary
key and a row that is already there is skipped (``ON CONFLICT DO NOTHING``), so the usage writer
can replay a spill file after a crash without counting anything twice.

Percentiles are linear-interpolation percentiles, the same definition as Postgres'
``percentile_cont``: for the sorted values ``v[0..n-1]`` and fraction ``p``, ``pos = p * (n - 1)``
and the result is ``v[floor(pos)] + (v[floor(pos) + 1] - v[floor(pos)]) * (pos - floor(pos))``.
Postgres computes them with ``percentile_cont``; SQLite (which has no such aggregate) with window
functions in SQL.  Latency percentiles cover successful requests only (a failure is either very
fast or a timeout, and both would distort them); time to first token covers requests that have one.
"""

from __future__ import annotations

import functools
import itertools
import operator
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import ColumnElement, Integer, Select, case, cast, extract, func, literal, select

from modelyard.storage.db import Database, placeholders
from modelyard.storage.records import ATTEMPT_FIELDS, BOOL_FIELDS, REQUEST_FIELDS, AttemptRecord, RequestRecord
from modelyard.storage.rollup import (
    ALL_ORGS,
    HISTOGRAMS,
    SUMS,
    Rollups,
    Split,
    bucket_counts,
    floor_hour,
    metric_values,
    sum_columns,
    within,
)
from modelyard.storage.sketch import counted, decode, quantiles
from modelyard.storage.tables import as_utc, usage_attempts, usage_requests, usage_rollups

__all__ = ["GroupBy", "UsageStore"]

GroupBy = Literal["model", "route", "provider", "org", "key", "error_class", "failed_model", "hour", "day"]
#: a time bucket and a dimension: ``("day", "model")`` (stats v2: the dashboard's series per model)
Grouping = GroupBy | tuple[GroupBy, GroupBy] | None
_TIME_GROUPS = ("hour", "day")
_DIMENSIONS = ("model", "route", "provider", "org", "key", "error_class")


def parse_group_by(value: str | None) -> Grouping:
    """``/v1/stats``'s ``group_by``: one of :data:`GroupBy`, or ``<hour|day>,<dimension>``.
    Raises ValueError naming what is allowed."""
    if value is None or value == "":
        return None
    parts = [p.strip() for p in value.split(",")]
    single: tuple[str, ...] = get_args(GroupBy)
    if len(parts) == 1 and parts[0] in single:
        return parts[0]  # type: ignore[return-value]
    if len(parts) == 2 and parts[0] in _TIME_GROUPS and parts[1] in _DIMENSIONS:
        return (parts[0], parts[1])  # type: ignore[return-value]
    raise ValueError(
        f"group_by must be one of {', '.join(single)}, or a time bucket and a dimension "
        f"(hour|day),({'|'.join(_DIMENSIONS)}), for example day,model"
    )


_T = usage_requests
_A = usage_attempts
_R = usage_rollups
_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


def _sqlite_ts(ts: datetime) -> str:
    """The exact text UtcDateTime/DateTime store on SQLite, so reads and range filters agree."""
    return as_utc(ts).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _rate(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


class UsageStore:
    """Writes usage records and answers the stats queries."""

    def __init__(self, database: Database) -> None:
        self.db = database
        self.rollups = Rollups(database)
        # _values relies on the timestamp being the first field of both records
        assert REQUEST_FIELDS[0] == "ts" and ATTEMPT_FIELDS[0] == "ts"

    async def insert(self, requests: Sequence[RequestRecord], attempts: Sequence[AttemptRecord]) -> None:
        """Insert records in one transaction; rows already present are skipped.

        This runs for every request (in batches, off the request path but in the same process), so it
        goes straight to the driver's ``executemany`` with prepared tuples: SQLAlchemy's per-row
        parameter processing cost about 0.2 ms of CPU per request.
        """
        if not requests and not attempts:
            return
        stamps: dict[datetime, str] = {}  # a request's attempts share its timestamp: formatted once
        tables = [
            (table, names, [self._values(r, names, stamps) for r in records])
            for table, names, records in (
                ("usage_requests", REQUEST_FIELDS, requests),
                ("usage_attempts", ATTEMPT_FIELDS, attempts),
            )
            if records
        ]
        marks: list[tuple[Any, int]] = []
        if requests:  # the hours these records fall in are to be rolled up (again)
            gen = self.rollups.new_gen()
            marks = [(h, gen) for h in sorted(self._hours(tables[0][2]))]
        direct = self.db.direct
        if direct is not None:  # SQLite on a file: the whole transaction in one trip to a thread
            await direct.write(functools.partial(_insert_sqlite, tables, marks, self.rollups.mark_sql("qmark")))
            return
        async with self.db.begin_write() as conn:
            style = conn.dialect.paramstyle
            for table, names, rows in tables:
                if self.db.is_sqlite:  # in memory
                    for sql, params in _sqlite_statements(table, names, rows):
                        await conn.exec_driver_sql(sql, params)
                else:
                    await conn.exec_driver_sql(_insert_sql(table, names, style), rows)
            if marks:
                await conn.exec_driver_sql(self.rollups.mark_sql(style), marks)

    def _hours(self, rows: list[Sequence[Any]]) -> set[Any]:
        """The hours (as stored) of prepared usage_requests rows."""
        if self.db.is_sqlite:  # "2026-12-04 06:59:59.123456" -> "2026-12-04 06:00:00.000000"
            return {row[0][:13] + ":00:00.000000" for row in rows}
        return {floor_hour(row[0]) for row in rows}

    def _values(
        self, record: RequestRecord | AttemptRecord, names: tuple[str, ...], stamps: dict[datetime, str]
    ) -> Sequence[Any]:
        values = _getter(names)(record)  # one C call for every field (the timestamp is first)
        if self.db.is_sqlite:
            row = list(values)
            text = stamps.get(row[0])
            if text is None:
                text = stamps[row[0]] = _sqlite_ts(row[0])
            row[0] = text
            for i in _bool_positions(names):
                row[i] = 1 if row[i] else 0
            return row
        return (as_utc(values[0]), *values[1:])

    async def count(self) -> tuple[int, int]:
        """Rows in usage_requests and usage_attempts."""
        async with self.db.engine.connect() as conn:
            requests = (await conn.execute(select(func.count()).select_from(usage_requests))).scalar_one()
            attempts = (await conn.execute(select(func.count()).select_from(usage_attempts))).scalar_one()
        return int(requests), int(attempts)

    # -- stats ------------------------------------------------------------------------------

    def _key(self, group_by: GroupBy | None, table: Any = _T) -> ColumnElement[Any]:
        """The group key of a single ``group_by`` over usage_requests or (``table=_R``) the rollups."""
        if group_by is None:
            return literal(None)
        if group_by in _TIME_GROUPS:
            ts = _T.c.ts if table is _T else _R.c.hour
            if self.db.is_postgres:
                fmt = 'YYYY-MM-DD"T"HH24":00:00Z"' if group_by == "hour" else "YYYY-MM-DD"
                return func.to_char(func.timezone("UTC", ts), fmt)
            return func.strftime("%Y-%m-%dT%H:00:00Z" if group_by == "hour" else "%Y-%m-%d", ts)
        if table is _R:
            value: ColumnElement[Any] = _R.c.value
            return value
        columns = {
            "model": _T.c.model,
            "route": _T.c.route,
            "provider": _T.c.provider,
            "org": _T.c.org_id,
            "key": _T.c.key_id,
            "error_class": _T.c.error_class,  # null: the requests that succeeded
        }
        return columns[group_by]

    @staticmethod
    def _filters(
        org_id: str | None, since: datetime | None, until: datetime | None, sources: tuple[str, ...] | None = None
    ) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = []
        if org_id is not None:
            conds.append(_T.c.org_id == org_id)
        if sources is not None:
            conds.append(_T.c.source.in_(sources))
        if since is not None:
            conds.append(_T.c.ts >= since)
        if until is not None:
            conds.append(_T.c.ts < until)
        return conds

    @staticmethod
    def _sqlite_percentiles(
        keys: list[ColumnElement[Any]],
        value: ColumnElement[Any],
        conds: list[ColumnElement[bool]],
        ps: dict[str, float],
    ) -> Select[Any]:
        """Interpolated percentiles per group with window functions (SQLite has no percentile_cont)."""
        labels = ("k", "g")
        inner = (
            select(
                *(k.label(n) for k, n in zip(keys, labels, strict=False)),
                value.label("v"),
                (func.row_number().over(partition_by=keys, order_by=value) - 1).label("rn"),
                func.count().over(partition_by=keys).label("n"),
            )
            .where(*conds, value.is_not(None))
            .subquery()
        )
        columns: list[ColumnElement[Any]] = []
        for name, p in ps.items():
            pos = (inner.c.n - 1) * literal(p)
            lo = cast(pos, Integer)
            frac = pos - lo
            picked = case(
                (inner.c.rn == lo, inner.c.v * (1 - frac)),
                (inner.c.rn == lo + 1, inner.c.v * frac),
                else_=0.0,
            )
            columns.append(func.sum(picked).label(name))
        groups = [inner.c[n] for n in labels[: len(keys)]]
        return select(*groups, *columns).group_by(*groups)

    async def stats(
        self,
        *,
        group_by: Grouping,
        org_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        now: datetime | None = None,
        sources: tuple[str, ...] | None = None,
    ) -> list[dict[str, Any]]:
        """Per-group figures for requests with ``since <= ts < until`` (of one organisation when given;
        of these usage sources when given: production, canary, shadow, comparison, probe).

        ``group_by=None`` gives one row of totals.  Each row has ``key`` (the model, route,
        provider, org id, ``2026-01-31T14:00:00Z`` hour or ``2026-01-31`` day) and the figures;
        a (time bucket, dimension) pair gives a row per bucket and dimension value, with the bucket
        in ``key`` and the value in ``group``.
        Time groups come in time order, the others by request count, highest first.

        Complete hours that have been rolled up are read from the hourly rollups (storage/rollup.py)
        and their percentiles from histograms (within 2 %); a range with none of them (the current
        hour, a range under an hour, hours not rolled up yet) is read from the raw rows, exactly.
        """
        if group_by == "failed_model":
            return await self._failed_models(org_id, since, until)
        split = await self.rollups.split(since, until, now or datetime.now(UTC))
        if not split.rolled:
            return self._finish(await self._exact(group_by, self._filters(org_id, since, until, sources)), group_by)
        return self._finish(await self._mixed(group_by, org_id, split, sources), group_by)

    def _keys(self, group_by: Grouping, table: Any = _T) -> list[ColumnElement[Any]]:
        return [self._key(g, table) for g in group_by] if isinstance(group_by, tuple) else [self._key(group_by, table)]

    async def _exact(self, group_by: Grouping, conds: list[ColumnElement[bool]]) -> list[dict[str, Any]]:
        """Figures and exact percentiles from the raw rows."""
        keys = self._keys(group_by)
        ok_latency, ttft_plain, ttft_reasoning = metric_values(_T)
        columns: list[ColumnElement[Any]] = [
            *(k.label(n) for k, n in zip(keys, ("k", "g"), strict=False)),
            *sum_columns(_T),
        ]
        if self.db.is_postgres:
            columns += [
                func.percentile_cont(0.5).within_group(ok_latency).label("latency_p50_ms"),
                func.percentile_cont(0.95).within_group(ok_latency).label("latency_p95_ms"),
                func.percentile_cont(0.5).within_group(ttft_plain).label("ttft_p50_ms"),
                func.percentile_cont(0.5).within_group(ttft_reasoning).label("ttft_reasoning_p50_ms"),
            ]
        query = select(*columns).where(*conds)
        if group_by is not None:
            query = query.group_by(*keys)
        async with self.db.engine.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(query)]
            if self.db.is_sqlite and rows:
                pct: dict[Any, dict[str, Any]] = {}
                latency = self._sqlite_percentiles(
                    keys, ok_latency, conds, {"latency_p50_ms": 0.5, "latency_p95_ms": 0.95}
                )
                ttft = self._sqlite_percentiles(keys, ttft_plain, conds, {"ttft_p50_ms": 0.5})
                ttft_r = self._sqlite_percentiles(keys, ttft_reasoning, conds, {"ttft_reasoning_p50_ms": 0.5})
                for q in (latency, ttft, ttft_r):
                    for r in await conn.execute(q):
                        m = dict(r._mapping)
                        pct.setdefault((m.pop("k"), m.pop("g", None)), {}).update(m)
                for row in rows:
                    row.update(pct.get((row["k"], row.get("g")), {}))
        return rows

    async def _mixed(
        self, group_by: Grouping, org_id: str | None, split: Split, sources: tuple[str, ...] | None = None
    ) -> list[dict[str, Any]]:
        """Rolled-up hours from the rollups plus the rest from the raw rows, with percentiles
        from the merged histograms."""
        dimension = next(
            (g for g in (group_by if isinstance(group_by, tuple) else (group_by,)) if g in _DIMENSIONS), ""
        )
        dim = {"org": "", "key": "key"}.get(dimension, dimension)
        by_org = dimension == "org"
        labels = ("k", "g")
        rkeys = self._keys(group_by, _R)
        if by_org:  # the rollups keep the organisation in a column of its own
            rkeys = [_R.c.org_id if k is _R.c.value else k for k in rkeys]
        rconds: list[ColumnElement[bool]] = [_R.c.dim == dim, within(_R.c.hour, split.rolled)]
        if sources is not None:
            rconds.append(_R.c.source.in_(sources))
        if org_id is not None:
            rconds.append(_R.c.org_id == org_id)
        elif not by_org:
            rconds.append(_R.c.org_id == ALL_ORGS)
        else:
            rconds.append(_R.c.org_id != ALL_ORGS)
        rsums = [func.sum(_R.c[name]).label(name) for name in SUMS]
        labelled = [k.label(n) for k, n in zip(rkeys, labels, strict=False)]
        acc: dict[tuple[Any, Any], dict[str, Any]] = {}
        hists: dict[tuple[Any, Any], list[int]] = {}
        dimension_at = {
            i for i, g in enumerate(group_by if isinstance(group_by, tuple) else (group_by,)) if g in _DIMENSIONS
        }

        def group_of(row: Any, n: int, rollup: bool) -> tuple[Any, Any]:
            parts = list(row[:n]) + [None] * (2 - n)
            if rollup:  # "" stands for none in the rollups
                parts = [None if i in dimension_at and p == "" else p for i, p in enumerate(parts)]
            return parts[0], parts[1]

        def add(group: tuple[Any, Any], figures: Mapping[Any, Any]) -> None:
            row = acc.setdefault(group, dict.fromkeys(SUMS))
            for name in SUMS:
                value = figures[name]
                if value is not None:
                    row[name] = value if row[name] is None else row[name] + value

        n = len(rkeys)
        async with self.db.engine.connect() as conn:
            query = select(*labelled, *rsums).where(*rconds)
            if group_by is not None:
                query = query.group_by(*rkeys)
            for r in await conn.execute(query):
                add(group_of(r, n, True), r._mapping)
            hq = select(*labelled, *(_R.c[h] for h in HISTOGRAMS)).where(*rconds)
            for r in await conn.execute(hq):
                h = hists.setdefault(group_of(r, n, True), [0, 0, 0])
                for i in range(3):
                    h[i] += decode(r[n + i])
            keys = self._keys(group_by)
            for lo, hi in split.raw:
                # one interval at a time, bounded on both sides: that is what lets SQLite pick the
                # ts index (with an OR of ranges, or no upper bound, it scans the group's index)
                conds = self._filters(org_id, lo, hi or _FAR_FUTURE, sources)
                raw = select(*(k.label(n) for k, n in zip(keys, labels, strict=False)), *sum_columns(_T)).where(*conds)
                if group_by is not None:
                    raw = raw.group_by(*keys)
                for r in await conn.execute(raw):
                    if r.requests:
                        add(group_of(r, n, False), r._mapping)
                for r in await conn.execute(bucket_counts(keys, conds)):
                    metric, bucket, count = r[-3:]
                    hists.setdefault(group_of(r, n, False), [0, 0, 0])[metric] += counted(int(bucket), int(count))
        rows = []
        for (k, g), figures in acc.items():
            latency, ttft, ttft_r = hists.get((k, g), [0, 0, 0])
            p50, p95 = quantiles(latency, (0.5, 0.95))
            rows.append(
                {
                    "k": k,
                    "g": g,
                    **figures,
                    "latency_p50_ms": p50,
                    "latency_p95_ms": p95,
                    "ttft_p50_ms": quantiles(ttft, (0.5,))[0],
                    "ttft_reasoning_p50_ms": quantiles(ttft_r, (0.5,))[0],
                }
            )
        return rows

    async def _failed_models(
        self, org_id: str | None, since: datetime | None, until: datetime | None
    ) -> list[dict[str, Any]]:
        """Per model that failed an attempt: how often, in how many requests, how many of those the
        route still answered (a fallback or retry rescued them), and by error class.  Credits the
        model that failed, where ``group_by=model`` credits the one that answered."""
        conds: list[ColumnElement[bool]] = [_A.c.success.is_(False)]
        if org_id is not None:
            conds.append(_A.c.org_id == org_id)
        if since is not None:
            conds.append(_A.c.ts >= since)
        if until is not None:
            conds.append(_A.c.ts < until)
        rescued = case((_T.c.success, _A.c.request_id), else_=None)
        query = (
            select(
                _A.c.model,
                func.count().label("failed_attempts"),
                func.count(func.distinct(_A.c.request_id)).label("requests"),
                func.count(func.distinct(rescued)).label("rescued"),
            )
            .select_from(_A.outerjoin(_T, _T.c.request_id == _A.c.request_id))
            .where(*conds)
            .group_by(_A.c.model)
        )
        by_class = (
            select(_A.c.model, _A.c.error_class, func.count().label("n"))
            .where(*conds)
            .group_by(_A.c.model, _A.c.error_class)
        )
        async with self.db.engine.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(query)]
            classes: dict[str, dict[str, int]] = {}
            for model, error_class, n in await conn.execute(by_class):
                classes.setdefault(model, {})[error_class or "unknown"] = int(n)
        out = [
            {
                "key": r["model"],
                "failed_attempts": int(r["failed_attempts"]),
                "requests": int(r["requests"]),
                "rescued": int(r["rescued"]),
                "rescue_rate": _rate(int(r["rescued"]), int(r["requests"])),
                "error_classes": classes.get(r["model"], {}),
            }
            for r in rows
        ]
        out.sort(key=lambda row: (-row["failed_attempts"], str(row["key"])))
        return out

    @staticmethod
    def _finish(rows: list[dict[str, Any]], group_by: Grouping) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for r in rows:
            requests = int(r["requests"])
            if requests == 0:
                continue
            successes = int(r["successes"] or 0)
            fallbacks = int(r["fallbacks"] or 0)
            cache_hits = int(r["cache_hits"] or 0)
            baseline = None if r["baseline_cost_usd"] is None else float(r["baseline_cost_usd"])
            savings = None if r["savings_usd"] is None else float(r["savings_usd"])
            row = {
                "key": r["k"],
                "requests": requests,
                "successes": successes,
                "failures": requests - successes,
                "success_rate": _rate(successes, requests),
                "fallbacks": fallbacks,
                "fallback_rate": _rate(fallbacks, requests),
                "latency_p50_ms": _opt_float(r.get("latency_p50_ms")),
                "latency_p95_ms": _opt_float(r.get("latency_p95_ms")),
                "ttft_p50_ms": _opt_float(r.get("ttft_p50_ms")),
                "ttft_reasoning_p50_ms": _opt_float(r.get("ttft_reasoning_p50_ms")),
                "tokens_in": int(r["tokens_in"] or 0),
                "tokens_out": int(r["tokens_out"] or 0),
                "tokens_cached": int(r["tokens_cached"] or 0),
                "cost_usd": float(r["cost_usd"] or 0.0),
                "baseline_cost_usd": baseline,
                "savings_usd": savings,
                "savings_percent": (savings / baseline * 100) if savings is not None and baseline else None,
                "cache_hits": cache_hits,
                "cache_hit_rate": _rate(cache_hits, requests),
                # quality (#17): answers a judge scored and their mean score (validator rejections
                # are attempts: group_by=failed_model counts them per model, error class validation)
                "judged": int(r.get("judged") or 0),
                "judge_score_avg": (float(r["judge_sum"]) / int(r["judged"])) if r.get("judged") else None,
            }
            if isinstance(group_by, tuple):
                row["group"] = r["g"]  # the dimension's value; "key" is the time bucket
            out.append(row)
        if isinstance(group_by, tuple):
            out.sort(key=lambda row: (str(row["key"]), -row["requests"], str(row["group"])))
        elif group_by in _TIME_GROUPS:
            out.sort(key=lambda row: str(row["key"]))
        else:
            out.sort(key=lambda row: (-row["requests"], str(row["key"])))
        return out

    async def spend(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        org_id: str | None = None,
        key_id: str | None = None,
        route: str | None = None,
        model: str | None = None,
    ) -> tuple[float, int]:
        """Total cost (USD) and tokens (in + out) of the matching requests, for budgets."""
        conds = self._filters(org_id, since, until)
        for column, value in ((_T.c.key_id, key_id), (_T.c.route, route), (_T.c.model, model)):
            if value is not None:
                conds.append(column == value)
        query = select(
            func.coalesce(func.sum(_T.c.cost_usd), 0.0), func.coalesce(func.sum(_T.c.tokens_in + _T.c.tokens_out), 0)
        ).where(*conds)
        async with self.db.engine.connect() as conn:
            cost, tokens = (await conn.execute(query)).one()
        return float(cost), int(tokens)

    async def spend_by(
        self,
        scope: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        target: str | None = None,
        ended_before_ms: int | None = None,
    ) -> list[tuple[str | None, float, int]]:
        """Cost (USD) and tokens (in + out) of the requests that started in [``since``, ``until``),
        per value of a budget scope's column (``global``, ``shadow``: one row; ``organization``/``key``/
        ``route``/``model``: one per value), for seeding budget counters: one grouped query.  As the
        budgets count it: shadow requests only for ``shadow`` (of route ``target``), else all but them.

        ``model``: per attempt, from the attempts' records (a model budget is charged per attempt);
        a judge's calls are not among them (their cost is the request's ``judge_cost_usd``).
        ``ended_before_ms``: only the requests that ended (``ts`` + ``latency_ms``, Unix ms) before
        then: those whose budgets were settled before a counter created at that time existed."""
        # a model budget is charged per attempt, to the attempt's model (a rejected answer, or one
        # given up, to the model that produced it): its attempts' records, not the requests'
        spent = _A if scope == "model" else _T
        column = {"organization": _T.c.org_id, "key": _T.c.key_id, "route": _T.c.route, "model": _A.c.model}.get(scope)
        conds = self._filters(None, since, until)
        # shadow spend counts towards shadow budgets only (target_of): the others never see it;
        # probes (health checks, a model's probe before a change) count towards no budget
        if scope == "shadow":
            conds.append(_T.c.source == "shadow")
            if target is not None:
                conds.append(_T.c.route == target)
        else:
            conds.append(_T.c.source.not_in(("shadow", "probe")))
        if column is not None and target is not None:
            conds.append(column == target)
        if ended_before_ms is not None:
            if self.db.is_sqlite:  # ts is stored as text: julianday() reads it (days since 4714 BC)
                start_ms = (func.julianday(_T.c.ts) - _UNIX_EPOCH_JULIAN_DAY) * 86_400_000.0
            else:
                start_ms = extract("epoch", _T.c.ts) * 1000
            # a request ends after it starts: the plain bound on ts lets the index narrow the rows
            conds.append(_T.c.ts < datetime.fromtimestamp(ended_before_ms / 1000, UTC))
            conds.append(start_ms + _T.c.latency_ms < ended_before_ms)
        sums = (
            func.coalesce(func.sum(spent.c.cost_usd), 0.0),
            func.coalesce(func.sum(spent.c.tokens_in + spent.c.tokens_out), 0),
        )
        source = _A.join(_T, _A.c.request_id == _T.c.request_id) if spent is _A else _T
        if column is None:
            query = select(literal(None), *sums).select_from(source).where(*conds)
        else:
            query = select(column, *sums).select_from(source).where(*conds, column.is_not(None)).group_by(column)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(None if r[0] is None else str(r[0]), float(r[1]), int(r[2])) for r in rows]


#: julianday() of 1970-01-01T00:00:00Z
_UNIX_EPOCH_JULIAN_DAY = 2440587.5


@functools.cache
def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    return operator.attrgetter(*names)


@functools.cache
def _bool_positions(names: tuple[str, ...]) -> tuple[int, ...]:
    """Where the boolean fields are among ``names``: bound as 0/1 (the integers sqlite3 would store),
    since a ``bool`` takes sqlite3's slow adapter search (see ``storage.db._bind_none_directly``)
    and an exact ``int`` does not (about ten booleans a request)."""
    return tuple(i for i, name in enumerate(names) if name in BOOL_FIELDS)


#: bound parameters per SQLite statement (SQLITE_MAX_VARIABLE_NUMBER: 32766 since 3.32, 999 before)
_SQLITE_MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


#: the most rows in one SQLite insert statement (a power of two)
_SQLITE_MAX_ROWS = 256


def _sqlite_chunks(rows: int, columns: int) -> list[tuple[int, int]]:
    """``(start, size)`` of the insert statements for ``rows`` rows: sizes are powers of two.

    The sqlite3 module keeps every statement it ran compiled, per connection (the last 128), and a
    compiled multi-row insert takes about 2.5 KiB a row.  One statement per batch size made that
    cache grow for as long as new batch sizes turned up (the fault soak, #19: about 10 MB a
    connection after ten minutes, the RSS growth it measured).  With sizes 1, 2, 4 ... 256 a table
    has at most nine statements (a 256-row one is about 430 KiB: 0.9 MB a table, once), and a
    batch of n rows takes ``n // 256`` statements plus one per bit of the remainder.  The cap was
    64 until round eight (docs/performance.md): every statement is a hand-over of the GIL to the
    writer's thread and back, which the event loop pays for under load (a 340-row batch took 14
    statements, now 8; the writer thread's context switches fell from 0.47 to 0.36 a request).
    """
    most = min(_SQLITE_MAX_ROWS, max(1, _SQLITE_MAX_VARIABLES // columns))
    most = 1 << (most.bit_length() - 1)  # a power of two (fewer variables allowed before SQLite 3.32)
    chunks = []
    start = 0
    while rows - start >= most:
        chunks.append((start, most))
        start += most
    size = most >> 1
    while size:
        if rows - start >= size:
            chunks.append((start, size))
            start += size
        size >>= 1
    return chunks


def _sqlite_statements(
    table: str, names: tuple[str, ...], rows: list[Sequence[Any]]
) -> Iterator[tuple[str, tuple[Any, ...]]]:
    """The multi-row inserts of ``rows`` into ``table`` (SQLite).

    Many rows per statement: sqlite3's executemany gives up the GIL and takes it back for every row,
    and under load (the event loop holding the GIL) each hand-over waits for the interpreter's switch
    interval; one statement binds many rows at once."""
    for start, size in _sqlite_chunks(len(rows), len(names)):
        part = rows[start : start + size]
        yield _insert_rows_sql(table, names, size), tuple(itertools.chain.from_iterable(part))


def _insert_sqlite(
    tables: list[tuple[str, tuple[str, ...], list[Sequence[Any]]]],
    marks: list[tuple[Any, int]],
    mark_sql: str,
    conn: sqlite3.Connection,
) -> None:
    """The usage inserts on a plain sqlite3 connection, inside the caller's transaction."""
    for table, names, rows in tables:
        for sql, params in _sqlite_statements(table, names, rows):
            conn.execute(sql, params)
    if marks:
        conn.executemany(mark_sql, marks)


@functools.cache
def _insert_rows_sql(table: str, names: tuple[str, ...], rows: int) -> str:
    """``INSERT ... VALUES (?, ...), (?, ...) ... ON CONFLICT DO NOTHING`` for ``rows`` rows (SQLite)."""
    one = "(" + ", ".join("?" for _ in names) + ")"
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES {', '.join([one] * rows)} ON CONFLICT DO NOTHING"


@functools.cache
def _insert_sql(table: str, names: tuple[str, ...], paramstyle: str) -> str:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the driver's own parameter style."""
    marks = placeholders(paramstyle, len(names))
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks}) ON CONFLICT DO NOTHING"


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
