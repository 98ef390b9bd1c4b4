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
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from modelyard.errors import ModelyardError, NotFoundError
from modelyard.gateway.auth import Principal
from modelyard.gateway.pipeline import Served, ServedEmbeddings, ServedStream
from modelyard.observability.tracing import INCOMING_TRACEPARENT
from modelyard.routing.options import parse_options
from modelyard.server.body import option_headers, parse_body, read_body
from modelyard.server.errors import error_response
from modelyard.types import ChatChunk, Usage
from modelyard.wire.completions import encode_completion, encode_completion_chunk, parse_completion_request
from modelyard.wire.openai import (
    DONE,
    ChunkEncoder,
    Forwarder,
    encode_embeddings,
    encode_response,
    encode_usage,
    parse_chat_request,
    parse_embedding_request,
    sse_error,
)

if TYPE_CHECKING:
    from modelyard.runtime import Runtime
    from modelyard.server.state import AppState

__all__ = ["OpenAIHandlers"]

log = logging.getLogger("modelyard.server")

_JSON = "application/json"


#: a response header's ASGI pair: its lower-case name and its value, latin-1 bytes
Header = tuple[bytes, bytes]


def _headers(served: Served | ServedStream | ServedEmbeddings, cache: str | None = None) -> list[Header]:
    """The routing headers of an answer, as ASGI pairs (built once: no dict, no per-name lower())."""
    headers = [
        (b"x-request-id", served.request_id.encode("latin-1")),
        (b"x-modelyard-model", served.model.encode("latin-1")),
        (b"x-modelyard-provider", served.provider.encode("latin-1")),
        (b"x-modelyard-route", served.route.encode("latin-1")),
        (b"x-modelyard-attempts", str(len(served.attempts)).encode()),
        (b"x-modelyard-fallback", b"true" if served.fallback else b"false"),
        (b"x-modelyard-overhead-ms", f"{served.overhead_ms:.2f}".encode()),
    ]
    if cache is not None:
        headers.append((b"x-modelyard-cache", cache.encode("latin-1")))
    tier = getattr(served, "tier", None)
    if tier is not None:  # strategy auto: what the classifier saw and why this tier
        reason = getattr(served, "tier_reason", None) or tier.reason
        headers += [
            (b"x-modelyard-tier", tier.tier.encode("latin-1")),
            (b"x-modelyard-complexity", f"{tier.complexity:.4f}".encode()),
            (b"x-modelyard-task", tier.task.encode("latin-1")),
            (b"x-modelyard-tier-reason", reason.encode("ascii", "replace")[:200]),
        ]
    return headers


def json_answer(
    served: Served | ServedEmbeddings, body: bytes, *, cache: str | None = None, extra: dict[str, str] | None = None
) -> _JSONAnswer:
    """A served answer: the routing headers, the cost header, and ``extra`` (an API's own)."""
    headers = _headers(served, cache)
    headers.append((b"x-modelyard-cost-usd", _usd(served.cost_usd).encode()))
    if extra:
        headers += _raw_headers(extra)
    return _JSONAnswer(body, headers)


async def sse_answer(
    stream: ServedStream, events: Callable[[], AsyncGenerator[bytes, None]], extra: dict[str, str] | None = None
) -> _SSEResponse:
    """A served stream as server-sent events (``events()`` makes them); the stream is closed if the
    answer cannot even start."""
    try:
        headers = _headers(stream, stream.cache)
        headers += _SSE_HEADERS
        if extra:
            headers += _raw_headers(extra)
        return _SSEResponse(events(), stream.aclose, headers)
    except BaseException:
        await stream.aclose()
        raise


def _usd(value: float) -> str:
    """A cost for a header: plain decimal, no exponent (``0.00001234``)."""
    return f"{value:.10f}".rstrip("0").rstrip(".") or "0"


