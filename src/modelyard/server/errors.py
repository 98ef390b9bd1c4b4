"""The one place errors become HTTP responses in OpenAI's error JSON."""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from modelyard.errors import ModelyardError

__all__ = ["error_response", "http_exception_handler", "modelyard_error_handler", "unexpected_error_handler"]

log = logging.getLogger("modelyard.server")

_HTTP_TYPES = {404: "not_found_error", 405: "invalid_request_error"}


def error_response(exc: ModelyardError, request_id: str | None = None) -> Response:
    headers = dict(exc.headers())
    if request_id:
        headers["X-Request-Id"] = request_id
    return Response(
        orjson.dumps(exc.to_openai()), status_code=exc.status, headers=headers, media_type="application/json"
    )


async def modelyard_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelyardError)
    return error_response(exc, request.headers.get("x-request-id"))


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path} (see README for the API)"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    body = {
        "error": {
            "message": message,
            "type": _HTTP_TYPES.get(exc.status_code, "invalid_request_error"),
            "param": None,
            "code": None,
        }
    }
    return Response(
        orjson.dumps(body),
        status_code=exc.status_code,
        media_type="application/json",
        headers=getattr(exc, "headers", None),
    )


async def unexpected_error_handler(request: Request, exc: Exception) -> Response:
    request_id = request.headers.get("x-request-id")
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    body = {
        "error": {
            "message": "internal error in modelyard; the server log has the details"
            + (f" (request {request_id})" if request_id else ""),
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    return Response(orjson.dumps(body), status_code=500, media_type="application/json")
