"""What a route's usage records say about each model that served it: the evidence production
recommendations rest on (modelyard.compare.production).  Production and canary records only
(contracts: usage record ``source``); cache hits are left out (no model answered them), and so are
requests the client gave up on (``client_closed``: they carry the attempt that was in flight and
its charge, but say nothing about the model)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Integer, and_, func, select

from modelyard.storage.db import Database
from modelyard.storage.tables import usage_attempts, usage_requests

__all__ = ["ModelEvidence", "route_evidence"]

_T = usage_requests
_A = usage_attempts
#: the most recent latencies and costs kept per model for the bootstrap intervals
SAMPLE = 2000


@dataclass(slots=True)
class ModelEvidence:
    model: str
    #: requests whose answer (or last attempt) was this model's
    requests: int = 0
    successes: int = 0
    #: of those, answered after the first choice failed
    fallbacks: int = 0
    #: this model's answers an output validator rejected (attempts), and its answers served
    rejected: int = 0
    judged: int = 0
    judge_sum: float = 0.0
    cost_sum: float = 0.0
    latencies: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)


async def route_evidence(
    db: Database,
    route: str,
    since: datetime,
    *,
    org_id: str | None = None,
    sources: Sequence[str] = ("production", "canary"),
) -> dict[str, ModelEvidence]:
    conds = [
        _T.c.route == route,
        _T.c.ts >= since,
        _T.c.source.in_(tuple(sources)),
        _T.c.cache_hit.is_(False),
        _T.c.error_class.is_distinct_from("client_closed"),
    ]
    if org_id is not None:
        conds.append(_T.c.org_id == org_id)
    totals = (
        select(
            _T.c.model,
            func.count(),
            func.sum(func.cast(_T.c.success, Integer)),
            func.sum(func.cast(and_(_T.c.fallback, _T.c.success), Integer)),
            func.count(_T.c.judge_score),
            func.coalesce(func.sum(_T.c.judge_score), 0.0),
            func.coalesce(func.sum(_T.c.cost_usd), 0.0),
        )
        .where(*conds)
        .group_by(_T.c.model)
    )
    ids = select(_T.c.request_id).where(*conds)
    rejected = (
        select(_A.c.model, func.count())
        .where(_A.c.route == route, _A.c.ts >= since, _A.c.error_class == "validation", _A.c.request_id.in_(ids))
        .group_by(_A.c.model)
    )
    samples = (
        select(_T.c.model, _T.c.latency_ms, _T.c.cost_usd)
        .where(*conds, _T.c.success.is_(True))
        .order_by(_T.c.ts.desc())
        .limit(SAMPLE * 8)
    )
    out: dict[str, ModelEvidence] = {}
    async with db.engine.connect() as conn:
        for model, n, ok, fb, judged, jsum, cost in await conn.execute(totals):
            out[model] = ModelEvidence(
                model, int(n), int(ok or 0), int(fb or 0), 0, int(judged), float(jsum), float(cost)
            )
        for model, n in await conn.execute(rejected):
            out.setdefault(model, ModelEvidence(model)).rejected = int(n)
        for model, latency, cost in await conn.execute(samples):
            ev = out.get(model)
            if ev is not None and len(ev.latencies) < SAMPLE:
                ev.latencies.append(float(latency))
                ev.costs.append(float(cost))
    return out
