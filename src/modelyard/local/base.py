"""The vocabulary of local-model lifecycles: states, events, the backend interface, subscriptions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from modelyard.errors import ModelBusyError
from modelyard.local.settings import ModelSettings

__all__ = [
    "STATES",
    "Event",
    "Listener",
    "LoadResult",
    "LocalBackend",
    "ModelBusyError",
    "ProgressFn",
    "State",
    "Subscription",
]

State = Literal["not_loaded", "loading", "ready", "in_use", "error"]
STATES: tuple[State, ...] = ("not_loaded", "loading", "ready", "in_use", "error")

Event = dict[str, Any]
Listener = Callable[[Event], None]
ProgressFn = Callable[[dict[str, Any]], None]


@dataclass(slots=True)
class LoadResult:
    #: memory the loaded model holds, when the backend knows it
    memory_bytes: int | None = None


class LocalBackend(Protocol):
    """What a provider gives its manager: how to load, unload and list its models."""

    #: True when loaded models live in this process (llama.cpp): closing the backend unloads them
    in_process: bool

    def canonical(self, name: str) -> str:
        """The one spelling of a model name (``llama3.2`` -> ``llama3.2:latest`` for Ollama)."""
        ...

    async def load(self, name: str, settings: ModelSettings, progress: ProgressFn) -> LoadResult:
        """Load ``name``; raise a ModelyardError (UpstreamStatusError 404/503 ...) when it cannot."""
        ...

    async def unload(self, name: str) -> None: ...

    async def loaded(self) -> dict[str, int] | None:
        """What the server holds now (name -> bytes), or None when the manager itself is the truth."""
        ...

    async def estimate_memory(self, name: str) -> int | None:
        """Memory ``name`` will need once loaded (for the memory budget), when known."""
        ...

    async def close(self) -> None:
        """Free what the backend holds in this process."""
        ...


@dataclass(slots=True, eq=False)
class Subscription:
    """An async iterator of a manager's events; ends when the manager closes or on :meth:`close`."""

    maxsize: int = 1024
    #: events dropped because the subscriber did not keep up
    dropped: int = 0
    _queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    _remove: Callable[[], None] | None = None
    _closed: bool = False

    def push(self, event: Event) -> None:
        if self._closed:
            return
        if self._queue.qsize() >= self.maxsize:
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)
        if event.get("type") == "closed":
            self._queue.put_nowait(None)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self._closed:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            self.close()
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._remove is not None:
                self._remove()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
