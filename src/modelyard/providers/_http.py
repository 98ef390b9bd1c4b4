"""HTTP plumbing shared by the adapters: error translation, Retry-After, SSE and NDJSON framing.

Adapters never let a transport or asyncio exception escape: everything that goes wrong on the
wire becomes an :class:`~modelyard.errors.UpstreamError` here, in one place.
"""

from __future__ import annotations

import email.utils
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from modelyard.errors import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamMalformedError,
    UpstreamTimeoutError,
)
from modelyard.transport.base import ConnectTimeout, ProxyError, RequestBuildError, Response, ResponseCutOff

__all__ = [
    "SSEEvent",
    "iter_lines",
    "iter_sse",
    "iter_sse_data",
    "parse_retry_after",
    "translate_errors",
    "translate_exception",
]


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` (or ``retry-after-ms``) value: seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_after_from_headers(headers: Mapping[str, Any] | None) -> float | None:
    if not headers:
        return None
    get = getattr(headers, "get", None)
    if get is None:
        return None
    ms = get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = get("Retry-After")
    return parse_retry_after(value if isinstance(value, str) else None)


def _where(url: str | None) -> str:
    """`` at http://host:port/path`` for a message (without any user:password), or nothing."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f" at {parts.scheme}://{host}{parts.path}"


def translate_exception(exc: BaseException, provider: str, model: str, url: str | None = None) -> UpstreamError | None:
    """The UpstreamError for a transport exception (None: not a transport failure, let it through).
    ``url``: the provider's base URL, named in connection failures and timeouts."""
    if isinstance(exc, UpstreamError):
        return None
    where = _where(url)
    if isinstance(exc, TimeoutError):
        phase = "connect" if isinstance(exc, ConnectTimeout) else "total"
        return UpstreamTimeoutError(
            f"{provider}: no answer from upstream model {model!r}{where} in time ({phase} timeout)",
            provider=provider,
            model=model,
            phase=phase,
        )
    if isinstance(exc, ResponseCutOff):
        return UpstreamConnectionError(
            f"{provider}: the response from {model!r} was cut off ({exc})", provider=provider, model=model
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        # a configuration problem, not a passing one: trying again cannot help
        return UpstreamConnectionError(
            f"{provider}: TLS certificate verification failed for {model!r} ({exc.verify_message or exc}); "
            "for a private CA set the provider's tls.ca_bundle",
            provider=provider,
            model=model,
            code="upstream_tls_error",
            retryable=False,
        )
    if isinstance(exc, ProxyError):
        return UpstreamConnectionError(
            f"{provider}: proxy error for {model!r}: {exc}",
            provider=provider,
            model=model,
            code="upstream_proxy_error",
            retryable=exc.status is None or exc.status >= 500,
        )
    if isinstance(exc, RequestBuildError):
        return UpstreamConnectionError(
            f"{provider}: cannot send the request for {model!r}: {exc}", provider=provider, model=model
        )
    if isinstance(exc, (ConnectionError, OSError)):
        return UpstreamConnectionError(
            f"{provider}: connection to upstream failed for {model!r}{where} ({type(exc).__name__}: {exc}); "
            f"is the provider's base_url right and the server up?",
            provider=provider,
            model=model,
        )
    return None


@asynccontextmanager
async def translate_errors(provider: str, model: str) -> AsyncIterator[None]:
    """Turn transport exceptions raised inside the block into UpstreamErrors."""
    try:
        yield
    except Exception as exc:
        translated = translate_exception(exc, provider, model)
        if translated is None:
            raise
        raise translated from exc


@dataclass(slots=True)
class SSEEvent:
    event: str
    data: str


async def iter_lines(resp: Response) -> AsyncIterator[bytes]:
    """Lines of a response body, without line endings (handles ``\\r\\n``)."""
    buffer = b""
    async for chunk in resp.iter_chunks():
        buffer += chunk
        while True:
            nl = buffer.find(b"\n")
            if nl < 0:
                break
            line = buffer[:nl]
            buffer = buffer[nl + 1 :]
            if line.endswith(b"\r"):
                line = line[:-1]
            yield line
    if buffer:
        yield buffer.rstrip(b"\r")


#: the most bytes of events handed on at once (see _event_blocks)
_GROUP = 16 * 1024


async def _event_blocks(resp: Response) -> AsyncIterator[list[bytes]]:
    """The server-sent events of a response as raw blocks (their lines, ``\\n``-separated, line
    ends normalised), one list per read: events that arrived together come together.

    Events end at a blank line (WHATWG); the bytes are split per event, not per line, with C-level
    ``find``/``split``: this runs for every chunk of every stream.
    """
    buffer = b""
    async for piece in resp.iter_chunks():
        buffer = buffer + piece if buffer else piece
        del piece  # one copy of the read while its groups wait for the client, not two
        if b"\r" in buffer:  # "\r\n" or a lone "\r" ends a line too; a "\r" at the very end may be half a "\r\n"
            half = buffer[-1:] == b"\r"
            buffer = (buffer[:-1] if half else buffer).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if half:
                buffer += b"\r"
        # at most _GROUP bytes of events at a time: a big read is handed on in groups, each only
        # after the client took the last (back-pressure; bounded memory per stream).  The groups are
        # taken at an offset: the rest of the piece is not copied for each group
        start, size = 0, len(buffer)
        while True:
            if size - start > _GROUP:
                end = buffer.rfind(b"\n\n", start, start + _GROUP)
                if end < 0:
                    end = buffer.find(b"\n\n", start)  # one event bigger than a group
            else:
                end = buffer.rfind(b"\n\n", start)
            if end < 0:
                break
            blocks = [b for b in (buffer[start:end] if start else buffer[:end]).split(b"\n\n") if b]
            start = end + 2
            if blocks:
                yield blocks
        if start:
            buffer = buffer[start:]
    tail = buffer.replace(b"\r", b"").strip(b"\n")
    if tail:
        yield [tail]


def _fields(block: bytes) -> tuple[bytes, list[bytes]]:
    """(event name, data lines) of one event block; comments and unknown fields are skipped."""
    if block[:5] == b"data:" and b"\n" not in block:  # nearly every event: one data line
        return b"", [block[6:] if block[5:6] == b" " else block[5:]]
    if block[:6] == b"event:" and block.count(b"\n") == 1:  # or a name and one data line (Anthropic)
        name, line = block.split(b"\n")
        if line[:5] == b"data:":
            return name[7:] if name[6:7] == b" " else name[6:], [line[6:] if line[5:6] == b" " else line[5:]]
    event = b""
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line[0] == 58:  # 58: ":" a comment
            continue
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value
    return event, data


async def iter_sse(resp: Response, *, provider: str, model: str) -> AsyncIterator[list[SSEEvent]]:
    """Server-sent events of a response, per the WHATWG framing (``event:``/``data:`` lines), one
    list per read: the events that arrived together come together (their chunks are written to
    the client together)."""
    async for blocks in _event_blocks(resp):
        batch: list[SSEEvent] = []
        for block in blocks:
            event, data = _fields(block)
            if data:
                text = _utf8(data[0] if len(data) == 1 else b"\n".join(data), provider, model)
                batch.append(SSEEvent(_utf8(event, provider, model) if event else "message", text))
        if batch:
            yield batch


async def iter_sse_data(resp: Response) -> AsyncIterator[list[bytes]]:
    """The ``data`` payloads of a response's server-sent events, as bytes, one list per read: the
    events that arrived together come together (the pass-through writes them together).  Event
    names are not read (OpenAI's Chat Completions stream has none); payloads are not decoded here.
    """
    async for blocks in _event_blocks(resp):
        batch: list[bytes] = []
        for block in blocks:
            data = _fields(block)[1]
            if data:
                batch.append(data[0] if len(data) == 1 else b"\n".join(data))
        if batch:
            yield batch


def _utf8(raw: bytes, provider: str, model: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UpstreamMalformedError(
            f"{provider}: stream from {model!r} is not UTF-8", provider=provider, model=model
        ) from exc
