"""Per-model admission control: a concurrency cap with a bounded FIFO queue, plus rpm/tpm limits.

* Concurrency: at most ``max_concurrency`` slots are held at once.  Callers that cannot get one
  wait in a FIFO queue of at most ``max_queue`` waiters; nobody barges past a waiter
  (:meth:`ModelLimiter.try_acquire` fails while anyone is queued).
* Rates: a sliding 60-second window of granted requests and their tokens.  ``est_tokens`` is
  reserved against ``tpm`` when the slot is granted; :meth:`Slot.release` replaces the estimate
  with the actual count (if the request is still inside the window).  A slot counts as one
  request against ``rpm`` whether or not it was used.
* ``None`` means unlimited for that dimension.  With no limits at all, acquiring is one counter
  increment and one small object.

Rate windows use the injected clock; the queue timeout uses the event loop's clock.  While the
head of the queue waits for the rate window, the limiter re-checks at least every
``_rate_poll_s`` seconds, so an injected clock that is not the loop's is still honoured.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from modelyard.errors import RateLimitError

__all__ = ["ModelLimiter", "Slot"]

_WINDOW_S = 60.0


class _Entry:
    """One granted request in the rate window."""

    __slots__ = ("alive", "requests", "t", "tokens")

    def __init__(self, t: float, tokens: int) -> None:
        self.t = t
        self.requests = 1
        self.tokens = tokens
        self.alive = True


class _Waiter:
    __slots__ = ("deadline", "fut", "tokens")

    def __init__(self, fut: asyncio.Future[Slot], tokens: int, deadline: float) -> None:
        self.fut = fut
        self.tokens = tokens
        self.deadline = deadline


class Slot:
    """A granted admission.  Release it exactly once; further releases are no-ops."""

    __slots__ = ("_entry", "_limiter", "_released", "_started", "on_release")

    def __init__(self, limiter: ModelLimiter, entry: _Entry | None, started: float | None) -> None:
        self._limiter = limiter
        self._entry = entry
        self._started = started
        self._released = False
        #: also called on release with the actual tokens (the shared admission that came with it)
        self.on_release: Callable[[int | None], None] | None = None

    @property
    def released(self) -> bool:
        return self._released

    def release(self, actual_tokens: int | None = None) -> None:
        """Free the concurrency slot; with ``actual_tokens``, correct the tpm reservation."""
        if self._released:
            return
        self._released = True
        self._limiter._release(self, actual_tokens, undo=False)
        if self.on_release is not None:
            self.on_release(actual_tokens)

    def _undo(self) -> None:
        """Give the slot back as if it had never been granted (the waiter was cancelled)."""
        if not self._released:
            self._released = True
            self._limiter._release(self, 0, undo=True)
            if self.on_release is not None:
                self.on_release(0)


class ModelLimiter:
    """Concurrency, queue and rate limits for one model."""

    _rate_poll_s: float = 1.0

    def __init__(
        self,
        name: str,
        *,
        max_concurrency: int | None,
        max_queue: int,
        queue_timeout_s: float,
        rpm: int | None,
        tpm: int | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1 (or None)")
        if max_queue < 0:
            raise ValueError("max_queue must not be negative")
        if rpm is not None and rpm < 1:
            raise ValueError("rpm must be at least 1 (or None)")
        if tpm is not None and tpm < 1:
            raise ValueError("tpm must be at least 1 (or None)")
        self.name = name
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.rpm = rpm
        self.tpm = tpm
        self._clock = clock
        self._rated = rpm is not None or tpm is not None
        self._unlimited = max_concurrency is None and not self._rated
        self._in_flight = 0
        self._waiters: deque[_Waiter] = deque()
        self._entries: deque[_Entry] = deque()
        self._win_requests = 0
        self._win_tokens = 0
        self._timer: asyncio.TimerHandle | None = None
        self._hold_s: float | None = None  # EWMA of how long a slot is held

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def queue_length(self) -> int:
        return len(self._waiters)

    # -- acquiring ------------------------------------------------------------------------

    def has_capacity(self, est_tokens: int = 0) -> bool:
        """Would :meth:`try_acquire` succeed now?  (False while others are queued.)"""
        if self._unlimited:
            return True
        if self._waiters or (self.max_concurrency is not None and self._in_flight >= self.max_concurrency):
            return False
        return self._rate_delay(est_tokens) == 0.0

    def try_acquire(self, est_tokens: int = 0) -> Slot | None:
        """A slot now, or None (no waiting)."""
        if self._unlimited:
            self._in_flight += 1
            return Slot(self, None, None)
        if not self.has_capacity(est_tokens):
            return None
        return self._grant(est_tokens)

    async def acquire(self, est_tokens: int = 0, *, timeout: float | None = None) -> Slot:
        """A slot, waiting in the FIFO queue for at most ``min(timeout, queue_timeout_s)`` seconds.

        Raises :class:`~modelyard.errors.RateLimitError` when the queue is full, the wait times
        out, or the rate limits cannot be met in time.
        """
        slot = self.try_acquire(est_tokens)
        if slot is not None:
            return slot
        if self.tpm is not None and max(est_tokens, 1) > self.tpm:
            raise RateLimitError(
                f"model {self.name!r}: the request needs about {est_tokens} tokens, "
                f"more than the tpm limit ({self.tpm})"
            )
        budget = self.queue_timeout_s if timeout is None else min(timeout, self.queue_timeout_s)
        if len(self._waiters) >= self.max_queue:
            raise RateLimitError(
                f"model {self.name!r}: queue full ({len(self._waiters)} waiting, max_queue={self.max_queue}; "
                f"blocked by {self._blocker(est_tokens)})",
                retry_after=self.retry_after(),
            )
        if budget <= 0:
            raise self._timeout_error(budget, est_tokens)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), est_tokens, loop.time() + budget)
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            self._wake()  # starts the rate timer, or fails the waiter early if the window cannot open in time
        fut = waiter.fut
        try:
            async with asyncio.timeout(budget):
                return await fut
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                return fut.result()  # granted at the last moment (or raises the waiter's own error)
            self._abandon(waiter)
            raise self._timeout_error(budget, est_tokens) from None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                if fut.exception() is None:
                    fut.result()._undo()
            else:
                self._abandon(waiter)
            raise

    def retry_after(self) -> float:
        """Seconds until capacity is likely to free up (0.0 when there is capacity now)."""
        if self._unlimited:
            return 0.0
        delay = 0.0
        if self._rated:
            rate = self._rate_delay(0)
            delay = rate if math.isfinite(rate) else _WINDOW_S
        cap = self.max_concurrency
        if cap is not None and (self._in_flight >= cap or self._waiters):
            hold = self._hold_s if self._hold_s is not None else 1.0
            delay = max(delay, hold * (len(self._waiters) + 1) / cap)
        return delay

    def snapshot(self) -> dict[str, Any]:
        if self._rated:
            self._prune(self._clock())
        return {
            "name": self.name,
            "in_flight": self._in_flight,
            "queue_length": len(self._waiters),
            "max_concurrency": self.max_concurrency,
            "max_queue": self.max_queue,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "rpm_used": self._win_requests if self.rpm is not None else None,
            "tpm_used": self._win_tokens if self.tpm is not None else None,
            "retry_after_s": self.retry_after(),
        }

    # -- internals ------------------------------------------------------------------------

    def _grant(self, est_tokens: int) -> Slot:
        self._in_flight += 1
        if not self._rated:
            return Slot(self, None, self._clock())
        now = self._clock()
        entry = _Entry(now, max(est_tokens, 0) if self.tpm is not None else 0)
        self._entries.append(entry)
        self._win_requests += 1
        self._win_tokens += entry.tokens
        return Slot(self, entry, now)

    def _release(self, slot: Slot, actual_tokens: int | None, *, undo: bool) -> None:
        self._in_flight -= 1
        if slot._started is not None and not undo:
            held = max(0.0, self._clock() - slot._started)
            self._hold_s = held if self._hold_s is None else 0.8 * self._hold_s + 0.2 * held
        entry = slot._entry
        if entry is not None:
            self._prune(self._clock())
            if entry.alive:
                if undo:
                    self._win_requests -= entry.requests
                    entry.requests = 0
                if actual_tokens is not None:
                    tokens = max(actual_tokens, 0)
                    self._win_tokens += tokens - entry.tokens
                    entry.tokens = tokens
        if self._waiters:
            self._wake()

    def _abandon(self, waiter: _Waiter) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass
        self._wake()

    def _wake(self) -> None:
        """Grant slots to the head of the queue while it can be served; arm a timer for rate waits."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiters = self._waiters
        while waiters:
            head = waiters[0]
            if head.fut.done():  # defensive: a waiter that is already settled
                waiters.popleft()
                continue
            if self.max_concurrency is not None and self._in_flight >= self.max_concurrency:
                return  # the next release wakes us
            delay = self._rate_delay(head.tokens)
            if delay > 0.0:
                loop = head.fut.get_loop()
                if delay > head.deadline - loop.time():
                    waiters.popleft()
                    limit = self._rate_blocker()
                    head.fut.set_exception(
                        RateLimitError(
                            f"model {self.name!r}: {limit} limit reached; no capacity within the queue timeout",
                            retry_after=delay if math.isfinite(delay) else None,
                        )
                    )
                    continue
                self._timer = loop.call_later(min(delay, self._rate_poll_s), self._wake)
                return
            waiters.popleft()
            head.fut.set_result(self._grant(head.tokens))

    def _prune(self, now: float) -> None:
        horizon = now - _WINDOW_S
        entries = self._entries
        while entries and entries[0].t <= horizon:
            entry = entries.popleft()
            entry.alive = False
            self._win_requests -= entry.requests
            self._win_tokens -= entry.tokens

    def _rate_delay(self, est_tokens: int) -> float:
        """Seconds until the rate window admits one more request of ``est_tokens`` (inf: never)."""
        if not self._rated:
            return 0.0
        now = self._clock()
        self._prune(now)
        delay = 0.0
        if self.rpm is not None and self._win_requests >= self.rpm:
            delay = self._freed_after(now, self._win_requests + 1 - self.rpm, tokens=False)
        if self.tpm is not None:
            need = max(est_tokens, 1)
            if need > self.tpm:
                return math.inf
            if self._win_tokens + need > self.tpm:
                delay = max(delay, self._freed_after(now, self._win_tokens + need - self.tpm, tokens=True))
        return delay

    def _freed_after(self, now: float, excess: int, *, tokens: bool) -> float:
        freed = 0
        for entry in self._entries:
            freed += entry.tokens if tokens else entry.requests
            if freed >= excess:
                return max(entry.t + _WINDOW_S - now, 1e-3)
        return _WINDOW_S

    def _rate_blocker(self) -> str:
        self._prune(self._clock())
        if self.rpm is not None and self._win_requests >= self.rpm:
            return f"rpm ({self.rpm})"
        return f"tpm ({self.tpm})"

    def _blocker(self, est_tokens: int) -> str:
        if self.max_concurrency is not None and self._in_flight >= self.max_concurrency:
            return f"max_concurrency ({self.max_concurrency})"
        if self._rated and self._rate_delay(est_tokens) > 0.0:
            return self._rate_blocker()
        return "waiters ahead"

    def _timeout_error(self, budget: float, est_tokens: int) -> RateLimitError:
        return RateLimitError(
            f"model {self.name!r}: no capacity within {max(budget, 0.0):.3g}s "
            f"(blocked by {self._blocker(est_tokens)}; {len(self._waiters)} waiting)",
            retry_after=self.retry_after(),
        )
