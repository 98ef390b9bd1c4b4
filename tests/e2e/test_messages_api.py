"""The Anthropic Messages API served by the gateway (#15 point 1), driven by the official anthropic
SDK against fakes of each provider kind: plain and streamed answers, system prompts, images, tools
and tool results, token counting, and errors in Anthropic's shape."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from modelyard.testing import FakeServer
from tests.helpers import ServerProcess

MODELS = ("claude", "gpt", "gem", "llama")
TOOL = {
    "name": "get_weather",
    "description": "weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def client(server: ServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="sk-any", max_retries=0)


@pytest.mark.parametrize("model", MODELS)
def test_create_and_stream_on_every_kind(server: ServerProcess, model: str) -> None:
    with client(server) as c:
        msg = c.messages.create(
            model=model, max_tokens=64, system="Be brief.", messages=[{"role": "user", "content": "Say hello"}]
        )
        assert msg.type == "message" and msg.role == "assistant" and msg.model == model
        assert msg.content[0].type == "text" and msg.content[0].text
        assert msg.stop_reason in ("end_turn", "max_tokens") and msg.usage.output_tokens > 0
        with c.messages.stream(model=model, max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert text and final.content[0].type == "text" and final.content[0].text == text
        assert final.stop_reason in ("end_turn", "max_tokens") and final.usage.output_tokens > 0


def test_the_system_prompt_and_images_reach_the_upstream(server: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].reset()
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    with client(server) as c:
        c.messages.create(
            model="gpt",
            max_tokens=32,
            system=[{"type": "text", "text": "You are terse."}],
            messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, image]}],
            stop_sequences=["END"],
        )
    body = fakes["openai"].requests[-1]["body"]
    assert body["messages"][0] == {"role": "system", "content": "You are terse."}
    parts = body["messages"][1]["content"]
    assert parts[1]["image_url"]["url"] == "data:image/png;base64,iVBORw0KGgo=" and body["stop"] == ["END"]


@pytest.mark.parametrize("model", ("claude", "gpt"))
def test_tools_round_trip(server: ServerProcess, fakes: dict[str, FakeServer], model: str) -> None:
    ask = [{"role": "user", "content": "What's the weather in Paris? use get_weather"}]
    with client(server) as c:
        first = c.messages.create(model=model, max_tokens=128, tools=[TOOL], tool_choice={"type": "any"}, messages=ask)  # type: ignore[list-item]
        assert first.stop_reason == "tool_use"
        call = next(b for b in first.content if b.type == "tool_use")
        assert call.name == "get_weather" and isinstance(call.input, dict)
        follow = [
            *ask,
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}]},
        ]
        second = c.messages.create(model=model, max_tokens=128, tools=[TOOL], messages=follow)  # type: ignore[list-item,arg-type]
        assert second.content and second.content[0].type == "text"
        with c.messages.stream(
            model=model, max_tokens=128, tools=[TOOL], tool_choice={"type": "any"}, messages=ask
        ) as s:  # type: ignore[list-item]
            final = s.get_final_message()
        streamed = next(b for b in final.content if b.type == "tool_use")
        assert streamed.name == "get_weather" and isinstance(streamed.input, dict)


def test_count_tokens(server: ServerProcess) -> None:
    with client(server) as c:
        counted = c.messages.count_tokens(model="claude", messages=[{"role": "user", "content": "hello " * 50}])
    assert 40 <= counted.input_tokens <= 120


def test_errors_are_in_anthropics_shape(server: ServerProcess) -> None:
    with client(server) as c:
        with pytest.raises(anthropic.NotFoundError) as nf:
            c.messages.create(model="nope", max_tokens=8, messages=[{"role": "user", "content": "x"}])
        assert nf.value.body["type"] == "error" and nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        with pytest.raises(anthropic.BadRequestError) as bad:
            c.messages.create(
                model="gpt",
                max_tokens=8,
                messages=[
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "?"}]}
                ],
            )
        assert "no matching tool_use" in str(bad.value)
    h = {"x-api-key": "k", "anthropic-version": "2023-06-01", "content-type": "application/json"}
    unknown = {"model": "gpt", "max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "hologram"}]}]}
    r = httpx.post(f"{server.url}/v1/messages", json=unknown, headers=h)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error" and "hologram" in r.text
    r = httpx.post(
        f"{server.url}/v1/messages",
        json={**unknown, "messages": [{"role": "user", "content": "x"}]},
        headers={**h, "anthropic-version": "2022-01-01"},
    )
    assert r.status_code == 400 and "anthropic-version" in r.json()["error"]["message"]
    latest = {**unknown, "messages": [{"role": "user", "content": "x"}]}
    r = httpx.post(f"{server.url}/v1/messages", json=latest, headers={**h, "anthropic-version": "latest"})
    assert r.status_code == 400
    r = httpx.post(
        f"{server.url}/v1/messages",
        json={**unknown, "messages": [{"role": "user", "content": "x"}]},
        headers={**h, "anthropic-version": "latest"},
    )
    assert r.status_code == 400
    r = httpx.post(
        f"{server.url}/v1/messages", json={"model": "gpt", "messages": [{"role": "user", "content": "x"}]}, headers=h
    )
    assert r.status_code == 400 and "max_tokens" in r.text
    r = httpx.post(f"{server.url}/v1/messages", content=b"{not json", headers=h)
    assert r.status_code == 400 and r.json()["type"] == "error"


def test_cost_and_routing_headers(server: ServerProcess) -> None:
    with client(server) as c:
        raw = c.messages.with_raw_response.create(
            model="main", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert raw.headers["x-modelyard-model"] == "gpt" and "x-modelyard-cost-usd" in raw.headers
    body: dict[str, Any] = json.loads(raw.http_response.text)
    assert "cost_usd" in body["usage"]


def test_models_in_anthropics_shape(server: ServerProcess) -> None:
    with client(server) as c:
        listed = list(c.models.list())
        assert "claude" in [m.id for m in listed] and "main" in [m.id for m in listed]
        assert all(m.type == "model" for m in listed)
        one = c.models.retrieve("gpt")
        assert one.id == "gpt" and one.type == "model"
    plain = httpx.get(f"{server.url}/v1/models").json()
    assert plain["object"] == "list"  # without anthropic-version: OpenAI's shape


def test_anthropic_beta_reaches_anthropic_upstreams_only(server: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    beta = {"anthropic-beta": "prompt-caching-2024-07-31"}
    with client(server) as c:
        fakes["anthropic"].reset()
        c.messages.create(model="claude", max_tokens=8, messages=[{"role": "user", "content": "x"}], extra_headers=beta)
        assert fakes["anthropic"].requests[-1]["anthropic-beta"] == "prompt-caching-2024-07-31"
        fakes["openai"].reset()
        c.messages.create(model="gpt", max_tokens=8, messages=[{"role": "user", "content": "x"}], extra_headers=beta)
        assert "anthropic-beta" not in fakes["openai"].requests[-1]
