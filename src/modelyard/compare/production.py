"""Recommendations from production usage: per route, should it switch model, given its traffic?

The evidence is the route's usage records (production and canary; storage.evidence) and the
latest comparison run that measured the route's current model.  The rules (docs/compare.md):

- below ``MIN_REQUESTS`` (200) requests for the current model or for a candidate on the route:
  *not enough data*;
- quality is the share of a model's answers that passed the route's output validators (when the
  route validates), the mean judge score of its judged answers, or a comparison's accuracy; a
  candidate with none of these is never recommended on cost or latency alone: *no quality data*;
- a switch is recommended when at least one figure is better outside the 95 % intervals (Wilson
  for rates, bootstrap for latency and cost) and none is worse outside them; when every
  difference is within the intervals: *not enough data* (they overlap).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from modelyard.compare.confidence import bootstrap_diff, overlap, wilson
from modelyard.runtime import Runtime
from modelyard.storage.comparisons import ComparisonStore
from modelyard.storage.db import Database
from modelyard.storage.evidence import ModelEvidence, route_evidence

__all__ = ["MIN_REQUESTS", "recommend_route", "recommendations"]

MIN_REQUESTS = 200


def _rate(ev: ModelEvidence) -> tuple[float, tuple[float, float]]:
    return (ev.successes / ev.requests if ev.requests else 0.0), wilson(ev.successes, ev.requests)


def _quality(ev: ModelEvidence, validates: bool, compared: Mapping[str, float]) -> dict[str, Any] | None:
    """The model's quality signal on the route, with its interval; None when it has none."""
    if validates and ev.successes + ev.rejected > 0:
        n = ev.successes + ev.rejected
        return {"kind": "validator pass rate", "value": ev.successes / n, "interval": wilson(ev.successes, n), "n": n}
    if ev.judged:
        return {
            "kind": "judge score",
            "value": ev.judge_sum / ev.judged,
            "interval": wilson(ev.judge_sum, ev.judged),
            "n": ev.judged,
        }
    if ev.model in compared:
        return {"kind": "comparison accuracy", "value": compared[ev.model], "interval": None, "n": None}
    return None


def _figures(ev: ModelEvidence, quality: dict[str, Any] | None) -> dict[str, Any]:
    rate, interval = _rate(ev)
    return {
        "requests": ev.requests,
        "success_rate": round(rate, 4),
        "success_interval": [round(interval[0], 4), round(interval[1], 4)],
        "fallback_rate": round(ev.fallbacks / ev.requests, 4) if ev.requests else None,
        "latency_p50_ms": round(statistics.median(ev.latencies), 1) if ev.latencies else None,
        "cost_per_request_usd": round(ev.cost_sum / ev.requests, 8) if ev.requests else None,
        "validator_rejections": ev.rejected,
        "judge_score_avg": round(ev.judge_sum / ev.judged, 4) if ev.judged else None,
        "quality": None
        if quality is None
        else {
            **quality,
            "value": round(quality["value"], 4),
            "interval": [round(x, 4) for x in quality["interval"]] if quality["interval"] else None,
        },
    }


