"""Streaming pass-through (contracts "Streaming pass-through"): plain OpenAI-format chunks reach the
client as the upstream sent them, with only ``id`` and ``model`` rewritten; the gateway's own promises
(configured model name, cost in the final usage chunk, the forced usage chunk dropped, errors
scrubbed, failover and continuation) hold; chunks that arrive together leave in one write."""

from __future__ import annotations

import socket
from typing import Any

import orjson

from modelyard.testing import FakeServer
from tests.helpers import ServerProcess


def _raw_stream(url: str, body: dict[str, Any]) -> tuple[list[bytes], int]:
    """POST a streaming request over a plain socket: the SSE payloads, and how many HTTP chunks
    (writes by the gateway) carried them."""
    host, port = url.removeprefix("http://").split(":")
    payload = orjson.dumps(body)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: " + f"{host}:{port}".encode() + b"\r\n"
            b"Content-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
        )
        raw = b""
        while True:
            piece = sock.recv(65536)
            if not piece:
                break
            raw += piece
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding: chunked" in head.lower()
    body_bytes, writes = b"", 0
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body_bytes += rest[:size]
        rest = rest[size + 2 :]
        writes += 1
    events = [e.removeprefix(b"data: ") for e in body_bytes.split(b"\n\n") if e]
    return events, writes


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt", "stream": True, "messages": [{"role": "user", "content": "say hello"}], **extra}


def test_plain_chunks_pass_through_with_only_id_and_model_rewritten(
    server: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    events, _ = _raw_stream(server.url, _chat())
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert {c["model"] for c in chunks} == {"gpt"}  # the configured name, not the upstream's gpt-4o
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert content
    # what only the upstream writes (OpenAI's padding, the service tier, ``usage: null``) arrives untouched
    assert all("obfuscation" in c and c["service_tier"] == "default" and c["usage"] is None for c in content)
    # the usage chunk the gateway asked for on the client's behalf is dropped
    assert all(c["choices"] for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_asked_usage_carries_the_cost_in_the_final_chunk(server: ServerProcess) -> None:
    events, _ = _raw_stream(server.url, _chat(stream_options={"include_usage": True}))
    last = orjson.loads(events[-2])
    assert last["choices"] == [] and last["model"] == "gpt"
    assert last["usage"]["completion_tokens"] > 0 and last["usage"]["cost_usd"] > 0
    ids = {orjson.loads(e)["id"] for e in events[:-1]}
    assert len(ids) == 1


def test_chunks_that_arrive_together_leave_in_one_write(server: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].inject("gpt-4o", together=True, times=1)
    events, writes = _raw_stream(server.url, _chat())
    assert len(events) >= 5 and writes == 1
    fakes["openai"].inject("gpt-4o", chunk_delay_s=0.02, times=1)
    events, writes = _raw_stream(server.url, _chat())
    assert writes >= len(events) - 2  # paced chunks go out as they come (the held-back head together)


def test_an_upstream_error_mid_stream_is_scrubbed_not_forwarded(
    server: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    fakes["openai"].inject("gpt-4o", malformed_after=3, times=1)
    events, _ = _raw_stream(server.url, _chat())
    text = b"".join(events)
    assert b'"broken"' not in text  # the malformed upstream chunk is not passed on
    tail = orjson.loads(events[-1]) if events[-1] != b"[DONE]" else None
    if tail is not None:  # it broke after content started and could not be continued: an error event
        assert "error" in tail and b"sk-test-" not in text
    else:  # continued on a fallback model: one answer, one id, ends cleanly
        assert len({orjson.loads(e)["id"] for e in events[:-1]}) == 1
