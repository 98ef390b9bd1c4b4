"""The transport interface: send one HTTP request, get back status, headers and a body to read.

In the spirit of httpx's ``AsyncBaseTransport``, but shaped by what an upstream call needs:

* :meth:`Transport.send` takes the method, URL, body, headers, query parameters and the two
  time limits (``timeout_s``: one deadline for connect, send, headers and the whole body, streams
  included; ``connect_timeout_s``: opening a connection) and returns the :class:`Response` once its
  headers arrived, with the :class:`Lease` to release when done with the body;
* the response body is read whole (:meth:`Response.read`) or chunk by chunk
  (:meth:`Response.iter_chunks`), already decoded (gzip, deflate);
* redirects are never followed: a 3xx is returned like any other status;
* every transport raises the same plain exceptions: ``TimeoutError`` (and :class:`ConnectTimeout`),
  :class:`ResponseCutOff`, :class:`RequestBuildError`, :class:`ProxyError`, ``ConnectionError``,
  ``OSError`` and ``ssl.SSLCertVerificationError``.  The providers turn them into
  :class:`~modelyard.errors.UpstreamError` in one place (``modelyard.providers._http``).

Implementations: :class:`modelyard.transport.fast.HttpClient` (the default: direct HTTP/HTTPS) and
:class:`modelyard.transport.aiohttp.AiohttpTransport` (proxies, client certificates).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

__all__ = [
    "ConnectTimeout",
    "Headers",
    "Lease",
    "ProxyError",
    "RequestBuildError",
    "Response",
    "ResponseCutOff",
    "Transport",
]


class ConnectTimeout(TimeoutError):
    """No connection within ``connect_timeout_s``."""


class RequestBuildError(ValueError):
    """The request cannot be written as HTTP (a URL or header with characters HTTP does not allow)."""


class ResponseCutOff(ConnectionError):
    """The connection ended (or the bytes stopped parsing) before the answer was complete."""


class ProxyError(ConnectionError):
    """The proxy refused the request or the tunnel (``status``: its answer, None when it was unreachable)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Headers(dict[str, str]):
    """Response headers with case-insensitive :meth:`get` (names are stored lower-case)."""

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


class Response(Protocol):
    """Status, headers (case-insensitive), and the body as it arrives."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes:
        """The whole (decoded) body."""
        ...

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """The (decoded) body in the pieces it arrives in."""
        ...


class Lease(Protocol):
    """The connection lent to one request: :meth:`release` returns it to the pool (or closes it)."""

    def release(self) -> None: ...


class Transport(Protocol):
    """A pooled HTTP client for one provider (or one purpose, like budget webhooks)."""

    @property
    def closed(self) -> bool: ...

    def constant_headers(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        """Register a header mapping that never changes (a transport may pre-encode it); returns it."""
        ...

    async def send(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
    ) -> tuple[Response, Lease]:
        """Send a request; return the response (headers read) and the lease to release when done with it."""
        ...

    async def aclose(self) -> None:
        """Close every pooled connection; later sends fail with ``ConnectionError``."""
        ...
