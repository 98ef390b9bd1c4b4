"""Reading a request: the body under the size limit, and the ``X-Modelyard-*`` option headers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect, Request

from modelyard.errors import InvalidRequestError
from modelyard.server.guard import too_large
from modelyard.wire.openai import decode_body

__all__ = ["OFFLOAD_BYTES", "option_headers", "parse_body", "read_body"]

T = TypeVar("T")

#: bodies at least this large are decoded and parsed in a worker thread: parsing 20 MB on the event
#: loop stalled every other request (``/health`` included) for 1.4 s; below it, parsing inline is
#: cheaper than the thread hop
OFFLOAD_BYTES = 1 << 20


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to be over ``limit`` bytes."""
    length = request.headers.get("content-length")
    if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
        raise too_large(limit)
    receive = request.receive
    message = await receive()
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):  # the usual case: the whole body in one message
        if len(body) > limit:
            raise too_large(limit)
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
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def option_headers(request: Request) -> dict[str, str]:
    """The ``X-Modelyard-*`` request headers (lower-case names); 400 for a value that is not ASCII."""
    out: dict[str, str] = {}
    for k, v in request.headers.raw:
        if k.startswith(b"x-modelyard-"):
            name = k.decode("latin-1")
            if not v.isascii():
                header = name.title()
                raise InvalidRequestError(
                    f"Invalid header '{header}': the value must be ASCII", param=header, code="invalid_value"
                )
            out[name] = v.decode("ascii")
    return out


async def parse_body(body: bytes, parse: Callable[[Any], T]) -> T:
    """``parse(decode_body(body))``, off the event loop for a large body."""
    if len(body) < OFFLOAD_BYTES:
        return parse(decode_body(body))
    return await asyncio.to_thread(lambda: parse(decode_body(body)))
