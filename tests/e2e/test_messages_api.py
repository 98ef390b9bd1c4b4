"""The Anthropic Messages API served by the gateway (#15 point 1), driven by the official anthropic
SDK against fakes of each provider kind: plain and streamed answers, system prompts, images, tools
and tool results, token counting, and errors in Anthropic's shape."""

from __future__ import annotations

import json
import uuid
from typing import Any

import anthropic
import httpx
import pytest

from modelyard.testing import FakeServer
from modelyard.testing.fake_anthropic import REDACTED_TRIGGER, thinking_signature
from tests.helpers import ServerProcess

MODELS = ("claude", "gpt", "gem", "llama")
TOOL = {
    "name": "get_weather",
    "description": "weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def client(server: ServerProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="sk-any", max_retries=0)


@pytest.mark.compat("anthropic", "Messages API", "streaming")
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


@pytest.mark.compat("anthropic", "images")
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


@pytest.mark.compat("anthropic", "tools")
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


@pytest.mark.compat("anthropic", "typed errors")
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


@pytest.mark.compat("anthropic", "model listing")
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


# -- Anthropic pass-through: signed thinking and prompt caching (#15 decisions) --------------------

THINKING = {"type": "enabled", "budget_tokens": 1024}


def answer(c: anthropic.Anthropic, messages: Any, kwargs: dict[str, Any], *, stream: bool) -> Any:
    """One answer, streamed (the SDK's stream helper puts the message back together) or not."""
    if stream:
        with c.messages.stream(messages=messages, **kwargs) as s:
            return s.get_final_message()
    return c.messages.create(messages=messages, **kwargs)


@pytest.mark.compat("anthropic", "reasoning")
@pytest.mark.parametrize("stream", (False, True))
def test_thinking_blocks_round_trip_with_their_signature(
    server: ServerProcess, fakes: dict[str, FakeServer], stream: bool
) -> None:
    """With thinking on, a tool-use loop only works when the thinking block of the assistant turn goes
    back unchanged: the fake, like the real API, checks the signature and its presence."""
    ask = [{"role": "user", "content": "What's the weather in Paris? use get_weather"}]
    kwargs: dict[str, Any] = {"model": "claude", "max_tokens": 2048, "tools": [TOOL], "thinking": THINKING}
    with client(server) as c:
        first = answer(c, ask, kwargs, stream=stream)
        thinking = first.content[0]
        assert thinking.type == "thinking" and thinking.thinking.startswith("The user asks")
        assert thinking.signature == thinking_signature(thinking.thinking)
        call = next(b for b in first.content if b.type == "tool_use")
        turn = [b.model_dump(exclude_none=True) for b in first.content]
        result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}
        second = c.messages.create(messages=[*ask, {"role": "assistant", "content": turn}, result], **kwargs)
        assert any(b.type == "text" for b in second.content)
        sent = fakes["anthropic"].requests[-1]["body"]["messages"][1]["content"][0]
        assert sent == {"type": "thinking", "thinking": thinking.thinking, "signature": thinking.signature}
        # without the thinking block the upstream refuses the turn: a 400 in Anthropic's shape, not a 5xx
        with pytest.raises(anthropic.BadRequestError) as bad:
            c.messages.create(messages=[*ask, {"role": "assistant", "content": turn[1:]}, result], **kwargs)
        assert "thinking" in str(bad.value)
        forged = [{**turn[0], "thinking": "something else"}, *turn[1:]]
        with pytest.raises(anthropic.BadRequestError) as bad:
            c.messages.create(messages=[*ask, {"role": "assistant", "content": forged}, result], **kwargs)
        assert "signature" in str(bad.value)


@pytest.mark.parametrize("stream", (False, True))
def test_redacted_thinking_round_trips(server: ServerProcess, fakes: dict[str, FakeServer], stream: bool) -> None:
    ask = [{"role": "user", "content": f"{REDACTED_TRIGGER} weather? use get_weather"}]
    kwargs: dict[str, Any] = {"model": "claude", "max_tokens": 2048, "tools": [TOOL], "thinking": THINKING}
    with client(server) as c:
        first = answer(c, ask, kwargs, stream=stream)
        assert [b.type for b in first.content][:2] == ["thinking", "redacted_thinking"]
        call = next(b for b in first.content if b.type == "tool_use")
        turn = [b.model_dump(exclude_none=True) for b in first.content]
        result = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}
        c.messages.create(messages=[*ask, {"role": "assistant", "content": turn}, result], **kwargs)
    sent = fakes["anthropic"].requests[-1]["body"]["messages"][1]["content"]
    assert sent[1] == {"type": "redacted_thinking", "data": turn[1]["data"]}


