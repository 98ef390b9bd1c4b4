"""Live figures for one model: in-flight count, latency EWMAs, recent success rate, last error.

Latency and time-to-first-token averages are fed by successful requests only: failures are
either very fast (a refused connection) or very slow (a timeout), and both would mislead the
latency strategy.  Failing models are kept out of rotation by the circuit breaker instead.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

__all__ = ["ModelStats"]


#: first-token times kept per model and kind for the adaptive first-token timeout
FIRST_TOKEN_WINDOW = 200
#: the p95 of those is recomputed after this many more requests
P95_EVERY = 10


class ModelStats:
    """Passive health and live figures for one model (asyncio only: no locking)."""

    __slots__ = (
        "_alpha",
        "_first_tokens",
        "_first_tokens_reasoning",
        "_latency_ms",
        "_ok_in_window",
        "_outcomes",
        "_p95_cache",
        "_ttft_ms",
        "_ttft_reasoning_ms",
        "failures",
        "in_flight",
        "judge_sum",
        "judged",
        "last_error",
        "last_error_at",
        "rejected",
        "requests",
    )

    def __init__(self, alpha: float = 0.2, window: int = 100) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        if window < 1:
            raise ValueError("window must be at least 1")
        self._alpha = alpha
        self._outcomes: deque[bool] = deque(maxlen=window)
        self._ok_in_window = 0
        self._latency_ms: float | None = None
        self._ttft_ms: float | None = None
        self._ttft_reasoning_ms: float | None = None
        #: the last FIRST_TOKEN_WINDOW first-token times (ms), plain and reasoning apart, for the
        #: adaptive first-token timeout (routing.ttft)
        self._first_tokens: deque[float] = deque(maxlen=FIRST_TOKEN_WINDOW)
        self._first_tokens_reasoning: deque[float] = deque(maxlen=FIRST_TOKEN_WINDOW)
        #: reasoning? -> (samples seen when computed, p95): recomputed every P95_EVERY new samples
        self._p95_cache: dict[bool, tuple[int, float]] = {}
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        #: quality: answers an output validator (or a judge's low score) rejected; judge scores
        self.rejected = 0
        self.judged = 0
        self.judge_sum = 0.0

    def record_rejection(self) -> None:
        """One of this model's answers was rejected (validator, judge); a quality figure, not a health one."""
        self.rejected += 1

    def record_judge(self, score: float) -> None:
        self.judged += 1
        self.judge_sum += score

    def start(self) -> None:
        self.in_flight += 1

    def finish(self) -> None:
        if self.in_flight > 0:
            self.in_flight -= 1

    def record(
        self,
        *,
        ok: bool,
        latency_ms: float,
        ttft_ms: float | None = None,
        error: str | None = None,
        reasoning: bool = False,
    ) -> None:
        """Record one finished request.  The first-token time of a reasoning request (it asked for
        reasoning, or its answer began with it) is averaged apart from the others."""
        self.requests += 1
        outcomes = self._outcomes
        if len(outcomes) == outcomes.maxlen and outcomes[0]:
            self._ok_in_window -= 1
        outcomes.append(ok)
        if ok:
            self._ok_in_window += 1
            self._latency_ms = self._ewma(self._latency_ms, latency_ms)
            if ttft_ms is not None and reasoning:
                self._ttft_reasoning_ms = self._ewma(self._ttft_reasoning_ms, ttft_ms)
                self._first_tokens_reasoning.append(ttft_ms)
            elif ttft_ms is not None:
                self._ttft_ms = self._ewma(self._ttft_ms, ttft_ms)
                self._first_tokens.append(ttft_ms)
        else:
            self.failures += 1
            self.last_error = error or "unknown error"
            self.last_error_at = time.time()

    @property
    def latency_ms(self) -> float | None:
        return self._latency_ms

    @property
    def ttft_ms(self) -> float | None:
        """First-token time of requests without reasoning (EWMA)."""
        return self._ttft_ms

    @property
    def ttft_reasoning_ms(self) -> float | None:
        """First-token time of reasoning requests (EWMA): the first token is their first reasoning delta."""
        return self._ttft_reasoning_ms

    def first_token_p95(self, *, reasoning: bool) -> tuple[int, float | None]:
        """How many first-token times are kept, and their p95 (ms; None without any).  Sorting 200
        values costs ~20 us, so the p95 is recomputed every P95_EVERY new samples, not per stream."""
        values = self._first_tokens_reasoning if reasoning else self._first_tokens
        seen = self.requests
        cached = self._p95_cache.get(reasoning)
        if not values:
            return 0, None
        if cached is None or seen - cached[0] >= P95_EVERY or len(values) < FIRST_TOKEN_WINDOW // 10:
            s = sorted(values)
            k = (len(s) - 1) * 0.95
            lo = int(k)
            hi = min(lo + 1, len(s) - 1)
            cached = (seen, s[lo] + (s[hi] - s[lo]) * (k - lo))
            self._p95_cache[reasoning] = cached
        return len(values), cached[1]

    @property
    def success_rate(self) -> float:
        """Share of successes among the last ``window`` outcomes (1.0 when there are none)."""
        n = len(self._outcomes)
        return self._ok_in_window / n if n else 1.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "in_flight": self.in_flight,
            "requests": self.requests,
            "failures": self.failures,
            "success_rate": self.success_rate,
            "latency_ms": self._latency_ms,
            "ttft_ms": self._ttft_ms,
            "ttft_reasoning_ms": self._ttft_reasoning_ms,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "rejected": self.rejected,
            "judged": self.judged,
            "judge_score_avg": round(self.judge_sum / self.judged, 4) if self.judged else None,
        }

    def _ewma(self, current: float | None, sample: float) -> float:
        if current is None:
            return float(sample)
        return current + self._alpha * (sample - current)
