"""The first-token timeout of a streamed attempt: fixed where configured, else adaptive.

A stream is held back until its first token (contracts "First token": the first content,
reasoning or tool-call delta); a model that does not produce it in time is cut and the request
fails over before the client saw anything.  The limit, in order:

1. ``routes.<name>.ttft_timeout_s`` (the route's override);
2. ``models.<name>.ttft_timeout_s`` (the model's);
3. adaptive, once the model has ``MIN_SAMPLES`` (20) first-token times of that kind: 3 x the p95
   of its last 200, clamped to [2 s, 30 s]; reasoning requests are their own series (a model
   that thinks for a minute is not cut at a chat model's pace);
4. until then, 10 s for a cloud model; for a local one, its load timeout + 10 s (and so too
   whenever a local model is not loaded: its first token waits for the load).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelyard.routing.deployment import Deployment

__all__ = ["CEILING_S", "FLOOR_S", "MIN_SAMPLES", "FirstTokenLimit", "first_token_limit"]

MIN_SAMPLES = 20
FLOOR_S = 2.0
CEILING_S = 30.0
FACTOR = 3.0
CLOUD_DEFAULT_S = 10.0
LOCAL_EXTRA_S = 10.0
#: a local model's load timeout when none is configured (its first token may wait for a load)
LOCAL_LOAD_DEFAULT_S = 120.0


@dataclass(slots=True, frozen=True)
class FirstTokenLimit:
    seconds: float
    #: route, model, adaptive, cloud default, local default
    source: str
    samples: int = 0
    p95_ms: float | None = None

    def public(self) -> dict[str, object]:
        return {
            "seconds": round(self.seconds, 3),
            "source": self.source,
            "samples": self.samples,
            "p95_ms": self.p95_ms,
        }


def _local_default(dep: Deployment) -> float:
    load = dep.config.load_timeout_s
    lifecycle = dep.provider.lifecycle
    if load is None and lifecycle is not None:
        load = lifecycle.settings(dep.upstream).load_timeout_s
    return (load if load is not None else LOCAL_LOAD_DEFAULT_S) + LOCAL_EXTRA_S


def first_token_limit(dep: Deployment, *, reasoning: bool, route_override: float | None = None) -> FirstTokenLimit:
    """The first-token timeout of a streamed attempt on ``dep`` (see the module docstring)."""
    if route_override is not None:
        return FirstTokenLimit(route_override, "route")
    if dep.ttft_timeout_s is not None:
        return FirstTokenLimit(dep.ttft_timeout_s, "model")
    lifecycle = dep.provider.lifecycle
    if dep.provider.is_local and lifecycle is not None and not lifecycle.ready(dep.upstream):
        return FirstTokenLimit(_local_default(dep), "local default (not loaded)")
    n, p95 = dep.state.stats.first_token_p95(reasoning=reasoning)
    if n >= MIN_SAMPLES and p95 is not None:
        seconds = min(CEILING_S, max(FLOOR_S, FACTOR * p95 / 1000))
        return FirstTokenLimit(seconds, "adaptive", n, round(p95, 2))
    if dep.is_local:
        return FirstTokenLimit(_local_default(dep), "local default", n)
    return FirstTokenLimit(CLOUD_DEFAULT_S, "cloud default", n)
