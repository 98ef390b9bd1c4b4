"""Admin events: config changes, health and breaker changes, alerts, local model lifecycle.

One :class:`EventBus` per gateway.  Publishing never blocks and never fails: each subscriber has
a bounded queue, and a subscriber too slow to keep up loses its oldest events (it is told how
many with a ``events.dropped`` event).  The last ``history`` events are kept so a client that
reconnects with ``Last-Event-ID`` gets what it missed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Event", "EventBus"]


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    kind: str
    data: dict[str, Any]
    ts: float = field(default_factory=time.time)
    #: the organisation the event belongs to (None: a gateway-wide event, master key only)
    org_id: str | None = None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "ts": self.ts, "org_id": self.org_id, "data": self.data}


class _Subscriber:
    __slots__ = ("closed", "dropped", "org_id", "queue", "wake")

    def __init__(self, org_id: str | None, size: int) -> None:
        self.org_id = org_id
        self.queue: deque[Event] = deque(maxlen=size)
        self.dropped = 0
        self.closed = False
        self.wake = asyncio.Event()


class EventBus:
    def __init__(self, *, history: int = 500, queue_size: int = 1000) -> None:
        self._ids = itertools.count(1)
        self._history: deque[Event] = deque(maxlen=history)
        self._subscribers: set[_Subscriber] = set()
        self._queue_size = queue_size

    def publish(self, kind: str, data: dict[str, Any], *, org_id: str | None = None) -> Event:
        event = Event(next(self._ids), kind, data, org_id=org_id)
        self._history.append(event)
        for sub in self._subscribers:
            if not _visible(event, sub.org_id):
                continue
            if len(sub.queue) == sub.queue.maxlen:
                sub.dropped += 1
            sub.queue.append(event)
            sub.wake.set()
        return event

    def close(self) -> None:
        """End every subscription (the server is shutting down: open streams must not hold it)."""
        for sub in self._subscribers:
            sub.closed = True
            sub.wake.set()

    def recent(self, *, after: int = 0, org_id: str | None = None, limit: int = 100) -> list[Event]:
        return [e for e in self._history if e.id > after and _visible(e, org_id)][-limit:]

    async def subscribe(
        self, *, org_id: str | None = None, after: int | None = None, heartbeat_s: float = 15.0
    ) -> AsyncIterator[Event | None]:
        """Events as they come (``None`` every ``heartbeat_s`` without one, for keep-alives).

        ``org_id``: only that organisation's events (an org admin); None: all (the master key)."""
        sub = _Subscriber(org_id, self._queue_size)
        if after is not None:
            sub.queue.extend(self.recent(after=after, org_id=org_id, limit=self._queue_size))
            if sub.queue:
                sub.wake.set()
        self._subscribers.add(sub)
        try:
            while True:
                try:
                    await asyncio.wait_for(sub.wake.wait(), heartbeat_s)
                except TimeoutError:
                    yield None
                    continue
                sub.wake.clear()
                if sub.closed:
                    return
                if sub.dropped:
                    n, sub.dropped = sub.dropped, 0
                    yield Event(0, "events.dropped", {"count": n})
                while sub.queue:
                    yield sub.queue.popleft()
        finally:
            self._subscribers.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)


def _visible(event: Event, org_id: str | None) -> bool:
    return org_id is None or event.org_id == org_id
