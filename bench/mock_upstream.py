"""A fast OpenAI-compatible mock upstream for benchmarks (raw asyncio protocol + httptools, uvloop if available).

    python bench/mock_upstream.py --port 9000 [--delay-ms 0] [--chunks 16] [--chunk-delay-ms 0]

Endpoints:
  POST /v1/chat/completions   non-streaming JSON or an SSE stream of N content chunks (+ usage chunk when
                              ``stream_options.include_usage``), after a fixed delay (time to first byte)
  GET  /v1/models, GET /health
  POST /_mock/config          {"delay_ms": .., "chunks": .., "chunk_delay_ms": ..}: change behaviour at run time
  GET  /_mock/stats           {"requests": N}

It is deliberately cheap (pre-serialised bodies, no framework) so that on a 2-core machine the upstream
takes as little CPU as possible from the gateway being measured. HTTP/1.1 keep-alive; no pipelining.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import time
from typing import Any, cast

import httptools
import orjson

CONFIG: dict[str, float] = {"delay_ms": 0.0, "chunks": 16, "chunk_delay_ms": 0.0}
STATS = {"requests": 0}
_CACHE: dict[tuple[Any, ...], bytes] = {}
_FRAMES: dict[tuple[Any, ...], list[bytes]] = {}
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
)


def _response(status: int, body: bytes, keep_alive: bool, ctype: bytes = b"application/json") -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(status, b"Error")
    conn = b"" if keep_alive else b"connection: close\r\n"
    return b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status,
        reason,
        ctype,
        len(body),
        conn,
        body,
    )


def _usage(prompt_tokens: int, n: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}


def completion_body(model: str, prompt_tokens: int, n: int) -> bytes:
    key = ("json", model, prompt_tokens, n)
    cached = _CACHE.get(key)
    if cached is None:
        text = " ".join(f"tok{i}" for i in range(n))
        cached = orjson.dumps(
            {
                "id": "chatcmpl-mock0123456789",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": "fp_mock",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": _usage(prompt_tokens, n),
            }
        )
        if len(_CACHE) > 512:
            _CACHE.clear()
        _CACHE[key] = cached
    return cached


def _chunk(model: str, created: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-mock0123456789",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _frame(event: dict[str, Any] | None) -> bytes:
    data = b"data: [DONE]\n\n" if event is None else b"data: " + orjson.dumps(event) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def stream_frames(model: str, prompt_tokens: int, n: int, include_usage: bool) -> list[bytes]:
    """The SSE events of one stream, each already framed as an HTTP chunk: [first, *content, ..., terminator]."""
    key = (model, prompt_tokens, n, include_usage)
    cached = _FRAMES.get(key)
    if cached is not None:
        return cached
    created = int(time.time())
    events: list[dict[str, Any] | None] = [_chunk(model, created, {"role": "assistant", "content": ""}, None)]
    events += [_chunk(model, created, {"content": f"tok{i} "}, None) for i in range(n)]
    events.append(_chunk(model, created, {}, "stop"))
    if include_usage:
        last = _chunk(model, created, {}, None)
        last["choices"] = []
        last["usage"] = _usage(prompt_tokens, n)
        events.append(last)
    events.append(None)
    frames = [_frame(e) for e in events]
    frames.append(b"0\r\n\r\n")
    if len(_FRAMES) > 512:
        _FRAMES.clear()
    _FRAMES[key] = frames
    return frames


class MockProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.send(_response(400, b'{"error":"bad request"}', False), False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        keep = self.parser.should_keep_alive()
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        body = b"".join(self.body)
        if method == b"POST" and path.endswith(b"/chat/completions"):
            STATS["requests"] += 1
            self.chat(body, keep)
        elif method == b"GET" and path in (b"/health", b"/v1/health"):
            self.send(_response(200, b'{"status":"ok"}', keep), keep)
        elif method == b"GET" and path.endswith(b"/models"):
            models = {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "owned_by": "mock"}]}
            self.send(_response(200, orjson.dumps(models), keep), keep)
        elif method == b"POST" and path == b"/_mock/config":
            try:
                CONFIG.update({k: float(v) for k, v in orjson.loads(body or b"{}").items() if k in CONFIG})
            except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
                self.send(_response(400, b'{"error":"bad config"}', keep), keep)
            else:
                self.send(_response(200, orjson.dumps(CONFIG), keep), keep)
        elif method == b"GET" and path == b"/_mock/stats":
            self.send(_response(200, orjson.dumps(STATS), keep), keep)
        else:
            self.send(_response(404, b'{"error":{"message":"not found","type":"invalid_request_error"}}', keep), keep)

    def chat(self, body: bytes, keep: bool) -> None:
        try:
            req = orjson.loads(body)
            model = str(req.get("model") or "gpt-4o-mini")
            stream = bool(req.get("stream"))
            opts = req.get("stream_options") or {}
            include_usage = bool(opts.get("include_usage")) if isinstance(opts, dict) else False
        except (orjson.JSONDecodeError, AttributeError):
            self.send(
                _response(400, b'{"error":{"message":"invalid json","type":"invalid_request_error"}}', keep), keep
            )
            return
        prompt_tokens = max(1, len(body) // 4)
        n = int(CONFIG["chunks"])
        delay = CONFIG["delay_ms"] / 1000.0
        if not stream:
            payload = _response(200, completion_body(model, prompt_tokens, n), keep)
            if delay > 0:
                asyncio.get_running_loop().call_later(delay, self.send, payload, keep)
            else:
                self.send(payload, keep)
            return
        head = _SSE_HEAD + (b"\r\n" if keep else b"connection: close\r\n\r\n")
        frames = stream_frames(model, prompt_tokens, n, include_usage)
        gap = CONFIG["chunk_delay_ms"] / 1000.0
        if gap <= 0:
            payload = head + b"".join(frames)
            if delay > 0:
                asyncio.get_running_loop().call_later(delay, self.send, payload, keep)
            else:
                self.send(payload, keep)
            return
        self._task = asyncio.get_running_loop().create_task(self.slow_stream(head, frames, delay, gap, keep))

    async def slow_stream(self, head: bytes, frames: list[bytes], delay: float, gap: float, keep: bool) -> None:
        await asyncio.sleep(delay)
        self.send(head + frames[0])
        for frame in frames[1:-2]:
            await asyncio.sleep(gap)
            self.send(frame)
        self.send(b"".join(frames[-2:]), keep)

    def send(self, data: bytes, keep: bool = True) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            if not keep:
                self.transport.close()


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    del soft


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MockProtocol, host, port, backlog=4096, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="fixed delay before the response starts")
    ap.add_argument("--chunks", type=int, default=16, help="content chunks per stream (and tokens per answer)")
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0, help="gap between stream chunks")
    args = ap.parse_args()
    CONFIG.update(delay_ms=args.delay_ms, chunks=args.chunks, chunk_delay_ms=args.chunk_delay_ms)
    _raise_nofile()
    try:
        import uvloop
    except ImportError:
        uvloop = None
    try:
        if uvloop is not None:
            uvloop.run(serve(args.host, args.port))
        else:
            asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
