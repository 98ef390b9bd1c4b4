"""A per-model circuit breaker: stop sending traffic to a model that keeps failing.

States::

    closed ──(N consecutive failures, or error rate over the window)──▶ open
    open ──(cooldown elapsed; observed when ``state`` is read)──▶ half_open
    half_open ──(probe succeeds)──▶ closed        half_open ──(probe fails)──▶ open

In ``half_open`` exactly one probe request at a time is let through (:meth:`CircuitBreaker.allow`).
Every ``allow()`` that returned True in ``half_open`` must be followed by exactly one of
:meth:`~CircuitBreaker.record_success`, :meth:`~CircuitBreaker.record_failure` or
:meth:`~CircuitBreaker.release_probe`, or the model stays out of rotation.

Outcomes reported while the breaker is ``open`` (requests that started before it opened) are
ignored: they neither close it nor extend the cooldown.  In ``half_open`` any reported outcome is
taken as the verdict.  The error-rate window is kept in 60 buckets of ``window_s / 60`` seconds,
so memory stays constant whatever the request rate.  Time comes only from the injected clock.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["BreakerSettings", "BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half_open"]

_BUCKETS = 60


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failure_threshold: int = 5
    """Consecutive failures that open the breaker."""
    error_rate: float = 0.5
    """... or this failure ratio over the window ..."""
    window_s: float = 60.0
    min_requests: int = 20
    """... once the window holds at least this many outcomes."""
    cooldown_s: float = 15.0
    """open -> half_open after this many seconds."""

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if not 0.0 < self.error_rate <= 1.0:
            raise ValueError("error_rate must be in (0, 1]")
        if not self.window_s > 0:
            raise ValueError("window_s must be positive")
        if self.min_requests < 1:
            raise ValueError("min_requests must be at least 1")
        if not self.cooldown_s >= 0:
            raise ValueError("cooldown_s must not be negative")


class CircuitBreaker:
    """Consecutive-failure and error-rate circuit breaker with a single half-open probe."""

    __slots__ = (
        "_bucket_s",
        "_buckets",
        "_clock",
        "_consecutive",
        "_opened_at",
        "_probe_in_flight",
        "_state",
        "_win_failures",
        "_win_total",
        "on_transition",
        "settings",
    )

    def __init__(
        self, settings: BreakerSettings = BreakerSettings(), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._state: BreakerState = "closed"
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False
        self._bucket_s = settings.window_s / _BUCKETS
        # each bucket: [bucket index, outcomes, failures]
        self._buckets: deque[list[int]] = deque()
        self._win_total = 0
        self._win_failures = 0
        #: called with the new state when a recorded outcome opens or closes the breaker (not when
        #: another replica's news does: see force_open/force_close)
        self.on_transition: Callable[[BreakerState], None] | None = None

    # -- state ----------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state; reading it moves ``open`` to ``half_open`` once the cooldown is over."""
        opened_at = self._opened_at
        if self._state == "open" and opened_at is not None and self._clock() - opened_at >= self.settings.cooldown_s:
            self._state = "half_open"
            self._probe_in_flight = False
        return self._state

    def allow(self) -> bool:
        """May a request be sent now?  In ``half_open`` this admits (and marks) the single probe."""
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    def record_success(self) -> None:
        if self._state == "half_open":
            self._close()
        elif self._state == "closed":
            self._consecutive = 0
            self._add_outcome(ok=True)

    def record_failure(self) -> None:
        if self._state == "half_open":
            self._consecutive += 1
            self._open()
        elif self._state == "closed":
            self._consecutive += 1
            self._add_outcome(ok=False)
            if self._consecutive >= self.settings.failure_threshold or self._rate_tripped():
                self._open()

    def retry_after(self) -> float | None:
        """Seconds until an open breaker lets a probe through (None when it is not open)."""
        if self.state != "open" or self._opened_at is None:
            return None
        return max(0.0, self.settings.cooldown_s - (self._clock() - self._opened_at))

    def release_probe(self) -> None:
        """The probe ended without a verdict: let the next caller probe instead."""
        if self._state == "half_open":
            self._probe_in_flight = False

    def snapshot(self) -> dict[str, Any]:
        state = self.state
        now = self._clock()
        self._prune(now)
        opened_for = None if self._opened_at is None or state == "closed" else max(0.0, now - self._opened_at)
        remaining = 0.0
        if state == "open" and self._opened_at is not None:
            remaining = max(0.0, self._opened_at + self.settings.cooldown_s - now)
        return {
            "state": state,
            "consecutive_failures": self._consecutive,
            "window_requests": self._win_total,
            "window_failures": self._win_failures,
            "error_rate": self._win_failures / self._win_total if self._win_total else None,
            "opened_for_s": opened_for,
            "cooldown_remaining_s": remaining,
            "probe_in_flight": self._probe_in_flight,
        }

    # -- internals ------------------------------------------------------------------------

    def force_open(self, remaining_s: float) -> None:
        """Open because another replica's breaker opened: closed or half-open here too, for the
        ``remaining_s`` of its cooldown (no transition is reported)."""
        opened_at = self._clock() - max(0.0, self.settings.cooldown_s - remaining_s)
        if self.state == "open" and self._opened_at is not None and self._opened_at >= opened_at:
            return  # open here already, for at least as long
        self._state = "open"
        self._opened_at = opened_at
        self._probe_in_flight = False

    def force_close(self) -> None:
        """Close because another replica's probe succeeded (no transition is reported)."""
        if self._state != "closed":
            self._reset()

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        self._probe_in_flight = False
        if self.on_transition is not None:
            self.on_transition("open")

    def _close(self) -> None:
        self._reset()
        if self.on_transition is not None:
            self.on_transition("closed")

    def _reset(self) -> None:
        self._state = "closed"
        self._opened_at = None
        self._probe_in_flight = False
        self._consecutive = 0
        self._buckets.clear()
        self._win_total = 0
        self._win_failures = 0

    def _rate_tripped(self) -> bool:
        s = self.settings
        return self._win_total >= s.min_requests and self._win_failures >= s.error_rate * self._win_total

    def _add_outcome(self, *, ok: bool) -> None:
        now = self._clock()
        self._prune(now)
        index = int(now // self._bucket_s)
        if self._buckets and self._buckets[-1][0] == index:
            bucket = self._buckets[-1]
        else:
            bucket = [index, 0, 0]
            self._buckets.append(bucket)
        bucket[1] += 1
        self._win_total += 1
        if not ok:
            bucket[2] += 1
            self._win_failures += 1

    def _prune(self, now: float) -> None:
        oldest = int(now // self._bucket_s) - _BUCKETS
        buckets = self._buckets
        while buckets and buckets[0][0] <= oldest:
            _, total, failures = buckets.popleft()
            self._win_total -= total
            self._win_failures -= failures
