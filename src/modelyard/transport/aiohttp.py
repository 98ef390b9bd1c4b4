"""The aiohttp transport: for upstreams behind a proxy, or that need a client certificate.

One :class:`aiohttp.ClientSession` (one connection pool, ``max_connections`` at most) per
transport, made on first use inside the running loop.  It keeps the fast client's contract
(:class:`modelyard.transport.base.Transport`): one deadline per request (``timeout_s``: connect,
send, headers and the whole body, streams included) plus ``connect_timeout_s``; redirects are
returned, not followed; gzip/deflate bodies are decoded; aiohttp's exceptions become the
transport errors of :mod:`modelyard.transport.base`.

Proxies come from a :class:`~modelyard.transport.proxy.ProxyPolicy` (decided per origin and
cached): absolute-form requests for ``http://`` upstreams, ``CONNECT`` tunnels for ``https://``
ones, ``Proxy-Authorization`` from a ``user:pass@`` in the proxy URL.  The environment is never
read here (``trust_env`` is off): the policy already did.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from typing import NoReturn

import aiohttp
from multidict import CIMultiDictProxy

from modelyard.transport.base import ConnectTimeout, ProxyError, RequestBuildError, ResponseCutOff
from modelyard.transport.proxy import ProxyPolicy

__all__ = ["AiohttpResponse", "AiohttpTransport"]


def _raise_transport_error(exc: BaseException) -> NoReturn:
    """Raise the transport error for an aiohttp exception (the original is chained)."""
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        raise ProxyError(f"the proxy refused the tunnel: {exc.status} {exc.message}", status=exc.status) from exc
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        raise ProxyError(f"cannot connect to the proxy ({exc})") from exc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        raise exc.certificate_error from exc
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        raise ConnectTimeout(f"no connection within the connect timeout ({exc})") from exc
    if isinstance(exc, TimeoutError):
        raise TimeoutError("the upstream did not answer within the request's timeout") from exc
    if isinstance(exc, aiohttp.InvalidURL):
        raise RequestBuildError(f"invalid URL: {exc}") from exc
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        raise ResponseCutOff(f"the upstream closed the connection before the answer was complete ({exc})") from exc
    if isinstance(exc, aiohttp.ClientResponseError):
        raise ResponseCutOff(f"the upstream sent a malformed HTTP response ({exc.message})") from exc
    if isinstance(exc, OSError):
        raise exc  # ClientOSError and ClientConnectorError are OSErrors already
    if isinstance(exc, aiohttp.ClientError):
        raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
    raise exc


class AiohttpResponse:
    """An aiohttp response behind :class:`modelyard.transport.base.Response` (and its lease)."""

    __slots__ = ("_done", "_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self._done = False
        self.status: int = resp.status
        self.headers: CIMultiDictProxy[str] = resp.headers

    async def read(self) -> bytes:
        try:
            body = await self._resp.read()
        except Exception as exc:
            _raise_transport_error(exc)
        self._done = True
        return body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        content = self._resp.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    break
                yield chunk
        except Exception as exc:
            _raise_transport_error(exc)
        self._done = True

    def release(self) -> None:
        """Back to the pool when the body was read to the end; closed otherwise."""
        if self._done:
            self._resp.release()
        else:
            self._resp.close()


class AiohttpTransport:
    """:class:`modelyard.transport.base.Transport` on one pooled aiohttp session."""

    def __init__(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 256,
        keepalive_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        proxies: ProxyPolicy | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.keepalive_s = keepalive_s
        self._ssl_context = ssl_context
        self.proxies = proxies or ProxyPolicy()
        self._headers = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate", **(headers or {})}
        for name, value in self._headers.items():
            _check_header(name, value)
        self._session: aiohttp.ClientSession | None = None
        self._proxy_of: dict[str, str | None] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def constant_headers(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        return headers

    def _session_now(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,
                keepalive_timeout=self.keepalive_s,
                ssl=self._ssl_context if self._ssl_context is not None else True,
            )
            session = self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                trust_env=False,
                auto_decompress=True,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent",),
            )
        return session

    def _proxy(self, url: str) -> str | None:
        origin = url.split("/", 3)[:3]
        key = "/".join(origin)
        try:
            return self._proxy_of[key]
        except KeyError:
            proxy = self._proxy_of[key] = self.proxies.proxy_for(url)
            return proxy

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
    ) -> tuple[AiohttpResponse, AiohttpResponse]:
        if self._closed:
            raise ConnectionError("the HTTP client is closed")
        if not url.startswith(("http://", "https://")):
            raise RequestBuildError(f"not an http(s) URL: {url[:200]!r}")
        if headers:
            for name, value in headers.items():
                _check_header(name, value)
        session = self._session_now()
        proxy = self._proxy(url)
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(connect_timeout_s, timeout_s))
        try:
            resp = await session.request(
                method,
                url,
                data=body,
                headers=headers,
                params=params,
                timeout=timeout,
                proxy=proxy,
                allow_redirects=False,
            )
        except Exception as exc:
            _raise_transport_error(exc)
        wrapped = AiohttpResponse(resp)
        if resp.status == 407 and proxy is not None:
            wrapped.release()
            raise ProxyError(
                "the proxy answered 407 Proxy Authentication Required (check the user:pass in the proxy URL)",
                status=407,
            )
        return wrapped, wrapped

    async def aclose(self) -> None:
        self._closed = True
        session = self._session
        self._session = None
        if session is not None:
            await session.close()


def _check_header(name: str, value: str) -> None:
    if any(c in name for c in "\r\n:") or "\r" in value or "\n" in value:
        raise RequestBuildError(f"header {name!r} has a character HTTP does not allow (CR, LF or ':' in the name)")