def test_thinking_from_a_model_that_does_not_sign_is_dropped_on_the_way_back(
    server: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    """An unsigned thinking block (what the gateway emits for another kind's reasoning) is not sent
    to Anthropic, where it could only fail verification."""
    turn = [{"type": "thinking", "thinking": "mine", "signature": ""}, {"type": "text", "text": "earlier answer"}]
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": turn},
        {"role": "user", "content": "again"},
    ]
    with client(server) as c:
        c.messages.create(model="claude", max_tokens=64, messages=messages)  # type: ignore[arg-type]
    assert fakes["anthropic"].requests[-1]["body"]["messages"][1]["content"] == "earlier answer"


def test_bad_thinking_and_cache_control_are_400s(server: ServerProcess) -> None:
    h = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    base = {"model": "claude", "max_tokens": 2048, "messages": [{"role": "user", "content": "x"}]}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"thinking": {"type": "enabled", "budget_tokens": 10}}, "thinking.budget_tokens"),
        ({"thinking": {"type": "enabled", "budget_tokens": 4096}}, "thinking.budget_tokens"),
        ({"thinking": {"type": "sometimes"}}, "thinking"),
        ({"cache_control": {"type": "forever"}}, "cache_control"),
        ({"system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral", "ttl": "2h"}}]}, "ttl"),
        ({"messages": [{"role": "assistant", "content": [{"type": "thinking", "thinking": 3}]}]}, "thinking"),
        ({"service_tier": "premium"}, "service_tier"),
    ]
    for patch, needle in cases:
        r = httpx.post(f"{server.url}/v1/messages", json={**base, **patch}, headers=h)
        assert r.status_code == 400, (patch, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error" and needle in r.text


LONG = "You are a meticulous assistant who answers questions about the weather. " * 120  # > 1024 tokens


@pytest.mark.compat("anthropic", "prompt caching")
def test_cache_control_passes_through_and_cache_use_is_priced(
    server: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    """The markers reach Anthropic where the client put them; the cache write and the read that
    follows come back in Anthropic's usage fields and are charged at their own rates
    (claude-sonnet-4-5: $3 input, $3.75 5-minute write, $6 1-hour write, $0.30 read, $15 output per 1M)."""
    marker = {"type": "ephemeral"}
    tool = {**TOOL, "cache_control": marker}
    system = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    question = f"cache test {uuid.uuid4().hex}"
    messages = [{"role": "user", "content": [{"type": "text", "text": question, "cache_control": marker}]}]
    costs = []
    with client(server) as c:
        for _ in range(2):
            raw = c.messages.with_raw_response.create(
                model="claude",
                max_tokens=64,
                system=system,
                tools=[tool],
                tool_choice={"type": "none"},
                messages=messages,  # type: ignore[arg-type,list-item]
            )
            msg = raw.parse()
            u = msg.usage
            costs.append((u, float(raw.headers["x-modelyard-cost-usd"])))
    body = fakes["anthropic"].requests[-1]["body"]
    assert body["system"] == system and body["tools"][0]["cache_control"] == marker
    assert body["messages"][0]["content"][0]["cache_control"] == marker
    (first, first_cost), (second, second_cost) = costs
    assert first.cache_creation_input_tokens and not first.cache_read_input_tokens
    assert (
        first.cache_creation is not None
        and first.cache_creation.ephemeral_1h_input_tokens == first.cache_creation_input_tokens
    )
    assert (
        second.cache_read_input_tokens == first.cache_creation_input_tokens and not second.cache_creation_input_tokens
    )
    want_first = (first.input_tokens * 3.0 + first.cache_creation_input_tokens * 6.0 + first.output_tokens * 15.0) / 1e6
    want_second = (
        second.input_tokens * 3.0 + second.cache_read_input_tokens * 0.30 + second.output_tokens * 15.0
    ) / 1e6
    assert first_cost == pytest.approx(want_first, rel=1e-6)
    assert second_cost == pytest.approx(want_second, rel=1e-6) and second_cost < first_cost / 3


@pytest.mark.compat("openai", "reasoning", "prompt caching")
@pytest.mark.parametrize("stream", (False, True))
def test_chat_completions_carry_thinking_blocks_and_cache_control(
    server: ServerProcess, fakes: dict[str, FakeServer], stream: bool
) -> None:
    """The openai SDK can run a thinking tool-use loop against Claude: the answer carries
    ``thinking_blocks`` (LiteLLM's name), sent back on the assistant message; ``cache_control`` on a
    content part reaches Anthropic."""
    import openai

    tool = {"type": "function", "function": {"name": "get_weather", "parameters": TOOL["input_schema"]}}
    ask = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "weather? use get_weather", "cache_control": {"type": "ephemeral"}}],
        }
    ]
    extra = {"thinking": THINKING}
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-any", max_retries=0) as c:
        if stream:
            blocks: list[dict[str, Any]] = []
            text, calls = "", {}
            for chunk in c.chat.completions.create(
                model="claude",
                max_tokens=2048,
                tools=[tool],
                messages=ask,
                extra_body=extra,
                stream=True,  # type: ignore[list-item,arg-type]
            ):
                for ch in chunk.choices:
                    d = ch.delta.model_extra or {}
                    text += d.get("reasoning_content") or ""
                    for b in d.get("thinking_blocks") or ():
                        blocks.append({**b, "thinking": text} if b["type"] == "thinking" else b)
                    for t in ch.delta.tool_calls or ():
                        calls.setdefault(
                            t.index,
                            {"id": t.id, "type": "function", "function": {"name": t.function.name, "arguments": ""}},
                        )  # type: ignore[union-attr]
                        calls[t.index]["function"]["arguments"] += t.function.arguments or ""  # type: ignore[union-attr]
            tool_calls = list(calls.values())
        else:
            first = c.chat.completions.create(
                model="claude", max_tokens=2048, tools=[tool], messages=ask, extra_body=extra
            )  # type: ignore[list-item,arg-type]
            msg = first.choices[0].message
            blocks = (msg.model_extra or {})["thinking_blocks"]
            tool_calls = [t.model_dump() for t in msg.tool_calls or ()]
        assert blocks[0]["signature"] == thinking_signature(blocks[0]["thinking"])
        sent = fakes["anthropic"].requests[-1]["body"]["messages"][0]["content"][0]
        assert sent["cache_control"] == {"type": "ephemeral"}
        follow = [
            *ask,
            {"role": "assistant", "content": None, "tool_calls": tool_calls, "thinking_blocks": blocks},
            {"role": "tool", "tool_call_id": tool_calls[0]["id"], "content": "sunny"},
        ]
        second = c.chat.completions.create(
            model="claude", max_tokens=2048, tools=[tool], messages=follow, extra_body=extra
        )  # type: ignore[list-item,arg-type]
        assert second.choices[0].message.content
        with pytest.raises(openai.BadRequestError):
            follow[1] = {**follow[1], "thinking_blocks": []}
            c.chat.completions.create(model="claude", max_tokens=2048, tools=[tool], messages=follow, extra_body=extra)  # type: ignore[list-item,arg-type]


def test_first_token_figures_of_reasoning_streams_are_kept_apart(server: ServerProcess) -> None:
    """A thinking stream's first token is its first thinking delta (contracts "First token"); its
    time is kept apart from plain streams', live in /v1/status and in the recorded usage."""
    with (
        client(server) as c,
        c.messages.stream(
            model="claude", max_tokens=2048, thinking=THINKING, messages=[{"role": "user", "content": "think"}]
        ) as s,
    ):  # type: ignore[arg-type]
        assert s.get_final_message().content[0].type == "thinking"
    status = httpx.get(f"{server.url}/v1/status").json()
    assert status["models"]["claude"]["ttft_reasoning_ms"] is not None
