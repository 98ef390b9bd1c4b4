"""A fast mock upstream for benchmarks (raw asyncio protocol + httptools, uvloop if available), speaking the
three wire formats modelyard translates from: OpenAI chat completions, Anthropic Messages and Gemini.

    python bench/mock_upstream.py --port 9000 [--delay-ms 0] [--chunks 20] [--chunk-delay-ms 0]

Endpoints:
  POST /v1/chat/completions   OpenAI: non-streaming JSON or an SSE stream of N content chunks (+ a usage chunk
                              when ``stream_options.include_usage``), after a fixed delay (time to first byte)
  POST /v1/messages           Anthropic Messages: JSON, or with ``stream: true`` the event stream (message_start,
                              content_block_start, ping, one content_block_delta text_delta per chunk,
                              content_block_stop, message_delta with stop_reason and usage, message_stop)
  POST /v1beta/models/{model}:generateContent, :streamGenerateContent?alt=sse
                              Gemini: a GenerateContentResponse, or an SSE stream of them (one text part per
                              chunk; the last with finishReason STOP and the full usageMetadata). Without
                              ``alt=sse`` the stream is one JSON array, as the real API sends it
  GET  /v1/models, GET /health
  POST /_mock/config          {"delay_ms", "chunks", "chunk_delay_ms", "chunk_bytes", "flow"}: change behaviour
                              at run time. ``chunk_bytes``: pad each chunk's text to about that many characters
                              (0: "tok<i> "). ``flow``: 1 = write each stream frame by frame, waiting for the
                              transport to drain (pause_writing/resume_writing, the protocol-level ``drain()``),
                              and keep per-stream counters (see /_mock/stats)
  GET  /_mock/stats           {"requests": N, "by_format": {...}, "streams": [per flow-mode stream: bytes_total,
                              bytes_written (accepted by the kernel: handed to the transport minus what it still
                              buffers), frames_total, frames_written, done, closed]}
  POST /_mock/stats/reset     forget the per-stream counters

The bodies are byte-realistic: field order and shapes as the real APIs send them (Gemini's ``": "``
separators included), so a gateway's parser does the work it does in production. It is deliberately cheap
(pre-serialised bodies, no framework) so that on a 2-core machine the upstream takes as little CPU as possible
from the gateway being measured. HTTP/1.1 keep-alive; no pipelining.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import resource
import socket
import time
from itertools import accumulate
from typing import Any, cast
from urllib.parse import parse_qs

import httptools
import orjson

CONFIG: dict[str, float] = {"delay_ms": 0.0, "chunks": 20, "chunk_delay_ms": 0.0, "chunk_bytes": 0.0, "flow": 0.0}
STATS: dict[str, Any] = {"requests": 0, "by_format": {"openai": 0, "anthropic": 0, "gemini": 0}}
#: flow-mode streams: id -> counters (the protocol object while it is connected, for the live buffer size)
STREAMS: dict[int, dict[str, Any]] = {}
_LIVE: dict[int, MockProtocol] = {}
#: flow mode: the mock's socket send buffer (the kernel doubles it), fixed so the upstream's own kernel buffer is small
FLOW_SNDBUF = 32 * 1024
_CACHE: dict[tuple[Any, ...], bytes] = {}
_FRAMES: dict[tuple[Any, ...], list[bytes]] = {}
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
)
_ANTHROPIC_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
    b"request-id: req_011CUmockbench0123456789\r\nanthropic-organization-id: 00000000-0000-0000-0000-000000000000\r\n"
    b"via: 1.1 google\r\ntransfer-encoding: chunked\r\n"
)
_GEMINI_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-disposition: attachment\r\n"
    b"vary: Origin\r\nvary: X-Origin\r\nvary: Referer\r\nx-content-type-options: nosniff\r\n"
    b"server: scaffolding on HTTPServer2\r\nserver-timing: gfet4t7; dur=412\r\ntransfer-encoding: chunked\r\n"
)
_GEMINI_ARRAY_HEAD = _GEMINI_SSE_HEAD.replace(b"text/event-stream", b"application/json; charset=UTF-8", 1)
_FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore "


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


def _piece(i: int, pad: int) -> str:
    """The text of content chunk ``i``: "tok<i> ", padded with filler words to about ``pad`` characters."""
    text = f"tok{i} "
    if pad > len(text):
        reps = pad // len(_FILLER) + 1
        text += (_FILLER * reps)[: pad - len(text)]
    return text


def _text(n: int, pad: int) -> str:
    return "".join(_piece(i, pad) for i in range(n)).rstrip()


def _usage(prompt_tokens: int, n: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n}


def _cached(key: tuple[Any, ...], make: Any) -> bytes:
    cached = _CACHE.get(key)
    if cached is None:
        cached = make()
        if len(_CACHE) > 512:
            _CACHE.clear()
        _CACHE[key] = cached
    return cast(bytes, cached)


def completion_body(model: str, prompt_tokens: int, n: int, pad: int = 0) -> bytes:
    def make() -> bytes:
        return orjson.dumps(
            {
                "id": "chatcmpl-mock0123456789",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": "fp_mock",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": _text(n, pad), "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": _usage(prompt_tokens, n),
            }
        )

    return _cached(("json", model, prompt_tokens, n, pad), make)


def _chunk(model: str, created: int, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-mock0123456789",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _frame(event: dict[str, Any] | None) -> bytes:
    data = b"data: [DONE]\n\n" if event is None else b"data: " + orjson.dumps(event) + b"\n\n"
    return _http_chunk(data)


def _remember(key: tuple[Any, ...], frames: list[bytes]) -> list[bytes]:
    if len(_FRAMES) > 512:
        _FRAMES.clear()
    _FRAMES[key] = frames
    return frames


def stream_frames(model: str, prompt_tokens: int, n: int, include_usage: bool, pad: int = 0) -> list[bytes]:
    """The SSE events of one stream, each already framed as an HTTP chunk: [first, *content, ..., terminator]."""
    key = ("openai", model, prompt_tokens, n, include_usage, pad)
    cached = _FRAMES.get(key)
    if cached is not None:
        return cached
    created = int(time.time())
    events: list[dict[str, Any] | None] = [_chunk(model, created, {"role": "assistant", "content": ""}, None)]
    events += [_chunk(model, created, {"content": _piece(i, pad)}, None) for i in range(n)]
    events.append(_chunk(model, created, {}, "stop"))
    if include_usage:
        last = _chunk(model, created, {}, None)
        last["choices"] = []
        last["usage"] = _usage(prompt_tokens, n)
        events.append(last)
    events.append(None)
    return _remember(key, [*(_frame(e) for e in events), b"0\r\n\r\n"])


# -- Anthropic Messages ------------------------------------------------------------------

_MSG_ID = "msg_01XFDUDYJgAACzvnptvVoYEL"


def _anthropic_usage(prompt_tokens: int, out: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": out,
        "service_tier": "standard",
    }


def anthropic_body(model: str, prompt_tokens: int, n: int, pad: int = 0) -> bytes:
    def make() -> bytes:
        return orjson.dumps(
            {
                "id": _MSG_ID,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": _text(n, pad)}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": _anthropic_usage(prompt_tokens, n),
            }
        )

    return _cached(("anthropic-json", model, prompt_tokens, n, pad), make)


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return _http_chunk(b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n")


def anthropic_frames(model: str, prompt_tokens: int, n: int, pad: int = 0) -> list[bytes]:
    """The Messages event stream, one HTTP chunk per event (as the API sends it), then the terminator."""
    key = ("anthropic", model, prompt_tokens, n, pad)
    cached = _FRAMES.get(key)
    if cached is not None:
        return cached
    head = {
        "id": _MSG_ID,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _anthropic_usage(prompt_tokens, 1),
    }
    frames = [_sse("message_start", {"type": "message_start", "message": head})]
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    frames.append(_sse("content_block_start", block))
    frames.append(_sse("ping", {"type": "ping"}))
    for i in range(n):
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": _piece(i, pad)}}
        frames.append(_sse("content_block_delta", delta))
    frames.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": n},
    }
    frames.append(_sse("message_delta", end))
    frames.append(_sse("message_stop", {"type": "message_stop"}))
    return _remember(key, [*frames, b"0\r\n\r\n"])


# -- Gemini ------------------------------------------------------------------------------

_RESPONSE_ID = "mK3qaMbAL5rUkdUPxN2o4Qc"


def _gemini_json(data: dict[str, Any]) -> bytes:
    """Gemini's own spacing: ``"key": value`` and ``,`` between items, on one line (as its SSE events are)."""
    return json.dumps(data, separators=(",", ": "), ensure_ascii=False).encode()


