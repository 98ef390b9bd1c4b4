"""The lifecycle of one provider's local models: load on first use, keep loaded, unload when idle.

States::

    not_loaded ──> loading ──> ready <──> in_use
        ^             │          │
        │             v          │ idle for keep_alive, evicted, or unloaded on request
        │           error        v
        └────────────────── not_loaded

A request calls :meth:`LocalModelManager.use`: it waits for the model (every request that
arrives during a load shares that one load), marks it ``in_use`` while it runs, and leaves it
``ready`` afterwards.  A timer task unloads a model that has been idle for its ``keep_alive``
(``0``: after each use; ``inf``: never), and, for backends that know what is loaded (Ollama's
``/api/ps``), reconciles the states with the server's now and then.  ``max_loaded`` and the
memory budget evict the least recently used *idle* model before a load; a model in use or with
requests waiting for it is never evicted.

Every state change is published to listeners and subscribers as an event dict.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from modelyard.errors import ModelyardError, ServiceUnavailableError, UpstreamStatusError, UpstreamTimeoutError
from modelyard.local.base import (
    Event,
    Listener,
    LocalBackend,
    ModelBusyError,
    State,
    Subscription,
)
from modelyard.local.settings import ModelSettings

__all__ = ["LocalModelManager"]

log = logging.getLogger("modelyard.local")

#: models a manager remembers; beyond it, unloaded models that no config names are forgotten
_MAX_MODELS = 256


@dataclass(slots=True, eq=False)
class _Entry:
    name: str
    state: State = "not_loaded"
    #: requests using the model now / waiting for it to load
    users: int = 0
    waiters: int = 0
    load_time_s: float | None = None
    memory_bytes: int | None = None
    #: wall-clock time of the end of the last use
    last_used: float | None = None
    #: monotonic time since which the model has been idle (the keep_alive clock)
    idle_since: float = 0.0
    last_error: str | None = None
    progress: dict[str, Any] | None = None
    loading: asyncio.Task[None] | None = None
    unloading: asyncio.Task[None] | None = None
    load_started: float | None = None

    @property
    def resident(self) -> bool:
        """Loaded, or on its way to being loaded (counts against max_loaded and the budget)."""
        return self.unloading is None and (self.state in ("ready", "in_use") or self.loading is not None)

    @property
    def idle(self) -> bool:
        return (
            self.state == "ready"
            and self.users == 0
            and self.waiters == 0
            and self.loading is None
            and self.unloading is None
        )


class LocalModelManager:
    """Loads, keeps and unloads one provider's local models. Owned by the provider instance."""

    def __init__(
        self,
        provider: str,
        backend: LocalBackend,
        *,
        defaults: ModelSettings | None = None,
        preload: Iterable[str] = (),
        max_loaded: int | None = None,
        memory_budget_bytes: int | None = None,
        reconcile_interval_s: float | None = 10.0,
    ) -> None:
        self.provider = provider
        self.backend = backend
        self.defaults = defaults or ModelSettings()
        self.max_loaded = max_loaded
        self.memory_budget_bytes = memory_budget_bytes
        self.reconcile_interval_s = reconcile_interval_s
        self._preload = [backend.canonical(n) for n in preload]
        self._settings: dict[str, ModelSettings] = {}
        self._models: dict[str, _Entry] = {}
        self._listeners: set[Listener] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._closed = False
        self._last_reconcile = -math.inf
        for name in self._preload:
            self._entry(name)

    # -- configuration -------------------------------------------------------------------

    def configure(self, models: Mapping[str, ModelSettings]) -> None:
        """Set the per-model settings (from the model configs); preloads newly flagged models."""
        old = self._settings
        self._settings = {self.backend.canonical(name): s for name, s in models.items()}
        for name, settings in self._settings.items():
            self._entry(name)
            if settings.preload and not (old.get(name) or self.defaults).preload and self.started:
                self._spawn(self._preload_one(name))
        self._wake_timer()

    def settings(self, name: str) -> ModelSettings:
        return self._settings.get(self.backend.canonical(name), self.defaults)

    def ready(self, name: str) -> bool:
        """Whether ``name`` is loaded (its next first token will not wait for a load)."""
        entry = self._models.get(self.backend.canonical(name))
        return entry is not None and entry.unloading is None and entry.state in ("ready", "in_use")

    def configured(self, name: str) -> bool:
        """Whether ``name`` comes from the config (a configured model, or the provider's preload list)."""
        key = self.backend.canonical(name)
        return key in self._settings or key in self._preload

    # -- start and stop ------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._timer is not None and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    async def start(self) -> None:
        """Start the idle timer and preload; idempotent. Loads run in the background."""
        self._start()

    def _start(self) -> None:
        if self._timer is not None or self._closed:
            return
        self._wake = asyncio.Event()
        self._timer = asyncio.get_running_loop().create_task(self._run(), name=f"modelyard-local-{self.provider}")
        names = dict.fromkeys([*self._preload, *(n for n, s in self._settings.items() if s.preload)])
        for name in names:
            self._spawn(self._preload_one(name))

    async def aclose(self) -> None:
        """Stop the timer, cancel loads in progress, free what the process holds, end subscriptions."""
        if self._closed:
            return
        self._closed = True
        pending = [t for t in (self._timer, *self._tasks) if t is not None]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        try:
            await self.backend.close()
        finally:
            if self.backend.in_process:
                for entry in self._models.values():
                    if entry.state in ("ready", "in_use", "loading"):
                        entry.memory_bytes = None
                        self._set(entry, "not_loaded", reason="provider closed")
            self._publish({"type": "closed", "provider": self.provider, "time": time.time()})
            self._listeners.clear()

    # -- using a model -------------------------------------------------------------------

    @asynccontextmanager
    async def use(self, name: str, *, timeout: float | None = None) -> AsyncIterator[str]:
        """Hold ``name`` loaded and ``in_use`` for the block; yields the canonical name."""
        entry = self._entry(name)
        await self._ensure(entry, timeout)
        entry.users += 1
        if entry.state == "ready":
            self._set(entry, "in_use")
        try:
            yield entry.name
        finally:
            entry.users -= 1
            entry.last_used = time.time()
            entry.idle_since = time.monotonic()
            if entry.users == 0 and entry.state == "in_use":
                self._set(entry, "ready")
            self._wake_timer()

    async def ensure_loaded(self, name: str, *, timeout: float | None = None) -> None:
        """Return once ``name`` is loaded, loading it if needed (one shared load for all callers).

        Raises UpstreamTimeoutError(phase="load") when the load does not finish within
        ``timeout`` seconds (the load itself goes on), or the load's own error.
        """
        await self._ensure(self._entry(name), timeout)

    async def load(self, name: str) -> None:
        """Load ``name`` now (admin, preload), waiting as long as the load takes.

        Unlike a request, this caller does not count as waiting for the model: an unload right after
        the model became ready goes ahead instead of reporting it busy.
        """
        await self._ensure(self._entry(name), None, waiter=False)

    async def unload(self, name: str) -> None:
        """Unload ``name`` now. Raises ModelBusyError when requests are using or waiting for it."""
        entry = self._models.get(self.backend.canonical(name))
        if entry is None:
            return
        if entry.loading is not None:
            await asyncio.wait({entry.loading})
        if entry.users or entry.waiters:
            raise ModelBusyError(
                f"{self.provider}: {entry.name!r} is in use by {entry.users} request(s) "
                f"({entry.waiters} waiting); unload it when it is idle"
            )
        if entry.state in ("ready", "error") or entry.unloading is not None:
            await self._unload_entry(entry, "unloaded on request", raise_errors=True)

    async def _ensure(self, entry: _Entry, timeout: float | None, *, waiter: bool = True) -> None:
        if self._closed:
            raise ServiceUnavailableError(f"{self.provider}: the provider is shutting down")
        self._start()
        deadline = None if timeout is None else time.monotonic() + timeout
        count = 1 if waiter else 0
        entry.waiters += count
        try:
            while True:
                if entry.unloading is not None:
                    await self._wait(entry, entry.unloading, deadline, timeout)
                    continue
                if entry.state in ("ready", "in_use"):
                    return
                if entry.loading is None:
                    entry.loading = self._spawn(self._load(entry))
                task = entry.loading
                self._fail_fast(entry, deadline, timeout)
                await self._wait(entry, task, deadline, timeout)
                if task.cancelled():
                    raise ServiceUnavailableError(f"{self.provider}: loading {entry.name!r} was cancelled")
                exc = task.exception()
                if exc is not None:
                    raise exc
        finally:
            entry.waiters -= count

    async def _wait(
        self, entry: _Entry, task: asyncio.Task[None], deadline: float | None, timeout: float | None
    ) -> None:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise self._timeout(entry, timeout)
        done, _ = await asyncio.wait({task}, timeout=remaining)
        if not done:
            raise self._timeout(entry, timeout)

    def _fail_fast(self, entry: _Entry, deadline: float | None, timeout: float | None) -> None:
        """Fail at once when the last load of this model took longer than this request may still wait."""
        if deadline is None or entry.load_time_s is None or entry.load_started is None:
            return
        expected = entry.load_time_s - (time.monotonic() - entry.load_started)
        if expected > deadline - time.monotonic():
            raise UpstreamTimeoutError(
                f"{self.provider}: {entry.name!r} is loading and its last load took {entry.load_time_s:.1f} s, "
                f"longer than this request may wait ({timeout:g} s); it keeps loading in the background",
                provider=self.provider,
                model=entry.name,
                phase="load",
            )

    def _timeout(self, entry: _Entry, timeout: float | None) -> UpstreamTimeoutError:
        return UpstreamTimeoutError(
            f"{self.provider}: {entry.name!r} did not finish loading within {timeout or 0:g} s "
            "(load_timeout_s); it keeps loading in the background",
            provider=self.provider,
            model=entry.name,
            phase="load",
        )

    # -- loading and unloading -----------------------------------------------------------

    async def _load(self, entry: _Entry) -> None:
        self._set(entry, "loading")
        entry.load_started = time.monotonic()
        entry.progress = None
        try:
            estimate = await self._make_room(entry)
            entry.memory_bytes = estimate
            start = time.perf_counter()
            result = await self.backend.load(entry.name, self.settings(entry.name), lambda p: self._progress(entry, p))
            took = time.perf_counter() - start
        except _Capacity as exc:
            entry.memory_bytes = None
            entry.last_error = exc.error.message
            self._set(entry, "not_loaded", reason=exc.error.message)
            raise exc.error from None
        except ModelyardError as exc:
            entry.memory_bytes = None
            entry.last_error = exc.message
            self._set(entry, "error", reason=exc.message)
            raise
        except asyncio.CancelledError:
            entry.memory_bytes = None
            self._set(entry, "not_loaded", reason="load cancelled")
            raise
        except Exception as exc:
            entry.memory_bytes = None
            error = UpstreamStatusError(
                f"{self.provider}: loading {entry.name!r} failed: {type(exc).__name__}: {exc}",
                upstream_status=503,
                provider=self.provider,
                model=entry.name,
                code="load_failed",
            )
            entry.last_error = error.message
            self._set(entry, "error", reason=error.message)
            raise error from exc
        finally:
            entry.loading = None
            entry.load_started = None
            entry.progress = None
        entry.load_time_s = took
        entry.memory_bytes = result.memory_bytes
        entry.last_error = None
        entry.idle_since = time.monotonic()
        self._set(entry, "ready")
        self._wake_timer()

    async def _make_room(self, entry: _Entry) -> int | None:
        """Evict least recently used idle models until ``entry`` fits; returns its memory estimate."""
        budget = self.memory_budget_bytes
        if self.max_loaded is None and budget is None:
            return None
        need = await self.backend.estimate_memory(entry.name) if budget is not None else None
        if budget is not None and need is not None and need > budget:
            raise _Capacity(
                self._out_of_memory(entry, f"it needs about {need / 2**20:.0f} MB, more than memory_budget_mb")
            )
        while True:
            others = [e for e in self._models.values() if e is not entry and e.resident]
            over_count = self.max_loaded is not None and len(others) + 1 > self.max_loaded
            used = sum(e.memory_bytes or 0 for e in others)
            over_budget = budget is not None and used + (need or 0) > budget
            if not over_count and not over_budget:
                return need
            victims = [e for e in others if e.idle]
            if not victims:
                why = (
                    f"max_loaded={self.max_loaded} models are loaded"
                    if over_count
                    else f"memory_budget_mb leaves no room ({used / 2**20:.0f} MB in use)"
                )
                raise _Capacity(self._out_of_memory(entry, f"{why} and none of them is idle"))
            victim = min(victims, key=lambda e: e.idle_since)
            await self._unload_entry(victim, f"evicted (least recently used) to make room for {entry.name!r}")

    def _out_of_memory(self, entry: _Entry, why: str) -> UpstreamStatusError:
        return UpstreamStatusError(
            f"{self.provider}: cannot load {entry.name!r}: {why}",
            upstream_status=503,
            provider=self.provider,
            model=entry.name,
            code="out_of_memory",
        )

    async def _unload_entry(self, entry: _Entry, reason: str, *, raise_errors: bool = False) -> None:
        task = entry.unloading
        if task is None:
            task = entry.unloading = self._spawn(self._do_unload(entry, reason))
        await asyncio.wait({task})
        exc = None if task.cancelled() else task.exception()
        if raise_errors and exc is not None:
            raise exc

    async def _do_unload(self, entry: _Entry, reason: str) -> None:
        try:
            await self.backend.unload(entry.name)
        except Exception as exc:
            message = exc.message if isinstance(exc, ModelyardError) else f"{type(exc).__name__}: {exc}"
            entry.last_error = f"unload failed: {message}"
            log.warning("%s: unloading %r failed: %s", self.provider, entry.name, message)
            self._set(entry, "error", reason=entry.last_error)
            raise
        else:
            entry.memory_bytes = None
            self._set(entry, "not_loaded", reason=reason)
        finally:
            entry.unloading = None

    async def _preload_one(self, name: str) -> None:
        try:
            await self.load(name)
        except ModelyardError as exc:
            log.error("%s: preloading %r failed: %s", self.provider, name, exc.message)

    # -- the timer: idle unloads and reconciliation ------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._closed:
            self._wake.clear()
            now = time.monotonic()
            wait: float | None = None
            for entry in list(self._models.values()):
                if not entry.idle:
                    continue
                keep = self.settings(entry.name).keep_alive_s
                if math.isinf(keep):
                    continue
                due = entry.idle_since + keep
                if due <= now:
                    entry.unloading = self._spawn(self._do_unload(entry, f"idle for {_seconds(keep)}"))
                else:
                    wait = due - now if wait is None else min(wait, due - now)
            if self.reconcile_interval_s is not None:
                due = self._last_reconcile + self.reconcile_interval_s
                if due <= now:
                    await self._reconcile_quietly()
                    continue
                wait = due - now if wait is None else min(wait, due - now)
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    async def _reconcile_quietly(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:
            self._last_reconcile = time.monotonic()
            message = exc.message if isinstance(exc, ModelyardError) else repr(exc)
            log.debug("%s: cannot read the loaded models: %s", self.provider, message)

    async def refresh(self) -> None:
        """Bring the states in line with what the server holds (for backends that can tell)."""
        loaded = await self.backend.loaded()
        self._last_reconcile = time.monotonic()
        if loaded is None:
            return
        loaded = {self.backend.canonical(n): size for n, size in loaded.items()}
        for name, size in loaded.items():
            entry = self._entry(name)
            if entry.loading is not None or entry.unloading is not None:
                continue
            if entry.state in ("not_loaded", "error"):
                entry.memory_bytes = size or None
                entry.idle_since = time.monotonic()
                self._set(entry, "ready", reason="loaded outside modelyard")
            elif size:
                entry.memory_bytes = size
        for entry in self._models.values():
            if entry.name not in loaded and entry.idle:
                entry.memory_bytes = None
                self._set(entry, "not_loaded", reason="no longer loaded on the server (expired or unloaded elsewhere)")

    # -- status and events ---------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Each known model: state, load_time_s, memory_bytes, last_used, last_error and more."""
        return [self._describe(e) for _, e in sorted(self._models.items())]

    def model_status(self, name: str) -> dict[str, Any]:
        return self._describe(self._entry(name))

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for each event; returns the function that removes it."""
        self._listeners.add(listener)
        return lambda: self._listeners.discard(listener)

    def subscribe(self, maxsize: int = 1024) -> Subscription:
        """An async iterator of events (``type``: ``state``, ``progress``, ``closed``)."""
        sub = Subscription(maxsize=maxsize)
        if self._closed:
            sub.push({"type": "closed", "provider": self.provider, "time": time.time()})
        else:
            sub._remove = self.add_listener(sub.push)
        return sub

    def _describe(self, e: _Entry) -> dict[str, Any]:
        keep = self.settings(e.name).keep_alive_s
        unloads_in = None
        if e.idle and not math.isinf(keep):
            unloads_in = round(max(0.0, e.idle_since + keep - time.monotonic()), 3)
        return {
            "model": e.name,
            "state": e.state,
            "load_time_s": None if e.load_time_s is None else round(e.load_time_s, 3),
            "memory_bytes": e.memory_bytes,
            "last_used": e.last_used,
            "last_error": e.last_error,
            "in_flight": e.users,
            "waiting": e.waiters,
            "keep_alive_s": None if math.isinf(keep) else keep,
            "unloads_in_s": unloads_in,
            "progress": e.progress,
        }

    def _set(self, entry: _Entry, state: State, *, reason: str | None = None) -> None:
        previous = entry.state
        entry.state = state
        if previous == state and reason is None:
            return
        event: Event = {"type": "state", "provider": self.provider, "previous": previous, "reason": reason}
        event.update(self._describe(entry))
        event["time"] = time.time()
        self._publish(event)

    def _progress(self, entry: _Entry, data: dict[str, Any]) -> None:
        entry.progress = {k: data[k] for k in ("status", "completed", "total") if k in data}
        self._publish(
            {"type": "progress", "provider": self.provider, "model": entry.name, **entry.progress, "time": time.time()}
        )

    def _publish(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("%s: a lifecycle event listener failed", self.provider)

    # -- helpers -------------------------------------------------------------------------

    def _entry(self, name: str) -> _Entry:
        key = self.backend.canonical(name)
        entry = self._models.get(key)
        if entry is None:
            self._prune()
            entry = self._models[key] = _Entry(key)
        return entry

    def _prune(self) -> None:
        """Forget the oldest unloaded models that no config names (``provider:model`` requests add them)."""
        excess = len(self._models) + 1 - _MAX_MODELS
        if excess <= 0:
            return
        keep = {*self._settings, *self._preload}
        gone = [
            e
            for e in self._models.values()
            if e.name not in keep
            and e.state in ("not_loaded", "error")
            and not (e.users or e.waiters)
            and e.loading is None
            and e.unloading is None
        ]
        for e in sorted(gone, key=lambda e: e.idle_since)[:excess]:
            del self._models[e.name]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: waiters re-raise it, nobody else needs the warning

    def _wake_timer(self) -> None:
        if self._wake is not None:
            self._wake.set()


class _Capacity(Exception):
    """Internal: a load refused for lack of room (max_loaded, memory budget); carries the public error."""

    def __init__(self, error: UpstreamStatusError) -> None:
        super().__init__(error.message)
        self.error = error


def _seconds(value: float) -> str:
    return f"{value:g} s"
