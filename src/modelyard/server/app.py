"""The HTTP application: the OpenAI-compatible API, health, and the config reload machinery.

The hot endpoints are plain Starlette routes that read the body once, parse it with orjson
into the internal shape, and write orjson bytes back: no per-request model validation of
bodies that are only forwarded.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from modelyard.config.source import ConfigSource
from modelyard.errors import ConfigError, ModelyardError, PayloadTooLargeError
from modelyard.routing.deployment import Route
from modelyard.routing.health import HealthMonitor
from modelyard.routing.options import RequestOptions, parse_options
from modelyard.routing.router import RoutedStream, Router, RouteResult
from modelyard.runtime import Runtime, RuntimeHolder
from modelyard.server.errors import (
    error_response,
    http_exception_handler,
    modelyard_error_handler,
    unexpected_error_handler,
)
from modelyard.server.parsing import decode_body, parse_chat_request, parse_embedding_request
from modelyard.server.status import status_payload
from modelyard.server.wire import DONE, encode_chunk, encode_embeddings, encode_response, encode_usage, sse_error
from modelyard.types import ChatChunk, Usage

__all__ = ["Gateway", "create_app"]

log = logging.getLogger("modelyard.server")

_JSON = "application/json"


@dataclass(slots=True)
class Gateway:
    """Everything the HTTP layer needs; one per process, held by the app (no module globals)."""

    holder: RuntimeHolder
    source: ConfigSource
    router: Router = field(default_factory=Router)
    watch: bool = False
    reloads: asyncio.Queue[str] | None = None

    @property
    def max_body(self) -> int:
        return int(self.holder.current.config.server.max_body_mb * 1024 * 1024)

    async def reload(self, reason: str) -> bool:
        """Load the config again and swap it in; a bad config is logged and the old one keeps serving."""
        try:
            config = await self.source.aload()
            await self.holder.swap(config)
        except ConfigError as exc:
            log.error(
                "config reload (%s) rejected, still serving version %d: %s", reason, self.holder.current.version, exc
            )
            return False
        except Exception:
            log.exception("config reload (%s) failed, still serving version %d", reason, self.holder.current.version)
            return False
        return True


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the request body is larger than {limit / 1024 / 1024:g} MB (server.max_body_mb); "
        "send a smaller request or raise the limit"
    )


def _headers(request_id: str, result: RouteResult, overhead_ms: float) -> dict[str, str]:
    dep = result.deployment
    return {
        "X-Request-Id": request_id,
        "X-Modelyard-Model": dep.name,
        "X-Modelyard-Provider": dep.provider.name,
        "X-Modelyard-Route": result.route,
        "X-Modelyard-Attempts": str(len(result.attempts)),
        "X-Modelyard-Fallback": "true" if result.fallback else "false",
        "X-Modelyard-Overhead-Ms": f"{max(0.0, overhead_ms):.2f}",
    }


def _route(rt: Runtime, model: str, opts: RequestOptions) -> Route:
    target = opts.route or model
    if target == "default" and "default" not in rt.routes and rt.default_route:
        target = rt.default_route
    route = rt.resolve(target)
    return rt.for_task(route, opts.task) if opts.task else route


class _SSEResponse(StreamingResponse):
    """A streaming response that always runs its cleanup, even if the body never started."""

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()


class _Handlers:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    async def chat_completions(self, request: Request) -> Response:
        t0 = time.perf_counter()
        request_id = request.headers.get("x-request-id") or f"req_{uuid.uuid4().hex}"
        gw = self.gw
        try:
            req = parse_chat_request(decode_body(await _read_body(request, gw.max_body)))
            opts = parse_options(req.options, request.headers)
        except ModelyardError as exc:
            return error_response(exc, request_id)
        holder = gw.holder
        async with holder.use() as rt:
            try:
                route = _route(rt, req.model, opts)
                if not req.stream:
                    response, result = await gw.router.chat(route, req, opts)
                    overhead = (time.perf_counter() - t0 - result.upstream_s) * 1000
                    return Response(
                        encode_response(response, result.deployment.name),
                        media_type=_JSON,
                        headers=_headers(request_id, result, overhead),
                    )
                routed = await gw.router.stream(route, req, opts)
            except ModelyardError as exc:
                return error_response(exc, request_id)
            # The stream outlives this block: pin the runtime until it ends.
            rt.active += 1
        elapsed = time.perf_counter() - t0
        upstream = routed.result.upstream_s + (time.perf_counter() - routed.started)
        headers = _headers(request_id, routed.result, (elapsed - upstream) * 1000)
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
        holder = gw.holder
        closed = False

        async def on_close() -> None:
            # Runs exactly once, whether the stream ended, failed, or the client went away before it began.
            nonlocal closed
            if closed:
                return
            closed = True
            await routed.abort()
            rt.active -= 1
            if rt.retired and rt.active == 0:
                holder.release(rt)

        return _SSEResponse(
            self._sse(routed, req.include_usage, request_id, on_close),
            on_close,
            media_type="text/event-stream",
            headers=headers,
        )

    async def _sse(
        self, routed: RoutedStream, include_usage: bool, request_id: str, on_close: Callable[[], Awaitable[None]]
    ) -> AsyncIterator[bytes]:
        model = routed.result.deployment.name
        chunk_id = f"chatcmpl-{request_id.removeprefix('req_')[:29]}"
        created = int(time.time())
        usage_sent = False
        try:
            async for chunk in routed.chunks():
                if chunk.usage is not None and not chunk.choices:
                    if include_usage:
                        usage_sent = True
                        yield encode_chunk(chunk, model, chunk_id=chunk_id, created=created)
                    continue
                if chunk.usage is not None and not include_usage:
                    chunk = ChatChunk(
                        chunk.id, chunk.created, chunk.model, chunk.choices, None, chunk.system_fingerprint
                    )
                elif chunk.usage is not None:
                    usage_sent = True
                yield encode_chunk(chunk, model, chunk_id=chunk_id, created=created)
            if include_usage and not usage_sent:
                usage = routed.usage or Usage(estimated=True)
                yield (
                    b"data: "
                    + orjson.dumps(
                        {
                            "id": chunk_id,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "choices": [],
                            "usage": encode_usage(usage),
                        }
                    )
                    + b"\n\n"
                )
            yield DONE
        except ModelyardError as exc:
            log.warning("stream %s from %s failed after it started: %s", request_id, model, exc.message)
            body = exc.to_openai()
            body["error"]["message"] = (
                f"the stream from {model} failed after it started; the answer is incomplete: {exc.message}"
            )
            yield sse_error(body)
        finally:
            await on_close()

    async def embeddings(self, request: Request) -> Response:
        t0 = time.perf_counter()
        request_id = request.headers.get("x-request-id") or f"req_{uuid.uuid4().hex}"
        gw = self.gw
        try:
            req = parse_embedding_request(decode_body(await _read_body(request, gw.max_body)))
            opts = parse_options(req.options, request.headers)
            async with gw.holder.use() as rt:
                route = _route(rt, req.model, opts)
                response, result = await gw.router.embed(route, req, opts)
        except ModelyardError as exc:
            return error_response(exc, request_id)
        overhead = (time.perf_counter() - t0 - result.upstream_s) * 1000
        return Response(
            encode_embeddings(response, result.deployment.name, req.encoding_format),
            media_type=_JSON,
            headers=_headers(request_id, result, overhead),
        )

    async def models(self, request: Request) -> Response:
        rt = self.gw.holder.current
        data = [
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "modelyard",
                "modelyard": {
                    "type": "route",
                    "models": list(r.config.models),
                    "fallbacks": list(r.config.fallbacks),
                    "strategy": r.config.strategy,
                    "default": name == rt.default_route,
                },
            }
            for name, r in rt.routes.items()
        ]
        data += [
            {
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": d.provider.name,
                "modelyard": {
                    "type": "model",
                    "provider": d.provider.name,
                    "kind": d.provider.kind,
                    "upstream": d.upstream,
                    "mode": d.config.mode,
                    "tags": list(d.config.tags),
                    "local": d.is_local,
                    "context_window": d.config.context_window,
                    "default": name == rt.default_route,
                },
            }
            for name, d in rt.models.items()
        ]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type=_JSON)

    async def status(self, request: Request) -> Response:
        return Response(orjson.dumps(status_payload(self.gw.holder.current)), media_type=_JSON)

    async def health(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    async def ready(self, request: Request) -> Response:
        rt = self.gw.holder.current
        body = {
            "status": "ready",
            "config_version": rt.version,
            "config_source": self.gw.source.describe(),
            "providers": len(rt.providers),
            "models": len(rt.models),
            "routes": len(rt.routes),
        }
        return Response(orjson.dumps(body), media_type=_JSON)


def _install_reload(gw: Gateway, tasks: list[asyncio.Task[None]]) -> None:
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


def create_app(gw: Gateway) -> FastAPI:
    """The ASGI app for one gateway."""
    handlers = _Handlers(gw)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        _install_reload(gw, tasks)
        monitor = HealthMonitor(lambda: gw.holder.current.providers)
        monitor.start()
        rt = gw.holder.current
        if not rt.providers:
            log.warning(
                "no provider configured. Set OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY or OLLAMA_HOST, "
                "or write modelyard.yaml (see README), then restart or send SIGHUP."
            )
        yield
        await monitor.aclose()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        await gw.holder.aclose()

    app = FastAPI(
        title="modelyard",
        version=_version(),
        description="Self-hosted LLM gateway and model router with an OpenAI-compatible API.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.gateway = gw
    app.add_route("/v1/chat/completions", handlers.chat_completions, methods=["POST"])
    app.add_route("/chat/completions", handlers.chat_completions, methods=["POST"])
    app.add_route("/v1/embeddings", handlers.embeddings, methods=["POST"])
    app.add_route("/embeddings", handlers.embeddings, methods=["POST"])
    app.add_route("/v1/models", handlers.models, methods=["GET"])
    app.add_route("/models", handlers.models, methods=["GET"])
    app.add_route("/health", handlers.health, methods=["GET"])
    app.add_route("/v1/status", handlers.status, methods=["GET"])
    app.add_route("/ready", handlers.ready, methods=["GET"])
    app.add_exception_handler(ModelyardError, modelyard_error_handler)
    app.add_exception_handler(HTTPException, http_exception_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    return app


def _version() -> str:
    from modelyard import __version__

    return __version__
