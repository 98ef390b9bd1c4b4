"""HTTP endpoints for local models (llama.cpp, Ollama): status, state-change events, load and unload.

``GET /v1/status/local``
    Every local provider and its models: state (``not_loaded``, ``loading``, ``ready``,
    ``in_use``, ``error``), ``load_time_s``, ``memory_bytes``, ``last_used`` (Unix time),
    ``last_error`` and more.  Ollama's states are reconciled with ``/api/ps`` first.
``GET /v1/status/events``
    A server-sent-events stream: one ``snapshot`` event (the status above), then a ``state``
    event per state change and ``progress`` events while a model is pulled; a comment line
    every 15 s keeps idle connections open.  It ends when the client goes away or the server
    shuts down.
``POST /admin/models/{name}/load`` and ``POST /admin/models/{name}/unload``
    ``name`` is a configured model or ``provider:model``.  Admin authentication is the
    ``authorize`` hook of :func:`add_local_routes`; by default the master key, like the rest of
    ``/admin`` (when the gateway runs without its services, every request is accepted).

The status endpoints authenticate like ``/v1/status``: a virtual key or the master key when
authentication is on.

The managers start (preload, idle timer) when the app starts, and a watcher picks up the
providers of a reloaded config; the endpoints also start them on first access, so nothing here
depends on the app's own lifespan.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from modelyard.errors import InvalidRequestError, NotFoundError
from modelyard.local.manager import LocalModelManager
from modelyard.management.audit import Actor, write_audit
from modelyard.providers.base import Provider
from modelyard.runtime import sync_runtime
from modelyard.validators import check_model_name

if TYPE_CHECKING:
    from fastapi import FastAPI

    from modelyard.runtime import Runtime
    from modelyard.server.state import AppState

__all__ = ["AdminHook", "LocalStatus", "add_local_routes", "gateway_admin_auth"]

log = logging.getLogger("modelyard.server")

#: checks an admin request; raises a ModelyardError (401/403) to refuse it
AdminHook = Callable[[Request], Awaitable[None]]

_JSON = "application/json"
_STATUS_TIMEOUT_S = 3.0


@dataclass(slots=True, eq=False)
class _Client:
    """One events stream. ``None`` in the queue ends it."""

    maxsize: int = 1000
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    ended: bool = False

    def push(self, event: dict[str, Any] | None) -> None:
        if self.ended:
            return
        if event is None or self.queue.qsize() >= self.maxsize:
            # the end, or a client too slow to keep up: it reconnects and gets a fresh snapshot
            self.ended = True
            event = None
        self.queue.put_nowait(event)


class LocalStatus:
    """The local-model side of one app: tracks the runtime's managers and fans their events out."""

    def __init__(self, gateway: AppState, *, heartbeat_s: float = 15.0, watch_interval_s: float = 1.0) -> None:
        self.gateway = gateway
        self.heartbeat_s = heartbeat_s
        self.watch_interval_s = watch_interval_s
        self._runtime: Runtime | None = None
        self._attached: dict[LocalModelManager, Callable[[], None]] = {}
        self._clients: set[_Client] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._signals: list[tuple[int, Any, Any]] = []

    # -- managers ------------------------------------------------------------------------

    def managers(self) -> list[tuple[str, Provider, LocalModelManager]]:
        """(provider name, provider, manager) for each local provider of the current runtime."""
        rt = self.gateway.holder.current
        if rt is not self._runtime:
            self._runtime = rt
            sync_runtime(rt)
        out = [(name, p, m) for name, p in rt.providers.items() if (m := p.lifecycle) is not None]
        for manager in list(self._attached):
            if manager.closed:
                self._attached.pop(manager)()
        for _, _, manager in out:
            if manager not in self._attached and not manager.closed:
                self._attached[manager] = manager.add_listener(self._publish)
        return out

    async def prepare(self) -> list[tuple[str, Provider, LocalModelManager]]:
        """Sync the current runtime's model settings into its managers and start them."""
        found = self.managers()
        for _, _, manager in found:
            if not manager.closed:
                await manager.start()
        return found

    def resolve(self, name: str) -> tuple[str, LocalModelManager, str]:
        """(provider name, manager, upstream model) for a configured model or ``provider:model``."""
        rt = self.gateway.holder.current
        dep = rt.models.get(name)
        if dep is not None:
            provider_name, provider, upstream = dep.provider.name, dep.provider, dep.upstream
        else:
            check_model_name(name, "name")
            provider_name, sep, upstream = name.partition(":")
            found = rt.providers.get(provider_name) if sep and upstream else None
            if found is None:
                raise NotFoundError(
                    f"unknown model {name!r}: use a configured model name or provider:model "
                    f"with a configured provider ({', '.join(sorted(rt.providers)) or 'none'})",
                    param="name",
                )
            provider = found
        manager = provider.lifecycle
        if manager is None:
            raise InvalidRequestError(
                f"{name!r} is served by provider {provider_name!r} ({provider.kind}), which is not a local provider",
                param="name",
            )
        return provider_name, manager, upstream

    # -- status --------------------------------------------------------------------------

    async def snapshot(self, *, reconcile: bool = True) -> dict[str, Any]:
        found = await self.prepare()
        errors: dict[str, str] = {}
        if reconcile:
            results = await asyncio.gather(*(self.refresh_manager(m) for _, _, m in found))
            errors = {name: err for (name, _, _), err in zip(found, results, strict=True) if err}
        rt = self.gateway.holder.current
        providers: dict[str, Any] = {}
        for name, provider, manager in found:
            configured: dict[str, list[str]] = {}
            for model_name, dep in rt.models.items():
                if dep.provider is provider:
                    configured.setdefault(manager.backend.canonical(dep.upstream), []).append(model_name)
            models = {s["model"]: {**s, "configured_as": configured.get(s["model"], [])} for s in manager.status()}
            providers[name] = {"kind": provider.kind, "error": errors.get(name), "models": models}
        return {"object": "local_status", "providers": providers}

    async def refresh_manager(self, manager: LocalModelManager) -> str | None:
        try:
            async with asyncio.timeout(_STATUS_TIMEOUT_S):
                await manager.refresh()
        except TimeoutError:
            return f"no answer within {_STATUS_TIMEOUT_S:g} s; the states shown may be stale"
        except Exception as exc:
            return getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        return None

    # -- events --------------------------------------------------------------------------

    def _publish(self, event: dict[str, Any]) -> None:
        if event.get("type") == "closed":  # a provider replaced by a reload; its successor is attached
            return
        for client in list(self._clients):
            client.push(event)

    def end_streams(self) -> None:
        """End every events stream (the server is shutting down): these and the admin events'."""
        for client in list(self._clients):
            client.push(None)
        self.gateway.events.close()

    async def events(self, request: Request) -> Response:
        snapshot = await self.snapshot(reconcile=False)
        client = _Client()
        self._clients.add(client)

        async def body() -> AsyncIterator[bytes]:
            try:
                yield _sse("snapshot", snapshot)
                while True:
                    try:
                        async with asyncio.timeout(self.heartbeat_s):
                            event = await client.queue.get()
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if event is None:
                        return
                    yield _sse(str(event.get("type", "state")), event)
            finally:
                self._clients.discard(client)

        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

    # -- start and stop ------------------------------------------------------------------

    async def startup(self) -> None:
        await self.prepare()
        self._chain_signals()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="modelyard-local-watch")

    async def shutdown(self) -> None:
        self.end_streams()
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        for sig, previous, ours in self._signals:
            if signal.getsignal(sig) is ours:
                signal.signal(sig, previous)
        self._signals.clear()
        for remove in self._attached.values():
            remove()
        self._attached.clear()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval_s)
            try:
                await self.prepare()
            except Exception:
                log.exception("local models: cannot apply the current config")

    def _chain_signals(self) -> None:
        """End the events streams on SIGTERM/SIGINT, then let the server's own handler run.

        The server waits for open responses before it runs the app's shutdown, so an events
        stream has to end when the signal arrives, not at shutdown.
        """
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)

            def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                loop.call_soon_threadsafe(self.end_streams)
                if callable(previous):
                    previous(signum, frame)
                elif previous == signal.SIG_DFL:
                    signal.signal(signum, signal.SIG_DFL)
                    signal.raise_signal(signum)

            try:
                signal.signal(sig, handler)
            except (ValueError, OSError):
                continue
            self._signals.append((sig, previous, handler))


