"""What a failed attempt means: retry the same model, fail over, or stop.

Retryable: connection errors, resets, 408/429/5xx, malformed upstream responses.  Never retried on
the same model: 4xx request errors, content-policy refusals, and timeouts (a silent upstream is
not asked again).  ``Retry-After`` is honoured when it fits in the deadline, otherwise the router
fails over at once.  Backoff between same-model retries is exponential with jitter.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelyard.errors import (
    ContextLengthExceededError,
    ModelyardError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
    UpstreamValidationError,
)

if TYPE_CHECKING:
    from modelyard.routing.deployment import Deployment, Route

__all__ = ["Decision", "RetryPolicy"]


@dataclass(slots=True)
class Decision:
    retry_same: bool = False
    wait_s: float = 0.0
    #: keep only the remaining candidates for which this returns True
    keep: Callable[[Deployment], bool] | None = None
    #: stop now and return this error to the client
    final: bool = False
    final_error: ModelyardError | None = None
    #: whether the failure says something about the model's health (breaker, success rate)
    counts_against_model: bool = True


@dataclass(slots=True)
class RetryPolicy:
    backoff_base_s: float = 0.1
    backoff_max_s: float = 5.0
    #: longest Retry-After worth waiting for when the request has no deadline
    max_retry_after_s: float = 30.0
    rng: random.Random | None = None

    def backoff(self, tries: int) -> float:
        """Exponential backoff with jitter: base * 2^(tries-1), scaled by a random factor in [0.5, 1]."""
        draw = self.rng.random() if self.rng is not None else random.random()
        ceiling = min(self.backoff_max_s, self.backoff_base_s * (2 ** max(0, tries - 1)))
        return float(ceiling * (0.5 + draw / 2))

    def decide(
        self, exc: ModelyardError, dep: Deployment, tries: int, route: Route, deadline: float | None
    ) -> Decision:
        if isinstance(exc, UpstreamStatusError):
            if exc.code == "content_policy_violation":
                return Decision(final=True, final_error=exc, counts_against_model=False)
            if exc.code == "context_length_exceeded":
                window = dep.config.context_window
                return Decision(keep=lambda d: _larger(d, window), counts_against_model=False)
        if not isinstance(exc, UpstreamError) or isinstance(exc, UpstreamValidationError):
            return Decision(counts_against_model=False)  # a bad answer is recorded, not a health signal
        if isinstance(exc, UpstreamTimeoutError):
            return Decision()  # fail over; a silent upstream is not asked again
        if not exc.retryable:
            # 400/401/403/404/422: the same model will answer the same; another model may not.
            request_problem = isinstance(exc, UpstreamStatusError) and exc.upstream_status in (400, 413, 422)
            return Decision(counts_against_model=not request_problem)
        if tries > route.retries:
            return Decision()
        remaining = None if deadline is None else deadline - time.monotonic()
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            limit = self.max_retry_after_s if remaining is None else remaining
            if retry_after >= limit:
                return Decision()  # cannot wait that long: fail over at once
            return Decision(retry_same=True, wait_s=retry_after)
        wait = self.backoff(tries)
        if remaining is not None and wait >= remaining:
            return Decision()
        return Decision(retry_same=True, wait_s=wait)

    def final_error(self, last: ModelyardError | None, attempts: Sequence[Any]) -> ModelyardError | None:
        """The error to return instead of 'all attempts failed', when one error says it better."""
        if isinstance(last, UpstreamStatusError):
            if last.code == "context_length_exceeded":
                return ContextLengthExceededError(
                    f"the request does not fit the context window of any model in the route. {last.message}",
                    param="messages",
                )
            if attempts and all(a.status in (400, 413, 422) for a in attempts):
                return last  # the request itself is wrong: a clean 4xx with the upstream's reason
        return None


def _larger(candidate: Deployment, window: int | None) -> bool:
    other = candidate.config.context_window
    if other is None:
        return window is None
    return window is None or other > window
