"""The OpenAI-compatible endpoints: chat completions, embeddings, models.

Plain Starlette handlers on the hot path: read the body once, parse it with orjson into the
internal shape, route it, write orjson bytes back.  Every finished request — answered, failed,
or served from the cache — leaves one usage record (written off the request path).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from modelyard.accounting.cache import CachedResponse, assemble_response, cache_key, replay_chunks
from modelyard.accounting.service import RequestAccounting
from modelyard.errors import ModelyardError, PayloadTooLargeError
from modelyard.ids import IdFactory
from modelyard.routing.deployment import Route
from modelyard.routing.options import RequestOptions, parse_options
from modelyard.routing.router import RoutedStream, RouteResult, estimate_tokens
from modelyard.runtime import Runtime
from modelyard.server.auth import ANONYMOUS, Principal
from modelyard.server.errors import error_response
from modelyard.server.parsing import decode_body, parse_chat_request, parse_embedding_request
from modelyard.server.wire import DONE, encode_chunk, encode_embeddings, encode_response, encode_usage, sse_error
from modelyard.types import ChatChunk, ChatRequest, ChatResponse, Usage

if TYPE_CHECKING:
    from modelyard.server.app import Gateway

__all__ = ["OpenAIHandlers", "option_headers", "read_body"]

log = logging.getLogger("modelyard.server")

_JSON = "application/json"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to be over ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    receive = request.receive
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):  # the usual case: the whole body in one message
        if len(body) > limit:
            raise _too_large(limit)
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
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


def option_headers(request: Request) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in request.headers.raw if k.startswith(b"x-modelyard-")}


def _headers(request_id: str, result: RouteResult, overhead_ms: float, cache: str | None) -> dict[str, str]:
    dep = result.deployment
    headers = {
        "X-Request-Id": request_id,
        "X-Modelyard-Model": dep.name,
        "X-Modelyard-Provider": dep.provider.name,
        "X-Modelyard-Route": result.route,
        "X-Modelyard-Attempts": str(len(result.attempts)),
        "X-Modelyard-Fallback": "true" if result.fallback else "false",
        "X-Modelyard-Overhead-Ms": f"{max(0.0, overhead_ms):.2f}",
    }
    if cache is not None:
        headers["X-Modelyard-Cache"] = cache
    return headers


def resolve_route(rt: Runtime, model: str, opts: RequestOptions) -> Route:
    target = opts.route or model
    if target == "default" and "default" not in rt.routes and rt.default_route:
        target = rt.default_route
    route = rt.resolve(target)
    return rt.for_task(route, opts.task) if opts.task else route


def _models_of(route: Route) -> list[str]:
    return [d.name for d in (*route.pool, *route.fallbacks)]


def _raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """ASGI header pairs (lower-case names) for a dict of response headers."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class _JSONAnswer:
    """A successful JSON answer as two plain ASGI messages (Starlette's Response re-encodes headers)."""

    __slots__ = ("body", "raw_headers")

    def __init__(self, body: bytes, headers: dict[str, str]) -> None:
        self.body = body
        self.raw_headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *_raw_headers(headers),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body})


class _SSEResponse:
    """A server-sent-events answer, sent as the generator makes it; cleanup always runs.

    Plain ASGI rather than Starlette's StreamingResponse, which runs every stream in an anyio task
    group with a second task.  One watcher task waits for the client to leave and then cancels the
    stream, so an abandoned answer stops reading (and paying for) the upstream at once.
    """

    def __init__(
        self, content: AsyncGenerator[bytes, None], on_close: Callable[[], Awaitable[None]], headers: dict[str, str]
    ) -> None:
        self.content = content
        self._on_close = on_close
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8"), *_raw_headers(headers)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        me = asyncio.current_task()
        state = {"finished": False, "gone": False}

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not state["finished"] and me is not None:
                        state["gone"] = True
                        me.cancel()
                    return

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for frame in self.content:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            state["finished"] = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not state["gone"] or me is None:
                raise
            me.uncancel()  # the client left: not an error, nothing more to send
        finally:
            state["finished"] = True
            watcher.cancel()
            await self.content.aclose()
            await self._on_close()


async def _end_stream(
    on_close: Callable[[], Awaitable[None]],
    record: Callable[[ModelyardError | None], Awaitable[None]],
    error: ModelyardError | None,
) -> None:
    await on_close()
    await record(error)


