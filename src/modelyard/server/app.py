"""The HTTP application: the OpenAI-compatible API, health, and the config reload machinery.

The hot endpoints are plain Starlette routes that read the body once, parse it with orjson
into the internal shape, and write orjson bytes back: no per-request model validation of
bodies that are only forwarded.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import signal
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, cast
from wsgiref.simple_server import WSGIServer

import orjson
from prometheus_client import start_http_server
from pydantic import SecretStr
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from modelyard.accounting.service import probe_record
from modelyard.errors import AuthenticationError, ConfigError, ModelyardError, PayloadTooLargeError, StartupError
from modelyard.gateway.services import Services
from modelyard.observability.metrics import CONTENT_TYPE
from modelyard.observability.tracing import make_tracing
from modelyard.routing.health import HealthMonitor
from modelyard.server.errors import error_response, unexpected_error_handler
from modelyard.server.guard import BodyLimit, RequestGuard
from modelyard.server.local_api import LocalStatus, add_local_routes
from modelyard.server.openai_api import OpenAIHandlers
from modelyard.server.protocol import CANCEL_ON_DISCONNECT, CLIENT_GONE
from modelyard.server.state import AppState
from modelyard.server.status import status_payload
from modelyard.startup import describe, listen_error, mark_started, report

if TYPE_CHECKING:
    from fastapi import FastAPI

    from modelyard.providers.base import Provider
    from modelyard.server.sections import LazyRouters
    from modelyard.types import HealthResult

__all__ = ["AppState", "create_app"]

log = logging.getLogger("modelyard.server")

_JSON = "application/json"


class _Handlers:
    """Health, readiness, status and metrics."""

    def __init__(self, gw: AppState) -> None:
        self.gw = gw

    async def status(self, request: Request) -> Response:
        extra: dict[str, Any] = {}
        services = self.gw.services
        if services is not None:
            try:
                await services.auth.authenticate(request.headers, request.method)
            except ModelyardError as exc:
                return error_response(exc)
            extra["usage_writer"] = services.writer.status()
            extra["shared_state"] = (
                services.shared.status()
                if services.shared is not None
                else {"backend": "memory", "ok": True, "policy": "limits, breakers and health checks are per process"}
            )
        shadows = self.gw.pipeline.shadows.status()
        if shadows:
            extra["shadow"] = shadows
        manager = self.gw.manager
        if manager is not None:
            extra["config_revision"] = manager.revision.id if manager.revision is not None else None
            if manager.file_conflict is not None:
                extra["config_file_conflict"] = manager.file_conflict
        return Response(orjson.dumps(status_payload(self.gw.holder.current, extra)), media_type=_JSON)

    async def health(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    async def ready(self, request: Request) -> Response:
        rt = self.gw.holder.current
        if self.gw.draining:  # SIGTERM: the load balancer stops sending requests; those in flight finish
            return Response(b'{"status":"draining"}', status_code=503, media_type=_JSON)
        services = self.gw.services
        store_ok = await services.database.ping(timeout_s=2.0) if services is not None else None
        body = {
            "status": "ready" if store_ok is not False else "degraded",
            "config_version": rt.version,
            "config_revision": rt.revision,
            "config_source": self.gw.source.describe(),
            "providers": len(rt.providers),
            "models": len(rt.models),
            "routes": len(rt.routes),
            "store": None if store_ok is None else ("ok" if store_ok else "unreachable"),
        }
        return Response(orjson.dumps(body), status_code=200 if store_ok is not False else 503, media_type=_JSON)

    async def metrics(self, request: Request) -> Response:
        """Prometheus metrics: with a master key (or ``server.metrics_token``), only for that key.

        Without either, the no-key rules of the request guard apply (loopback only).  The separate
        listener of ``server.metrics_port`` (127.0.0.1 only) needs no key.
        """
        config = self.gw.holder.current.config
        accepted = [t for t in (config.master_key(), _secret(config.server.metrics_token)) if t]
        if accepted:
            given = request.headers.get("authorization", "")
            token = given[7:].strip() if given[:7].lower() == "bearer " else ""
            if not any(hmac.compare_digest(token.encode(), t.encode()) for t in accepted):
                return error_response(
                    AuthenticationError(
                        "/metrics needs 'Authorization: Bearer <master key or server.metrics_token>' "
                        "(or scrape the local listener of server.metrics_port)",
                        code="invalid_api_key",
                    )
                )
        services = self.gw.services
        if services is None:
            return Response(b"", media_type=CONTENT_TYPE)
        return Response(services.metrics.render(), media_type=CONTENT_TYPE)


def _install_reload(gw: AppState, tasks: list[asyncio.Task[None]]) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()
    gw.reloads = queue
    try:
        loop.add_signal_handler(signal.SIGHUP, queue.put_nowait, "SIGHUP")
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), or no SIGHUP
        log.debug("SIGHUP reload not available in this thread")

    async def consume() -> None:
        while True:
            reason = await queue.get()
            await gw.reload(reason)

    tasks.append(loop.create_task(consume()))
    if gw.watch and gw.source.path is not None:
        tasks.append(loop.create_task(gw.source.watch(queue)))


#: a hot handler: the request in, an ASGI app out (a Starlette Response or the SSE stream)
Handler = Callable[[Request], Awaitable[ASGIApp]]


class FastPath:
    """The ASGI app: the hot endpoints go straight to their handlers, everything else to FastAPI.

    FastAPI wraps every request in several middleware layers (error handling, telemetry, body
    limits, an exit stack): about 40 % of the CPU of a proxied request in a profile.  The hot
    handlers do all of that themselves (body limit, OpenAI error JSON), so they skip the stack.
    Every request first passes the :class:`~modelyard.server.guard.RequestGuard` (body size,
    authentication before a management body is read, the no-key Host/Origin/Content-Type rules).

    The FastAPI app (every other endpoint, the OpenAPI documents) is built on the first request
    that needs it, or the first read of :attr:`app`: importing FastAPI and building its routes is
    about a fifth of a cold start (issue #20), and the hot endpoints and the lifespan (served here,
    as Starlette's router serves it) do not need it.

    A hot request whose client leaves before its answer starts is cancelled (the connection
    protocol cancels the task, see :mod:`modelyard.server.protocol`); it ends here quietly.
    """

    def __init__(
        self,
        build: Callable[[], tuple[FastAPI, LazyRouters]],
        routes: dict[tuple[str, str], Handler],
        gw: AppState,
        lifespan: Callable[[], AbstractAsyncContextManager[None]],
    ) -> None:
        self.routes = routes
        self.gw = gw
        self.guard = RequestGuard()
        self.lifespan = lifespan
        self._build = build
        self._built: tuple[FastAPI, LazyRouters] | None = None

    @property
    def app(self) -> FastAPI:
        """The FastAPI app of the other endpoints (built now if it is not yet)."""
        return self._fastapi()[0]

    @property
    def more(self) -> LazyRouters:
        """The /admin API, accounting and the dashboard: built on the first request for them (server/sections.py)."""
        return self._fastapi()[1]

    def _fastapi(self) -> tuple[FastAPI, LazyRouters]:
        if self._built is None:
            self._built = self._build()
        return self._built

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
                return
            if scope["type"] == "websocket":
                self.more.build()
            await self.app(scope, receive, send)
            return
        config = self.gw.holder.current.config
        refused = self.guard.check(scope, config)
        if refused is not None:
            await error_response(refused)(scope, receive, send)
            return
        handler = self.routes.get((scope["method"], scope["path"]))
        if handler is None:
            await self._other(scope, receive, send)
            return
        scope[CANCEL_ON_DISCONNECT] = asyncio.current_task()
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except ClientDisconnect:
            return  # the client left while sending its request: nobody to answer
        except asyncio.CancelledError:
            if scope.get(CLIENT_GONE):
                _uncancel()
                return  # the client left before the answer started; the pipeline recorded it
            raise
        except ModelyardError as exc:
            response = error_response(exc)
        except Exception as exc:
            response = await unexpected_error_handler(request, exc)
        await response(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """The ASGI lifespan protocol, as Starlette's router serves it: start-up, then shutdown when asked."""
        started = False
        await receive()  # lifespan.startup
        try:
            async with self.lifespan():
                await send({"type": "lifespan.startup.complete"})
                started = True
                mark_started()
                await receive()  # lifespan.shutdown
        except BaseException as exc:
            if not started and isinstance(exc, StartupError | ConfigError):
                # an operator's problem (a database away, a port in use): `modelyard serve` prints
                # one line and exits with its code (modelyard.startup); uvicorn logs no traceback
                self.gw.startup_error = exc
                if not report(exc):  # a worker restarted on SIGHUP: nobody else prints it
                    log.error("%s: %s", *describe(exc)[:2])
                await send({"type": "lifespan.startup.failed", "message": ""})
                return
            if not started and isinstance(exc, Exception):
                report(exc)  # a worker's parent then exits 3 (as one process does), not 0
            failed = "lifespan.shutdown.failed" if started else "lifespan.startup.failed"
            await send({"type": failed, "message": traceback.format_exc()})
            raise
        await send({"type": "lifespan.shutdown.complete"})

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Everything but the hot endpoints: FastAPI, after early auth and with the body limit."""
        self.more.for_path(scope["path"])
        services = self.gw.services
        if services is not None and self.guard.needs_early_auth(scope):
            headers = self.guard.headers(scope)
            try:
                method = scope.get("method", "POST")
                if scope["path"].startswith("/admin"):
                    await services.auth.admin(headers, method)  # each endpoint then checks what this caller may do
                else:
                    await services.auth.authenticate(headers, method)
            except ModelyardError as exc:
                await error_response(exc)(scope, receive, send)
                return
        body = BodyLimit(receive, send, self.guard.policy(self.gw.holder.current.config).max_body)
        try:
            await self.app(scope, body.receive, body.send)
        except PayloadTooLargeError:
            if body.started:
                raise
        refused = body.error()
        if refused is not None:
            await error_response(refused)(scope, receive, send)


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() or None if value is not None else None


def _metrics_listener(gw: AppState) -> WSGIServer | None:
    """``server.metrics_port``: /metrics without a key, on 127.0.0.1 only (prometheus-client's
    threaded WSGI server, started once at start-up; a reload does not move it)."""
    port = gw.holder.current.config.server.metrics_port
    if port is None or gw.services is None:
        return None
    try:
        server, _thread = start_http_server(port, addr="127.0.0.1", registry=gw.services.metrics.registry)
    except OSError as exc:
        raise listen_error("127.0.0.1", port, exc, change="set server.metrics_port to a free port") from exc
    log.info("metrics without authentication on http://127.0.0.1:%d/metrics (server.metrics_port)", port)
    return server


def create_app(gw: AppState) -> FastPath:
    """The ASGI app for one gateway."""
    handlers = _Handlers(gw)
    api = OpenAIHandlers(gw)
    local = LocalStatus(gw)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        listener: WSGIServer | None = None
        if gw.with_services:
            gw.services = await Services.start(gw.holder.current.config, lambda: gw.holder.current)
            gw.tracing = make_tracing(gw.holder.current.config.tracing)
            gw.router.shared = gw.services.shared
            gw.start_pipeline()
            try:
                listener = _metrics_listener(gw)
                await gw.start_manager()
                await gw.start_comparisons()
            except BaseException:
                if listener is not None:
                    listener.shutdown()
                    listener.server_close()
                await gw.stop_manager()
                await gw.services.aclose()
                raise
        _install_reload(gw, tasks)
        alerts = gw.start_alerts()
        shared = gw.services.shared if gw.services is not None else None
        monitor = HealthMonitor(lambda: gw.holder.current.providers, on_change=alerts.provider_health, shared=shared)
        monitor.on_probe = _probe_recorder(gw)
        if shared is not None:
            shared.on_health = monitor.apply  # another replica's check
        monitor.start()
        tune_gc()
        rt = gw.holder.current
        if not rt.providers:
            log.warning(
                "no provider configured. Set OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY or OLLAMA_HOST, "
                "or write modelyard.yaml (see README), then restart or send SIGHUP."
            )
        await local.startup()  # the local-model managers (server/local_api.py)
        try:
            yield
        finally:
            await local.shutdown()
        if listener is not None:
            listener.shutdown()
            listener.server_close()
        await monitor.aclose()
        await gw.stop_alerts()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        await gw.pipeline.shadows.aclose()  # mirrors in flight finish (their records are written)
        await gw.stop_comparisons()
        await gw.stop_manager()
        if gw.services is not None:
            await gw.services.aclose()  # flushes every queued usage record
            gw.services = None
            gw.router.shared = None
            gw.start_pipeline()
        await gw.holder.aclose()
        if gw.tracing is not None:
            gw.tracing.shutdown()  # exports what is left
            gw.tracing = None

    def build() -> tuple[FastAPI, LazyRouters]:
        """The FastAPI app of every endpoint but the hot ones (FastPath builds it on first use)."""
        from fastapi import FastAPI
        from fastapi.exceptions import RequestValidationError
        from starlette.exceptions import HTTPException

        from modelyard.server.docs import add_docs
        from modelyard.server.errors import http_exception_handler, modelyard_error_handler, request_validation_handler
        from modelyard.server.messages_api import MessagesHandlers
        from modelyard.server.openapi import install_openapi
        from modelyard.server.responses_api import ResponsesHandlers
        from modelyard.server.sections import LazyRouters

        app = FastAPI(
            title="modelyard",
            version=_version(),
            description="Self-hosted LLM gateway and model router with an OpenAI-compatible API.",
            docs_url=None,  # server/docs.py: the same page with assets from the package, not a CDN
            redoc_url=None,
        )
        app.state.gateway = gw
        add_docs(app)
        install_openapi(app)
        # Starlette runs whatever ASGI app a route returns; its type says Response (the SSE answer is not one)
        chat = cast(Callable[[Request], Awaitable[Response]], api.chat_completions)
        embeddings = cast(Callable[[Request], Awaitable[Response]], api.embeddings)
        app.add_route("/v1/chat/completions", chat, methods=["POST"])
        app.add_route("/chat/completions", chat, methods=["POST"])
        responses_api = ResponsesHandlers(gw)
        responses = cast(Callable[[Request], Awaitable[Response]], responses_api.create)
        app.add_route("/v1/responses", responses, methods=["POST"])
        app.add_route("/v1/responses/{response_id}", responses_api.stored, methods=["GET", "DELETE"])
        messages_api = MessagesHandlers(gw)
        messages = cast(Callable[[Request], Awaitable[Response]], messages_api.messages)
        app.add_route("/v1/messages", messages, methods=["POST"])
        app.add_route("/v1/messages/count_tokens", messages_api.count_tokens, methods=["POST"])
        completions = cast(Callable[[Request], Awaitable[Response]], api.completions)
        app.add_route("/v1/completions", completions, methods=["POST"])
        app.add_route("/completions", completions, methods=["POST"])
        app.add_route("/v1/embeddings", embeddings, methods=["POST"])
        app.add_route("/embeddings", embeddings, methods=["POST"])
        app.add_route("/v1/models", api.models, methods=["GET"])
        app.add_route("/models", api.models, methods=["GET"])
        app.add_route("/v1/models/{model_id:path}", api.model, methods=["GET"])
        app.add_route("/models/{model_id:path}", api.model, methods=["GET"])
        app.add_route("/metrics", handlers.metrics, methods=["GET"])
        more = LazyRouters(app, gw)  # /admin API, accounting, dashboard: here, on first use (server/sections.py)
        app.state.build_routes = more.build
        app.add_route("/health", handlers.health, methods=["GET"])
        app.add_route("/v1/status", handlers.status, methods=["GET"])
        app.add_route("/ready", handlers.ready, methods=["GET"])
        app.add_exception_handler(ModelyardError, modelyard_error_handler)
        app.add_exception_handler(HTTPException, http_exception_handler)
        app.add_exception_handler(RequestValidationError, request_validation_handler)
        app.add_exception_handler(Exception, unexpected_error_handler)
        add_local_routes(app, gw, local)
        return app, more

    hot: dict[tuple[str, str], Handler] = {
        ("POST", "/v1/chat/completions"): api.chat_completions,
        ("POST", "/chat/completions"): api.chat_completions,
        ("POST", "/v1/embeddings"): api.embeddings,
        ("POST", "/embeddings"): api.embeddings,
        ("GET", "/v1/models"): api.models,
        ("GET", "/health"): handlers.health,
    }
    return FastPath(build, hot, gw, lifespan)


#: collect the youngest generation after this many net allocations (CPython's default: 700)
GC_GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a long-running server (once, after start-up).

    Measured at 64 connections before this: about a fifth of the CPU went to the collector, and a
    full collection (walking the ~130,000 objects of the loaded libraries and config) paused the
    event loop for up to 136 ms, which was most of the p99.  ``gc.freeze()`` moves everything that
    exists after start-up into a generation the collector never walks again, and a higher
    threshold for the youngest generation lets request garbage (freed by reference counting
    anyway) die before a collection has to look at it.  Cycles are still collected.

    No full collection first: with the collector on during start-up it found ~10 objects and took
    about 30 ms of the cold start; ``modelyard serve`` keeps the collector off until here
    (modelyard.cli), which leaves about 1,000 objects (~0.3 MB) of start-up cycles frozen with
    the rest, and the collector is turned on here.
    """
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)
    gc.enable()


def _version() -> str:
    from modelyard.version import __version__

    return __version__


def _probe_recorder(gw: AppState) -> Callable[[Provider, HealthResult], None]:
    """A provider's chat probe is a call its upstream bills: a usage record (``source: probe``,
    ``route: health``), priced as the configured model it asked."""

    def record(provider: Provider, result: HealthResult) -> None:
        services = gw.services
        model = result.probe_model
        if services is None or model is None:
            return
        deps = gw.holder.current.models.values()
        dep = next((d for d in deps if d.provider is provider and d.upstream == model), None)
        services.writer.submit(
            probe_record(dep, provider.name, model, result.usage, result.latency_ms, ok=result.ok, route="health")
        )

    return record
