"""``POST /v1/responses``: the OpenAI Responses API (openai-agents, langchain's Responses mode,
pydantic-ai's Responses model), through the one pipeline to any provider.

Responses are not stored yet (``store`` is answered false; ``previous_response_id`` is a 400 and
``GET``/``DELETE /v1/responses/{id}`` are 404): send the whole conversation as ``input``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from modelyard.errors import ModelyardError, NotFoundError
from modelyard.gateway.pipeline import ServedStream
from modelyard.observability.tracing import INCOMING_TRACEPARENT
from modelyard.routing.options import parse_options
from modelyard.server.body import option_headers, parse_body, read_body
from modelyard.server.errors import error_response
from modelyard.server.openai_api import _headers, _JSONAnswer, _SSEResponse, _usd
from modelyard.types import ChatRequest
from modelyard.wire.responses import ResponsesStream, encode_response_object, parse_responses_request

if TYPE_CHECKING:
    from modelyard.server.state import AppState

__all__ = ["ResponsesHandlers"]


class ResponsesHandlers:
    def __init__(self, gw: AppState) -> None:
        self.gw = gw

    async def create(self, request: Request) -> Response | _JSONAnswer | _SSEResponse:
        t0 = time.perf_counter()
        pipeline = self.gw.pipeline
        request_id = pipeline.ids.new()
        try:
            principal = await pipeline.authenticate(request.headers)
            if pipeline.tracing is not None:
                INCOMING_TRACEPARENT.set(request.headers.get("traceparent"))
            req = await parse_body(await read_body(request, self.gw.max_body), parse_responses_request)
            opts = parse_options(req.options, option_headers(request))
            if not req.stream:
                served = await pipeline.chat(req, opts, principal, request_id=request_id, started=t0)
                headers = _headers(served, served.cache)
                headers["X-Modelyard-Cost-Usd"] = _usd(served.cost_usd)
                body = encode_response_object(served.response, req, served.model, served.request_id, served.cost_usd)
                return _JSONAnswer(body, headers)
            stream = await pipeline.stream(req, opts, principal, request_id=request_id, started=t0)
        except ModelyardError as exc:
            return error_response(exc, request_id)
        try:
            headers = _headers(stream, stream.cache)
            headers["Cache-Control"] = "no-cache"
            return _SSEResponse(self._events(stream, req), stream.aclose, headers)
        except BaseException:
            await stream.aclose()
            raise

    async def _events(self, stream: ServedStream, req: ChatRequest) -> AsyncGenerator[bytes, None]:
        out = ResponsesStream(req, stream.model, stream.request_id)
        try:
            yield out.start()
            async for chunk in stream.chunks():
                frame = out.feed(chunk)
                if frame:
                    yield frame
            yield out.end(stream.cost_usd)
        except ModelyardError as exc:
            yield out.failed({"code": exc.code or "server_error", "message": exc.message})
        finally:
            await stream.aclose()

    async def stored(self, request: Request) -> Response:
        """``GET``/``DELETE /v1/responses/{id}``: nothing is stored yet, so every id is unknown."""
        try:
            await self.gw.pipeline.authenticate(request.headers)
        except ModelyardError as exc:
            return error_response(exc)
        rid = request.path_params["response_id"][:100]
        return error_response(
            NotFoundError(
                f"no stored response {rid!r}: responses are not stored yet",
                param="response_id",
                code="response_not_found",
            )
        )
