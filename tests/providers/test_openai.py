"""The OpenAI adapter: translation as pure functions, then the adapter over real loopback HTTP.

HTTP tests run against :class:`FakeOpenAI`; shapes the fake cannot produce (in-band errors,
invalid JSON, clean EOF before a finish) come from tiny aiohttp servers defined here.
"""

from __future__ import annotations

import email.utils
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from modelyard.config.schema import OpenAIProviderConfig
from modelyard.errors import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamMalformedError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from modelyard.providers import CallOptions, Provider, build_provider
from modelyard.providers.openai import (
    OpenAIProvider,
    decode_chunk,
    decode_response,
    encode_request,
    openai_reasoning_model,
)
from modelyard.testing._fake_base import fake_embedding
from modelyard.testing.fake_openai import FakeOpenAI
from modelyard.types import (
    ChatChunk,
    ChatRequest,
    ContentPart,
    EmbeddingRequest,
    ForcedTool,
    Message,
    ResponseFormat,
    Tool,
    ToolCall,
)

CALL = CallOptions(timeout_s=5.0, connect_timeout_s=2.0)
WEATHER = Tool(
    name="get_weather",
    description="Weather for a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    strict=True,
)


def req(text: str = "hello", **kw: Any) -> ChatRequest:
    return ChatRequest(model="route", messages=[Message("user", text)], **kw)


# =====================================================================================
# encode_request
# =====================================================================================


def test_minimal_request_has_only_model_and_messages() -> None:
    body = encode_request(req(), "gpt-4o", stream=False)
    assert body == {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}


def test_upstream_model_replaces_the_requested_model() -> None:
    r = req()
    r.model = "my-route"
    r.extra = {"model": "sneaky"}
    assert encode_request(r, "ep-20240101-abc", stream=False)["model"] == "ep-20240101-abc"


def test_system_and_developer_roles_are_kept() -> None:
    r = ChatRequest(
        model="m",
        messages=[
            Message("system", "be brief"),
            Message("developer", "answer in French"),
            Message("user", "hi", name="alice"),
        ],
    )
    assert encode_request(r, "gpt-4o", stream=False)["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": "answer in French"},
        {"role": "user", "content": "hi", "name": "alice"},
    ]


def test_multipart_text_and_images_with_detail() -> None:
    data_uri = "data:image/png;base64,iVBORw0KGgo="
    r = ChatRequest(
        model="m",
        messages=[
            Message(
                "user",
                [
                    ContentPart("text", text="what is in these?"),
                    ContentPart("image", image_url="https://example.com/cat.jpg", detail="low"),
                    ContentPart("image", image_url=data_uri),
                ],
            )
        ],
    )
    content = encode_request(r, "gpt-4o", stream=False)["messages"][0]["content"]
    assert content == [
        {"type": "text", "text": "what is in these?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": data_uri}},
    ]


def test_tools_with_strict_and_minimal_tools() -> None:
    r = req(tools=[WEATHER, Tool(name="ping")])
    assert encode_request(r, "gpt-4o", stream=False)["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": WEATHER.parameters,
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "ping"}},
    ]


def test_strict_false_is_sent_not_dropped() -> None:
    r = req(tools=[Tool(name="f", parameters={"type": "object"}, strict=False)])
    assert encode_request(r, "gpt-4o", stream=False)["tools"][0]["function"]["strict"] is False


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_tool_choice_strings(choice: Any) -> None:
    body = encode_request(req(tools=[WEATHER], tool_choice=choice), "gpt-4o", stream=False)
    assert body["tool_choice"] == choice


def test_tool_choice_forced_function() -> None:
    body = encode_request(req(tools=[WEATHER], tool_choice=ForcedTool("get_weather")), "gpt-4o", stream=False)
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_tool_choice_absent_when_unset() -> None:
    assert "tool_choice" not in encode_request(req(tools=[WEATHER]), "gpt-4o", stream=False)


def test_tool_calls_and_tool_results() -> None:
    r = ChatRequest(
        model="m",
        messages=[
            Message("user", "weather in Paris?"),
            Message("assistant", None, tool_calls=[ToolCall("call_1", "get_weather", '{"city":"Paris","unit":"c"}')]),
            Message("tool", '{"temp": 21}', tool_call_id="call_1"),
        ],
        tools=[WEATHER],
        parallel_tool_calls=False,
    )
    body = encode_request(r, "gpt-4o", stream=False)
    assert body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"c"}'},
            }
        ],
    }
    assert body["messages"][2] == {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_1"}
    assert body["parallel_tool_calls"] is False


def test_assistant_refusal_is_sent_back() -> None:
    r = ChatRequest(
        model="m",
        messages=[Message("user", "x"), Message("assistant", None, refusal="I can't help"), Message("user", "ok")],
    )
    msg = encode_request(r, "gpt-4o", stream=False)["messages"][1]
    assert msg == {"role": "assistant", "content": None, "refusal": "I can't help"}


def test_response_format_json_object() -> None:
    body = encode_request(req(response_format=ResponseFormat("json_object")), "gpt-4o", stream=False)
    assert body["response_format"] == {"type": "json_object"}


def test_response_format_json_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    rf = ResponseFormat("json_schema", schema=schema, name="thing", strict=True)
    body = encode_request(req(response_format=rf), "gpt-4o", stream=False)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }


def test_response_format_json_schema_defaults_name_and_omits_strict() -> None:
    rf = ResponseFormat("json_schema", schema={"type": "object"})
    body = encode_request(req(response_format=rf), "gpt-4o", stream=False)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": {"type": "object"}},
    }


def test_sampling_and_identity_fields() -> None:
    r = req(
        n=3,
        stop=["\n\n", "END"],
        temperature=0.0,
        top_p=0.5,
        seed=42,
        user="user-7",
        presence_penalty=0.1,
        frequency_penalty=-0.2,
        logprobs=True,
        top_logprobs=5,
    )
    body = encode_request(r, "gpt-4o", stream=False)
    expected = {
        "n": 3,
        "stop": ["\n\n", "END"],
        "temperature": 0.0,  # a falsy value must still be sent
        "top_p": 0.5,
        "seed": 42,
        "user": "user-7",
        "presence_penalty": 0.1,
        "frequency_penalty": -0.2,
        "logprobs": True,
        "top_logprobs": 5,
    }
    assert {k: body[k] for k in expected} == expected


def test_logprobs_false_is_sent() -> None:
    assert encode_request(req(logprobs=False), "gpt-4o", stream=False)["logprobs"] is False


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_field_is_preserved(field: Any) -> None:
    body = encode_request(req(max_tokens=77, max_tokens_field=field), "gpt-4o", stream=False)
    assert body[field] == 77
    other = "max_completion_tokens" if field == "max_tokens" else "max_tokens"
    assert other not in body


def test_unknown_extra_fields_pass_through() -> None:
    extra = {
        "reasoning_effort": "low",
        "metadata": {"team": "search"},
        "logit_bias": {"50256": -100},
        "store": False,
        "chat_template_kwargs": {"enable_thinking": False},  # vLLM
    }
    body = encode_request(req(extra=dict(extra)), "gpt-4o", stream=False)
    for key, value in extra.items():
        assert body[key] == value


def test_known_fields_win_over_extra() -> None:
    body = encode_request(req(temperature=0.2, extra={"temperature": 1.5, "messages": []}), "gpt-4o", stream=False)
    assert body["temperature"] == 0.2
    assert body["messages"] == [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_always_asks_for_usage(include_usage: bool) -> None:
    body = encode_request(req(stream=True, include_usage=include_usage), "gpt-4o", stream=True)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_stream_options_from_client_are_merged_and_usage_forced() -> None:
    r = req(extra={"stream_options": {"include_usage": False, "include_obfuscation": False}})
    body = encode_request(r, "gpt-4o", stream=True)
    assert body["stream_options"] == {"include_usage": True, "include_obfuscation": False}


def test_non_stream_body_never_carries_stream_fields() -> None:
    r = req(stream=True, extra={"stream": True, "stream_options": {"include_usage": True}})
    body = encode_request(r, "gpt-4o", stream=False)
    assert "stream" not in body
    assert "stream_options" not in body


def test_encode_does_not_mutate_request_extra() -> None:
    r = req(extra={"stream_options": {"x": 1}})
    encode_request(r, "gpt-4o", stream=True)
    assert r.extra == {"stream_options": {"x": 1}}


# =====================================================================================
# decode_response / decode_chunk
# =====================================================================================


def completion(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi there", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    }
    body.update(over)
    return body


def test_decode_plain_response() -> None:
    r = decode_response(completion(), "gpt-4o")
    assert (r.id, r.created, r.model, r.system_fingerprint) == ("chatcmpl-1", 1700000000, "gpt-4o-2024-08-06", "fp_x")
    assert len(r.choices) == 1
    c = r.choices[0]
    assert (c.index, c.finish_reason, c.message.role, c.message.content) == (0, "stop", "assistant", "hi there")
    assert c.message.tool_calls is None and c.message.refusal is None
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (10, 2, 12)
    assert (r.usage.cached_tokens, r.usage.reasoning_tokens, r.usage.estimated) == (0, 0, False)


def test_decode_falls_back_to_requested_model_name() -> None:
    assert decode_response(completion(model=None), "ep-123").model == "ep-123"


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
        ("content_filter", "content_filter"),
        ("eos", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("something_new", "stop"),
        (None, None),
    ],
)
def test_finish_reasons(wire: str | None, expected: str | None) -> None:
    body = completion()
    body["choices"][0]["finish_reason"] = wire
    assert decode_response(body, "m").choices[0].finish_reason == expected
    chunk = decode_chunk({"id": "c", "choices": [{"index": 0, "delta": {}, "finish_reason": wire}]}, "m")
    assert chunk.choices[0].finish_reason == expected


def test_usage_openai_cached_and_reasoning_tokens() -> None:
    usage = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 256, "audio_tokens": 0},
    }
    u = decode_response(completion(usage=usage), "m").usage
    assert u is not None
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (2006, 300, 2306)
    assert (u.cached_tokens, u.reasoning_tokens) == (1920, 256)


def test_usage_deepseek_prompt_cache_hit_tokens() -> None:
    usage = {
        "prompt_tokens": 1500,
        "completion_tokens": 20,
        "total_tokens": 1520,
        "prompt_cache_hit_tokens": 1280,
        "prompt_cache_miss_tokens": 220,
    }
    u = decode_response(completion(usage=usage), "m").usage
    assert u is not None and u.cached_tokens == 1280


def test_usage_null_details_and_missing_total() -> None:
    usage = {
        "prompt_tokens": 7,
        "completion_tokens": 5,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    }
    u = decode_response(completion(usage=usage), "m").usage
    assert u is not None
    assert (u.total_tokens, u.cached_tokens, u.reasoning_tokens) == (12, 0, 0)


