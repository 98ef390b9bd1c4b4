"""The aiohttp transport alone, against raw loopback servers: the fast client's contract holds."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from modelyard.errors import UpstreamConnectionError, UpstreamTimeoutError
from modelyard.providers._http import translate_errors
from modelyard.transport.aiohttp import AiohttpTransport
from modelyard.transport.base import RequestBuildError, ResponseCutOff
from tests.transport.test_fast import answer, read_request, serve


async def test_request_headers_body_and_keep_alive() -> None:
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
        client = AiohttpTransport(headers={"Authorization": "Bearer sk-x", "User-Agent": "modelyard"})
        for i in range(3):
            resp, lease = await client.send("POST", f"{url}/v1/x?a=1", body=b"%d" % i, params={"b": "2 3"})
            assert resp.status == 200
            assert await resp.read() == b'{"echo":%d}' % i
            assert resp.headers.get("retry-after") == "3" and resp.headers.get("Retry-After") == "3"
            lease.release()
        await client.aclose()
        assert client.closed
    assert connections == 1
    first = seen[0].decode().lower()
    assert first.startswith("post /v1/x?a=1&b=2+3 http/1.1\r\n")
    assert "authorization: bearer sk-x" in first and "user-agent: modelyard" in first


async def test_gzip_body_is_decoded_and_streamed() -> None:
    payload = b"data: " + b"x" * 10000 + b"\n\n"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(gzip.compress(payload), extra=b"Content-Encoding: gzip\r\n"))
        await writer.drain()

    async with serve(handler) as (url, _):
        client = AiohttpTransport()
        resp, lease = await client.send("GET", url)
        assert b"".join([c async for c in resp.iter_chunks()]) == payload
        lease.release()
        await client.aclose()


async def test_deadline_covers_the_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(5)

    async with serve(handler) as (url, _):
        client = AiohttpTransport()
        resp, lease = await client.send("GET", url, timeout_s=0.3)
        with pytest.raises(UpstreamTimeoutError):
            async with translate_errors("p", "m"):
                await resp.read()
        lease.release()
        await client.aclose()


async def test_cut_off_body_is_response_cut_off() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()

    async with serve(handler) as (url, _):
        client = AiohttpTransport()
        resp, lease = await client.send("GET", url)
        with pytest.raises(ResponseCutOff):
            await resp.read()
        lease.release()
        with pytest.raises(UpstreamConnectionError):
            async with translate_errors("p", "m"):
                resp, lease = await client.send("GET", url)
                try:
                    async for _ in resp.iter_chunks():
                        pass
                finally:
                    lease.release()
        await client.aclose()


async def test_refused_connection_and_bad_headers() -> None:
    client = AiohttpTransport()
    with pytest.raises(UpstreamConnectionError):
        async with translate_errors("p", "m"):
            await client.send("GET", "http://127.0.0.1:9/")
    with pytest.raises(RequestBuildError):
        await client.send("GET", "http://127.0.0.1:9/", headers={"X-Evil": "a\r\nInjected: 1"})
    with pytest.raises(RequestBuildError):
        await client.send("GET", "ftp://127.0.0.1/")
    await client.aclose()
    with pytest.raises(ConnectionError):
        await client.send("GET", "http://127.0.0.1:9/")
