"""A/B and shadow traffic on a route (docs/compare.md): a canary share of the requests goes to a
candidate model first; a shadow share is mirrored to one in the background.

Assignment is sticky: a request's side is a hash of the route, the experiment and the request
option ``session`` (``X-Modelyard-Session``), else the body's ``user``, else the request id (so
anonymous requests are spread at random).  A candidate the original request could not use (a
key's allowed models, ``local_only``) is never used: the request then runs as if there were no
experiment.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from modelyard.config.schema import CanaryConfig, ShadowConfig
from modelyard.errors import ModelyardError
from modelyard.gateway.auth import Principal
from modelyard.routing.deployment import Deployment, Route
from modelyard.routing.options import RequestOptions
from modelyard.runtime import Runtime
from modelyard.types import ChatRequest

__all__ = ["ShadowRunner", "canary_order", "shadow_request", "share"]

log = logging.getLogger("modelyard.experiments")


def share(route: str, experiment: str, key: str) -> float:
    """Where ``key`` falls in 0..100 for one route's experiment (stable across processes)."""
    digest = hashlib.sha256(f"{route}\0{experiment}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def _key(req: ChatRequest, opts: RequestOptions, request_id: str) -> str:
    return opts.session or req.user or request_id


def _usable(rt: Runtime, model: str, principal: Principal, opts: RequestOptions, route: Route) -> Deployment | None:
    """The candidate as this request may use it, or None (not allowed, not local under local_only)."""
    key = principal.key
    if key is not None and key.allowed_models is not None and model not in key.allowed_models:
        return None
    try:
        dep = rt.model_for(model, principal.org_id)
    except ModelyardError:
        return None
    local_only = route.config.local_only if opts.local_only is None else opts.local_only
    if local_only and not dep.is_local:
        return None
    return dep


def canary_order(
    rt: Runtime, route: Route, cfg: CanaryConfig, req: ChatRequest, opts: RequestOptions, principal: Principal, rid: str
) -> list[Deployment] | None:
    """The candidates with the canary first, for a request in the canary's share (else None)."""
    if share(route.name, "canary", _key(req, opts, rid)) >= cfg.percent:
        return None
    dep = _usable(rt, cfg.model, principal, opts, route)
    if dep is None:
        return None
    return [dep, *(d for d in route.pool if d.name != dep.name)]


@dataclass(slots=True)
class ShadowRunner:
    """Runs a gateway's shadow calls in the background, at most ``max_concurrency`` per route at
    once (a mirror beyond it is skipped and counted), and waits for them on shutdown."""

    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    in_flight: dict[str, int] = field(default_factory=dict)
    #: route -> (mirrored, skipped because too many were in flight, failed)
    counts: dict[str, list[int]] = field(default_factory=dict)

    def wanted(
        self,
        rt: Runtime,
        route: Route,
        cfg: ShadowConfig,
        req: ChatRequest,
        opts: RequestOptions,
        principal: Principal,
        rid: str,
    ) -> bool:
        if share(route.name, "shadow", _key(req, opts, rid)) >= cfg.percent:
            return False
        return _usable(rt, cfg.model, principal, opts, route) is not None

    def mirror(self, route: str, cfg: ShadowConfig, call: Callable[[], Awaitable[Any]]) -> bool:
        counts = self.counts.setdefault(route, [0, 0, 0])
        if self.in_flight.get(route, 0) >= cfg.max_concurrency:
            counts[1] += 1
            return False
        counts[0] += 1
        self.in_flight[route] = self.in_flight.get(route, 0) + 1

        async def run() -> None:
            try:
                await call()
            except ModelyardError as exc:  # recorded as a failed shadow request by the pipeline
                counts[2] += 1
                log.debug("shadow call on %s failed: %s", route, exc.message)
            except Exception:
                counts[2] += 1
                log.exception("shadow call on %s failed", route)
            finally:
                self.in_flight[route] -= 1

        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return True

    def status(self) -> dict[str, dict[str, int]]:
        return {
            r: {"mirrored": c[0], "skipped_busy": c[1], "failed": c[2], "in_flight": self.in_flight.get(r, 0)}
            for r, c in self.counts.items()
        }

    async def aclose(self, timeout_s: float = 10.0) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout_s)
        for task in list(self.tasks):
            task.cancel()


def shadow_request(req: ChatRequest) -> ChatRequest:
    """The mirrored request: not streamed (nobody reads it as it comes)."""
    return replace(req, stream=False, include_usage=False)
