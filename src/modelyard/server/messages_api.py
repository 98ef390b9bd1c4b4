"""``POST /v1/messages`` and ``POST /v1/messages/count_tokens``: the Anthropic Messages API.

The anthropic SDK (and tools built on it) point ``base_url`` at the gateway and send their key as
``x-api-key``.  The request is parsed into the internal shape (:mod:`modelyard.wire.messages`)
and takes the one pipeline, to any provider; errors are in Anthropic's shape.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response

from modelyard.accounting.pricing import estimate_input_tokens
from modelyard.errors import InvalidRequestError, ModelyardError
from modelyard.gateway.pipeline import ServedStream
from modelyard.providers.base import FORWARDED
from modelyard.routing.options import parse_options
from modelyard.server.body import option_headers, parse_body, read_body
from modelyard.server.errors import anthropic_error_body, anthropic_error_response
from modelyard.server.openai_api import _JSONAnswer, _SSEResponse, json_answer, read_request, sse_answer
from modelyard.types import ChatRequest
from modelyard.wire.messages import ANTHROPIC_VERSION, MessagesStream, encode_message, event, parse_messages_request

if TYPE_CHECKING:
    from modelyard.server.state import AppState

__all__ = ["MessagesHandlers"]


_VERSION = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


def _check_version(request: Request) -> None:
    """``anthropic-version`` must name a Messages API version: a date, 2023-06-01 or later (the SDKs
    send the one they were built for; the shape the gateway serves is compatible with each)."""
    version = request.headers.get("anthropic-version")
    if version is None:
        return
    m = _VERSION.match(version)
    if m is None or version < ANTHROPIC_VERSION or not (1 <= int(m.group(2)) <= 12 and 1 <= int(m.group(3)) <= 31):
        raise InvalidRequestError(
            f"anthropic-version {version[:40]!r} is not a Messages API version (a date, {ANTHROPIC_VERSION} or later)",
            param="anthropic-version",
        )


class MessagesHandlers:
    def __init__(self, gw: AppState) -> None:
        self.gw = gw

    async def messages(self, request: Request) -> Response | _JSONAnswer | _SSEResponse:
        t0 = time.perf_counter()
        pipeline = self.gw.pipeline
        request_id = pipeline.ids.new()
        try:
            principal, req = await read_request(self.gw, request, parse_messages_request)
            _check_version(request)
            beta = request.headers.get("anthropic-beta")
            if beta is not None:  # forwarded to Anthropic upstreams, ignored by the others
                FORWARDED.set({"anthropic-beta": beta[:1000]})
            opts = parse_options(req.options, option_headers(request))
            if not req.stream:
                served = await pipeline.chat(req, opts, principal, request_id=request_id, started=t0)
                body = encode_message(served.response, served.model, served.request_id, served.cost_usd)
                return json_answer(served, body, cache=served.cache, extra={"request-id": served.request_id})
            stream = await pipeline.stream(req, opts, principal, request_id=request_id, started=t0)
        except ModelyardError as exc:
            return anthropic_error_response(exc, request_id)
        return await sse_answer(stream, lambda: self._events(stream), {"request-id": stream.request_id})

    async def _events(self, stream: ServedStream) -> AsyncGenerator[bytes, None]:
        out = MessagesStream(stream.model, stream.request_id)
        try:
            yield out.start()
            async for chunk in stream.chunks():
                frame = out.feed(chunk)
                if frame:
                    yield frame
            yield out.end(stream.cost_usd)
        except ModelyardError as exc:
            body = anthropic_error_body(exc)
            yield event("error", {"error": body["error"]})
        finally:
            await stream.aclose()

    async def count_tokens(self, request: Request) -> Response:
        """An estimate of the input tokens (the same count budgets reserve with), without a call."""
        try:
            await self.gw.pipeline.authenticate(request.headers)
            _check_version(request)

            def parse(body: object) -> ChatRequest:
                if isinstance(body, dict):  # count_tokens takes no max_tokens
                    body = {**body, "max_tokens": body.get("max_tokens") or 1}
                return parse_messages_request(body)

            req = await parse_body(await read_body(request, self.gw.max_body), parse)
        except ModelyardError as exc:
            return anthropic_error_response(exc)
        tokens = estimate_input_tokens(req)
        return Response(orjson.dumps({"input_tokens": tokens}), media_type="application/json")