#: what every stream's answer says besides its routing headers
_SSE_HEADERS = ((b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no"))


def _raw_headers(headers: dict[str, str]) -> list[Header]:
    """ASGI header pairs (lower-case names) for a dict of response headers."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class _JSONAnswer:
    """A successful JSON answer as two plain ASGI messages (Starlette's Response re-encodes headers)."""

    __slots__ = ("body", "raw_headers")

    def __init__(self, body: bytes, headers: list[Header]) -> None:
        self.body = body
        self.raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        self.raw_headers += headers

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
        self, content: AsyncGenerator[bytes, None], on_close: Callable[[], Awaitable[None]], headers: list[Header]
    ) -> None:
        self.content = content
        self._on_close = on_close
        self.raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        self.raw_headers += headers

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


T = TypeVar("T")


async def read_request(gw: AppState, request: Request, parse: Callable[[Any], T]) -> tuple[Principal, T]:
    """Who is calling, and the body parsed by ``parse`` (the steps every API's handler takes first;
    the chat completions handler inlines them on its hot path)."""
    pipeline = gw.pipeline
    principal = await pipeline.authenticate(request.headers)
    if pipeline.tracing is not None:
        INCOMING_TRACEPARENT.set(request.headers.get("traceparent"))
    return principal, await parse_body(await read_body(request, gw.max_body), parse)


class OpenAIHandlers:
    """Read the body, parse it into the internal shape, hand it to the pipeline, write OpenAI JSON."""

    def __init__(self, gw: AppState) -> None:
        self.gw = gw

    # -- chat completions ----------------------------------------------------------------------

    async def chat_completions(self, request: Request) -> Response | _JSONAnswer | _SSEResponse:
        t0 = time.perf_counter()
        gw = self.gw
        pipeline = gw.pipeline
        request_id = pipeline.ids.new()
        try:
            principal = await pipeline.authenticate(request.headers)
            if pipeline.tracing is not None:
                INCOMING_TRACEPARENT.set(request.headers.get("traceparent"))
            req = await parse_body(await read_body(request, gw.max_body), parse_chat_request)
            opts = parse_options(req.options, option_headers(request))
            if not req.stream:
                served = await pipeline.chat(req, opts, principal, request_id=request_id, started=t0)
                body = encode_response(served.response, served.model, served.cost_usd)
                return json_answer(served, body, cache=served.cache)
            stream = await pipeline.stream(req, opts, principal, request_id=request_id, started=t0)
        except ModelyardError as exc:
            return error_response(exc, request_id)
        return await sse_answer(stream, lambda: self._sse(stream, req.include_usage))

    async def _sse(self, stream: ServedStream, include_usage: bool) -> AsyncGenerator[bytes, None]:
        """The stream's frames. Chunks that arrived together from the upstream go out in one write;
        plain OpenAI-format chunks are forwarded as they came (``Forwarder``), the rest encoded."""
        model = stream.model
        chunk_id = f"chatcmpl-{stream.request_id.removeprefix('req_')[:29]}"
        created = int(time.time())
        forward = Forwarder(model, chunk_id).frames
        encode = ChunkEncoder(model, chunk_id, created).encode
        usage_sent = False
        out: list[bytes] = []
        try:
            async for chunk in stream.chunks():
                raw = chunk.raw
                frame = forward(raw) if raw is not None else None
                if frame is not None:
                    out.append(frame)
                elif chunk.usage is not None and not chunk.choices:
                    if include_usage:
                        usage_sent = True
                        out.append(encode(chunk, cost_usd=stream.cost_usd))
                else:
                    if chunk.usage is not None and not include_usage:
                        chunk = ChatChunk(
                            chunk.id, chunk.created, chunk.model, chunk.choices, None, chunk.system_fingerprint
                        )
                    elif chunk.usage is not None:
                        usage_sent = True
                    out.append(
                        encode(
                            chunk,
                            chunk.model if stream.continued_by else None,
                            stream.cost_usd if chunk.usage is not None else None,
                        )
                    )
                if not chunk.more and out:
                    yield out[0] if len(out) == 1 else b"".join(out)
                    out = []
            if include_usage and not usage_sent:
                usage = stream.usage or Usage(estimated=True)
                out.append(
                    b"data: "
                    + orjson.dumps(
                        {
                            "id": chunk_id,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "choices": [],
                            "usage": encode_usage(usage, stream.cost_usd),
                        }
                    )
                    + b"\n\n"
                )
            out.append(DONE)
            yield b"".join(out)
        except ModelyardError as exc:
            log.warning("stream %s from %s failed after it started: %s", stream.request_id, model, exc.message)
            body = exc.to_openai()
            body["error"]["message"] = (
                f"the stream from {model} failed after it started; the answer is incomplete: {exc.message}"
            )
            out.append(sse_error(body))
            yield b"".join(out)
        finally:
            # Shielded inside: a client that hangs up right after the last frame cancels this task
            # while the cleanup runs; the upstream must still be released and the request recorded.
            await stream.aclose()

    # -- legacy completions (translated to chat) ------------------------------------------------

    async def completions(self, request: Request) -> Response | _JSONAnswer | _SSEResponse:
        """``POST /v1/completions``: the prompt as one user message, the answer as ``text_completion``."""
        t0 = time.perf_counter()
        gw = self.gw
        pipeline = gw.pipeline
        request_id = pipeline.ids.new()
        try:
            principal, req = await read_request(gw, request, parse_completion_request)
            opts = parse_options(req.options, option_headers(request))
            if not req.stream:
                served = await pipeline.chat(req, opts, principal, request_id=request_id, started=t0)
                body = encode_completion(served.response, served.model, served.request_id, served.cost_usd)
                return json_answer(served, body, cache=served.cache)
            stream = await pipeline.stream(req, opts, principal, request_id=request_id, started=t0)
        except ModelyardError as exc:
            return error_response(exc, request_id)
        return await sse_answer(stream, lambda: self._completion_sse(stream, req.include_usage))

    async def _completion_sse(self, stream: ServedStream, include_usage: bool) -> AsyncGenerator[bytes, None]:
        created = int(time.time())
        try:
            async for chunk in stream.chunks():
                if chunk.usage is not None and not include_usage:
                    if not chunk.choices:
                        continue
                    chunk = ChatChunk(chunk.id, chunk.created, chunk.model, chunk.choices, None)
                cost = stream.cost_usd if chunk.usage is not None else None
                frame = encode_completion_chunk(chunk, stream.model, stream.request_id, created, cost)
                if frame is not None:
                    yield frame
            yield DONE
        except ModelyardError as exc:
            body = exc.to_openai()
            body["error"]["message"] = f"the stream failed after it started; the answer is incomplete: {exc.message}"
            yield sse_error(body)
        finally:
            await stream.aclose()

    # -- embeddings ----------------------------------------------------------------------------

    async def embeddings(self, request: Request) -> Response | _JSONAnswer:
        t0 = time.perf_counter()
        gw = self.gw
        pipeline = gw.pipeline
        request_id = pipeline.ids.new()
        try:
            principal, req = await read_request(gw, request, parse_embedding_request)
            opts = parse_options(req.options, option_headers(request))
            served = await pipeline.embed(req, opts, principal, request_id=request_id, started=t0)
        except ModelyardError as exc:
            return error_response(exc, request_id)
        return json_answer(served, encode_embeddings(served.response, served.model, req.encoding_format))

    # -- models --------------------------------------------------------------------------------

    async def models(self, request: Request) -> Response:
        try:
            await self.gw.pipeline.authenticate(request.headers)
        except ModelyardError as exc:
            return error_response(exc)
        data = _model_entries(self.gw.holder.current)
        if "anthropic-version" in request.headers:  # the anthropic SDK's models.list
            return Response(orjson.dumps(_anthropic_list(data)), media_type=_JSON)
        return Response(orjson.dumps({"object": "list", "data": data}), media_type=_JSON)

    async def model(self, request: Request) -> Response:
        """``GET /v1/models/{id}`` (the SDK's ``client.models.retrieve``): one route or model."""
        try:
            await self.gw.pipeline.authenticate(request.headers)
        except ModelyardError as exc:
            return error_response(exc)
        model_id = request.path_params["model_id"]
        for entry in _model_entries(self.gw.holder.current):
            if entry["id"] == model_id:
                if "anthropic-version" in request.headers:
                    return Response(orjson.dumps(_anthropic_model(entry)), media_type=_JSON)
                return Response(orjson.dumps(entry), media_type=_JSON)
        return error_response(
            NotFoundError(f"no route or model {model_id[:200]!r} (GET /v1/models lists them)", param="model")
        )


def _model_entries(rt: Runtime) -> list[dict[str, Any]]:
    """Every route and model, as ``GET /v1/models`` lists them."""
    data: list[dict[str, Any]] = [
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
                "description": d.config.description,
                "capabilities": sorted(d.capabilities),
                "enabled": d.config.enabled,
                "default": name == rt.default_route,
            },
        }
        for name, d in rt.models.items()
    ]
    return data


def _anthropic_model(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "model",
        "id": entry["id"],
        "display_name": entry["modelyard"].get("description") or entry["id"],
        "created_at": "1970-01-01T00:00:00Z",
    }


def _anthropic_list(data: list[dict[str, Any]]) -> dict[str, Any]:
    """``GET /v1/models`` in the Anthropic Models API's shape (asked with an ``anthropic-version`` header)."""
    models = [_anthropic_model(e) for e in data]
    return {
        "data": models,
        "has_more": False,
        "first_id": models[0]["id"] if models else None,
        "last_id": models[-1]["id"] if models else None,
    }
