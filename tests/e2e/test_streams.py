"""Streams through the real server: what happens when the client goes away."""

from __future__ import annotations

import time

import httpx

from modelyard.testing import FakeServer
from tests.helpers import ServerProcess


def test_a_client_that_leaves_mid_stream_frees_the_upstream_at_once(
    server: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    # the upstream sends two chunks, then goes silent for 30 s; the client reads one and hangs up
    fakes["openai"].inject("gpt-4o", stall_after=2, stall_s=30.0)
    body = {"model": "gpt", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", server.url + "/v1/chat/completions", json=body) as resp,
    ):
        assert resp.status_code == 200
        first = next(resp.iter_lines())
        assert first.startswith("data: ")

    def in_flight() -> int:
        status = httpx.get(server.url + "/v1/status", timeout=5).json()
        return int(status["models"]["gpt"]["in_flight"])

    deadline = time.monotonic() + 5.0
    while in_flight() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_flight() == 0  # the stream stopped when the client left, not when the upstream gave up
