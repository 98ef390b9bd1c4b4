"""``POST /v1/responses``: the OpenAI Responses API (openai-agents, langchain's Responses mode,
pydantic-ai's Responses model), through the one pipeline to any provider.

With the database, a response is stored unless ``store: false`` (OpenAI's default), for
``responses.retention_s``, scoped to the caller's organisation: ``previous_response_id`` continues
it, ``GET``/``DELETE /v1/responses/{id}`` read and remove it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from modelyard.errors import InvalidRequestError, ModelyardError, NotFoundError
from modelyard.gateway.pipeline import ServedStream
from modelyard.routing.options import parse_options
from modelyard.server.body import option_headers
from modelyard.server.errors import error_response
from modelyard.server.openai_api import _JSONAnswer, _SSEResponse, json_answer, read_request, sse_answer
from modelyard.wire.responses import ResponsesStream, input_items, parse_responses_request, response_object

if TYPE_CHECKING:
    from modelyard.server.state import AppState

__all__ = ["ResponsesHandlers"]


class ResponsesHandlers:
    def __init__(self, gw: AppState) -> None:
        self.gw = gw

    async def _prepare(self, body: dict[str, Any], org_id: str | None) -> tuple[dict[str, Any], list[Any], str | None]:
        """The body with a stored conversation merged in for ``previous_response_id``; the whole
        conversation's input items; the previous id."""
        previous = body.get("previous_response_id")
        services = self.gw.services
        if previous is None or services is None:
            return body, input_items(body.get("input")), None
        if not isinstance(previous, str) or len(previous) > 100:
            raise InvalidRequestError("previous_response_id must be a response id", param="previous_response_id")
        found = await services.responses.get(previous, org_id)
        if found is None:
            raise NotFoundError(
                f"no stored response {previous!r} (not stored, expired, or another organisation's)",
                param="previous_response_id",
                code="response_not_found",
            )
        conversation = [*found[0], *input_items(body.get("input"))]
        merged = {k: v for k, v in body.items() if k != "previous_response_id"}
        merged["input"] = conversation
        return merged, conversation, previous

    async def create(self, request: Request) -> Response | _JSONAnswer | _SSEResponse:
        t0 = time.perf_counter()
        pipeline = self.gw.pipeline
        services = self.gw.services
        request_id = pipeline.ids.new()
        try:
            principal, body = await read_request(self.gw, request, _object)
            body, conversation, previous = await self._prepare(body, principal.org_id)
            req = parse_responses_request(body)
            store = services is not None and body.get("store") is not False
            opts = parse_options(req.options, option_headers(request))
            if not req.stream:
                served = await pipeline.chat(req, opts, principal, request_id=request_id, started=t0)
                obj = response_object(
                    served.response,
                    req,
                    served.model,
                    served.request_id,
                    served.cost_usd,
                    store=store,
                    previous=previous,
                )
                if store and services is not None:
                    await self._store(obj, conversation, principal.org_id)
                return json_answer(served, orjson.dumps(obj), cache=served.cache)
            stream = await pipeline.stream(req, opts, principal, request_id=request_id, started=t0)
        except ModelyardError as exc:
            return error_response(exc, request_id)

        def events() -> AsyncGenerator[bytes, None]:
            out = ResponsesStream(req, stream.model, stream.request_id, store=store, previous=previous)
            return self._events(stream, out, conversation if store else None, principal.org_id)

        return await sse_answer(stream, events)

    async def _store(self, obj: dict[str, Any], conversation: list[Any], org_id: str | None) -> None:
        services = self.gw.services
        if services is None:
            return
        retention = self.gw.holder.current.config.responses.retention_s
        await services.responses.put(obj["id"], org_id, [*conversation, *obj["output"]], obj, retention)

    async def _events(
        self, stream: ServedStream, out: ResponsesStream, conversation: list[Any] | None, org_id: str | None
    ) -> AsyncGenerator[bytes, None]:
        try:
            yield out.start()
            async for chunk in stream.chunks():
                frame = out.feed(chunk)
                if frame:
                    yield frame
            last = out.end(stream.cost_usd)
            if conversation is not None and out.final is not None:
                await self._store(out.final, conversation, org_id)  # stored before the client hears it is done
            yield last
        except ModelyardError as exc:
            yield out.failed({"code": exc.code or "server_error", "message": exc.message})
        finally:
            await stream.aclose()

    async def stored(self, request: Request) -> Response:
        """``GET /v1/responses/{id}`` (the stored response) and ``DELETE`` (removes it)."""
        try:
            principal = await self.gw.pipeline.authenticate(request.headers)
            rid = request.path_params["response_id"][:100]
            services = self.gw.services
            if services is None:
                raise NotFoundError(
                    f"no stored response {rid!r}: this gateway runs without its database",
                    param="response_id",
                    code="response_not_found",
                )
            if request.method == "DELETE":
                if not await services.responses.delete(rid, principal.org_id):
                    raise NotFoundError(f"no stored response {rid!r}", param="response_id", code="response_not_found")
                return Response(
                    orjson.dumps({"id": rid, "object": "response.deleted", "deleted": True}),
                    media_type="application/json",
                )
            found = await services.responses.get(rid, principal.org_id)
            if found is None:
                raise NotFoundError(
                    f"no stored response {rid!r} (not stored, expired, or another organisation's)",
                    param="response_id",
                    code="response_not_found",
                )
            return Response(orjson.dumps(found[1]), media_type="application/json")
        except ModelyardError as exc:
            return error_response(exc)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    return body
