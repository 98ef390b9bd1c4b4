"""``GET /v1/status``: per provider and per model, what an operator needs to see (no secrets)."""

from __future__ import annotations

from typing import Any

from modelyard.routing.deployment import Deployment
from modelyard.routing.health import model_health
from modelyard.routing.ttft import first_token_limit
from modelyard.runtime import Runtime

__all__ = ["status_payload"]


def _model(dep: Deployment) -> dict[str, Any]:
    stats = dep.state.stats.snapshot()
    limiter = dep.state.limiter
    return {
        "provider": dep.provider.name,
        "upstream": dep.upstream,
        "state": model_health(dep),
        "breaker": dep.state.breaker.snapshot(),
        "in_flight": limiter.in_flight,
        "queue_length": limiter.queue_length,
        "latency_ms": stats.get("latency_ms"),
        "ttft_ms": stats.get("ttft_ms"),
        "ttft_reasoning_ms": stats.get("ttft_reasoning_ms"),
        "success_rate": stats.get("success_rate"),
        "requests": stats.get("requests"),
        "failures": stats.get("failures"),
        "last_error": stats.get("last_error"),
        "last_error_at": stats.get("last_error_at"),
        # quality (#17): answers rejected by validators or a judge since start, and judge scores
        "quality": {
            "rejected": stats.get("rejected"),
            "judged": stats.get("judged"),
            "judge_score_avg": stats.get("judge_score_avg"),
        },
        "limits": limiter.snapshot(),
        # the first-token timeout a stream gets now (routes may override: routing/ttft.py)
        "first_token_timeout": {
            "plain": first_token_limit(dep, reasoning=False).public(),
            "reasoning": first_token_limit(dep, reasoning=True).public(),
        },
    }


def status_payload(rt: Runtime, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    providers = {}
    for name, p in rt.providers.items():
        h = p.health_state
        providers[name] = {
            "kind": p.kind,
            "local": p.is_local,
            "state": h.state,
            "last_check_at": h.checked_at,
            "last_check_latency_ms": h.latency_ms,
            "last_check": h.detail,
            "consecutive_failures": h.consecutive_failures,
        }
    body: dict[str, Any] = {
        "config_version": rt.version,
        "providers": providers,
        "models": {name: _model(dep) for name, dep in rt.models.items()},
        "routes": {
            name: {
                "models": list(r.config.models),
                "fallbacks": list(r.config.fallbacks),
                "strategy": r.config.strategy,
            }
            for name, r in rt.routes.items()
        },
    }
    if extra:
        body.update(extra)
    return body
