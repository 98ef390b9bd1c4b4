"""Reading a request: the body under the size limit, and the ``X-Modelyard-*`` option headers."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from modelyard.errors import InvalidRequestError, PayloadTooLargeError

__all__ = ["option_headers", "read_body"]


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