def _gemini_usage(prompt_tokens: int, out: int | None) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": prompt_tokens}
    if out is not None:
        usage["candidatesTokenCount"] = out
    usage["totalTokenCount"] = prompt_tokens + (out or 0)
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt_tokens}]
    return usage


def _gemini_event(model: str, text: str, usage: dict[str, Any], finish: bool) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
    if finish:
        cand["finishReason"] = "STOP"
    cand["index"] = 0
    return {"candidates": [cand], "usageMetadata": usage, "modelVersion": model, "responseId": _RESPONSE_ID}


def gemini_body(model: str, prompt_tokens: int, n: int, pad: int = 0) -> bytes:
    def make() -> bytes:
        event = _gemini_event(model, _text(n, pad), _gemini_usage(prompt_tokens, n), True)
        return orjson.dumps(event, option=orjson.OPT_INDENT_2) + b"\n"

    return _cached(("gemini-json", model, prompt_tokens, n, pad), make)


def gemini_frames(model: str, prompt_tokens: int, n: int, sse: bool, pad: int = 0) -> list[bytes]:
    """streamGenerateContent: one GenerateContentResponse per chunk; the last carries finishReason and usage."""
    key = ("gemini", model, prompt_tokens, n, sse, pad)
    cached = _FRAMES.get(key)
    if cached is not None:
        return cached
    events = [
        _gemini_json(_gemini_event(model, _piece(i, pad), _gemini_usage(prompt_tokens, None), False))
        for i in range(max(0, n - 1))
    ]
    events.append(
        _gemini_json(_gemini_event(model, _piece(n - 1, pad) if n else "", _gemini_usage(prompt_tokens, n), True))
    )
    if sse:
        frames = [_http_chunk(b"data: " + e + b"\r\n\r\n") for e in events]
    else:
        frames = [_http_chunk((b"[" if i == 0 else b",\r\n") + e) for i, e in enumerate(events)]
        frames.append(_http_chunk(b"]"))
    return _remember(key, [*frames, b"0\r\n\r\n"])


class MockProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._writable: asyncio.Event | None = None
        self._stream_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.send(_response(400, b'{"error":"bad request"}', False), False)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._stream_id:
            self._account(closed=True)
        self.transport = None
        if self._writable is not None:
            self._writable.set()  # wake a flow-mode writer so it sees the close

    # flow control (the protocol-level drain(): the transport says when its buffer is over the high-water mark)
    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.Event()
        self._writable.clear()

    def resume_writing(self) -> None:
        if self._writable is not None:
            self._writable.set()

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
        path, _, query = self.url.partition(b"?")
        body = b"".join(self.body)
        if method == b"POST" and path.endswith(b"/chat/completions"):
            self.chat(body, keep)
        elif method == b"POST" and path == b"/v1/messages":
            self.messages(body, keep)
        elif method == b"POST" and b"/models/" in path and b":" in path.rsplit(b"/", 1)[-1]:
            self.gemini(path, query, keep)
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
            self.send(_response(200, orjson.dumps(stats()), keep), keep)
        elif method == b"POST" and path == b"/_mock/stats/reset":
            STREAMS.clear()
            self.send(_response(200, b'{"ok":true}', keep), keep)
        else:
            self.send(_response(404, b'{"error":{"message":"not found","type":"invalid_request_error"}}', keep), keep)

    def _bad_json(self, keep: bool) -> None:
        self.send(_response(400, b'{"error":{"message":"invalid json","type":"invalid_request_error"}}', keep), keep)

    def _count(self, fmt: str) -> None:
        STATS["requests"] += 1
        STATS["by_format"][fmt] += 1

    def chat(self, body: bytes, keep: bool) -> None:
        try:
            req = orjson.loads(body)
            model = str(req.get("model") or "gpt-4o-mini")
            stream = bool(req.get("stream"))
            opts = req.get("stream_options") or {}
            include_usage = bool(opts.get("include_usage")) if isinstance(opts, dict) else False
        except (orjson.JSONDecodeError, AttributeError):
            self._bad_json(keep)
            return
        self._count("openai")
        prompt_tokens, n, pad = max(1, len(body) // 4), int(CONFIG["chunks"]), int(CONFIG["chunk_bytes"])
        if not stream:
            self.answer(_response(200, completion_body(model, prompt_tokens, n, pad), keep), keep)
            return
        self.stream(_SSE_HEAD, stream_frames(model, prompt_tokens, n, include_usage, pad), keep)

    def messages(self, body: bytes, keep: bool) -> None:
        try:
            req = orjson.loads(body)
            model = str(req.get("model") or "claude-haiku-4-5")
            stream = bool(req.get("stream"))
        except (orjson.JSONDecodeError, AttributeError):
            self._bad_json(keep)
            return
        self._count("anthropic")
        prompt_tokens, n, pad = max(1, len(body) // 4), int(CONFIG["chunks"]), int(CONFIG["chunk_bytes"])
        if not stream:
            self.answer(_response(200, anthropic_body(model, prompt_tokens, n, pad), keep), keep)
            return
        self.stream(_ANTHROPIC_SSE_HEAD, anthropic_frames(model, prompt_tokens, n, pad), keep)

    def gemini(self, path: bytes, query: bytes, keep: bool) -> None:
        model, _, method = path.rsplit(b"/", 1)[-1].decode(errors="replace").partition(":")
        body_len = sum(len(b) for b in self.body)
        self._count("gemini")
        prompt_tokens, n, pad = max(1, body_len // 4), int(CONFIG["chunks"]), int(CONFIG["chunk_bytes"])
        if method == "generateContent":
            payload = _response(
                200, gemini_body(model, prompt_tokens, n, pad), keep, b"application/json; charset=UTF-8"
            )
            self.answer(payload, keep)
            return
        if method != "streamGenerateContent":
            missing = b'{"error":{"code":404,"message":"Method not found","status":"NOT_FOUND"}}'
            self.send(_response(404, missing, keep), keep)
            return
        sse = parse_qs(query.decode(errors="replace")).get("alt") == ["sse"]
        self.stream(
            _GEMINI_SSE_HEAD if sse else _GEMINI_ARRAY_HEAD, gemini_frames(model, prompt_tokens, n, sse, pad), keep
        )

    def answer(self, payload: bytes, keep: bool) -> None:
        delay = CONFIG["delay_ms"] / 1000.0
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self.send, payload, keep)
        else:
            self.send(payload, keep)

    def stream(self, head: bytes, frames: list[bytes], keep: bool) -> None:
        head += b"\r\n" if keep else b"connection: close\r\n\r\n"
        delay, gap = CONFIG["delay_ms"] / 1000.0, CONFIG["chunk_delay_ms"] / 1000.0
        loop = asyncio.get_running_loop()
        if CONFIG["flow"]:
            self._task = loop.create_task(self.flow_stream(head, frames, delay, gap, keep))
        elif gap > 0:
            self._task = loop.create_task(self.slow_stream(head, frames, delay, gap, keep))
        else:
            self.answer(head + b"".join(frames), keep)

    async def slow_stream(self, head: bytes, frames: list[bytes], delay: float, gap: float, keep: bool) -> None:
        await asyncio.sleep(delay)
        self.send(head + frames[0])
        for frame in frames[1:-2]:
            await asyncio.sleep(gap)
            self.send(frame)
        self.send(b"".join(frames[-2:]), keep)

    async def flow_stream(self, head: bytes, frames: list[bytes], delay: float, gap: float, keep: bool) -> None:
        """Frame by frame, never more than the transport's high-water mark ahead of the kernel (drain())."""
        sid = len(STREAMS) + 1
        while sid in STREAMS:
            sid += 1
        ends = list(accumulate(len(f) for f in frames))
        STREAMS[sid] = {"id": sid, "bytes_total": ends[-1], "frames_total": len(frames), "_ends": ends}
        STREAMS[sid].update(bytes_handed=0, bytes_written=0, frames_written=0, done=False, closed=False)
        self._stream_id = sid
        _LIVE[sid] = self
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None:  # no send-buffer autotuning (up to tcp_wmem's 4 MiB): only the bounded buffer counts
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, FLOW_SNDBUF)
        try:
            if self._writable is None:
                self._writable = asyncio.Event()
                self._writable.set()
            if delay > 0:
                await asyncio.sleep(delay)
            self.send(head)
            for i, frame in enumerate(frames):
                if i and gap > 0:
                    await asyncio.sleep(gap)
                await self._writable.wait()
                if self.transport is None or self.transport.is_closing():
                    return
                self.transport.write(frame)
                STREAMS[sid]["bytes_handed"] += len(frame)
            STREAMS[sid]["done"] = True
            if not keep and self.transport is not None:
                self.transport.close()
        finally:
            self._account(closed=self.transport is None)
            _LIVE.pop(sid, None)
            self._stream_id = 0

    def _account(self, closed: bool = False) -> None:
        rec = STREAMS.get(self._stream_id)
        if rec is None:
            return
        buffered = self.transport.get_write_buffer_size() if self.transport is not None else 0
        written = max(rec["bytes_written"], rec["bytes_handed"] - buffered)
        rec["bytes_written"] = written
        rec["frames_written"] = bisect.bisect_right(rec["_ends"], written)
        rec["closed"] = rec["closed"] or closed

    def send(self, data: bytes, keep: bool = True) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            if not keep:
                self.transport.close()


def stats() -> dict[str, Any]:
    for proto in list(_LIVE.values()):
        proto._account()
    streams = [{k: v for k, v in rec.items() if not k.startswith("_")} for rec in STREAMS.values()]
    return {**STATS, "streams": streams}


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
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per stream (and tokens per answer)")
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
