"""A lean HTTP/1.1 client for upstream calls: one keep-alive connection pool per provider.

Why not aiohttp's client: on the request path it was the largest single cost of a proxied call
(about a third of the CPU in a profile; see docs/performance.md).  This client does only what an
upstream call needs, on asyncio's protocol API with httptools (the parser uvicorn uses):

* a pool of keep-alive connections per ``(scheme, host, port)``, at most ``max_connections`` open
  at once (callers beyond that wait in FIFO order), idle ones closed after ``keepalive_s``;
* TLS with the context it is given (built from the provider's ``tls:`` settings by
  :mod:`modelyard.transport.tls`; certificate and host name checked unless ``verify: false``);
* one deadline per request (``timeout_s``: connect, send, headers and the whole body, streams
  included), plus ``connect_timeout_s`` for opening a connection;
* ``Content-Length``, chunked and read-until-close bodies; ``gzip``/``deflate`` decoded on the fly;
* flow control: a stream that is not read stops reading the socket (16 KiB plus one 32 KiB read
  buffered at most, and none while the reader still works on what it took);
* a connection the server closed while idle is dropped from the pool as soon as the close arrives;
  an idempotent request (GET) that loses the race with such a close is sent again on a new
  connection, once, when no byte of the answer arrived.  A POST is not: the upstream may have run
  it, so the failure goes to the router, which retries or fails over and records the attempt.

It has no proxy support: :func:`modelyard.transport.make_transport` picks the aiohttp transport
when a proxy applies.  It implements :class:`modelyard.transport.base.Transport`; errors are the
plain exceptions listed there (``TimeoutError``, :class:`ConnectTimeout`, ``ConnectionError``,
:class:`ResponseCutOff`, ``OSError``); :func:`modelyard.providers._http.translate_errors` maps them
to :class:`~modelyard.errors.UpstreamError`.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import httptools

from modelyard.transport.base import ConnectTimeout, Headers, RequestBuildError, ResponseCutOff

__all__ = [
    "ConnectTimeout",
    "Headers",
    "HttpClient",
    "Lease",
    "RequestBuildError",
    "ResponseCutOff",
    "UpstreamResponse",
]

#: methods sent again after a stale keep-alive failure; a POST never is (the upstream may have run it:
#: that failure goes to the router, which retries or fails over and records the attempt)
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "PUT"})
#: a stream buffers at most this much (plus one read) before the socket is paused; reading resumes
#: only when the reader has taken all of it and asks for more (so the reader's piece and the
#: buffer are never both full: what a slow stream holds is one of them, not both).  A burst
#: bigger than this costs one pause and resume (two cheap calls), not per chunk
_HIGH_WATER = 16 * 1024
#: the most one read takes from an upstream socket
_READ = 32 * 1024


class UpstreamResponse:
    """Status, headers, and the body as it arrives (read it whole or chunk by chunk)."""

    __slots__ = ("_conn", "_decoder", "headers", "status")

    def __init__(self, conn: _Connection, status: int, headers: Headers) -> None:
        self._conn = conn
        self.status = status
        self.headers = headers
        encoding = headers.get("content-encoding", "").strip().lower()
        self._decoder: Any = None
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib- or gzip-wrapped, auto-detected
        elif encoding not in ("", "identity"):
            raise ResponseCutOff(f"unsupported Content-Encoding {encoding!r}")

    async def read(self) -> bytes:
        """The whole (decoded) body."""
        conn = self._conn
        parts: list[bytes] = []
        while True:
            chunk = await conn.next_chunk()
            if chunk is None:
                break
            parts.append(chunk)
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        if self._decoder is not None:
            try:
                body = self._decoder.decompress(body) + self._decoder.flush()
            except zlib.error as exc:
                raise ResponseCutOff(f"the compressed body does not decode: {exc}") from None
        return body

    def iter_chunks(self) -> AsyncIterator[bytes]:
        """The (decoded) body in the pieces it arrives in.  The iterator keeps no reference to a
        piece it handed out (an async generator's frame would, until the next one is asked for)."""
        return _Chunks(self._conn) if self._decoder is None else self._decoded_chunks()

    async def _decoded_chunks(self) -> AsyncIterator[bytes]:
        conn = self._conn
        decoder = self._decoder
        while True:
            chunk = await conn.next_chunk()
            if chunk is None:
                tail = decoder.flush()
                if tail:
                    yield tail
                return
            try:
                chunk = decoder.decompress(chunk)
            except zlib.error as exc:
                raise ResponseCutOff(f"the compressed body does not decode: {exc}") from None
            if chunk:
                yield chunk


class _Chunks:
    """The body's pieces as they arrive (an async iterator holding nothing between pieces)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._conn.next_chunk()
        if chunk is None:
            raise StopAsyncIteration
        return chunk


class _Connection(asyncio.BufferedProtocol):
    """One HTTP/1.1 connection, one request at a time.

    A buffered protocol: the event loop reads into a ``_READ``-byte buffer, so one read takes at
    most that much (a plain protocol gets up to 256 KiB at once), which bounds what a stream whose
    client reads slowly holds in memory (with ``_HIGH_WATER``).  The buffer is the client's, shared
    by its connections on one loop: the parser copies what it needs out of it in ``buffer_updated``,
    which the loop calls right after each read, before it reads into it again."""

    def __init__(self, loop: asyncio.AbstractEventLoop, buffer: memoryview) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self._buffer = buffer
        self.closed = False
        self.idle_since = 0.0
        self.uses = 0
        # per-request state
        self._header_list: list[tuple[str, str]] = []
        self._head: asyncio.Future[UpstreamResponse] | None = None
        self._response: UpstreamResponse | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._got_bytes = False
        self._error: BaseException | None = None
        self._paused = False
        self._keep_alive = True
        self._close_delimited = False

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._got_bytes = True
        try:
            self.parser.feed_data(self._buffer[:nbytes])
        except httptools.HttpParserError as exc:
            self._fail(ResponseCutOff(f"the upstream sent a malformed HTTP response ({exc})"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost settles the response

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._head is not None or self._response is not None:
            if self._response is not None and not self._complete and self._close_delimited and exc is None:
                self._finish()  # a body delimited by the end of the connection
            elif not self._complete:
                self._fail(
                    ResponseCutOff(
                        "the upstream closed the connection before the answer was complete"
                        + (f" ({type(exc).__name__}: {exc})" if exc else "")
                    )
                )

    def pause_writing(self) -> None:  # request bodies are small; the kernel buffer absorbs them
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks ----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_list.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        if 100 <= status < 200:  # an informational answer (100 Continue): the real one follows
            self._header_list = []
            return
        headers = Headers(self._header_list)
        self._header_list = []
        self._keep_alive = parser.should_keep_alive()
        self._close_delimited = "content-length" not in headers and "chunked" not in headers.get(
            "transfer-encoding", ""
        )
        head = self._head
        self._head = None
        try:
            response = UpstreamResponse(self, status, headers)
        except ResponseCutOff as exc:
            if head is not None and not head.done():
                head.set_exception(exc)
            self._keep_alive = False
            return
        self._response = response
        if head is not None and not head.done():
            head.set_result(response)

    def on_body(self, body: bytes) -> None:
        if self._response is None:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def _resume(self) -> None:
        """Read the socket again if the stream paused it."""
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def on_message_complete(self) -> None:
        if self._response is not None:
            self._finish()
            self._resume()  # nothing more to wait for: watch for a close

    # -- request life cycle -----------------------------------------------------------------

    def _finish(self) -> None:
        self._complete = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        head = self._head
        if head is not None:
            self._head = None
            if not head.done():
                head.set_exception(exc)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_exception(exc)

    def send(self, data: bytes) -> asyncio.Future[UpstreamResponse]:
        self.uses += 1
        self._header_list = []
        self._response = None
        self._chunks.clear()
        self._buffered = 0
        self._complete = False
        self._got_bytes = False
        self._error = None
        self._keep_alive = True
        self._close_delimited = False
        head = self._head = self.loop.create_future()
        if self.closed or self.transport is None:
            self._fail(ResponseCutOff("the upstream closed the idle connection"))
        else:
            self.transport.write(data)
        return head

    async def next_chunk(self) -> bytes | None:
        while True:
            chunks = self._chunks
            if chunks:
                # everything that has arrived, in one piece: chunks sent together are handled together
                chunk = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                return chunk  # a paused socket stays paused until the reader comes back for more
            if self._complete:
                return None
            if self._error is not None:
                raise self._error
            if self.closed:
                raise ResponseCutOff("the upstream connection closed before the answer was complete")
            self._resume()
            self._waiter = self.loop.create_future()
            await self._waiter

    @property
    def reusable(self) -> bool:
        return self._complete and self._keep_alive and self._error is None and not self.closed

    @property
    def answered(self) -> bool:
        """True once any byte of the answer arrived (a failure after that is not a stale keep-alive)."""
        return self._got_bytes

    def timed_out(self) -> None:
        self._fail(TimeoutError("the upstream did not answer within the request's timeout"))
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()


class _Pool:
    """Idle connections to one origin."""

    __slots__ = ("host", "idle", "port", "ssl")

    def __init__(self, host: str, port: int, ssl_ctx: ssl.SSLContext | None) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl_ctx
        self.idle: list[_Connection] = []


class HttpClient:
    """A connection pool plus request building, for one provider."""

    def __init__(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 256,
        keepalive_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.keepalive_s = keepalive_s
        self._ssl_context = ssl_context
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._origins: dict[str, tuple[_Pool, str]] = {}
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        # names keep the caller's spelling (some servers are picky); a later name replaces an earlier one
        base = {"accept": ("Accept", "*/*"), "accept-encoding": ("Accept-Encoding", "gzip, deflate")}
        for name, value in (headers or {}).items():
            base[name.lower()] = (name, value)
        self._base_block = _header_block(dict(base.values()))
        #: header blocks of constant mappings the caller registers (see :meth:`constant_headers`)
        self._extra_blocks: dict[int, tuple[Mapping[str, str], bytes]] = {}
        self.loop: asyncio.AbstractEventLoop | None = None
        #: the read buffer of this client's connections on one loop (see _Connection)
        self._read_buffer: tuple[asyncio.AbstractEventLoop, memoryview] | None = None

    def constant_headers(self, headers: Mapping[str, str]) -> Mapping[str, str]:
        """Register a mapping that will never change; its header block is then built once, not per request."""
        self._extra_blocks[id(headers)] = (headers, _header_block(headers))
        return headers

    @property
    def closed(self) -> bool:
        return self._closed

    # -- requests ---------------------------------------------------------------------------

    def build(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, str] | None,
    ) -> tuple[_Pool, bytes]:
        """The pool for ``url`` and the bytes of the request."""
        origin, _, rest = url.partition("://")
        origin_key, sep, path = rest.partition("/")
        path = "/" + path if sep else "/"
        cached = self._origins.get(f"{origin}://{origin_key}")
        if cached is None:
            cached = self._origin(url)
        pool, host_header = cached
        if params:
            path += ("&" if "?" in path else "?") + urlencode(params)
        if " " in path or "\r" in path or "\n" in path:
            raise RequestBuildError(f"the URL path {path[:200]!r} has a space or line break (quote it)")
        head = f"{method} {path} HTTP/1.1\r\nHost: {host_header}\r\n"
        if not headers:
            extra = b""
        else:
            known = self._extra_blocks.get(id(headers))
            if known is not None and known[0] is headers:
                extra = known[1]
            else:
                extra = _header_block(headers)
        if body is not None:
            data = b"%s%s%sContent-Length: %d\r\n\r\n%s" % (
                head.encode("latin-1"),
                self._base_block,
                extra,
                len(body),
                body,
            )
        else:
            data = b"%s%s%s\r\n" % (head.encode("latin-1"), self._base_block, extra)
        return pool, data

    def _origin(self, url: str) -> tuple[_Pool, str]:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise RequestBuildError(f"not an http(s) URL: {url[:200]!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        key = (scheme, parts.hostname, port)
        pool = self._pools.get(key)
        if pool is None:
            ctx = None
            if scheme == "https":
                ctx = self._ssl_context or ssl.create_default_context()
            pool = _Pool(parts.hostname, port, ctx)
            self._pools[key] = pool
        default_port = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        host_header = host if default_port else f"{host}:{port}"
        entry = (pool, host_header)
        self._origins[f"{parts.scheme}://{parts.netloc}"] = entry
        return entry

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
    ) -> tuple[UpstreamResponse, Lease]:
        """Send a request; return the response (headers read) and the lease to release when done with it."""
        if self._closed:
            raise ConnectionError("the HTTP client is closed")
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
        pool, data = self.build(method, url, body, headers, params)
        deadline = loop.time() + timeout_s
        idempotent = method in _IDEMPOTENT
        for attempt in (0, 1):
            conn = await self._checkout(pool, deadline, connect_timeout_s)
            lease = Lease(self, pool, conn, loop.call_at(deadline, conn.timed_out))
            reused = conn.uses > 0
            try:
                response = await conn.send(data)
            except ResponseCutOff:
                lease.release()
                if reused and idempotent and attempt == 0 and not conn.answered and loop.time() < deadline:
                    continue  # the server closed this idle connection as we sent: once more on a new one
                raise
            except BaseException:
                lease.release()
                raise
            return response, lease
        raise AssertionError("unreachable")  # pragma: no cover

    async def _checkout(self, pool: _Pool, deadline: float, connect_timeout_s: float) -> _Connection:
        idle = pool.idle
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.closed or now - conn.idle_since > self.keepalive_s:
                conn.close()
                self._open -= 1
                continue
            return conn
        while self._open >= self.max_connections:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                raise TimeoutError("no free upstream connection within the request's timeout") from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if idle:
                return await self._checkout(pool, deadline, connect_timeout_s)
        self._open += 1
        try:
            return await self._connect(pool, deadline, connect_timeout_s)
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    async def _connect(self, pool: _Pool, deadline: float, connect_timeout_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        remaining = max(0.0, deadline - loop.time())
        budget = min(connect_timeout_s, remaining)
        shared = self._read_buffer
        if shared is None or shared[0] is not loop:  # one buffer per loop: never two reads into it at once
            shared = self._read_buffer = (loop, memoryview(bytearray(_READ)))
        buffer = shared[1]
        try:
            async with asyncio.timeout(budget):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, buffer),
                    pool.host,
                    pool.port,
                    ssl=pool.ssl,
                    server_hostname=pool.host if pool.ssl is not None else None,
                )
        except TimeoutError:
            if budget < connect_timeout_s:  # the request's own deadline ran out first
                raise TimeoutError("the request's timeout ran out while connecting") from None
            raise ConnectTimeout(f"no connection to {pool.host}:{pool.port} within {budget:g} s") from None
        return conn

    def _checkin(self, pool: _Pool, conn: _Connection) -> None:
        if conn.reusable and not self._closed:
            conn.idle_since = time.monotonic()
            pool.idle.append(conn)
        else:
            conn.close()
            self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def aclose(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            for conn in pool.idle:
                conn.close()
            pool.idle.clear()
        self._open = 0


class Lease:
    """A connection lent to one request; :meth:`release` returns it to the pool (or closes it)."""

    __slots__ = ("_client", "_conn", "_pool", "_timer")

    def __init__(self, client: HttpClient, pool: _Pool, conn: _Connection, timer: asyncio.TimerHandle) -> None:
        self._client = client
        self._pool = pool
        self._conn = conn
        self._timer: asyncio.TimerHandle | None = timer

    def release(self) -> None:
        timer = self._timer
        if timer is None:
            return
        self._timer = None
        timer.cancel()
        self._client._checkin(self._pool, self._conn)


def _header_block(headers: Mapping[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        if any(c in name for c in "\r\n:") or "\r" in value or "\n" in value:
            raise RequestBuildError(f"header {name!r} has a character HTTP does not allow (CR, LF or ':' in the name)")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")
