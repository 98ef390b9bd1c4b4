"""The Anthropic adapter: pure translation both ways, then the adapter against FakeAnthropic over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from modelyard.config.schema import AnthropicProviderConfig
from modelyard.errors import (
    InvalidRequestError,
    UpstreamConnectionError,
    UpstreamMalformedError,
    UpstreamStatusError,
)
from modelyard.providers.anthropic import (
    DEFAULT_MAX_TOKENS,
    AnthropicProvider,
    JsonTool,
    StreamTranslator,
    classify,
    decode_response,
    decode_stop,
    decode_usage,
    encode_messages,
    encode_request,
    encode_tool_choice,
    error_status,
    parse_error,
    thinking_style,
)
from modelyard.providers.base import CallOptions
from modelyard.testing.fake_anthropic import FakeAnthropic
from modelyard.types import (
    ChatChunk,
    ChatRequest,
    ContentPart,
    ForcedTool,
    Message,
    ResponseFormat,
    Tool,
    ToolCall,
)

MODEL = "claude-sonnet-4-6"
PNG = "data:image/png;base64,iVBORw0KGgo="
WEATHER = Tool(
    name="get_weather",
    description="Weather for a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CALL = CallOptions(timeout_s=10, connect_timeout_s=2)


def req(*messages: Message, **kw: Any) -> ChatRequest:
    return ChatRequest(model=MODEL, messages=list(messages), **kw)


def user(text: str) -> Message:
    return Message("user", text)


def body_of(request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
    return encode_request(request, MODEL, stream=stream).body


# -- internal -> Anthropic ---------------------------------------------------------------


def test_system_and_developer_messages_become_top_level_system() -> None:
    body = body_of(req(Message("system", "Be brief."), user("hi")))
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": "hi"}]

    body = body_of(req(Message("system", "A"), user("hi"), Message("developer", "B")))
    assert body["system"] == [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_request_basics_and_required_max_tokens() -> None:
    body = body_of(req(user("hi")))
    assert body["model"] == MODEL
    assert body["max_tokens"] == DEFAULT_MAX_TOKENS == 4096
    assert "stream" not in body and "system" not in body and "tools" not in body
    body = body_of(req(user("hi"), max_tokens=77), stream=True)
    assert body["max_tokens"] == 77
    assert body["stream"] is True


def test_sampling_stop_and_user_fields() -> None:
    body = body_of(req(user("hi"), temperature=0.3, top_p=0.9, stop=["END", ""], user="u-42", seed=7))
    assert body["temperature"] == 0.3
    assert body["top_p"] == 0.9
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "u-42"}
    assert "seed" not in body and "stop" not in body and "user" not in body
    assert body_of(req(user("hi"), temperature=1.7))["temperature"] == 1.0  # Anthropic's range is 0..1


def test_extra_fields_only_anthropic_ones_pass() -> None:
    extra = {"top_k": 5, "cache_control": {"type": "ephemeral"}, "logit_bias": {"1": 2}, "service_tier": "auto"}
    body = body_of(req(user("hi"), extra=extra))
    assert body["top_k"] == 5
    assert body["cache_control"] == {"type": "ephemeral"}
    assert body["service_tier"] == "auto"
    assert "logit_bias" not in body


def test_n_greater_than_one_is_rejected() -> None:
    with pytest.raises(InvalidRequestError) as err:
        encode_request(req(user("hi"), n=2), MODEL, stream=False)
    assert err.value.param == "n"


def test_consecutive_same_role_messages_merge() -> None:
    _, msgs = encode_messages([user("one"), user("two"), Message("assistant", "three"), user("four")])
    assert msgs == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": "three"},
        {"role": "user", "content": "four"},
    ]


def test_multi_part_content_with_images() -> None:
    parts = [
        ContentPart("text", text="what is in these?"),
        ContentPart("image", image_url=PNG),
        ContentPart("image", image_url="https://example.com/cat.jpg", detail="high"),
        ContentPart("text", text="   "),  # whitespace-only text blocks are rejected by the API
    ]
    _, msgs = encode_messages([Message("user", parts)])
    assert msgs == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


@pytest.mark.parametrize("url", ["data:image/svg+xml,<svg/>", "ftp://example.com/a.png"])
def test_unusable_image_urls_are_rejected(url: str) -> None:
    with pytest.raises(InvalidRequestError):
        encode_messages([Message("user", [ContentPart("image", image_url=url)])])


def test_assistant_tool_calls_and_tool_results() -> None:
    msgs = [
        user("weather?"),
        Message(
            "assistant",
            "",
            tool_calls=[
                ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'),
                ToolCall("toolu_2", "get_time", ""),
            ],
        ),
        Message("tool", "18C", tool_call_id="toolu_1"),
        Message("tool", [ContentPart("text", text="noon")], tool_call_id="toolu_2"),
        user("thanks"),
    ]
    _, out = encode_messages(msgs)
    assert out[1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}},
        ],
    }
    assert out[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "noon"}]},
            {"type": "text", "text": "thanks"},
        ],
    }
    assert len(out) == 3


def test_tool_results_come_first_in_a_merged_user_message() -> None:
    msgs = [
        Message("assistant", None, tool_calls=[ToolCall("toolu_1", "f", "{}")]),
        user("by the way"),
        Message("tool", "done", tool_call_id="toolu_1"),
    ]
    _, out = encode_messages(msgs)
    assert [b["type"] for b in out[1]["content"]] == ["tool_result", "text"]


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]"])
def test_bad_tool_call_arguments_are_rejected(arguments: str) -> None:
    with pytest.raises(InvalidRequestError):
        encode_messages([Message("assistant", None, tool_calls=[ToolCall("t", "f", arguments)])])


def test_final_assistant_prefill_loses_trailing_whitespace() -> None:
    _, out = encode_messages([user("hi"), Message("assistant", "The answer is ")])
    assert out[-1] == {"role": "assistant", "content": "The answer is"}
    _, out = encode_messages([user("hi"), Message("assistant", "  ")])
    assert out == [{"role": "user", "content": "hi"}]


def test_tools_translate_to_input_schema() -> None:
    body = body_of(req(user("hi"), tools=[WEATHER, Tool(name="ping")]))
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER.parameters},
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (ForcedTool("get_weather"), None, {"type": "tool", "name": "get_weather"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (ForcedTool("f"), False, {"type": "tool", "name": "f", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice(choice: Any, parallel: bool | None, expected: dict[str, Any] | None) -> None:
    assert encode_tool_choice(choice, parallel) == expected


def test_tool_choice_is_only_sent_with_tools() -> None:
    assert "tool_choice" not in body_of(req(user("hi"), tool_choice="required"))
    body = body_of(req(user("hi"), tools=[WEATHER], tool_choice="required", parallel_tool_calls=False))
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_json_object_mode_forces_a_json_tool() -> None:
    encoded = encode_request(
        req(Message("system", "Be terse."), user("hi"), response_format=ResponseFormat("json_object")),
        MODEL,
        stream=False,
    )
    body = encoded.body
    assert encoded.json_tool == JsonTool("json_response", wrapped=False)
    assert body["tools"][-1]["name"] == "json_response"
    assert body["tools"][-1]["input_schema"] == {"type": "object"}
    assert body["tool_choice"] == {"type": "tool", "name": "json_response"}
    assert body["system"][0] == {"type": "text", "text": "Be terse."}
    assert "json_response" in body["system"][1]["text"]


def test_json_schema_mode_uses_the_schema_and_its_name() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    encoded = encode_request(
        req(user("hi"), response_format=ResponseFormat("json_schema", schema=schema, name="count result")),
        MODEL,
        stream=False,
    )
    assert encoded.json_tool == JsonTool("count_result", wrapped=False)
    assert encoded.body["tools"] == [
        {"name": "count_result", "description": encoded.body["tools"][0]["description"], "input_schema": schema}
    ]
    assert "schema" in encoded.body["system"]


def test_non_object_json_schema_is_wrapped_with_its_defs_hoisted() -> None:
    schema = {"type": "array", "items": {"$ref": "#/$defs/Item"}, "$defs": {"Item": {"type": "integer"}}}
    encoded = encode_request(
        req(user("hi"), response_format=ResponseFormat("json_schema", schema=schema)), MODEL, stream=False
    )
    assert encoded.json_tool == JsonTool("json_response", wrapped=True)
    assert encoded.body["tools"][0]["input_schema"] == {
        "type": "object",
        "properties": {"value": {"type": "array", "items": {"$ref": "#/$defs/Item"}}},
        "required": ["value"],
        "$defs": {"Item": {"type": "integer"}},
    }


def test_json_mode_with_client_tools() -> None:
    rf = ResponseFormat("json_object")
    body = body_of(req(user("hi"), tools=[WEATHER], response_format=rf))
    assert [t["name"] for t in body["tools"]] == ["get_weather", "json_response"]
    assert body["tool_choice"] == {"type": "any"}  # a client tool or the answer

    body = body_of(req(user("hi"), tools=[WEATHER], tool_choice="none", response_format=rf))
    assert [t["name"] for t in body["tools"]] == ["json_response"]
    assert body["tool_choice"] == {"type": "tool", "name": "json_response"}

    body = body_of(req(user("hi"), tools=[WEATHER], tool_choice=ForcedTool("get_weather"), response_format=rf))
    assert [t["name"] for t in body["tools"]] == ["get_weather"]  # the forced call wins
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}

    clash = Tool(name="json_response", parameters={"type": "object"})
    encoded = encode_request(req(user("hi"), tools=[clash], response_format=rf), MODEL, stream=False)
    assert encoded.json_tool is not None and encoded.json_tool.name == "json_response_2"


# -- Anthropic -> internal ---------------------------------------------------------------


def message_body(content: list[dict[str, Any]], stop_reason: str = "end_turn", **usage: int) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, **usage},
    }


def test_decode_text_and_tool_use() -> None:
    data = message_body(
        [
            {"type": "thinking", "thinking": "hmm", "signature": "x"},
            {"type": "text", "text": "Let me check. "},
            {"type": "text", "text": "One moment."},
            {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}},
        ],
        "tool_use",
    )
    resp = decode_response(data, MODEL)
    choice = resp.choices[0]
    assert resp.id == "msg_1" and resp.model == MODEL
    assert choice.message.content == "Let me check. One moment."
    assert choice.message.tool_calls == [ToolCall("toolu_9", "get_weather", '{"city":"Oslo"}')]
    assert choice.finish_reason == "tool_calls"


def test_decode_tool_use_only_has_null_content() -> None:
    data = message_body([{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "tool_use")
    message = decode_response(data, MODEL).choices[0].message
    assert message.content is None
    assert message.tool_calls == [ToolCall("t", "f", "{}")]


def test_decode_json_tool_becomes_content() -> None:
    data = message_body([{"type": "tool_use", "id": "t", "name": "json_response", "input": {"a": 1}}], "tool_use")
    choice = decode_response(data, MODEL, JsonTool("json_response")).choices[0]
    assert choice.message.content == '{"a":1}'
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"

    data = message_body([{"type": "tool_use", "id": "t", "name": "json_response", "input": {"value": [1, 2]}}])
    assert decode_response(data, MODEL, JsonTool("json_response", wrapped=True)).choices[0].message.content == "[1,2]"


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
        (None, None),
    ],
)
def test_stop_reasons(reason: str | None, finish: str | None) -> None:
    assert decode_stop(reason) == finish


def test_usage_counts_cached_tokens_inside_prompt_tokens() -> None:
    usage = decode_usage(
        {"input_tokens": 10, "cache_read_input_tokens": 2048, "cache_creation_input_tokens": 512, "output_tokens": 7}
    )
    assert usage is not None
    assert usage.prompt_tokens == 10 + 2048 + 512
    assert usage.completion_tokens == 7
    assert usage.total_tokens == 10 + 2048 + 512 + 7
    assert usage.cached_tokens == 2048
    assert usage.cache_write_tokens == 512
    assert decode_usage({"input_tokens": 3, "output_tokens": 1, "cache_read_input_tokens": None}) is not None
    assert decode_usage(None) is None


def test_decode_rejects_a_response_without_content() -> None:
    with pytest.raises(ValueError):
        decode_response({"type": "message"}, MODEL)


def test_error_parsing_and_classification() -> None:
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": "prompt is too long: 1 > 0"}}
    message, etype = parse_error(body)
    assert (message, etype) == ("prompt is too long: 1 > 0", "invalid_request_error")
    assert classify(message, etype) == "context_length_exceeded"
    assert classify("input length and `max_tokens` exceed context limit: 1 + 2 > 2", None) == "context_length_exceeded"
    assert classify("Output blocked by content filtering policy", "invalid_request_error") == "content_policy_violation"
    assert classify("Overloaded", "overloaded_error") == "overloaded_error"
    assert [error_status(t) for t in ("overloaded_error", "rate_limit_error", "api_error", None)] == [
        529,
        429,
        500,
        500,
    ]


# -- the stream translator -----------------------------------------------------------------


def events_for(*blocks: tuple[str, list[str]], stop: str = "end_turn") -> list[dict[str, Any]]:
    """A stream: message_start, one content block per (kind, fragments), message_delta, message_stop."""
    usage = {"input_tokens": 10, "cache_read_input_tokens": 1024, "cache_creation_input_tokens": 0, "output_tokens": 1}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {**message_body([]), "stop_reason": None, "usage": usage}},
        {"type": "ping"},
    ]
    for i, (kind, fragments) in enumerate(blocks):
        if kind == "text":
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": f} for f in fragments]
        else:
            start = {"type": "tool_use", "id": f"toolu_{i}", "name": kind, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": f} for f in fragments]
        events.append({"type": "content_block_start", "index": i, "content_block": start})
        events += [{"type": "content_block_delta", "index": i, "delta": d} for d in deltas]
        events.append({"type": "content_block_stop", "index": i})
    events.append(
        {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 42}}
    )
    events.append({"type": "message_stop"})
    return events


def translate(events: list[dict[str, Any]], json_tool: JsonTool | None = None) -> list[ChatChunk]:
    t = StreamTranslator(MODEL, json_tool, provider="anthropic")
    return [chunk for event in events for chunk in t.feed(event)]


def test_stream_text_translation() -> None:
    chunks = translate(events_for(("text", ["Hel", "lo"])))
    assert chunks[0].choices[0].role == "assistant"
    assert chunks[0].id == "msg_1"
    assert "".join(c.choices[0].content or "" for c in chunks if c.choices) == "Hello"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.cached_tokens) == (1034, 42, 1024)


def test_stream_tool_call_translation() -> None:
    events = events_for(
        ("text", ["Checking."]), ("get_weather", ["", '{"city"', ': "Oslo"}']), ("f", ["{}"]), stop="tool_use"
    )
    chunks = translate(events)
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].tool_calls or []]
    assert (calls[0].index, calls[0].id, calls[0].name, calls[0].arguments) == (0, "toolu_1", "get_weather", "")
    assert "".join(tc.arguments or "" for tc in calls if tc.index == 0) == '{"city": "Oslo"}'
    assert calls[-2].index == 1 and calls[-2].name == "f"
    assert all(tc.id is None for tc in calls if tc.name is None)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_stream_json_tool_becomes_content() -> None:
    events = events_for(("json_response", ['{"a"', ": 1}"]), stop="tool_use")
    chunks = translate(events, JsonTool("json_response"))
    assert "".join(c.choices[0].content or "" for c in chunks if c.choices) == '{"a": 1}'
    assert not any(c.choices[0].tool_calls for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"

    events = events_for(("json_response", ['{"value"', ": [1, 2]}"]), stop="tool_use")
    chunks = translate(events, JsonTool("json_response", wrapped=True))
    assert "".join(c.choices[0].content or "" for c in chunks if c.choices) == "[1,2]"


def test_stream_in_band_error() -> None:
    t = StreamTranslator(MODEL, provider="anthropic")
    t.feed(events_for()[0])
    with pytest.raises(UpstreamStatusError) as err:
        t.feed({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert err.value.upstream_status == 529
    assert err.value.retryable is True
    assert err.value.code == "overloaded_error"


def test_stream_completeness() -> None:
    t = StreamTranslator(MODEL)
    events = events_for(("text", ["hi"]))
    for event in events[:-2]:  # no message_delta, no message_stop
        t.feed(event)
    assert not t.complete
    t.feed(events[-2])  # the stop reason arrived: complete even without message_stop
    assert t.complete and not t.done
    assert t.usage_chunk()[0].usage is not None
    assert t.usage_chunk() == []  # only once
    assert t.feed({"type": "some_future_event"}) == []


# -- the adapter over HTTP -----------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    async with FakeAnthropic() as server:
        yield server


def make_provider(fake: FakeAnthropic, *, api_key: str | None = "sk-ant-test", **kw: Any) -> AnthropicProvider:
    config = AnthropicProviderConfig(base_url=fake.base_url, api_key=api_key, **kw)
    return AnthropicProvider("anthropic", config)


@pytest.fixture
async def provider(fake: FakeAnthropic) -> AsyncIterator[AnthropicProvider]:
    p = make_provider(fake)
    yield p
    await p.aclose()


async def collect(provider: AnthropicProvider, request: ChatRequest) -> list[ChatChunk]:
    return [chunk async for chunk in provider.stream(request, MODEL, CALL)]


def text_of(chunks: list[ChatChunk]) -> str:
    return "".join(c.choices[0].content or "" for c in chunks if c.choices)


def sent(fake: FakeAnthropic) -> dict[str, Any]:
    body = fake.requests[-1]["body"]
    assert isinstance(body, dict)
    return body


async def test_plain_chat(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    resp = await provider.chat(req(Message("system", "Be nice."), user("hello there")), MODEL, CALL)
    choice = resp.choices[0]
    assert choice.message.content == f"{MODEL} says: hello there"
    assert choice.finish_reason == "stop"
    assert resp.id.startswith("msg_")
    assert resp.usage is not None and resp.usage.completion_tokens == 4 and resp.usage.prompt_tokens > 0
    assert sent(fake)["system"] == "Be nice."
    assert sent(fake)["max_tokens"] == 4096
    assert fake.attempts(MODEL) == 1


def test_auth_headers() -> None:
    config = AnthropicProviderConfig(api_key="sk-ant-x", api_version="2099-01-01")
    p = AnthropicProvider("a", config)
    assert p.base_url == "https://api.anthropic.com"
    assert p.auth_headers() == {"anthropic-version": "2099-01-01", "x-api-key": "sk-ant-x"}
    assert AnthropicProvider("a", AnthropicProviderConfig()).auth_headers() == {"anthropic-version": "2023-06-01"}


async def test_wrong_or_missing_key_is_a_401_without_the_key_in_the_message() -> None:
    async with FakeAnthropic(api_key="sk-ant-right") as fake:
        for key in ("sk-ant-wrong-secret", None):
            p = make_provider(fake, api_key=key)
            try:
                with pytest.raises(UpstreamStatusError) as err:
                    await p.chat(req(user("hi")), MODEL, CALL)
            finally:
                await p.aclose()
            assert err.value.upstream_status == 401
            assert err.value.code == "authentication_error"
            assert err.value.retryable is False
            assert "sk-ant-wrong-secret" not in str(err.value)


async def test_streaming(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    chunks = await collect(provider, req(user("stream this please"), stream=True))
    assert chunks[0].choices[0].role == "assistant"
    assert text_of(chunks) == f"{MODEL} says: stream this please"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("msg_")
    assert sent(fake)["stream"] is True


async def test_tools(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    resp = await provider.chat(req(user("weather in Paris?"), tools=[WEATHER], tool_choice="auto"), MODEL, CALL)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.id.startswith("toolu_") and call.name == "get_weather"
    assert orjson.loads(call.arguments) == {"city": "example city"}
    assert sent(fake)["tools"][0]["input_schema"] == WEATHER.parameters


async def test_streamed_tool_calls(provider: AnthropicProvider) -> None:
    chunks = await collect(provider, req(user("weather?"), tools=[WEATHER], tool_choice=ForcedTool("get_weather")))
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].tool_calls or []]
    assert calls[0].id is not None and calls[0].id.startswith("toolu_") and calls[0].name == "get_weather"
    assert orjson.loads("".join(tc.arguments or "" for tc in calls)) == {"city": "example city"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


async def test_tool_result_round_trip(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    first = await provider.chat(req(user("weather in Paris?"), tools=[WEATHER]), MODEL, CALL)
    assistant = first.choices[0].message
    assert assistant.tool_calls
    history = [
        user("weather in Paris?"),
        assistant,
        Message("tool", "18C and sunny", tool_call_id=assistant.tool_calls[0].id),
    ]
    second = await provider.chat(req(*history, tools=[WEATHER]), MODEL, CALL)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == f"{MODEL} says: weather in Paris?"
    blocks = sent(fake)["messages"][2]["content"]
    assert blocks == [{"type": "tool_result", "tool_use_id": assistant.tool_calls[0].id, "content": "18C and sunny"}]

    wrong = [*history[:2], Message("tool", "18C", tool_call_id="toolu_unknown")]
    with pytest.raises(UpstreamStatusError) as err:  # the fake checks tool ids like the real API
        await provider.chat(req(*wrong, tools=[WEATHER]), MODEL, CALL)
    assert err.value.upstream_status == 400
    assert "tool_use" in str(err.value)


async def test_images(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    parts = [
        ContentPart("text", text="describe"),
        ContentPart("image", image_url=PNG),
        ContentPart("image", image_url="https://example.com/a.png"),
    ]
    plain = await provider.chat(req(user("describe")), MODEL, CALL)
    resp = await provider.chat(req(Message("user", parts)), MODEL, CALL)
    assert resp.choices[0].message.content == f"{MODEL} says: describe"
    assert resp.usage is not None and plain.usage is not None
    assert resp.usage.prompt_tokens - plain.usage.prompt_tokens == 2 * 85  # the fake bills each image
    sources = [b["source"]["type"] for b in sent(fake)["messages"][0]["content"] if b["type"] == "image"]
    assert sources == ["base64", "url"]


async def test_json_mode(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}
    rf = ResponseFormat("json_schema", schema=schema, name="person")
    resp = await provider.chat(req(user("who?"), response_format=rf), MODEL, CALL)
    assert orjson.loads(resp.choices[0].message.text()) == {"name": "example name", "age": 1}
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.tool_calls is None
    assert sent(fake)["tool_choice"] == {"type": "tool", "name": "person"}

    rf = ResponseFormat("json_schema", schema={"type": "array", "items": {"type": "integer"}})
    chunks = await collect(provider, req(user("numbers"), response_format=rf))
    assert orjson.loads(text_of(chunks)) == [1]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"

    chunks = await collect(provider, req(user("obj"), response_format=ResponseFormat("json_object")))
    assert isinstance(orjson.loads(text_of(chunks)), dict)


async def test_stop_reasons_over_http(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    resp = await provider.chat(req(user("one two three four five"), max_tokens=2), MODEL, CALL)
    assert resp.choices[0].finish_reason == "length"
    assert resp.choices[0].message.content == f"{MODEL} says:"

    resp = await provider.chat(req(user("alpha beta gamma"), stop=["beta"]), MODEL, CALL)
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.content == f"{MODEL} says: alpha "
    assert sent(fake)["stop_sequences"] == ["beta"]

    fake.inject(MODEL, code="refusal", times=2)
    resp = await provider.chat(req(user("something bad")), MODEL, CALL)
    assert resp.choices[0].finish_reason == "content_filter"
    chunks = await collect(provider, req(user("something bad")))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"


async def test_usage_with_cache_tokens(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    long_text = " ".join(f"w{i}" for i in range(1300))
    request = req(user(long_text), extra={"cache_control": {"type": "ephemeral"}})
    first = await provider.chat(request, MODEL, CALL)
    second = await provider.chat(request, MODEL, CALL)
    assert first.usage is not None and second.usage is not None
    assert first.usage.cache_write_tokens == 1280 and first.usage.cached_tokens == 0
    assert second.usage.cached_tokens == 1280 and second.usage.cache_write_tokens == 0
    assert first.usage.prompt_tokens == second.usage.prompt_tokens > 1280
    chunks = await collect(provider, request)
    usage = chunks[-1].usage
    assert usage is not None and usage.cached_tokens == 1280 and usage.prompt_tokens == first.usage.prompt_tokens


@pytest.mark.parametrize(
    ("status", "code", "expected_code", "client_status"),
    [
        (400, "context_length_exceeded", "context_length_exceeded", 400),
        (400, "content_policy_violation", "content_policy_violation", 400),
        (404, None, "not_found_error", 404),
        (413, None, "request_too_large", 413),
        (500, None, "api_error", 502),
    ],
)
async def test_error_mapping(
    fake: FakeAnthropic,
    provider: AnthropicProvider,
    status: int,
    code: str | None,
    expected_code: str,
    client_status: int,
) -> None:
    fake.inject(MODEL, status=status, code=code, times=1)
    with pytest.raises(UpstreamStatusError) as err:
        await provider.chat(req(user("hi")), MODEL, CALL)
    assert err.value.upstream_status == status
    assert err.value.code == expected_code
    assert err.value.status == client_status


async def test_429_with_retry_after(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.inject(MODEL, status=429, retry_after="7", times=1)
    with pytest.raises(UpstreamStatusError) as err:
        await provider.chat(req(user("hi")), MODEL, CALL)
    assert err.value.upstream_status == 429
    assert err.value.retry_after == 7.0
    assert err.value.retryable is True
    assert err.value.code == "rate_limit_error"
    assert err.value.headers() == {"Retry-After": "7"}
    assert (await provider.chat(req(user("hi")), MODEL, CALL)).choices[0].finish_reason == "stop"


async def test_529_overloaded(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.inject(MODEL, status=529, times=1)
    with pytest.raises(UpstreamStatusError) as err:
        await collect(provider, req(user("hi")))
    assert err.value.upstream_status == 529
    assert err.value.retryable is True
    assert err.value.code == "overloaded_error"
    assert err.value.status == 503


async def test_in_band_stream_error(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.inject(MODEL, code="overloaded_error", times=1)
    seen: list[ChatChunk] = []
    with pytest.raises(UpstreamStatusError) as err:
        async for chunk in provider.stream(req(user("hi")), MODEL, CALL):
            seen.append(chunk)
    assert [c.choices[0].role for c in seen] == ["assistant"]  # message_start came first
    assert err.value.upstream_status == 529 and err.value.retryable is True
    assert "Overloaded" in str(err.value)


async def test_truncated_stream(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.inject(MODEL, cut_after=4, times=1)
    with pytest.raises(UpstreamConnectionError):
        await collect(provider, req(user("one two three four")))


async def test_stream_with_stop_reason_but_no_message_stop_is_complete(
    fake: FakeAnthropic, provider: AnthropicProvider
) -> None:
    fake.inject(MODEL, no_done=True, times=1)
    chunks = await collect(provider, req(user("almost done")))
    assert text_of(chunks) == f"{MODEL} says: almost done"
    assert chunks[-1].usage is not None and chunks[-1].choices == []


async def test_malformed_stream_event(fake: FakeAnthropic, provider: AnthropicProvider) -> None:
    fake.inject(MODEL, malformed_after=3, times=1)
    with pytest.raises(UpstreamMalformedError):
        await collect(provider, req(user("hi there")))


async def test_upstream_validation_errors_pass_through(provider: AnthropicProvider) -> None:
    with pytest.raises(UpstreamStatusError) as err:  # only a system message: no Anthropic messages at all
        await provider.chat(req(Message("system", "x")), MODEL, CALL)
    assert err.value.upstream_status == 400
    assert err.value.status == 400 and err.value.retryable is False
    assert "at least one message" in str(err.value)


async def test_list_models_and_health() -> None:
    names = [f"claude-test-{i:04d}" for i in range(1003)]  # more than one page of 1000
    async with FakeAnthropic(models=names) as fake:
        p = make_provider(fake)
        try:
            models = await p.list_models()
            health = await p.health()
        finally:
            await p.aclose()
    assert [m.id for m in models] == names
    assert models[0].context_window == 200000
    assert models[0].details["display_name"] == "Claude Test 0000"
    assert health.ok and health.detail == "1003 models"


async def test_embeddings_are_not_supported(provider: AnthropicProvider) -> None:
    from modelyard.types import EmbeddingRequest

    with pytest.raises(InvalidRequestError):
        await provider.embed(EmbeddingRequest(model="x", input=["a"]), MODEL, CALL)


# -- reasoning_effort: adaptive thinking on Claude 4.6 and later, a budget before ----------------


def thinking_body(model: str, effort: str = "high", **kw: Any) -> dict[str, Any]:
    messages = kw.pop("messages", [user("think")])
    extra = {"reasoning_effort": effort, **kw.pop("extra", {})}
    return encode_request(ChatRequest(model=model, messages=messages, extra=extra, **kw), model, stream=False).body


@pytest.mark.parametrize(
    ("model", "style"),
    [
        ("claude-3-7-sonnet-20250219", "budget"),
        ("claude-sonnet-4-20250514", "budget"),
        ("claude-opus-4-1-20250805", "budget"),
        ("claude-sonnet-4-5", "budget"),
        ("claude-haiku-4-5-20251001", "budget"),
        ("claude-opus-4-5-20251101", "budget"),
        ("anthropic.claude-sonnet-4-5-20250929-v1:0", "budget"),  # a Bedrock id
        ("claude-opus-4-6", "adaptive"),
        ("claude-sonnet-4-6", "adaptive"),
        ("anthropic.claude-opus-4-6-v1", "adaptive"),
        ("claude-opus-4-7", "adaptive"),
        ("claude-some-future-model", "adaptive"),
    ],
)
def test_thinking_style_by_model(model: str, style: str) -> None:
    assert thinking_style(model) == style


@pytest.mark.parametrize(
    ("effort", "level", "budget"),
    [
        ("minimal", "low", 1024),
        ("low", "low", 1024),
        ("medium", "medium", 2048),
        ("high", "high", 4096),
        ("xhigh", "xhigh", 8192),
    ],
)
def test_reasoning_effort_is_adaptive_thinking_on_new_models(effort: str, level: str, budget: int) -> None:
    body = thinking_body("claude-opus-4-7", effort, max_tokens=500)
    assert body["thinking"] == {"type": "adaptive"}
    assert body["output_config"] == {"effort": level}
    assert body["max_tokens"] == 500 + budget  # the answer keeps its own allowance
    assert thinking_body("claude-opus-4-7", effort, max_tokens=50_000)["max_tokens"] == 50_000


def test_xhigh_is_max_on_claude_4_6_which_predates_it() -> None:
    assert thinking_body("claude-sonnet-4-6", "xhigh")["output_config"] == {"effort": "max"}
    assert thinking_body("claude-opus-4-6", "high")["output_config"] == {"effort": "high"}


def test_reasoning_effort_is_a_budget_on_older_models() -> None:
    body = thinking_body("claude-sonnet-4-5", "medium")
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048} and "output_config" not in body


def test_none_effort_and_explicit_thinking_are_left_alone() -> None:
    assert "thinking" not in thinking_body("claude-opus-4-7", "none")
    body = thinking_body("claude-opus-4-7", "high", extra={"thinking": {"type": "disabled"}})
    assert body["thinking"] == {"type": "disabled"} and "output_config" not in body
    own = thinking_body("claude-opus-4-7", "high", extra={"output_config": {"effort": "max"}})
    assert own["output_config"] == {"effort": "max"}  # the client's own effort wins


def test_thinking_takes_the_default_sampling() -> None:
    body = thinking_body("claude-opus-4-6", temperature=0.7, top_p=0.5, extra={"top_k": 40})
    assert "temperature" not in body and "top_k" not in body and body["top_p"] == 0.95


@pytest.mark.parametrize(
    ("model", "removed"),
    [
        ("claude-opus-4-7", True),
        ("claude-some-future-model", True),
        ("anthropic.claude-opus-4-7", True),
        ("claude-opus-4-6", False),
        ("claude-sonnet-4-5", False),
        ("claude-3-5-haiku-20241022", False),
        ("claude-3-7-sonnet-20250219", False),
    ],
)
def test_opus_4_7_and_later_get_no_sampling_parameters(model: str, removed: bool) -> None:
    body = encode_request(
        ChatRequest(model="m", messages=[user("x")], temperature=0.2, top_p=0.5, extra={"top_k": 4}),
        model,
        stream=False,
    ).body
    assert bool({"temperature", "top_p", "top_k"} & set(body)) is not removed
    plain = body_of(req(user("x"), temperature=0.7, top_p=0.5, extra={"top_k": 40}))
    assert (plain["temperature"], plain["top_p"], plain["top_k"]) == (0.7, 0.5, 40)


def test_no_thinking_where_the_api_refuses_it() -> None:
    # a forced tool call (JSON mode is one) and a prefilled answer cannot be combined with thinking
    json_mode = thinking_body("claude-opus-4-6", response_format=ResponseFormat(type="json_object"), temperature=0.2)
    assert "thinking" not in json_mode and json_mode["tool_choice"]["type"] == "tool"
    assert json_mode["temperature"] == 0.2
    forced = thinking_body("claude-sonnet-4-5", tools=[WEATHER], tool_choice="required")
    assert "thinking" not in forced
    auto = thinking_body("claude-sonnet-4-5", tools=[WEATHER], tool_choice="auto")
    assert auto["thinking"]["type"] == "enabled"
    prefill = thinking_body("claude-opus-4-7", messages=[user("go on"), Message("assistant", "Once upon")])
    assert "thinking" not in prefill


def test_a_clients_effort_is_dropped_for_models_before_adaptive_thinking() -> None:
    body = encode_request(
        ChatRequest(model="m", messages=[user("x")], extra={"output_config": {"effort": "low"}}),
        "claude-sonnet-4-5",
        stream=False,
    ).body
    assert "output_config" not in body
    kept = encode_request(
        ChatRequest(model="m", messages=[user("x")], extra={"output_config": {"effort": "low"}}),
        "claude-opus-4-6",
        stream=False,
    ).body
    assert kept["output_config"] == {"effort": "low"}
    xhigh = encode_request(
        ChatRequest(model="m", messages=[user("x")], extra={"output_config": {"effort": "xhigh"}}),
        "claude-sonnet-4-6",
        stream=False,
    ).body
    assert xhigh["output_config"] == {"effort": "max"}  # 4.6 predates xhigh


async def test_the_fake_refuses_what_the_api_refuses(provider: AnthropicProvider) -> None:
    """The fake keeps the API's thinking rules, so the translation above is checked against them."""
    for model, effort in [("claude-opus-4-7", "xhigh"), ("claude-sonnet-4-6", "xhigh"), ("claude-sonnet-4-5", "low")]:
        request = ChatRequest(
            model=model, messages=[user("x")], temperature=0.5, extra={"reasoning_effort": effort, "top_k": 3}
        )
        answer = await provider.chat(request, model, CALL)
        assert answer.choices[0].message.reasoning, model  # it thought
    bad = [
        ("claude-opus-4-7", {"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking.type.enabled"),
        ("claude-sonnet-4-5", {"thinking": {"type": "adaptive"}}, "adaptive"),
        ("claude-opus-4-6", {"thinking": {"type": "adaptive"}, "top_k": 5}, "top_k"),
    ]
    for model, extra, words in bad:
        with pytest.raises(UpstreamStatusError) as err:
            await provider.chat(ChatRequest(model=model, messages=[user("x")], extra=extra), model, CALL)
        assert err.value.upstream_status == 400 and words in str(err.value), (model, extra)
