"""Health checks per provider (issue #13, part 6): ``health: {method, interval_s}``.

Many OpenAI-compatible gateways do not serve ``GET /models``: such a provider used to show as
unhealthy forever. Now a 404/405 on the listing falls back to a 1-token chat probe on the
provider's cheapest configured model. Against a real loopback server that behaves that way.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from modelyard.config import parse_config
from modelyard.runtime import Runtime, sync_runtime


class NoListing:
    """An OpenAI-compatible endpoint without GET /v1/models; it records the chat bodies it gets."""

    def __init__(self) -> None:
        self.chats: list[dict[str, Any]] = []

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.chats.append(body)
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "p"}, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[str, NoListing]]:
    server = NoListing()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1", server
    finally:
        await runner.cleanup()


def runtime(base_url: str, **health: Any) -> Runtime:
    cfg = parse_config(
        {
            "providers": {"gw": {"kind": "openai", "base_url": base_url, "api_key": "x", "health": health}},
            "models": {
                "big": {"provider": "gw", "model": "big-model", "input_cost_per_mtok": 5, "output_cost_per_mtok": 15},
                "small": {
                    "provider": "gw",
                    "model": "small-model",
                    "input_cost_per_mtok": 0.1,
                    "output_cost_per_mtok": 0.2,
                },
            },
        }
    )
    rt = Runtime(cfg)
    sync_runtime(rt)
    return rt


async def test_a_missing_listing_falls_back_to_a_chat_probe(endpoint: tuple[str, NoListing]) -> None:
    url, server = endpoint
    rt = runtime(url)
    try:
        result = await rt.providers["gw"].health()
    finally:
        await rt.close_unused(None)
    assert result.ok, result.detail
    assert "not served" in result.detail
    assert [c["model"] for c in server.chats] == ["small-model"]  # the cheapest configured model
    assert server.chats[0]["max_tokens"] == 1 or server.chats[0].get("max_completion_tokens") == 1


async def test_chat_probe_method(endpoint: tuple[str, NoListing]) -> None:
    url, server = endpoint
    rt = runtime(url, method="chat_probe")
    try:
        result = await rt.providers["gw"].health()
    finally:
        await rt.close_unused(None)
    assert result.ok and len(server.chats) == 1


def test_intervals() -> None:
    rt = runtime("http://127.0.0.1:9/v1")
    health = rt.providers["gw"].config.health
    assert health.interval(30) == 30
    assert runtime("http://127.0.0.1:9/v1", method="chat_probe").providers["gw"].config.health.interval(30) == 300
    assert runtime("http://127.0.0.1:9/v1", method="none").providers["gw"].config.health.interval(30) == 0
    assert runtime("http://127.0.0.1:9/v1", interval_s=7).providers["gw"].config.health.interval(30) == 7