def gateway_admin_auth(gateway: AppState) -> AdminHook:
    """The gateway's own admin check: the master key (when the gateway runs its services)."""

    async def check(request: Request) -> None:
        services = gateway.services
        if services is not None:
            who = await services.auth.admin(request.headers, request.method)
            who.require_master("loading and unloading local models")

    return check


async def _viewer(gateway: AppState, request: Request) -> None:
    services = gateway.services
    if services is not None:
        await services.auth.authenticate(request.headers, request.method)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def add_local_routes(
    app: FastAPI, gateway: AppState, local: LocalStatus, *, authorize: AdminHook | None = None
) -> None:
    """Add the local-model endpoints of ``local`` to ``app`` (the caller's lifespan starts and
    stops ``local``: :meth:`LocalStatus.startup`, :meth:`LocalStatus.shutdown`).

    ``authorize`` runs before each admin action (load, unload) and raises to refuse; None means
    :func:`gateway_admin_auth` (the master key).
    """
    app.state.local_status = local
    check_admin = authorize or gateway_admin_auth(gateway)

    async def status(request: Request) -> Response:
        await _viewer(gateway, request)
        return Response(orjson.dumps(await local.snapshot()), media_type=_JSON)

    async def events(request: Request) -> Response:
        await _viewer(gateway, request)
        return await local.events(request)

    async def admin(request: Request, action: str) -> Response:
        await check_admin(request)
        name = request.path_params["name"]
        provider_name, manager, upstream = local.resolve(name)
        await local.prepare()
        if action == "load":
            await manager.load(upstream)
        else:
            await local.refresh_manager(manager)  # Ollama: learn about models loaded elsewhere
            await manager.unload(upstream)
        body = {"object": "local_model", "name": name, "provider": provider_name, **manager.model_status(upstream)}
        services = gateway.services
        if services is not None:  # local model load/unload is in the audit log like every admin change
            client = request.client.host if request.client is not None else None
            actor = Actor("master", request_id=request.headers.get("x-request-id"), client=client)
            target = f"model:{name}"
            after = {"state": body.get("state")}
            await write_audit(services.audit, gateway.events, actor, f"local.{action}", target, after=after)
            gateway.events.publish("local." + action, {"model": name, "provider": provider_name})
        return Response(orjson.dumps(body), media_type=_JSON)

    async def load(request: Request) -> Response:
        return await admin(request, "load")

    async def unload(request: Request) -> Response:
        return await admin(request, "unload")

    app.add_route("/v1/status/local", status, methods=["GET"])
    app.add_route("/v1/status/events", events, methods=["GET"])
    app.add_route("/admin/models/{name:path}/load", load, methods=["POST"])
    app.add_route("/admin/models/{name:path}/unload", unload, methods=["POST"])
