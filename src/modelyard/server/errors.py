"""The one place errors become HTTP responses in OpenAI's error JSON."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from modelyard.errors import ModelyardError

__all__ = [
    "anthropic_error_response",
    "error_response",
    "http_exception_handler",
    "modelyard_error_handler",
    "request_validation_handler",
    "unexpected_error_handler",
]

log = logging.getLogger("modelyard.server")

_HTTP_TYPES = {404: "not_found_error", 405: "invalid_request_error"}


def error_response(exc: ModelyardError, request_id: str | None = None) -> Response:
    headers = dict(exc.headers())
    if request_id:
        headers["X-Request-Id"] = request_id
    return Response(
        orjson.dumps(exc.to_openai()), status_code=exc.status, headers=headers, media_type="application/json"
    )


#: HTTP status -> the Anthropic error type (what the anthropic SDK and Claude Code read)
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def anthropic_error_body(exc: ModelyardError) -> dict[str, object]:
    """The same error in the Messages API's shape: ``{"type": "error", "error": {type, message}}``."""
    kind = _ANTHROPIC_TYPES.get(exc.status, "invalid_request_error" if 400 <= exc.status < 500 else "api_error")
    message = exc.message if not exc.param else f"{exc.param}: {exc.message}"
    return {"type": "error", "error": {"type": kind, "message": message}}


def anthropic_error_response(exc: ModelyardError, request_id: str | None = None) -> Response:
    headers = dict(exc.headers())
    if request_id:
        headers["request-id"] = request_id
        headers["X-Request-Id"] = request_id
    return Response(
        orjson.dumps(anthropic_error_body(exc)), status_code=exc.status, headers=headers, media_type="application/json"
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


_WHERE = frozenset({"body", "query", "path", "header", "cookie"})


def _param(loc: Any) -> str | None:
    parts = [str(p) for p in (loc or ()) if not isinstance(p, int)]
    if parts and parts[0] in _WHERE:
        parts = parts[1:]
    return ".".join(parts) or None


async def request_validation_handler(request: Request, exc: Exception) -> Response:
    """FastAPI's request validation (the admin API's bodies, query parameters) as a 400 in OpenAI's
    error JSON, ``param`` naming the first offending field.

    Built from each error's location and message only: the rejected input (which may be NaN, or
    large) is never echoed, so the answer always encodes.
    """
    from fastapi.exceptions import RequestValidationError  # FastAPI is built on first use (server/app.py)

    assert isinstance(exc, RequestValidationError)
    errors = [e for e in exc.errors() if isinstance(e, dict)]
    if any(e.get("type") == "json_invalid" for e in errors):
        message, param = "the request body is not valid JSON", None
    else:
        param = _param(errors[0].get("loc")) if errors else None
        problems = [f"'{_param(e.get('loc')) or 'body'}': {e.get('msg', 'invalid')}" for e in errors[:5]]
        message = "Invalid " + "; ".join(problems) if problems else "invalid request"
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": "invalid_value"}}
    return Response(orjson.dumps(body), status_code=400, media_type="application/json")


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