def recommend_route(
    route: str,
    current: str,
    evidence: Mapping[str, ModelEvidence],
    *,
    validates: bool,
    comparisons: Sequence[Mapping[str, Any]] = (),
    allowed: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The recommendation for one route (see the module docstring); ``allowed``: the models a
    switch may go to (the route's configured ones)."""
    compared: dict[str, float] = {}
    for result in comparisons:  # newest first: the first run that measured the current model counts
        figs = result.get("figures") or {}
        if current in figs and figs[current].get("accuracy") is not None:
            compared = {m: f["accuracy"] for m, f in figs.items() if f.get("accuracy") is not None}
            break
    models = {m: _figures(ev, _quality(ev, validates, compared)) for m, ev in evidence.items()}
    out: dict[str, Any] = {"route": route, "current": current, "models": models, "recommendation": None}
    base = evidence.get(current)
    if base is None or base.requests < MIN_REQUESTS:
        n = base.requests if base else 0
        out.update(status="not_enough_data", reason=f"{current} has {n} requests on {route}; {MIN_REQUESTS} needed")
        return out
    candidates = [
        ev
        for m, ev in evidence.items()
        if m != current and ev.requests >= MIN_REQUESTS and (allowed is None or m in allowed)
    ]
    if not candidates:
        out.update(
            status="not_enough_data",
            reason=f"no other model has served {MIN_REQUESTS} requests on {route}: send it traffic "
            "(a canary or shadow share) or run a comparison",
        )
        return out
    q_base = _quality(base, validates, compared)
    verdicts = []
    for ev in candidates:
        verdicts.append(_judge(current, base, ev, q_base, _quality(ev, validates, compared)))
    good = [v for v in verdicts if v["status"] == "recommend"]
    if good:
        best = max(good, key=lambda v: (len(v["gains"]), -(v["expected_change"]["cost"] or 0)))
        rec = {
            "model": best["model"],
            "instead_of": current,
            "expected_change": best["expected_change"],
            "summary": best["summary"],
            "reason": best["reason"],
            "trade_offs": best["trade_offs"],
            "confidence": best["confidence"],
            "apply": {"method": "POST", "path": f"/admin/routes/{route}/switch", "body": {"model": best["model"]}},
        }
        out.update(status="recommend", reason=best["reason"], recommendation=rec)
    elif any(v["status"] == "no_quality_data" for v in verdicts):
        v = next(v for v in verdicts if v["status"] == "no_quality_data")
        out.update(status="no_quality_data", reason=v["reason"])
    elif any(v["status"] == "keep" for v in verdicts):
        out.update(status="keep", reason=f"no model does better than {current} outside the noise")
    else:
        out.update(status="not_enough_data", reason=verdicts[0]["reason"])
    out["candidates"] = [{k: v[k] for k in ("model", "status", "reason", "summary")} for v in verdicts]
    return out


def _judge(
    current: str, a: ModelEvidence, b: ModelEvidence, qa: dict[str, Any] | None, qb: dict[str, Any] | None
) -> dict[str, Any]:
    gains: list[str] = []
    losses: list[str] = []
    within: list[str] = []
    ra, ia = _rate(a)
    rb, ib = _rate(b)
    if rb != ra:
        (gains if rb > ra and not overlap(ia, ib) else losses if rb < ra and not overlap(ia, ib) else within).append(
            "success rate"
        )
    q_change = None
    if qa is not None and qb is not None:
        q_change = qb["value"] - qa["value"]
        if qa["interval"] and qb["interval"]:
            significant = not overlap(qa["interval"], qb["interval"])
        else:  # comparison accuracy: no interval, taken as a signal only when it differs by 5 points
            significant = abs(q_change) >= 0.05
        if q_change:
            (gains if q_change > 0 and significant else losses if q_change < 0 and significant else within).append(
                "quality"
            )
    for key, xs, ys in (("latency", a.latencies, b.latencies), ("cost", a.costs, b.costs)):
        diff = bootstrap_diff(xs, ys)
        if diff is None:
            continue
        eps = 1e-9 * max(1e-12, statistics.fmean(xs), statistics.fmean(ys))  # float noise is no difference
        if diff[1] < -eps:
            gains.append(key)
        elif diff[0] > eps:
            losses.append(key)
        elif abs(statistics.fmean(ys) - statistics.fmean(xs)) > eps:
            within.append(key)
    cost_a = a.cost_sum / a.requests if a.requests else None
    cost_b = b.cost_sum / b.requests if b.requests else None
    p50_a = statistics.median(a.latencies) if a.latencies else None
    p50_b = statistics.median(b.latencies) if b.latencies else None
    change: dict[str, Any] = {
        "success_rate": round(rb - ra, 4),
        "quality": round(q_change, 4) if q_change is not None else None,
        "cost": round(cost_b / cost_a - 1, 4) if cost_a and cost_b is not None else None,
        "speed": round(p50_a / p50_b, 2) if p50_a and p50_b else None,
    }
    parts = []
    if change["quality"] is not None:
        parts.append(f"{change['quality'] * 100:+.1f} pts quality")
    parts.append(f"{change['success_rate'] * 100:+.1f} pts success")
    if change["cost"] is not None:
        parts.append(f"{change['cost']:+.0%} cost")
    if change["speed"] is not None:
        parts.append(f"{change['speed']:.1f}x faster" if change["speed"] >= 1 else f"{1 / change['speed']:.1f}x slower")
    summary = ", ".join(parts)
    verdict: dict[str, Any] = {
        "model": b.model,
        "expected_change": change,
        "summary": summary,
        "gains": gains,
        "trade_offs": [f"worse {k}" for k in losses] + [f"{k}: within the noise" for k in within],
    }
    if qb is None:
        verdict.update(
            status="no_quality_data",
            reason=f"{b.model} has no quality signal on this route (no validator, judge or comparison): "
            "not recommended on cost or latency alone",
        )
    elif losses:
        verdict.update(status="keep", reason=f"{b.model} is worse on {', '.join(losses)}")
    elif not gains:
        verdict.update(
            status="not_enough_data", reason=f"{b.model} and {current} differ only within the 95 % intervals"
        )
    else:
        n = min(a.requests, b.requests)
        verdict.update(
            status="recommend",
            reason=f"{b.model} is better on {', '.join(gains)} outside the 95 % intervals, worse on nothing",
            confidence="high" if n >= 1000 and not within else "medium",
        )
    return verdict


async def recommendations(
    rt: Runtime,
    db: Database,
    store: ComparisonStore | None,
    *,
    route: str | None = None,
    days: float = 7.0,
    org_id: str | None = None,
    every_org: bool = False,
) -> list[dict[str, Any]]:
    """The recommendation of every configured route (or of ``route``) from the last ``days`` of
    usage (one organisation's, unless ``every_org``) and the latest comparisons."""
    names = [route] if route is not None else sorted(rt.routes)
    since = datetime.now(UTC) - timedelta(days=days)
    results: list[Mapping[str, Any]] = []
    if store is not None:
        for row in await store.list(org_id, every_org=every_org, limit=20):
            if row["status"] in ("done", "stopped"):
                full = await store.get(row["id"], org_id, every_org=every_org)
                if full and full.get("result"):
                    results.append(full["result"])
    out = []
    for name in names:
        r = rt.routes[name]
        if not r.pool:
            continue
        evidence = await route_evidence(db, name, since, org_id=None if every_org else org_id)
        allowed = [d.name for d in (*r.pool, *r.fallbacks)]
        out.append(
            recommend_route(
                name,
                r.pool[0].name,
                evidence,
                validates=bool(r.config.validators),
                comparisons=results,
                allowed=allowed,
            )
        )
    return out
