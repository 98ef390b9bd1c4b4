"""A request's plan: the effective options (request over route defaults) and the ordered candidates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modelyard.routing.capability import Needs, keep_capable
from modelyard.routing.deployment import Deployment, Route
from modelyard.routing.options import RequestOptions

__all__ = ["Plan", "origin", "plan_for"]


def origin(dep: Deployment) -> str:
    """``local`` (runs on this machine/network), ``custom`` (tagged custom) or ``provider`` (a cloud API)."""
    if dep.is_local:
        return "local"
    if "custom" in dep.config.tags:
        return "custom"
    return "provider"


@dataclass(slots=True, frozen=True)
class Plan:
    route: Route
    candidates: list[Deployment]
    fallback: bool
    local_only: bool
    timeout_s: float | None
    max_attempts: int
    #: models left out by local_only (for the error message)
    excluded: tuple[str, ...] = ()


def plan_for(
    route: Route,
    opts: RequestOptions,
    *,
    stream: bool,
    peek: bool = False,
    needs: Needs | None = None,
    reasoning: bool = False,
    order: Sequence[Deployment] | None = None,
) -> Plan:
    """The candidates of a request, in order.  ``peek``: without changing the route's strategy
    state (``/v1/estimate`` must not move a round-robin rotation or spend random draws).
    ``needs``: the capabilities the request asks for (candidates without them are left out; 400
    when none has them).  ``order``: the pool's order decided elsewhere (an ``auto`` route's tier
    choice) instead of the strategy's."""
    cfg = route.config
    fallback = cfg.fallback if opts.fallback is None else opts.fallback
    local_only = cfg.local_only if opts.local_only is None else opts.local_only
    prefer = opts.prefer or cfg.prefer
    strategy = route.strategy
    rank = strategy.preview if peek else strategy.order
    ordered = list(order) if order is not None else rank(route.pool, stream=stream, reasoning=reasoning)
    if fallback:
        ordered += [d for d in route.fallbacks if d not in ordered]
    if cfg.local_first:
        ordered.sort(key=lambda d: 0 if d.is_local else 1)  # stable: keeps the strategy's order within each
    if prefer is not None:
        ordered.sort(key=lambda d: 0 if origin(d) == prefer else 1)
    excluded: tuple[str, ...] = ()
    if local_only:
        excluded = tuple(d.name for d in ordered if not d.is_local)
        ordered = [d for d in ordered if d.is_local]
    if needs:
        ordered = keep_capable(ordered, needs)
    if not fallback:
        ordered = ordered[:1]
    max_attempts = min(opts.max_attempts, cfg.max_attempts) if opts.max_attempts else cfg.max_attempts
    # a client's timeout only ever shortens the route's own deadline
    timeout_s = cfg.timeout_s
    if opts.timeout_s is not None:
        timeout_s = opts.timeout_s if timeout_s is None else min(opts.timeout_s, timeout_s)
    return Plan(
        route=route,
        candidates=ordered,
        fallback=fallback,
        local_only=local_only,
        timeout_s=timeout_s,
        max_attempts=max_attempts,
        excluded=excluded,
    )
