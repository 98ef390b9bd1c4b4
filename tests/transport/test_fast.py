"""The upstream HTTP client against raw loopback servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import gzip
import socket
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from modelyard.errors import UpstreamConnectionError, UpstreamTimeoutError
from modelyard.providers._http import translate_errors
from modelyard.transport import fast
from modelyard.transport.base import ConnectTimeout, RequestBuildError, ResponseCutOff
from modelyard.transport.fast import HttpClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A TCP server on loopback; yields its base URL and the raw request heads it read."""
    heads: list[bytes] = []

    async def on_conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", heads
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return head, body


def answer(body: bytes, *, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\ncontent-length: %d\r\n%s\r\n%s" % (status.encode(), len(body), extra, body)


async def test_keep_alive_reuses_one_connection() -> None:
    connections = 0
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            head, body = await read_request(reader)
            seen.append(head + body)
            writer.write(answer(b'{"echo":' + (body or b"null") + b"}", extra=b"Retry-After: 3\r\n"))
            await writer.drain()

    async with serve(handler) as (url, _):
        client = HttpClient(headers={"Authorization": "Bearer sk-x", "User-Agent": "modelyard"})
        for i in range(5):
            resp, lease = await client.send("POST", f"{url}/v1/x?a=1", body=b"%d" % i, params={"b": "2 3"})
            assert resp.status == 200
            assert await resp.read() == b'{"echo":%d}' % i
            assert resp.headers.get("retry-after") == "3" and resp.headers.get("Retry-After") == "3"
            lease.release()
        await client.aclose()
    assert connections == 1
    first = seen[0].decode()
    assert first.startswith("POST /v1/x?a=1&b=2+3 HTTP/1.1\r\n")
    assert f"Host: {url.removeprefix('http://')}\r\n" in first
    assert "Authorization: Bearer sk-x\r\n" in first
    assert "Content-Length: 1\r\n" in first


async def test_chunked_gzip_stream_arrives_in_pieces() -> None:
    release = asyncio.Event()
    payload = b"data: one\n\n" * 50 + b"data: two\n\n"
    packed = gzip.compress(payload)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-encoding: gzip\r\n\r\n")
        half = len(packed) // 2
        writer.write(b"%x\r\n%s\r\n" % (half, packed[:half]))
        await writer.drain()
        await release.wait()
        rest = packed[half:]
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        await writer.drain()
        await reader.read()

    async with serve(handler) as (url, _):
        client = HttpClient()
        resp, lease = await client.send("GET", f"{url}/s")
        got: list[bytes] = []
        async for chunk in resp.iter_chunks():
            got.append(chunk)
            if len(got) == 1:
                release.set()
        lease.release()
        await client.aclose()
    assert b"".join(got) == payload
    assert len(got) >= 2


async def test_deflate_and_close_delimited_body() -> None:
    body = zlib.compress(b"x" * 1000)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: deflate\r\nconnection: close\r\n\r\n" + body)
        await writer.drain()

    async with serve(handler) as (url, _):
        client = HttpClient()
        resp, lease = await client.send("GET", url)
        assert await resp.read() == b"x" * 1000
        lease.release()
        assert not client._pools[("http", "127.0.0.1", int(url.rsplit(":", 1)[1]))].idle  # closed, not pooled
        await client.aclose()


async def test_body_cut_off_mid_way_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()

    async with serve(handler) as (url, _):
        client = HttpClient()
        resp, lease = await client.send("GET", url)
        with pytest.raises(ResponseCutOff):
            await resp.read()
        lease.release()
        with pytest.raises(UpstreamConnectionError, match="cut off"):
            async with translate_errors("p", "m"):
                resp, lease = await client.send("GET", url)
                try:
                    await resp.read()
                finally:
                    lease.release()
        await client.aclose()


async def test_stale_keep_alive_connections_are_dropped_or_retried() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(answer(b"ok"))  # keep-alive promised, then the server drops the idle connection
        await writer.drain()

    async with serve(handler) as (url, _):
        client = HttpClient()
        for _ in range(3):
            resp, lease = await client.send("GET", url)
            assert await resp.read() == b"ok"
            lease.release()  # back to the pool; the close has not arrived yet: the next GET meets it
        for _ in range(2):
            await asyncio.sleep(0.05)  # the close arrives while idle: the connection leaves the pool
            resp, lease = await client.send("POST", url, body=b"{}")
            assert await resp.read() == b"ok"
            lease.release()
        await client.aclose()
    assert connections == 5


async def test_no_retry_once_the_answer_started() -> None:
    calls = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        while True:
            await read_request(reader)
            calls += 1
            if calls == 1:
                writer.write(answer(b"ok"))
                await writer.drain()
            else:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-le")
                await writer.drain()
                return

    async with serve(handler) as (url, _):
        client = HttpClient()
        resp, lease = await client.send("POST", url, body=b"{}")
        await resp.read()
        lease.release()
        with pytest.raises(ResponseCutOff):
            await client.send("POST", url, body=b"{}")
        await client.aclose()
    assert calls == 2


async def test_deadline_covers_headers_and_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await reader.read()  # until the client gives up and closes

    async with serve(handler) as (url, _):
        client = HttpClient()
        resp, lease = await client.send("GET", url, timeout_s=0.3)
        chunks = []
        with pytest.raises(TimeoutError):
            async for chunk in resp.iter_chunks():
                chunks.append(chunk)
        assert chunks == [b"hello"]
        lease.release()
        with pytest.raises(UpstreamTimeoutError) as info:
            async with translate_errors("p", "m"):
                await client.send("GET", url, timeout_s=0.0001)
        assert info.value.phase == "total"
        await client.aclose()


async def test_connect_timeout_and_refused() -> None:
    # A listening socket whose accept queue is full: the kernel stops answering SYNs, so connect hangs.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    port = sock.getsockname()[1]
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(s)
    client = HttpClient()
    try:
        with pytest.raises(UpstreamTimeoutError) as info:
            async with translate_errors("p", "m"):
                await client.send("GET", f"http://127.0.0.1:{port}/", connect_timeout_s=0.2)
        assert info.value.phase == "connect"
    except AssertionError:
        raise
    finally:
        for s in fillers:
            s.close()
        sock.close()
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    closed_port = free.getsockname()[1]
    free.close()
    with pytest.raises(UpstreamConnectionError, match="connection to upstream failed"):
        async with translate_errors("p", "m"):
            await client.send("GET", f"http://127.0.0.1:{closed_port}/")
    await client.aclose()


async def test_pool_limit_queues_callers() -> None:
    active = 0
    peak = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active, peak
        while True:
            await read_request(reader)
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.02)
            active -= 1
            writer.write(answer(b"ok"))
            await writer.drain()

    async with serve(handler) as (url, _):
        client = HttpClient(max_connections=2)

        async def one() -> bytes:
            resp, lease = await client.send("GET", url)
            try:
                return await resp.read()
            finally:
                lease.release()

        results = await asyncio.gather(*(one() for _ in range(10)))
        await client.aclose()
    assert results == [b"ok"] * 10
    assert peak == 2