def test_usage_absent_is_none() -> None:
    assert decode_response(completion(usage=None), "m").usage is None


def test_decode_tool_calls() -> None:
    body = completion()
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
            {"id": "call_b", "type": "function", "function": {"name": "ping", "arguments": "{}"}},
        ],
    }
    body["choices"][0]["finish_reason"] = "tool_calls"
    c = decode_response(body, "m").choices[0]
    assert c.finish_reason == "tool_calls"
    assert c.message.content is None
    assert c.message.tool_calls == [
        ToolCall("call_a", "get_weather", '{"city":"Oslo"}'),
        ToolCall("call_b", "ping", "{}"),
    ]


def test_decode_refusal() -> None:
    body = completion()
    body["choices"][0]["message"] = {"role": "assistant", "content": None, "refusal": "I can't assist with that."}
    m = decode_response(body, "m").choices[0].message
    assert m.refusal == "I can't assist with that."
    assert m.content is None


def test_decode_logprobs_pass_through() -> None:
    lp = {
        "content": [{"token": "hi", "logprob": -0.01, "bytes": [104, 105], "top_logprobs": []}],
        "refusal": None,
    }
    body = completion()
    body["choices"][0]["logprobs"] = lp
    assert decode_response(body, "m").choices[0].logprobs == lp


def test_decode_content_parts_from_compatible_servers() -> None:
    body = completion()
    body["choices"][0]["message"] = {
        "role": "assistant",
        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
    }
    assert decode_response(body, "m").choices[0].message.content == "ab"


def test_decode_n_choices() -> None:
    body = completion()
    second = dict(body["choices"][0], index=1, finish_reason="length")
    body["choices"].append(second)
    r = decode_response(body, "m")
    assert [(c.index, c.finish_reason) for c in r.choices] == [(0, "stop"), (1, "length")]


@pytest.mark.parametrize("bad", [[], "x", {"id": "x"}, {"choices": None}])
def test_decode_rejects_shapes_without_choices(bad: Any) -> None:
    with pytest.raises(ValueError):
        decode_response(bad, "m")


def test_decode_chunk_content_and_role() -> None:
    c = decode_chunk(
        {
            "id": "chatcmpl-9",
            "object": "chat.completion.chunk",
            "created": 1700000001,
            "model": "gpt-4o",
            "system_fingerprint": "fp_y",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "He"}, "finish_reason": None}],
            "usage": None,
        },
        "m",
    )
    assert (c.id, c.created, c.model, c.system_fingerprint, c.usage) == (
        "chatcmpl-9",
        1700000001,
        "gpt-4o",
        "fp_y",
        None,
    )
    d = c.choices[0]
    assert (d.index, d.role, d.content, d.finish_reason, d.tool_calls) == (0, "assistant", "He", None, None)


def test_decode_chunk_tool_call_deltas() -> None:
    head = decode_chunk(
        {
            "id": "c",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 1, "id": "call_z", "type": "function", "function": {"name": "f", "arguments": ""}}
                        ]
                    },
                }
            ],
        },
        "m",
    )
    tail = decode_chunk(
        {
            "id": "c",
            "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1, "function": {"arguments": '{"a"'}}]}}],
        },
        "m",
    )
    h = head.choices[0].tool_calls
    t = tail.choices[0].tool_calls
    assert h is not None and t is not None
    assert (h[0].index, h[0].id, h[0].name, h[0].arguments) == (1, "call_z", "f", "")
    assert (t[0].index, t[0].id, t[0].name, t[0].arguments) == (1, None, None, '{"a"')