class OpenAIHandlers:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.ids = IdFactory()

    async def _principal(self, request: Request) -> Principal:
        services = self.gw.services
        if services is None:
            return ANONYMOUS
        return await services.auth.authenticate(request.headers)

    def _accounting(
        self,
        rt: Runtime,
        req: ChatRequest | None,
        route: Route,
        principal: Principal,
        opts: RequestOptions,
        request_id: str,
        *,
        stream: bool,
    ) -> RequestAccounting | None:
        services = self.gw.services
        if services is None:
            return None
        return services.accountant.request(
            req,
            rt=rt,
            route=route.name,
            org_id=principal.org_id,
            key_id=principal.key_id,
            task=opts.task,
            stream=stream,
            max_cost_usd=opts.max_cost_usd,
            request_id=request_id,
        )

    # -- chat completions ----------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response | _JSONAnswer | _SSEResponse:
        t0 = time.perf_counter()
        request_id = self.ids.new()
        gw = self.gw
        acct: RequestAccounting | None = None
        key_slot = None
        try:
            principal = await self._principal(request)
            req = parse_chat_request(decode_body(await read_body(request, gw.max_body)))
            opts = parse_options(req.options, option_headers(request))
        except ModelyardError as exc:
            return error_response(exc, request_id)
        async with gw.holder.use() as rt:
            try:
                route = resolve_route(rt, req.model, opts)
                principal.check_access(route.name, _models_of(route))
                if gw.services is not None:
                    key_slot = gw.services.auth.key_slot(principal, estimate_tokens(req))
                acct = self._accounting(rt, req, route, principal, opts, request_id, stream=req.stream)
                cache_state, ckey = self._cache_state(route, req, opts, principal)
                if ckey is not None:
                    hit = await gw.services.cache.get(ckey) if gw.services is not None else None
                    if hit is not None:
                        return self._serve_hit(hit, req, route, request_id, acct, t0)
                if not req.stream:
                    response, result = await gw.router.chat(route, req, opts, acct)
                    overhead = (time.perf_counter() - t0 - result.upstream_s) * 1000
                    if acct is not None:
                        acct.finish(result, usage=response.usage, overhead_ms=overhead)
                    if ckey is not None and gw.services is not None and route.config.cache_ttl_s:
                        await gw.services.cache.set(
                            ckey, CachedResponse.of(response, result.deployment.name), route.config.cache_ttl_s
                        )
                    return _JSONAnswer(
                        encode_response(response, result.deployment.name),
                        _headers(request_id, result, overhead, cache_state),
                    )
                routed = await gw.router.stream(route, req, opts, acct)
            except ModelyardError as exc:
                if acct is not None:
                    acct.finish(None, attempts=getattr(exc, "records", []), error=exc)
                return error_response(exc, request_id)
            finally:
                if key_slot is not None:
                    key_slot.release(None)
            rt.active += 1  # the stream outlives this block: pin the runtime until it ends
        elapsed = time.perf_counter() - t0
        upstream = routed.result.upstream_s + (time.perf_counter() - routed.started)
        overhead_ms = (elapsed - upstream) * 1000
        headers = _headers(request_id, routed.result, overhead_ms, cache_state)
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
        holder = gw.holder
        closed = False
        counted = {"chars": 0}

        async def on_close() -> None:
            # Runs exactly once: whether the stream ended, failed, or the client left before it began.
            nonlocal closed
            if closed:
                return
            closed = True
            await routed.abort()
            rt.active -= 1
            if rt.retired and rt.active == 0:
                holder.release(rt)

        kept: list[ChatChunk] | None = [] if ckey is not None else None
        ttl = route.config.cache_ttl_s

        async def record(error: ModelyardError | None) -> None:
            if acct is not None:
                acct.finish(
                    routed.result,
                    usage=routed.usage,
                    output_chars=counted["chars"],
                    error=error,
                    ttft_ms=routed.ttft_ms,
                    overhead_ms=overhead_ms,
                )
            if kept is not None and error is None and ckey is not None and ttl and gw.services is not None:
                whole = assemble_response(kept, routed.usage)
                if whole is not None and routed.continued_by is None:
                    await gw.services.cache.set(ckey, CachedResponse.of(whole, routed.result.deployment.name), ttl)

        return _SSEResponse(
            self._sse(routed, req.include_usage, request_id, on_close, record, counted, kept), on_close, headers
        )

    def _cache_state(
        self, route: Route, req: ChatRequest, opts: RequestOptions, principal: Principal
    ) -> tuple[str | None, str | None]:
        if not route.config.cache_ttl_s or self.gw.services is None:
            return None, None
        if opts.cache is False:
            return "bypass", None
        return "miss", cache_key(req, route.name, principal.org_id)

    def _serve_hit(
        self,
        hit: CachedResponse,
        req: ChatRequest,
        route: Route,
        request_id: str,
        acct: RequestAccounting | None,
        t0: float,
    ) -> Response:
        response: ChatResponse = hit.to_response()
        overhead = (time.perf_counter() - t0) * 1000
        if acct is not None:
            acct.finish(None, usage=response.usage, cache_hit_model=hit.model, overhead_ms=overhead)
        headers = {
            "X-Request-Id": request_id,
            "X-Modelyard-Model": hit.model,
            "X-Modelyard-Provider": "cache",
            "X-Modelyard-Route": route.name,
            "X-Modelyard-Attempts": "0",
            "X-Modelyard-Fallback": "false",
            "X-Modelyard-Overhead-Ms": f"{overhead:.2f}",
            "X-Modelyard-Cache": "hit",
        }
        if not req.stream:
            return Response(encode_response(response, hit.model), media_type=_JSON, headers=headers)
        chunk_id = f"chatcmpl-{request_id.removeprefix('req_')[:29]}"
        created = int(time.time())
        frames = [
            encode_chunk(c, hit.model, chunk_id=chunk_id, created=created)
            for c in replay_chunks(response)
            if req.include_usage or c.choices
        ]
        body = b"".join(frames) + DONE
        return Response(body, media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"})

    async def _sse(
        self,
        routed: RoutedStream,
        include_usage: bool,
        request_id: str,
        on_close: Callable[[], Awaitable[None]],
        record: Callable[[ModelyardError | None], Awaitable[None]],
        counted: dict[str, int],
        kept: list[ChatChunk] | None,
    ) -> AsyncGenerator[bytes, None]:
        model = routed.result.deployment.name
        chunk_id = f"chatcmpl-{request_id.removeprefix('req_')[:29]}"
        created = int(time.time())
        usage_sent = False
        chars = 0
        error: ModelyardError | None = None
        try:
            async for chunk in routed.chunks():
                if kept is not None:
                    kept.append(chunk)
                if chunk.usage is not None and not chunk.choices:
                    if include_usage:
                        usage_sent = True
                        yield encode_chunk(chunk, model, chunk_id=chunk_id, created=created)
                    continue
                for c in chunk.choices:
                    if c.content:
                        chars += len(c.content)
                if chunk.usage is not None and not include_usage:
                    chunk = ChatChunk(
                        chunk.id, chunk.created, chunk.model, chunk.choices, None, chunk.system_fingerprint
                    )
                elif chunk.usage is not None:
                    usage_sent = True
                yield encode_chunk(
                    chunk, chunk.model if routed.continued_by else model, chunk_id=chunk_id, created=created
                )
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
            error = exc
            log.warning("stream %s from %s failed after it started: %s", request_id, model, exc.message)
            body = exc.to_openai()
            body["error"]["message"] = (
                f"the stream from {model} failed after it started; the answer is incomplete: {exc.message}"
            )
            yield sse_error(body)
        finally:
            counted["chars"] = chars
            # Shielded: a client that hangs up right after the last frame cancels this task while the
            # cleanup runs; the upstream must still be released and the request recorded.
            await asyncio.shield(_end_stream(on_close, record, error))

    # -- embeddings ----------------------------------------------------------------------------

    async def embeddings(self, request: Request) -> Response | _JSONAnswer:
        t0 = time.perf_counter()
        request_id = self.ids.new()
        gw = self.gw
        acct: RequestAccounting | None = None
        try:
            principal = await self._principal(request)
            req = parse_embedding_request(decode_body(await read_body(request, gw.max_body)))
            opts = parse_options(req.options, option_headers(request))
            async with gw.holder.use() as rt:
                route = resolve_route(rt, req.model, opts)
                principal.check_access(route.name, _models_of(route))
                acct = self._accounting(rt, None, route, principal, opts, request_id, stream=False)
                response, result = await gw.router.embed(route, req, opts, acct)
        except ModelyardError as exc:
            if acct is not None:
                acct.finish(None, attempts=getattr(exc, "records", []), error=exc)
            return error_response(exc, request_id)
        overhead = (time.perf_counter() - t0 - result.upstream_s) * 1000
        if acct is not None:
            acct.finish(result, usage=response.usage, overhead_ms=overhead)
        return _JSONAnswer(
            encode_embeddings(response, result.deployment.name, req.encoding_format),
            _headers(request_id, result, overhead, None),
        )

    # -- models --------------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        try:
            await self._principal(request)
        except ModelyardError as exc:
            return error_response(exc)
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