async def test_unread_stream_is_not_pooled_and_bad_input_is_refused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234")
        await writer.drain()
        await reader.read()

    async with serve(handler) as (url, _):
        client = HttpClient()
        _resp, lease = await client.send("GET", url)
        lease.release()  # the caller gave up before the body ended: the connection is closed
        pool = next(iter(client._pools.values()))
        assert pool.idle == []
        assert client._open == 0
        with pytest.raises(RequestBuildError):
            await client.send("GET", f"{url}/a b")
        with pytest.raises(RequestBuildError):
            await client.send("GET", url, headers={"x-bad": "a\r\nb"})
        with pytest.raises(RequestBuildError):
            await client.send("GET", "ftp://example.com/")
        await client.aclose()


def test_connect_timeout_is_a_timeout() -> None:
    assert issubclass(ConnectTimeout, TimeoutError)


async def test_a_slow_reader_bounds_what_the_client_reads_ahead() -> None:
    """An upstream that writes a big stream as fast as the socket takes it, read slowly: the client
    buffers at most ``_HIGH_WATER`` plus one read, reads nothing more while the reader works on what
    it took, and every byte still arrives in order (#20: slow readers)."""
    piece = b"x" * 1000
    total = 2000

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(total):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    async with serve(handler) as (url, _):
        client = HttpClient()
        resp, lease = await client.send("GET", f"{url}/s")
        conn = resp._conn
        chunks = resp.iter_chunks()
        got = [await anext(chunks)]
        async with asyncio.timeout(10):
            while not conn._paused:  # the reader holds its piece: the socket gets paused
                await asyncio.sleep(0.01)
        assert conn._buffered <= fast._HIGH_WATER + fast._READ
        got.append(await anext(chunks))  # what was buffered, in one piece
        assert len(got[-1]) <= fast._HIGH_WATER + fast._READ
        for _ in range(20):  # the reader has not come back: nothing more is read meanwhile
            await asyncio.sleep(0)
        assert conn._paused and conn._buffered == 0
        got.extend([c async for c in chunks])
        assert max(len(c) for c in got) <= fast._HIGH_WATER + fast._READ
        assert b"".join(got) == piece * total
        lease.release()
        await client.aclose()


async def test_a_body_that_ends_in_a_paused_read_leaves_the_connection_usable() -> None:
    """A body whose end comes in the read that fills the buffer (the reader has not taken the
    first read yet): the socket is paused and the message complete at once; the connection goes
    back to the pool reading again (the next requests on it are answered)."""
    body = b"y" * (fast._HIGH_WATER + 8192)
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            await read_request(reader)
            writer.write(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
            )
            await writer.drain()

    async with serve(handler) as (url, _):
        client = HttpClient()
        for _ in range(3):
            async with asyncio.timeout(10):
                resp, lease = await client.send("GET", f"{url}/s")
                while not resp._conn._complete:  # the whole body arrives before the reader takes any
                    await asyncio.sleep(0.01)
                assert resp._conn._buffered > fast._HIGH_WATER
                assert await resp.read() == body
            lease.release()
        await client.aclose()
    assert connections == 1