def test_decode_usage_only_chunk() -> None:
    usage = {
        "prompt_tokens": 3,
        "completion_tokens": 4,
        "total_tokens": 7,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    c = decode_chunk({"id": "c", "choices": [], "usage": usage}, "m")
    assert c.choices == []
    assert c.usage is not None and (c.usage.total_tokens, c.usage.reasoning_tokens) == (7, 2)
    # DeepSeek-style cache hits on the final chunk too
    c2 = decode_chunk({"id": "c", "choices": None, "usage": {"prompt_tokens": 9, "prompt_cache_hit_tokens": 4}}, "m")
    assert c2.choices == [] and c2.usage is not None and c2.usage.cached_tokens == 4


def test_decode_chunk_refusal_and_logprobs() -> None:
    lp = {"content": [{"token": "I", "logprob": -0.5, "bytes": [73], "top_logprobs": []}]}
    c = decode_chunk({"id": "c", "choices": [{"index": 0, "delta": {"refusal": "I can't"}, "logprobs": lp}]}, "m")
    assert c.choices[0].refusal == "I can't"
    assert c.choices[0].logprobs == lp
    assert c.choices[0].has_output()


# =====================================================================================
# helpers for the HTTP tests
# =====================================================================================


@asynccontextmanager
async def make_provider(base_url: str, **config: Any) -> AsyncIterator[Provider]:
    config.setdefault("api_key", "sk-test")
    p = build_provider("up", OpenAIProviderConfig(base_url=base_url, **config))
    try:
        yield p
    finally:
        await p.aclose()


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def prov(fake: FakeOpenAI) -> AsyncIterator[Provider]:
    async with make_provider(fake.base_url) as p:
        yield p


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    """A tiny upstream answering every path with ``handler``; yields its ``/v1`` base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def sse_response(request: web.Request, events: list[bytes], *, eof: bool = True) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for e in events:
        await resp.write(e)
    if eof:
        await resp.write_eof()
    return resp


def sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def wire_chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }


async def collect(p: Provider, r: ChatRequest, model: str = "gpt-4o", call: CallOptions = CALL) -> list[ChatChunk]:
    out: list[ChatChunk] = []
    async with aclosing(p.stream(r, model, call)) as it:  # type: ignore[type-var]
        async for chunk in it:
            out.append(chunk)
    return out


async def collect_until_error(
    p: Provider, r: ChatRequest, model: str = "gpt-4o", call: CallOptions = CALL
) -> tuple[list[ChatChunk], UpstreamError]:
    out: list[ChatChunk] = []
    with pytest.raises(UpstreamError) as info:
        async with aclosing(p.stream(r, model, call)) as it:  # type: ignore[type-var]
            async for chunk in it:
                out.append(chunk)
    return out, info.value


def assemble(chunks: list[ChatChunk]) -> dict[int, dict[str, Any]]:
    """Per choice index: role, content, finish reason and tool calls rebuilt from deltas."""
    out: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for d in chunk.choices:
            c = out.setdefault(d.index, {"role": None, "content": "", "finish": None, "calls": {}})
            c["role"] = c["role"] or d.role
            c["content"] += d.content or ""
            c["finish"] = d.finish_reason or c["finish"]
            for tc in d.tool_calls or []:
                call = c["calls"].setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                call["id"] += tc.id or ""
                call["name"] += tc.name or ""
                call["arguments"] += tc.arguments or ""
    for c in out.values():
        c["calls"] = [ToolCall(v["id"], v["name"], v["arguments"]) for _, v in sorted(c["calls"].items())]
    return out


# =====================================================================================
# the adapter against FakeOpenAI
# =====================================================================================


def test_build_provider_gives_the_openai_adapter() -> None:
    p = build_provider("x", OpenAIProviderConfig())
    assert isinstance(p, OpenAIProvider)
    assert p.base_url == "https://api.openai.com/v1"
    assert p.supports_embeddings


async def test_plain_chat(fake: FakeOpenAI, prov: Provider) -> None:
    r = await prov.chat(req("hello world", max_tokens=50), "gpt-4o", CALL)
    assert r.id.startswith("chatcmpl-")
    assert r.model == "gpt-4o"
    assert r.system_fingerprint == "fp_fake"
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.message.role == "assistant"
    assert c.message.content == "gpt-4o says: hello world"
    assert c.finish_reason == "stop"
    assert r.usage is not None
    assert r.usage.prompt_tokens == 2 + 3  # two words + 3 per message
    assert r.usage.completion_tokens == 4
    assert r.usage.total_tokens == 9
    sent = fake.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["model"] == "gpt-4o"
    assert sent["body"]["max_tokens"] == 50
    assert "stream" not in sent["body"] and "stream_options" not in sent["body"]
    assert fake.attempts("gpt-4o") == 1


async def test_the_upstream_model_name_is_what_is_sent(fake: FakeOpenAI, prov: Provider) -> None:
    r = req("x")
    r.model = "my-route"
    resp = await prov.chat(r, "gpt-4o-mini", CALL)
    assert fake.requests[-1]["model"] == "gpt-4o-mini"
    assert resp.choices[0].message.content == "gpt-4o-mini says: x"


async def test_max_tokens_gives_length(prov: Provider) -> None:
    r = await prov.chat(req("one two three four five", max_tokens=3), "gpt-4o", CALL)
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == "gpt-4o says: one"


async def test_max_completion_tokens_reaches_the_upstream(fake: FakeOpenAI, prov: Provider) -> None:
    r = await prov.chat(req("a b c d", max_tokens=2, max_tokens_field="max_completion_tokens"), "gpt-4o", CALL)
    assert fake.requests[-1]["body"]["max_completion_tokens"] == 2
    assert "max_tokens" not in fake.requests[-1]["body"]
    assert r.choices[0].finish_reason == "length"


async def test_stop_sequences(prov: Provider) -> None:
    r = await prov.chat(req("alpha beta gamma", stop=[" gamma"]), "gpt-4o", CALL)
    assert r.choices[0].message.content == "gpt-4o says: alpha beta"


async def test_n_2(prov: Provider) -> None:
    r = await prov.chat(req("hi", n=2), "gpt-4o", CALL)
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.message.content == "gpt-4o says: hi" for c in r.choices)
    assert r.usage is not None and r.usage.completion_tokens == 2 * 3


async def test_logprobs_come_back(prov: Provider) -> None:
    r = await prov.chat(req("hi", logprobs=True, top_logprobs=2), "gpt-4o", CALL)
    lp = r.choices[0].logprobs
    assert isinstance(lp, dict)
    assert "".join(t["token"] for t in lp["content"]) == "gpt-4o says: hi"


async def test_json_schema_response(fake: FakeOpenAI, prov: Provider) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "n": {"type": "integer"}},
        "required": ["name", "n"],
        "additionalProperties": False,
    }
    r = await prov.chat(req("x", response_format=ResponseFormat("json_schema", schema, "thing", True)), "gpt-4o", CALL)
    answer = orjson.loads(r.choices[0].message.content or "")
    assert set(answer) == {"name", "n"} and isinstance(answer["n"], int)
    assert fake.requests[-1]["body"]["response_format"]["json_schema"]["strict"] is True


async def test_tool_call_round_trip(prov: Provider) -> None:
    first = await prov.chat(req("weather in Oslo?", tools=[WEATHER]), "gpt-4o", CALL)
    c = first.choices[0]
    assert c.finish_reason == "tool_calls"
    assert c.message.tool_calls is not None and len(c.message.tool_calls) == 1
    call = c.message.tool_calls[0]
    assert call.name == "get_weather" and call.id.startswith("call_")
    assert orjson.loads(call.arguments) == {"city": "example city", "unit": "c"}
    follow = req("weather in Oslo?", tools=[WEATHER])
    follow.messages += [Message("assistant", None, tool_calls=[call]), Message("tool", "21C", tool_call_id=call.id)]
    second = await prov.chat(follow, "gpt-4o", CALL)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "gpt-4o says: weather in Oslo?"


async def test_cached_tokens_on_a_repeated_long_prompt(prov: Provider) -> None:
    long_text = " ".join(f"w{i}" for i in range(1200))
    first = await prov.chat(req(long_text), "gpt-4o", CALL)
    second = await prov.chat(req(long_text), "gpt-4o", CALL)
    assert first.usage is not None and second.usage is not None
    assert first.usage.cached_tokens == 0
    assert second.usage.cached_tokens == 1152  # 1203 input tokens, cached in 128-token blocks


# -- streaming -------------------------------------------------------------------------


async def test_stream_chunk_sequence(fake: FakeOpenAI, prov: Provider) -> None:
    chunks = await collect(prov, req("hello there", stream=True))
    body = fake.requests[-1]["body"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    # plain chunks that arrive in one read come as one pass-through chunk (their deltas merged)
    *answer, last = chunks
    assert answer[0].choices[0].role == "assistant"
    assert "".join(c.choices[0].content or "" for c in answer) == "gpt-4o says: hello there"
    assert [c.choices[0].finish_reason for c in answer][-1] == "stop"
    assert all(c.choices[0].finish_reason is None and c.usage is None for c in answer[:-1])
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (5, 4, 9)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(c.model == "gpt-4o" for c in chunks)


async def test_stream_content_matches_non_stream(prov: Provider) -> None:
    plain = await prov.chat(req("the same answer"), "gpt-4o", CALL)
    streamed = assemble(await collect(prov, req("the same answer", stream=True)))
    assert streamed[0]["content"] == plain.choices[0].message.content
    assert streamed[0]["finish"] == plain.choices[0].finish_reason


async def test_streamed_tool_call_reassembles_to_the_non_streamed_call(prov: Provider) -> None:
    plain = await prov.chat(req("weather?", tools=[WEATHER]), "gpt-4o", CALL)
    chunks = await collect(prov, req("weather?", tools=[WEATHER], stream=True))
    # the arguments really arrive in several fragments
    fragments = [tc for c in chunks for d in c.choices for tc in d.tool_calls or [] if tc.id is None]
    assert len(fragments) > 1
    streamed = assemble(chunks)[0]
    assert streamed["finish"] == "tool_calls" == plain.choices[0].finish_reason
    assert streamed["calls"] == plain.choices[0].message.tool_calls
    assert streamed["content"] == ""


async def test_stream_n_2(prov: Provider) -> None:
    out = assemble(await collect(prov, req("hi", n=2, stream=True)))
    assert sorted(out) == [0, 1]
    assert all(c["content"] == "gpt-4o says: hi" and c["finish"] == "stop" for c in out.values())


async def test_stream_without_done_but_finished_completes(fake: FakeOpenAI, prov: Provider) -> None:
    fake.inject("gpt-4o", no_done=True)
    chunks = await collect(prov, req("hi", stream=True))
    assert assemble(chunks)[0]["content"] == "gpt-4o says: hi"
    assert chunks[-1].usage is not None


# -- embeddings, models, health -----------------------------------------------------------


async def test_embeddings_float(fake: FakeOpenAI, prov: Provider) -> None:
    e = await prov.embed(
        EmbeddingRequest(model="emb", input=["first text", "second"], dimensions=8, user="u1"),
        "text-embedding-3-small",
        CALL,
    )
    assert e.model == "text-embedding-3-small"
    assert e.data == [fake_embedding("first text", 8), fake_embedding("second", 8)]
    assert (e.usage.prompt_tokens, e.usage.total_tokens) == (3, 3)
    sent = fake.requests[-1]["body"]
    assert sent["encoding_format"] == "float"
    assert sent["dimensions"] == 8 and sent["user"] == "u1"


async def test_embeddings_token_input(fake: FakeOpenAI, prov: Provider) -> None:
    e = await prov.embed(EmbeddingRequest(model="emb", input=[[1, 2, 3]]), "text-embedding-3-small", CALL)
    assert len(e.data) == 1 and len(e.data[0]) == 16
    assert fake.requests[-1]["body"]["input"] == [[1, 2, 3]]


class Base64FakeOpenAI(FakeOpenAI):
    """A compatible server that answers embeddings in base64 whatever was asked."""

    async def read_json(self, request: web.Request) -> Any:
        body = await super().read_json(request)
        if request.path.endswith("/embeddings"):
            body["encoding_format"] = "base64"
        return body


async def test_embeddings_base64_answer_is_decoded() -> None:
    async with Base64FakeOpenAI() as fake, make_provider(fake.base_url) as p:
        e = await p.embed(EmbeddingRequest(model="emb", input=["a", "b c"]), "text-embedding-3-small", CALL)
        assert fake.requests[-1]["body"]["encoding_format"] == "base64"
    assert len(e.data) == 2
    for vec, text in zip(e.data, ["a", "b c"], strict=True):
        expected = fake_embedding(text)
        assert len(vec) == len(expected)
        assert all(isinstance(v, float) for v in vec)
        assert max(abs(a - b) for a, b in zip(vec, expected, strict=True)) < 1e-6


async def test_list_models(fake: FakeOpenAI, prov: Provider) -> None:
    models = await prov.list_models()
    assert [m.id for m in models] == fake.models
    assert all(m.owned_by == "fake" for m in models)


async def test_health_ok(prov: Provider) -> None:
    h = await prov.health()
    assert h.ok and h.latency_ms >= 0 and "3 models" in h.detail


async def test_health_reports_an_unreachable_upstream() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with make_provider(f"http://127.0.0.1:{port}/v1", connect_timeout_s=1.0) as p:
        h = await p.health()
    assert not h.ok
    assert "UpstreamConnectionError" in h.detail


# -- headers ------------------------------------------------------------------------------


async def test_authorization_and_extra_headers_are_sent() -> None:
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        if request.path.endswith("/models"):
            return web.json_response({"object": "list", "data": []})
        body = await request.json()
        if body.get("stream"):
            return await sse_response(request, [sse(wire_chunk({"content": "x"}, "stop")), b"data: [DONE]\n\n"])
        return web.json_response(completion())

    extra = {"OpenAI-Organization": "org-123", "X-Tenant": "acme"}
    async with serve(handler) as url, make_provider(url, api_key="sk-secret-1", headers=extra) as p:
        await p.chat(req(), "gpt-4o", CALL)
        await collect(p, req(stream=True))
        await p.list_models()
    assert len(seen) == 3
    for h in seen:
        assert h["Authorization"] == "Bearer sk-secret-1"
        assert h["OpenAI-Organization"] == "org-123"
        assert h["X-Tenant"] == "acme"
        assert h["User-Agent"] == "modelyard"
    assert seen[0]["Content-Type"] == "application/json"


async def test_no_authorization_header_without_a_key() -> None:
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        return web.json_response(completion())

    async with serve(handler) as url:
        p = build_provider("local", OpenAIProviderConfig(base_url=url))
        try:
            await p.chat(req(), "llama", CALL)
        finally:
            await p.aclose()
    assert "Authorization" not in seen[0]


# -- faults from the fake -----------------------------------------------------------------


async def test_429_with_retry_after_seconds(fake: FakeOpenAI, prov: Provider) -> None:
    fake.inject("gpt-4o", status=429, retry_after="7", times=1)
    with pytest.raises(UpstreamStatusError) as info:
        await prov.chat(req(), "gpt-4o", CALL)
    e = info.value
    assert e.upstream_status == 429
    assert e.retry_after == 7.0
    assert e.retryable
    assert e.status == 429
    assert e.headers() == {"Retry-After": "7"}
    assert e.provider == "up" and e.model == "gpt-4o"
    # times=1: the next call succeeds
    assert (await prov.chat(req(), "gpt-4o", CALL)).choices[0].finish_reason == "stop"


async def test_429_with_retry_after_http_date(fake: FakeOpenAI, prov: Provider) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    fake.inject("gpt-4o", status=429, retry_after=email.utils.format_datetime(when, usegmt=True), times=1)
    with pytest.raises(UpstreamStatusError) as info:
        await prov.chat(req(), "gpt-4o", CALL)
    assert info.value.retry_after is not None
    assert 27.0 <= info.value.retry_after <= 31.0


async def test_429_on_a_stream_raises_before_any_chunk(fake: FakeOpenAI, prov: Provider) -> None:
    fake.inject("gpt-4o", status=429, retry_after="2")
    chunks, err = await collect_until_error(prov, req(stream=True))
    assert chunks == []
    assert isinstance(err, UpstreamStatusError) and err.upstream_status == 429 and err.retry_after == 2.0


@pytest.mark.parametrize(("status", "client_status"), [(500, 502), (502, 502), (503, 503), (504, 504)])
async def test_server_errors_are_retryable(fake: FakeOpenAI, prov: Provider, status: int, client_status: int) -> None:
    fake.inject("gpt-4o", status=status, times=1)
    with pytest.raises(UpstreamStatusError) as info:
        await prov.chat(req(), "gpt-4o", CALL)
    assert info.value.upstream_status == status
    assert info.value.retryable
    assert info.value.status == client_status
    assert info.value.retry_after is None


@pytest.mark.parametrize("code", ["context_length_exceeded", "content_policy_violation"])
async def test_400_codes_are_not_retryable(fake: FakeOpenAI, prov: Provider, code: str) -> None:
    fake.inject("gpt-4o", status=400, code=code)
    with pytest.raises(UpstreamStatusError) as info:
        await prov.chat(req(), "gpt-4o", CALL)
    e = info.value
    assert e.code == code
    assert not e.retryable
    assert e.status == 400
    assert e.to_openai()["error"]["type"] == "invalid_request_error"
    assert e.to_openai()["error"]["code"] == code


async def test_400_context_length_recognised_from_the_message_alone() -> None:
    async def handler(request: web.Request) -> web.Response:
        msg = "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens."
        return web.json_response({"object": "error", "message": msg, "type": "BadRequestError"}, status=400)

    async with serve(handler) as url, make_provider(url) as p:
        with pytest.raises(UpstreamStatusError) as info:
            await p.chat(req(), "m", CALL)
    assert info.value.code == "context_length_exceeded"


async def test_401_from_upstream_is_a_502_for_the_client(fake: FakeOpenAI) -> None:
    async with make_provider(fake.base_url, api_key="sk-should-not-leak") as p:
        fake.inject("gpt-4o", status=401, code="invalid_api_key")
        with pytest.raises(UpstreamStatusError) as info:
            await p.chat(req(), "gpt-4o", CALL)
    e = info.value
    assert e.upstream_status == 401
    assert e.status == 502
    assert not e.retryable
    assert "sk-should-not-leak" not in str(e.to_openai())


async def test_reset_before_headers(fake: FakeOpenAI, prov: Provider) -> None:
    fake.inject("gpt-4o", reset=True)
    with pytest.raises(UpstreamConnectionError):
        await prov.chat(req(), "gpt-4o", CALL)
    chunks, err = await collect_until_error(prov, req(stream=True))
    assert chunks == [] and isinstance(err, UpstreamConnectionError)


async def test_hang_times_out(fake: FakeOpenAI, prov: Provider) -> None:
    fake.inject("gpt-4o", hang=True)
    start = time.monotonic()
    with pytest.raises(UpstreamTimeoutError) as info:
        await prov.chat(req(), "gpt-4o", CallOptions(timeout_s=0.3))
    assert time.monotonic() - start < 2.0
    assert info.value.status == 504 and info.value.retryable
    chunks, err = await collect_until_error(prov, req(stream=True), call=CallOptions(timeout_s=0.3))
    assert chunks == [] and isinstance(err, UpstreamTimeoutError)


async def test_stall_mid_stream_times_out(fake: FakeOpenAI, prov: Provider) -> None:
    fake.inject("gpt-4o", stall_after=2)
    chunks, err = await collect_until_error(prov, req(stream=True), call=CallOptions(timeout_s=0.5))
    assert sum(len(c.raw) if c.raw else 1 for c in chunks) == 2  # upstream chunks (one read may merge them)
    assert isinstance(err, UpstreamTimeoutError)


async def test_cut_mid_stream(fake: FakeOpenAI, prov: Provider) -> None:
    fake.inject("gpt-4o", cut_after=3)
    chunks, err = await collect_until_error(prov, req("a b c d e", stream=True))
    assert 0 < len(chunks) <= 3
    assert isinstance(err, UpstreamConnectionError)
    assert err.retryable


async def test_malformed_chunk(fake: FakeOpenAI, prov: Provider) -> None:
    fake.inject("gpt-4o", malformed_after=2)
    chunks, err = await collect_until_error(prov, req(stream=True))
    assert sum(len(c.raw) if c.raw else 1 for c in chunks) == 2  # upstream chunks (one read may merge them)
    assert isinstance(err, UpstreamMalformedError)


async def test_faults_on_embeddings(fake: FakeOpenAI, prov: Provider) -> None:
    fake.inject("text-embedding-3-small", status=503, retry_after="1", times=1)
    with pytest.raises(UpstreamStatusError) as info:
        await prov.embed(EmbeddingRequest(model="e", input=["x"]), "text-embedding-3-small", CALL)
    assert info.value.upstream_status == 503 and info.value.retry_after == 1.0


async def test_fault_for_one_model_leaves_others_alone(fake: FakeOpenAI, prov: Provider) -> None:
    fake.inject("gpt-4o", status=500)
    r = await prov.chat(req(), "gpt-4o-mini", CALL)
    assert r.choices[0].finish_reason == "stop"


# -- shapes the fake cannot produce --------------------------------------------------------


async def test_clean_eof_before_finish_is_an_error() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse_response(
            request, [sse(wire_chunk({"role": "assistant", "content": "par"})), sse(wire_chunk({"content": "tial"}))]
        )

    async with serve(handler) as url, make_provider(url) as p:
        chunks, err = await collect_until_error(p, req(stream=True), model="m")
    assert "".join(c.choices[0].content or "" for c in chunks) == "partial"
    assert isinstance(err, UpstreamConnectionError)


async def test_clean_eof_with_one_of_two_choices_unfinished_is_an_error() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        events = [
            sse(wire_chunk({"content": "a"}, index=0)),
            sse(wire_chunk({"content": "b"}, index=1)),
            sse(wire_chunk({}, "stop", index=0)),
        ]
        return await sse_response(request, events)

    async with serve(handler) as url, make_provider(url) as p:
        _, err = await collect_until_error(p, req(stream=True, n=2), model="m")
    assert isinstance(err, UpstreamConnectionError)


async def test_empty_stream_is_an_error() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await sse_response(request, [])

    async with serve(handler) as url, make_provider(url) as p:
        chunks, err = await collect_until_error(p, req(stream=True), model="m")
    assert chunks == [] and isinstance(err, UpstreamConnectionError)


async def test_sse_framing_with_crlf_and_comments() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        events = [
            b": keep-alive\r\n\r\n",
            b"data: " + orjson.dumps(wire_chunk({"content": "x"})) + b"\r\n\r\n",
            b"data: " + orjson.dumps(wire_chunk({}, "stop")) + b"\r\n\r\n",
            b"data: [DONE]\r\n\r\n",
        ]
        return await sse_response(request, events)

    async with serve(handler) as url, make_provider(url) as p:
        chunks = await collect(p, req(stream=True), model="m")
    assert assemble(chunks)[0] == {"role": None, "content": "x", "finish": "stop", "calls": []}


async def test_in_band_error_chunk() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        events = [
            sse(wire_chunk({"content": "hel"})),
            sse({"error": {"message": "The server had an error", "type": "server_error", "code": "server_error"}}),
            b"data: [DONE]\n\n",
        ]
        return await sse_response(request, events)

    async with serve(handler) as url, make_provider(url) as p:
        chunks, err = await collect_until_error(p, req(stream=True), model="m")
    assert len(chunks) == 1
    assert isinstance(err, UpstreamStatusError)
    assert err.code == "server_error"
    assert "The server had an error" in err.message
    assert err.retryable


async def test_in_band_error_with_http_status_code_vllm_style() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        err = {
            "object": "error",
            "message": "maximum context length is 4096 tokens",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
        return await sse_response(request, [sse({"error": err}), b"data: [DONE]\n\n"])

    async with serve(handler) as url, make_provider(url) as p:
        _, err = await collect_until_error(p, req(stream=True), model="m")
    assert isinstance(err, UpstreamStatusError)
    assert err.upstream_status == 400 and not err.retryable
    assert err.code == "context_length_exceeded"


@pytest.mark.parametrize(
    "raw",
    [
        b"this is not json",
        b"<html>502 Bad Gateway</html>",
        b'{"id": "x"}',
        b"[1, 2]",
        b'{"choices": [{"message": "x"}]}',
    ],
)
async def test_invalid_body_is_malformed(raw: bytes) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=raw, content_type="application/json")

    async with serve(handler) as url, make_provider(url) as p:
        with pytest.raises(UpstreamMalformedError) as info:
            await p.chat(req(), "m", CALL)
    assert info.value.model == "m" and info.value.provider == "up"


async def test_invalid_embeddings_body_is_malformed() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"index": 0}]})

    async with serve(handler) as url, make_provider(url) as p:
        with pytest.raises(UpstreamMalformedError):
            await p.embed(EmbeddingRequest(model="e", input=["x"]), "e", CALL)


async def test_non_json_error_body_keeps_status_and_text() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=503, text="upstream overloaded", headers={"retry-after-ms": "1500"})

    async with serve(handler) as url, make_provider(url) as p:
        with pytest.raises(UpstreamStatusError) as info:
            await p.chat(req(), "m", CALL)
    assert info.value.upstream_status == 503
    assert "upstream overloaded" in info.value.message
    assert info.value.retry_after == 1.5


# -- OpenAI's reasoning models: max_completion_tokens, the default sampling ---------------------


@pytest.mark.parametrize(
    ("model", "reasons"),
    [
        ("o1", True),
        ("o1-mini", True),
        ("o3-mini-2025-01-31", True),
        ("o4-mini", True),
        ("gpt-5", True),
        ("gpt-5-mini-2025-08-07", True),
        ("gpt-5.1", True),
        ("openai/gpt-5", True),
        ("gpt-4o", False),
        ("gpt-4.1-mini", False),
        ("gpt-5-chat-latest", False),
        ("gpt-5.1-chat-latest", False),
        ("omni-moderation-latest", False),
        ("llama3.2:latest", False),
    ],
)
def test_which_models_are_openai_reasoning_models(model: str, reasons: bool) -> None:
    assert openai_reasoning_model(model) is reasons


def test_a_reasoning_model_gets_what_it_takes() -> None:
    ask = req(max_tokens=300, temperature=0.7, top_p=0.9, presence_penalty=0.5, frequency_penalty=0.1)
    body = encode_request(ask, "gpt-5", stream=False)
    assert body["max_completion_tokens"] == 300 and "max_tokens" not in body
    assert not {"temperature", "top_p", "presence_penalty", "frequency_penalty"} & set(body)
    off = encode_request(
        req(max_tokens=300, temperature=0.7, extra={"reasoning_effort": "none"}), "gpt-5.1", stream=False
    )
    assert off["temperature"] == 0.7  # reasoning off: gpt-5.1 takes a temperature
    one = encode_request(req(temperature=1.0), "o3", stream=False)
    assert one["temperature"] == 1.0
    plain = encode_request(ask, "gpt-4o", stream=False)
    assert (plain["max_tokens"], plain["temperature"], plain["presence_penalty"]) == (300, 0.7, 0.5)


async def test_the_fake_refuses_what_a_reasoning_model_refuses(fake: FakeOpenAI, prov: Provider) -> None:
    async with aiohttp.ClientSession() as session:
        for body, param in (
            ({"max_tokens": 10}, "max_tokens"),
            ({"temperature": 0.5}, "temperature"),
            ({"presence_penalty": 0.5}, "presence_penalty"),
        ):
            payload = {"model": "gpt-5", "messages": [{"role": "user", "content": "x"}], **body}
            async with session.post(f"{fake.base_url}/chat/completions", json=payload) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["param"] == param
    # the provider sends what the model takes
    ask = req(max_tokens=30, temperature=0.2, presence_penalty=0.5)
    answer = await prov.chat(ask, "gpt-5", CallOptions(timeout_s=10, connect_timeout_s=2))
    assert answer.choices[0].message.content
    assert fake.requests[-1]["body"]["max_completion_tokens"] == 30
