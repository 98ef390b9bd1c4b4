"""The Ollama native-API adapter: translation as pure functions, then the adapter over real
loopback HTTP against :class:`FakeOllama` (chat, streaming, tools, images, JSON, errors, stream
faults, embeddings, models, and the local-model lifecycle with load times and keep_alive)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from modelyard.config.schema import OllamaProviderConfig
from modelyard.errors import (
    InvalidRequestError,
    UpstreamConnectionError,
    UpstreamMalformedError,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from modelyard.providers import CallOptions, build_provider
from modelyard.providers.ollama.provider import (
    OllamaProvider,
    StreamDecoder,
    context_length,
    decode_chat_response,
    encode_chat_request,
    keep_alive_value,
    parse_time,
)
from modelyard.testing.fake_ollama import FakeOllama, parse_keep_alive
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
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAcCBlCwAAAABJRU5ErkJggg=="
WEATHER = Tool(
    name="get_weather",
    description="Weather for a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
    },
)


def req(text: str = "hello", **kw: Any) -> ChatRequest:
    return ChatRequest(model="route", messages=[Message("user", text)], **kw)


def provider(fake: FakeOllama, **config: Any) -> OllamaProvider:
    p = build_provider("local", OllamaProviderConfig(base_url=fake.base_url, **config))
    assert isinstance(p, OllamaProvider)
    return p


async def collect(stream: AsyncIterator[ChatChunk]) -> list[ChatChunk]:
    return [c async for c in stream]


def last_body(fake: FakeOllama) -> dict[str, Any]:
    body = fake.requests[-1]["body"]
    assert isinstance(body, dict)
    return body


# =====================================================================================
# encode
# =====================================================================================


def test_minimal_request() -> None:
    body = encode_chat_request(req(), "llama3.2", stream=False)
    assert body == {"model": "llama3.2", "messages": [{"role": "user", "content": "hello"}], "stream": False}


def test_stream_flag_is_always_explicit() -> None:
    # Ollama streams unless told otherwise, so the flag is sent both ways
    assert encode_chat_request(req(), "m", stream=True)["stream"] is True
    assert encode_chat_request(req(), "m", stream=False)["stream"] is False


def test_roles_developer_becomes_system_and_none_content_is_empty_string() -> None:
    r = ChatRequest(
        model="r",
        messages=[Message("developer", "be terse"), Message("system", "sys"), Message("assistant", None)],
    )
    assert encode_chat_request(r, "m", stream=False)["messages"] == [
        {"role": "system", "content": "be terse"},
        {"role": "system", "content": "sys"},
        {"role": "assistant", "content": ""},
    ]


def test_data_uri_images_become_base64_payloads() -> None:
    parts = [
        ContentPart("text", text="what is "),
        ContentPart("image", image_url=f"data:image/png;base64,{PNG_B64}"),
        ContentPart("text", text="this?"),
        ContentPart("image", image_url="data:image/jpeg;base64,QUJD", detail="high"),
    ]
    msg = encode_chat_request(ChatRequest(model="r", messages=[Message("user", parts)]), "m", stream=False)
    assert msg["messages"] == [{"role": "user", "content": "what is this?", "images": [PNG_B64, "QUJD"]}]


@pytest.mark.parametrize("url", ["https://example.com/cat.png", "http://example.com/cat.png"])
def test_http_image_urls_are_refused_with_a_clear_message(url: str) -> None:
    parts = [ContentPart("text", text="look"), ContentPart("image", image_url=url)]
    with pytest.raises(InvalidRequestError, match="base64") as info:
        encode_chat_request(ChatRequest(model="r", messages=[Message("user", parts)]), "m", stream=False)
    assert info.value.param == "messages[0].content[1].image_url"
    assert "data:" in info.value.message


def test_non_base64_data_uri_is_refused() -> None:
    parts = [ContentPart("image", image_url="data:image/svg+xml,%3Csvg%3E")]
    with pytest.raises(InvalidRequestError, match="base64"):
        encode_chat_request(ChatRequest(model="r", messages=[Message("user", parts)]), "m", stream=False)


def test_tool_calls_become_objects_and_tool_results_carry_the_tool_name() -> None:
    r = ChatRequest(
        model="r",
        messages=[
            Message("user", "weather?"),
            Message(
                "assistant",
                None,
                tool_calls=[
                    ToolCall("call_a", "get_weather", '{"city": "Paris", "unit": "c"}'),
                    ToolCall("call_b", "get_time", ""),
                ],
            ),
            Message("tool", "sunny", tool_call_id="call_a"),
            Message("tool", "noon", tool_call_id="call_b"),
            Message("tool", "??", tool_call_id="call_unknown"),
        ],
    )
    msgs = encode_chat_request(r, "m", stream=False)["messages"]
    assert msgs[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}},
            {"function": {"name": "get_time", "arguments": {}}},
        ],
    }
    assert msgs[2] == {"role": "tool", "content": "sunny", "tool_name": "get_weather"}
    assert msgs[3] == {"role": "tool", "content": "noon", "tool_name": "get_time"}
    assert msgs[4] == {"role": "tool", "content": "??"}  # unknown id: no name rather than a wrong one


def test_reused_tool_call_ids_resolve_to_the_latest_call() -> None:
    # generated ids (call_0) repeat across turns; the nearest earlier call wins
    r = ChatRequest(
        model="r",
        messages=[
            Message("assistant", None, tool_calls=[ToolCall("call_0", "first", "{}")]),
            Message("tool", "1", tool_call_id="call_0"),
            Message("assistant", None, tool_calls=[ToolCall("call_0", "second", "{}")]),
            Message("tool", "2", tool_call_id="call_0"),
        ],
    )
    msgs = encode_chat_request(r, "m", stream=False)["messages"]
    assert [msgs[1]["tool_name"], msgs[3]["tool_name"]] == ["first", "second"]


def test_tool_result_falls_back_to_message_name() -> None:
    r = ChatRequest(model="r", messages=[Message("tool", "x", name="lookup", tool_call_id="nope")])
    assert encode_chat_request(r, "m", stream=False)["messages"][0]["tool_name"] == "lookup"


@pytest.mark.parametrize("args", ["not json", "[1, 2]", '"a string"'])
def test_tool_call_arguments_that_are_not_an_object_are_refused(args: str) -> None:
    r = ChatRequest(model="r", messages=[Message("assistant", None, tool_calls=[ToolCall("c", "f", args)])])
    with pytest.raises(InvalidRequestError) as info:
        encode_chat_request(r, "m", stream=False)
    assert info.value.param == "messages[0].tool_calls[0].function.arguments"


def test_tools_are_function_tools_with_default_parameters() -> None:
    body = encode_chat_request(req(tools=[WEATHER, Tool(name="ping")]), "m", stream=False)
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather for a city", "parameters": WEATHER.parameters},
        },
        {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}},
    ]


def test_tool_choice_none_drops_tools_and_forced_keeps_only_that_tool() -> None:
    ping = Tool(name="ping")
    assert "tools" not in encode_chat_request(req(tools=[WEATHER], tool_choice="none"), "m", stream=False)
    forced = encode_chat_request(req(tools=[WEATHER, ping], tool_choice=ForcedTool("ping")), "m", stream=False)
    assert [t["function"]["name"] for t in forced["tools"]] == ["ping"]
    required = encode_chat_request(req(tools=[WEATHER, ping], tool_choice="required"), "m", stream=False)
    assert len(required["tools"]) == 2
    with pytest.raises(InvalidRequestError):
        encode_chat_request(req(tools=[WEATHER], tool_choice=ForcedTool("missing")), "m", stream=False)


def test_sampling_options() -> None:
    r = req(
        temperature=0.2,
        top_p=0.9,
        seed=7,
        stop=["\n\n", "END"],
        max_tokens=64,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        user="someone",
    )
    assert encode_chat_request(r, "m", stream=False)["options"] == {
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["\n\n", "END"],
        "num_predict": 64,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
    }


def test_zero_values_are_sent_not_dropped() -> None:
    options = encode_chat_request(req(temperature=0.0, seed=0), "m", stream=False)["options"]
    assert options == {"temperature": 0.0, "seed": 0}


def test_ollama_only_options_from_extra() -> None:
    r = req(temperature=0.5)
    r.extra = {"num_ctx": 8192, "top_k": 20, "options": {"repeat_penalty": 1.1, "temperature": 9}, "foo": 1}
    body = encode_chat_request(r, "m", stream=False)
    assert body["options"] == {"repeat_penalty": 1.1, "temperature": 0.5, "num_ctx": 8192, "top_k": 20}
    assert "foo" not in body


def test_n_above_one_is_refused() -> None:
    with pytest.raises(InvalidRequestError) as info:
        encode_chat_request(req(n=2), "m", stream=False)
    assert info.value.param == "n"
    assert "n" not in encode_chat_request(req(n=1), "m", stream=False)


def test_json_mode_and_schema_formats() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    assert (
        encode_chat_request(req(response_format=ResponseFormat("json_object")), "m", stream=False)["format"] == "json"
    )
    body = encode_chat_request(req(response_format=ResponseFormat("json_schema", schema, "p")), "m", stream=False)
    assert body["format"] == schema
    assert "format" not in encode_chat_request(req(response_format=ResponseFormat("text")), "m", stream=False)


@pytest.mark.parametrize(
    ("value", "wire"),
    [("5m", "5m"), ("-1", -1), ("0", 0), (" 30 ", 30), ("1.5", 1.5), (-1, -1), (0, 0), (300, 300), (None, None)],
)
def test_keep_alive_numeric_strings_become_numbers(value: Any, wire: Any) -> None:
    assert keep_alive_value(value) == wire
    body = encode_chat_request(req(), "m", stream=False, keep_alive=value)
    assert body.get("keep_alive") == wire
    assert ("keep_alive" in body) is (wire is not None)


# =====================================================================================
# decode
# =====================================================================================


def test_decode_plain_response() -> None:
    data = {
        "model": "llama3.2",
        "created_at": "2024-12-06T00:46:58.265747123Z",
        "message": {"role": "assistant", "content": "Hi!"},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 26,
        "eval_count": 298,
        "total_duration": 5191566416,
    }
    r = decode_chat_response(data, "x")
    assert r.model == "llama3.2"
    assert r.created == 1733446018
    assert r.id.startswith("chatcmpl-")
    assert r.choices[0].message.content == "Hi!"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (26, 298, 324)


@pytest.mark.parametrize(
    ("reason", "calls", "expected"),
    [
        ("stop", False, "stop"),
        ("length", False, "length"),
        ("stop", True, "tool_calls"),
        (None, False, "stop"),
        ("load", False, "stop"),
        ("unload", False, "stop"),
        ("length", True, "length"),
    ],
)
def test_finish_reasons(reason: str | None, calls: bool, expected: str) -> None:
    msg: dict[str, Any] = {"role": "assistant", "content": ""}
    if calls:
        msg["tool_calls"] = [{"function": {"name": "f", "arguments": {}}}]
    assert decode_chat_response({"message": msg, "done": True, "done_reason": reason}, "m").choices[
        0
    ].finish_reason == (expected)


def test_decode_tool_calls_generates_ids_and_serialises_arguments() -> None:
    data = {
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris", "n": 2}}},
                {"function": {"index": 1, "name": "noop", "arguments": {}}},
                {"id": "call_xyz12345", "function": {"name": "given", "arguments": {}}},
            ],
        },
        "done": True,
        "done_reason": "stop",
    }
    msg = decode_chat_response(data, "m").choices[0].message
    assert msg.content is None
    assert msg.tool_calls is not None
    assert [(c.id, c.name) for c in msg.tool_calls] == [
        ("call_0", "get_weather"),
        ("call_1", "noop"),
        ("call_xyz12345", "given"),
    ]
    assert orjson.loads(msg.tool_calls[0].arguments) == {"city": "Paris", "n": 2}
    assert msg.tool_calls[1].arguments == "{}"


def test_decode_missing_usage_is_zero_and_missing_content_is_empty() -> None:
    r = decode_chat_response({"message": {"role": "assistant"}, "done": True}, "m")
    assert r.choices[0].message.content == ""
    assert r.usage is not None and r.usage.total_tokens == 0
    assert r.model == "m"
    assert abs(r.created - time.time()) < 5


@pytest.mark.parametrize(
    "bad",
    [[], {"model": "m"}, {"message": "text"}, {"message": {"content": 5}}, {"message": {"tool_calls": [1]}}],
)
def test_decode_rejects_bad_shapes(bad: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        decode_chat_response(bad, "m")


def test_stream_decoder_role_content_tool_calls_finish_and_usage() -> None:
    d = StreamDecoder(id="chatcmpl-1", model="m")
    t = "2024-01-01T00:00:00.123456789Z"
    chunks = d.decode_line({"model": "llama3.2", "created_at": t, "message": {"role": "assistant", "content": "He"}})
    chunks += d.decode_line({"model": "llama3.2", "created_at": t, "message": {"role": "assistant", "content": ""}})
    chunks += d.decode_line(
        {"message": {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "a", "arguments": {}}}]}}
    )
    chunks += d.decode_line(
        {"message": {"content": "", "tool_calls": [{"id": "call_q", "function": {"name": "b", "arguments": {"x": 1}}}]}}
    )
    assert not d.done
    chunks += d.decode_line(
        {"message": {"content": "!"}, "done": True, "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 4}
    )
    assert d.done
    assert {c.id for c in chunks} == {"chatcmpl-1"} and {c.model for c in chunks} == {"llama3.2"}
    assert {c.created for c in chunks} == {1704067200}
    assert chunks[0].choices[0].role == "assistant" and chunks[0].choices[0].content == ""
    assert chunks[1].choices[0].content == "He"
    calls = [tc for c in chunks for ch in c.choices for tc in ch.tool_calls or []]
    assert [(tc.index, tc.id, tc.name, tc.arguments) for tc in calls] == [
        (0, "call_0", "a", "{}"),
        (1, "call_q", "b", '{"x":1}'),
    ]
    assert chunks[-3].choices[0].content == "!"  # content on the done line is not lost
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 7
    assert len(chunks) == 7  # empty content lines produce nothing


def test_stream_decoder_length() -> None:
    d = StreamDecoder(id="x", model="m")
    chunks = d.decode_line({"message": {"content": "a"}, "done": True, "done_reason": "length", "eval_count": 1})
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_parse_time_and_context_length() -> None:
    when = parse_time("2024-06-04T14:38:31.837530123-07:00")
    assert when is not None and when.microsecond == 837530 and when.utcoffset() is not None
    assert parse_time("2024-06-04T14:38:31Z") is not None
    assert parse_time("garbage") is None and parse_time(None) is None
    assert context_length({"general.architecture": "llama", "llama.context_length": 8192}) == 8192
    assert context_length({"general.architecture": "x", "nomic-bert.context_length": 2048}) == 2048
    assert context_length({"general.architecture": "llama"}) is None and context_length(None) is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("5m", 300), ("30s", 30), ("1h", 3600), ("1h30m", 5400), ("300ms", 0.3), ("0", 0), (0, 0), (12, 12), (0.5, 0.5)],
)
def test_fake_parses_keep_alive_like_go(value: Any, seconds: float) -> None:
    assert parse_keep_alive(value) == pytest.approx(seconds)


@pytest.mark.parametrize(("value", "message"), [("-1", "missing unit"), ("5x", "invalid"), ("", "invalid")])
def test_fake_rejects_what_go_rejects(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_keep_alive(value)
    assert math.isinf(parse_keep_alive(-1)) and math.isinf(parse_keep_alive("-5m"))


def test_provider_defaults_and_auth_header() -> None:
    p = OllamaProvider("o", OllamaProviderConfig())
    assert p.base_url == "http://localhost:11434" and p.is_local and p.supports_embeddings
    assert p.auth_headers() == {}
    keyed = OllamaProvider("o", OllamaProviderConfig(api_key="sk-secret", local=False))
    assert keyed.auth_headers() == {"Authorization": "Bearer sk-secret"}
    assert not keyed.is_local


# =====================================================================================
# over HTTP: chat and stream
# =====================================================================================


async def test_chat_over_http() -> None:
    async with FakeOllama() as fake:
        p = provider(fake)
        try:
            r = await p.chat(req("hi there"), "llama3.2", CALL)
        finally:
            await p.aclose()
    assert r.model == "llama3.2:latest"
    assert r.choices[0].message.content == "llama3.2:latest says: hi there"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.prompt_tokens == 5 and r.usage.completion_tokens == 4
    assert last_body(fake)["stream"] is False


async def test_stream_over_http() -> None:
    async with FakeOllama() as fake:
        p = provider(fake)
        try:
            chunks = await collect(p.stream(req("one two three"), "mistral:7b", CALL))
        finally:
            await p.aclose()
    assert chunks[0].choices[0].role == "assistant"
    text = "".join(c.choices[0].content or "" for c in chunks if c.choices)
    assert text == "mistral:7b says: one two three"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert len({c.id for c in chunks}) == 1
    assert last_body(fake)["stream"] is True


async def test_stop_reasons_and_options_reach_the_server() -> None:
    async with FakeOllama() as fake:
        p = provider(fake)
        try:
            cut = await p.chat(req("a b c d e f", max_tokens=3), "llama3.2", CALL)
            streamed = await collect(p.stream(req("a b c d e f", max_tokens=3), "llama3.2", CALL))
            stopped = await p.chat(req("alpha STOP beta", stop=["STOP"], temperature=0.1), "llama3.2", CALL)
        finally:
            await p.aclose()
    assert cut.choices[0].finish_reason == "length"
    assert cut.choices[0].message.content == "llama3.2:latest says: a"
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == "length"
    assert stopped.choices[0].message.content == "llama3.2:latest says: alpha "
    assert stopped.choices[0].finish_reason == "stop"
    assert last_body(fake)["options"] == {"temperature": 0.1, "stop": ["STOP"]}


async def test_tools_round_trip_over_http() -> None:
    async with FakeOllama() as fake:
        p = provider(fake)
        try:
            first = await p.chat(req("weather in Paris?", tools=[WEATHER]), "llama3.2", CALL)
            msg = first.choices[0].message
            assert first.choices[0].finish_reason == "tool_calls"
            assert msg.tool_calls is not None
            call = msg.tool_calls[0]
            assert (call.id, call.name) == ("call_0", "get_weather")
            assert orjson.loads(call.arguments) == {"city": "example city", "unit": "c"}
            follow = ChatRequest(
                model="r",
                messages=[
                    Message("user", "weather in Paris?"),
                    msg,
                    Message("tool", "22C sunny", tool_call_id=call.id),
                ],
                tools=[WEATHER],
            )
            second = await p.chat(follow, "llama3.2", CALL)
            sent = last_body(fake)["messages"]
            streamed = await collect(p.stream(req("weather?", tools=[WEATHER]), "llama3.2", CALL))
        finally:
            await p.aclose()
    assert sent[1]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"city": "example city", "unit": "c"}}}
    ]
    assert sent[2] == {"role": "tool", "content": "22C sunny", "tool_name": "get_weather"}
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "llama3.2:latest says: weather in Paris?"
    deltas = [tc for c in streamed for ch in c.choices for tc in ch.tool_calls or []]
    assert [(d.index, d.id, d.name) for d in deltas] == [(0, "call_0", "get_weather")]
    assert orjson.loads(deltas[0].arguments or "") == {"city": "example city", "unit": "c"}
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == "tool_calls"


async def test_tool_call_ids_from_newer_ollama_are_kept() -> None:
    async with FakeOllama(tool_call_ids=True) as fake:
        p = provider(fake)
        try:
            r = await p.chat(req("x", tools=[WEATHER]), "llama3.2", CALL)
        finally:
            await p.aclose()
    calls = r.choices[0].message.tool_calls
    assert calls is not None and calls[0].id.startswith("call_") and calls[0].id != "call_0"


async def test_images_over_http() -> None:
    parts = [
        ContentPart("text", text="what is this"),
        ContentPart("image", image_url=f"data:image/png;base64,{PNG_B64}"),
    ]
    async with FakeOllama() as fake:
        p = provider(fake)
        try:
            r = await p.chat(ChatRequest(model="r", messages=[Message("user", parts)]), "llama3.2", CALL)
            with pytest.raises(InvalidRequestError, match="base64"):
                bad = [ContentPart("image", image_url="https://example.com/a.png")]
                await p.chat(ChatRequest(model="r", messages=[Message("user", bad)]), "llama3.2", CALL)
        finally:
            await p.aclose()
    assert last_body(fake)["messages"][0]["images"] == [PNG_B64]
    assert r.usage is not None and r.usage.prompt_tokens == 3 + 3 + 85  # words + message + one image
    assert fake.attempts() == 1  # the URL was refused before any request


async def test_json_mode_and_schema_over_http() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}, "ok": {"type": "boolean"}}}
    async with FakeOllama() as fake:
        p = provider(fake)
        try:
            plain = await p.chat(req("say json", response_format=ResponseFormat("json_object")), "llama3.2", CALL)
            sent_plain = last_body(fake)["format"]
            shaped = await p.chat(req("x", response_format=ResponseFormat("json_schema", schema)), "llama3.2", CALL)
            sent_schema = last_body(fake)["format"]
        finally:
            await p.aclose()
    assert sent_plain == "json" and sent_schema == schema
    assert orjson.loads(plain.choices[0].message.text()) == {"model": "llama3.2:latest", "answer": "say json"}
    assert orjson.loads(shaped.choices[0].message.text()) == {"age": 1, "ok": True}


async def test_keep_alive_from_config_is_sent_as_ollama_reads_it() -> None:
    async with FakeOllama() as fake:
        p = provider(fake, keep_alive="-1")
        try:
            await p.chat(req(), "llama3.2", CALL)
            loaded = await p.loaded_models()
        finally:
            await p.aclose()
    assert last_body(fake)["keep_alive"] == -1  # "-1" as a string would be a 400 from Ollama
    assert math.isinf(fake.loaded()["llama3.2:latest"])
    assert loaded[0].expires_at is not None and loaded[0].expires_at.year > 2200


async def test_extra_options_are_validated_by_the_server() -> None:
    r = req()
    r.extra = {"num_ctx": "big"}
    async with FakeOllama() as fake:
        p = provider(fake)
        try:
            with pytest.raises(UpstreamStatusError) as info:
                await p.chat(r, "llama3.2", CALL)
        finally:
            await p.aclose()
    assert info.value.upstream_status == 400 and info.value.status == 400
    assert 'option "num_ctx" must be of type integer' in info.value.message


# =====================================================================================
# over HTTP: errors and stream faults
# =====================================================================================


async def test_model_not_installed_says_how_to_pull_it() -> None:
    async with FakeOllama() as fake:
        p = provider(fake)
        try:
            with pytest.raises(UpstreamStatusError) as info:
                await p.chat(req(), "phi4:14b", CALL)
            with pytest.raises(UpstreamStatusError) as streamed:
                await collect(p.stream(req(), "phi4:14b", CALL))
        finally:
            await p.aclose()
    for err in (info.value, streamed.value):
        assert err.upstream_status == 404 and err.status == 404
        assert "`ollama pull phi4:14b`" in err.message
        assert 'model "phi4:14b" not found' in err.message
        assert err.code == "model_not_found" and not err.retryable
        assert err.to_openai()["error"]["type"] == "invalid_request_error"


async def test_embedding_model_cannot_chat() -> None:
    async with FakeOllama() as fake:
        p = provider(fake)
        try:
            with pytest.raises(UpstreamStatusError, match="does not support chat") as info:
                await p.chat(req(), "nomic-embed-text", CALL)
        finally:
            await p.aclose()
    assert info.value.upstream_status == 400


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (400, False)])
async def test_error_status_uses_ollamas_error_body(status: int, retryable: bool) -> None:
    async with FakeOllama() as fake:
        fake.inject("llama3.2:latest", status=status, message="something went wrong", times=1)
        p = provider(fake)
        try:
            with pytest.raises(UpstreamStatusError) as info:
                await p.chat(req(), "llama3.2:latest", CALL)
            ok = await p.chat(req(), "llama3.2:latest", CALL)
        finally:
            await p.aclose()
    assert info.value.upstream_status == status and info.value.retryable is retryable
    assert info.value.message.endswith(": something went wrong")
    assert ok.choices[0].finish_reason == "stop"


async def test_context_length_error_is_classified() -> None:
    async with FakeOllama() as fake:
        fake.inject("*", status=400, message="input length exceeds maximum context length")
        p = provider(fake)
        try:
            with pytest.raises(UpstreamStatusError) as info:
                await p.chat(req(), "llama3.2", CALL)
        finally:
            await p.aclose()
    assert info.value.code == "context_length_exceeded"


async def test_in_band_error_mid_stream() -> None:
    got: list[ChatChunk] = []
    async with FakeOllama() as fake:
        fake.inject_stream_error("llama3.2", "an error was encountered while running the model: CUDA error", after=2)
        p = provider(fake)
        try:
            with pytest.raises(UpstreamStatusError, match="CUDA error") as info:
                async for chunk in p.stream(req("a b c d"), "llama3.2", CALL):
                    got.append(chunk)
            again = await collect(p.stream(req("a b c d"), "llama3.2", CALL))  # times=1
        finally:
            await p.aclose()
    assert info.value.upstream_status == 500 and info.value.retryable
    assert "".join(c.choices[0].content or "" for c in got) == "llama3.2:latest says:"
    assert again[-1].usage is not None


async def test_in_band_context_error_is_classified() -> None:
    async with FakeOllama() as fake:
        fake.inject_stream_error("llama3.2", "the input exceeds the context length", after=0)
        p = provider(fake)
        try:
            with pytest.raises(UpstreamStatusError) as info:
                await collect(p.stream(req(), "llama3.2", CALL))
        finally:
            await p.aclose()
    assert info.value.code == "context_length_exceeded"


async def test_stream_without_done_line_is_truncated() -> None:
    async with FakeOllama() as fake:
        fake.inject("llama3.2:latest", no_done=True)
        p = provider(fake)
        try:
            with pytest.raises(UpstreamConnectionError, match="no done line"):
                await collect(p.stream(req("a b"), "llama3.2", CALL))
        finally:
            await p.aclose()


async def test_stream_cut_mid_body_is_a_connection_error() -> None:
    async with FakeOllama() as fake:
        fake.inject("llama3.2:latest", cut_after=2)
        p = provider(fake)
        try:
            with pytest.raises(UpstreamConnectionError):
                await collect(p.stream(req("a b c d"), "llama3.2", CALL))
        finally:
            await p.aclose()


async def test_malformed_stream_line() -> None:
    async with FakeOllama() as fake:
        fake.inject("llama3.2:latest", malformed_after=1)
        p = provider(fake)
        try:
            with pytest.raises(UpstreamMalformedError, match="malformed stream line"):
                await collect(p.stream(req("a b c"), "llama3.2", CALL))
        finally:
            await p.aclose()


async def test_connection_refused() -> None:
    fake = FakeOllama()
    await fake.start()
    url = fake.base_url
    await fake.stop()
    p = OllamaProvider("o", OllamaProviderConfig(base_url=url))
    try:
        with pytest.raises(UpstreamConnectionError):
            await p.chat(req(), "llama3.2", CALL)
        health = await p.health()
    finally:
        await p.aclose()
    assert not health.ok


# =====================================================================================
# over HTTP: embeddings and models
# =====================================================================================


async def test_embeddings() -> None:
    async with FakeOllama() as fake:
        p = provider(fake)
        try:
            full = await p.embed(EmbeddingRequest(model="e", input=["one", "two words"]), "nomic-embed-text", CALL)
            short = await p.embed(EmbeddingRequest(model="e", input=["one"], dimensions=8), "nomic-embed-text", CALL)
            sent = last_body(fake)
            with pytest.raises(InvalidRequestError, match="text only"):
                await p.embed(EmbeddingRequest(model="e", input=[[1, 2, 3]]), "nomic-embed-text", CALL)
            with pytest.raises(UpstreamStatusError, match="ollama pull mxbai-embed-large"):
                await p.embed(EmbeddingRequest(model="e", input=["x"]), "mxbai-embed-large", CALL)
        finally:
            await p.aclose()
    assert full.model == "nomic-embed-text:latest"
    assert len(full.data) == 2 and {len(v) for v in full.data} == {768}
    assert full.data[0] != full.data[1]
    assert full.usage.prompt_tokens == (1 + 2) + (2 + 2) and full.usage.total_tokens == full.usage.prompt_tokens
    assert len(short.data[0]) == 8
    assert sent == {"model": "nomic-embed-text", "input": ["one"], "dimensions": 8}


async def test_list_models_and_health() -> None:
    async with FakeOllama(models=["llama3.2", "qwen3:8b"]) as fake:
        p = provider(fake)
        try:
            models = await p.list_models()
            health = await p.health()
        finally:
            await p.aclose()
    assert [m.id for m in models] == ["llama3.2:latest", "qwen3:8b"]
    assert models[0].owned_by == "ollama"
    assert models[0].details["family"] == "llama" and models[0].details["size"] > 0
    assert health.ok and health.detail == "2 models"


# =====================================================================================
# over HTTP: the local-model lifecycle
# =====================================================================================


async def test_show_reports_the_context_window() -> None:
    async with FakeOllama() as fake:
        p = provider(fake)
        try:
            info = await p.show("llama3.2")
            embed = await p.show("nomic-embed-text:latest")
            with pytest.raises(UpstreamStatusError, match="ollama pull nope:1b") as missing:
                await p.show("nope:1b")
        finally:
            await p.aclose()
    assert info.id == "llama3.2" and info.context_window == 131072
    assert info.details["family"] == "llama" and "completion" in info.details["capabilities"]
    assert info.details["model_info"]["general.architecture"] == "llama"
    assert embed.context_window == 2048 and embed.details["capabilities"] == ["embedding"]
    assert missing.value.upstream_status == 404


async def test_load_waits_the_load_time_then_requests_are_fast() -> None:
    async with FakeOllama() as fake:
        fake.set_load_time("mistral:7b", 0.3)
        p = provider(fake)
        try:
            assert await p.loaded_models() == []
            took = await p.load("mistral:7b")
            loaded = await p.loaded_models()
            start = time.perf_counter()
            await p.chat(req(), "mistral:7b", CALL)
            warm = time.perf_counter() - start
        finally:
            await p.aclose()
    assert took >= 0.3
    assert [m.name for m in loaded] == ["mistral:7b"]
    assert loaded[0].size > 0 and loaded[0].size_vram > 0 and loaded[0].expires_at is not None
    assert warm < 0.25
    assert fake.load_count("mistral:7b") == 1


async def test_first_request_pays_the_load_time_once_even_when_concurrent() -> None:
    async with FakeOllama() as fake:
        fake.set_load_time("llama3.2", 0.3)
        p = provider(fake)
        try:
            start = time.perf_counter()
            await asyncio.gather(p.chat(req("a"), "llama3.2", CALL), collect(p.stream(req("b"), "llama3.2", CALL)))
            cold = time.perf_counter() - start
        finally:
            await p.aclose()
    assert 0.3 <= cold < 0.55
    assert fake.load_count("llama3.2") == 1


async def test_load_longer_than_the_timeout_times_out() -> None:
    async with FakeOllama() as fake:
        fake.set_load_time("llama3.2", 0.5)
        p = provider(fake)
        try:
            with pytest.raises(UpstreamTimeoutError):
                await p.chat(req(), "llama3.2", CallOptions(timeout_s=0.15, connect_timeout_s=1.0))
        finally:
            await p.aclose()


async def test_unload_then_the_next_request_reloads() -> None:
    async with FakeOllama() as fake:
        fake.set_load_time("llama3.2", 0.2)
        p = provider(fake)
        try:
            await p.chat(req(), "llama3.2", CALL)
            await p.unload("llama3.2")
            after_unload = await p.loaded_models()
            start = time.perf_counter()
            await p.chat(req(), "llama3.2", CALL)
            reload = time.perf_counter() - start
            with pytest.raises(UpstreamStatusError, match="ollama pull ghost"):
                await p.unload("ghost")
        finally:
            await p.aclose()
    assert after_unload == []
    assert reload >= 0.2
    assert fake.load_count("llama3.2") == 2


async def test_unload_request_shape() -> None:
    async with FakeOllama() as fake:
        p = provider(fake)
        try:
            await p.load("llama3.2", keep_alive="10m")
            load_body = last_body(fake)
            await p.unload("llama3.2")
        finally:
            await p.aclose()
    assert load_body == {"model": "llama3.2", "keep_alive": "10m"}
    assert not fake.is_loaded("llama3.2")


async def test_keep_alive_expiry_unloads_the_model() -> None:
    async with FakeOllama() as fake:
        fake.set_load_time("llama3.2", 0.2)
        p = provider(fake, keep_alive="300ms")
        try:
            await p.chat(req(), "llama3.2", CALL)
            assert [m.name for m in await p.loaded_models()] == ["llama3.2:latest"]
            await asyncio.sleep(0.4)
            expired = await p.loaded_models()
            start = time.perf_counter()
            await p.chat(req(), "llama3.2", CALL)
            reload = time.perf_counter() - start
        finally:
            await p.aclose()
    assert expired == []
    assert reload >= 0.2 and fake.load_count("llama3.2") == 2


async def test_keep_alive_zero_unloads_right_after_the_request_and_load_keep_alive_overrides() -> None:
    async with FakeOllama() as fake:
        p = provider(fake, keep_alive=0)
        try:
            await p.chat(req(), "llama3.2", CALL)
            after_chat = await p.loaded_models()
            await p.load("mistral:7b", keep_alive="1h")
            loaded = await p.loaded_models()
        finally:
            await p.aclose()
    assert after_chat == []
    assert [m.name for m in loaded] == ["mistral:7b"]
    assert loaded[0].expires_at is not None and loaded[0].expires_at.timestamp() > time.time() + 3500


async def test_load_of_a_missing_model_says_how_to_pull_it() -> None:
    async with FakeOllama() as fake:
        p = provider(fake)
        try:
            with pytest.raises(UpstreamStatusError, match="`ollama pull gemma3:1b`") as info:
                await p.load("gemma3:1b")
        finally:
            await p.aclose()
    assert info.value.upstream_status == 404


async def test_pull_streams_progress_and_installs_the_model() -> None:
    async with FakeOllama() as fake:
        p = provider(fake)
        try:
            before = [m.id for m in await p.list_models()]
            progress = [line async for line in p.pull("qwen2.5:0.5b")]
            after = [m.id for m in await p.list_models()]
            answer = await p.chat(req("hi"), "qwen2.5:0.5b", CALL)
        finally:
            await p.aclose()
    assert "qwen2.5:0.5b" not in before and "qwen2.5:0.5b" in after
    assert progress[0] == {"status": "pulling manifest"}
    assert progress[-1] == {"status": "success"}
    downloads = [line for line in progress if "completed" in line]
    assert downloads and downloads[-1]["completed"] == downloads[-1]["total"]
    assert answer.choices[0].message.content == "qwen2.5:0.5b says: hi"


async def test_pull_of_an_unknown_model_is_an_error() -> None:
    async with FakeOllama() as fake:
        p = provider(fake)
        seen: list[dict[str, Any]] = []
        try:
            with pytest.raises(UpstreamStatusError, match="file does not exist") as info:
                async for line in p.pull("no-such-model:1b"):
                    seen.append(line)
        finally:
            await p.aclose()
    assert info.value.upstream_status == 404
    assert seen == [{"status": "pulling manifest"}]
    assert "no-such-model:1b" not in fake.installed


async def test_pull_cut_short_is_a_connection_error() -> None:
    async with FakeOllama() as fake:
        fake.inject("qwen2.5:0.5b", no_done=True)
        p = provider(fake)
        try:
            with pytest.raises(UpstreamConnectionError, match="before it succeeded"):
                async for _ in p.pull("qwen2.5:0.5b"):
                    pass
        finally:
            await p.aclose()
    assert "qwen2.5:0.5b" not in fake.installed


# -- reasoning_effort -> think ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "effort", "think"),
    [
        ("qwen3:8b", "none", False),
        ("qwen3:8b", "high", True),
        ("deepseek-r1:7b", "minimal", True),
        ("gpt-oss:20b", "none", "low"),  # gpt-oss cannot stop thinking, and ignores true/false
        ("gpt-oss:20b", "medium", "medium"),
        ("gpt-oss:20b", "xhigh", "high"),
    ],
)
def test_reasoning_effort_becomes_think(model: str, effort: str, think: bool | str) -> None:
    assert encode_chat_request(req(extra={"reasoning_effort": effort}), model, stream=False)["think"] == think


def test_think_is_not_sent_to_a_model_that_cannot_think_and_an_explicit_one_wins() -> None:
    body = encode_chat_request(req(extra={"reasoning_effort": "high"}), "llama3.2", stream=False, reasoning=False)
    assert "think" not in body
    own = encode_chat_request(req(extra={"reasoning_effort": "high", "think": False}), "qwen3:8b", stream=False)
    assert own["think"] is False


async def test_the_fake_thinks_as_ollama_does() -> None:
    async with FakeOllama(models=["qwen3:8b", "gpt-oss:20b", "llama3.2:latest"]) as fake:
        p = provider(fake)
        try:
            thought = await p.chat(req(extra={"reasoning_effort": "high"}), "qwen3:8b", CALL)
            assert thought.choices[0].message.reasoning and last_body(fake)["think"] is True
            plain = await p.chat(req(extra={"reasoning_effort": "none"}), "qwen3:8b", CALL)
            assert plain.choices[0].message.reasoning is None
            chunks = [c async for c in p.stream(req(extra={"reasoning_effort": "low"}), "gpt-oss:20b", CALL)]
            assert any(d.reasoning for c in chunks for d in c.choices)
            for model, think, words in (
                ("qwen3:8b", "medium", 'think value "medium" is not supported'),
                ("llama3.2:latest", True, "does not support thinking"),
            ):
                with pytest.raises(UpstreamStatusError) as err:
                    await p.chat(req(extra={"think": think}), model, CALL)
                assert words in str(err.value)
        finally:
            await p.aclose()
