"""The Gemini adapter: pure translation both ways, then the adapter against FakeGemini over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from modelyard.config.schema import GeminiProviderConfig
from modelyard.errors import (
    InvalidRequestError,
    UpstreamConnectionError,
    UpstreamMalformedError,
    UpstreamStatusError,
)
from modelyard.providers.base import CallOptions
from modelyard.providers.gemini import (
    SIGNATURE_SEP,
    GeminiProvider,
    StreamDecoder,
    decode_response,
    decode_usage,
    encode_request,
    guess_mime,
    model_path,
    parse_google_error,
    to_gemini_schema,
)
from modelyard.testing import Fault
from modelyard.testing.fake_gemini import FakeGemini
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

MODEL = "gemini-2.5-flash"
PNG = "data:image/png;base64,iVBORw0KGgo="
WEATHER = Tool(
    name="get_weather",
    description="Weather for a city",
    parameters={
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    strict=True,
)
CALL = CallOptions(timeout_s=10, connect_timeout_s=2)


def req(*messages: Message, **kw: Any) -> ChatRequest:
    return ChatRequest(model=MODEL, messages=list(messages), **kw)


def user(text: str) -> Message:
    return Message("user", text)


def body_of(request: ChatRequest, model: str = MODEL) -> dict[str, Any]:
    return encode_request(request, model)


def answer(*parts: dict[str, Any], finish: str | None = "STOP", **extra: Any) -> dict[str, Any]:
    cand: dict[str, Any] = {"content": {"role": "model", "parts": list(parts)}, "index": 0}
    if finish:
        cand["finishReason"] = finish
    return {"candidates": [cand], "responseId": "resp-1", "modelVersion": "gemini-2.5-flash-001", **extra}


# -- internal -> Gemini ------------------------------------------------------------------


def test_system_and_developer_messages_become_system_instruction() -> None:
    body = body_of(req(Message("system", "Be brief."), user("hi"), Message("developer", "No emoji.")))
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "No emoji."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    assert "systemInstruction" not in body_of(req(user("hi")))


def test_roles_map_and_consecutive_turns_merge() -> None:
    body = body_of(req(user("a"), user("b"), Message("assistant", "c"), Message("assistant", "d"), user("e")))
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "c"}, {"text": "d"}]},
        {"role": "user", "parts": [{"text": "e"}]},
    ]


def test_tool_calls_and_results_translate_with_function_names() -> None:
    calls = [ToolCall("call_1", "get_weather", '{"city": "Paris"}'), ToolCall("call_2", "get_time", "")]
    body = body_of(
        req(
            user("weather and time?"),
            Message("assistant", "Let me check.", tool_calls=calls),
            Message("tool", '{"temp": 21}', tool_call_id="call_1"),
            Message("tool", "12:00", tool_call_id="call_2"),
            user("thanks"),
        )
    )
    assert body["contents"][1] == {
        "role": "model",
        "parts": [
            {"text": "Let me check."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_time", "args": {}}},
        ],
    }
    # both results and the next user text share one user turn
    assert body["contents"][2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
            {"functionResponse": {"name": "get_time", "response": {"output": "12:00"}}},
            {"text": "thanks"},
        ],
    }
    assert len(body["contents"]) == 3


def test_tool_result_without_a_matching_call() -> None:
    with pytest.raises(InvalidRequestError, match="answers no earlier assistant tool call"):
        body_of(req(user("x"), Message("tool", "42", tool_call_id="call_unknown")))
    # a name given with the result is used when the call is not in the history
    body = body_of(req(user("x"), Message("tool", "42", tool_call_id="call_unknown", name="calc")))
    assert body["contents"][0]["parts"][1]["functionResponse"]["name"] == "calc"


def test_invalid_tool_call_arguments_are_a_client_error() -> None:
    with pytest.raises(InvalidRequestError, match="not valid JSON"):
        body_of(req(user("x"), Message("assistant", None, tool_calls=[ToolCall("c", "f", "{oops")])))


def test_thought_signature_travels_inside_the_tool_call_id() -> None:
    call_id = f"call_abc{SIGNATURE_SEP}c2lnbmF0dXJl"
    body = body_of(
        req(
            user("x"),
            Message("assistant", None, tool_calls=[ToolCall(call_id, "get_weather", "{}")]),
            Message("tool", "sunny", tool_call_id=call_id),
        )
    )
    part = body["contents"][1]["parts"][0]
    assert part == {"functionCall": {"name": "get_weather", "args": {}}, "thoughtSignature": "c2lnbmF0dXJl"}
    assert body["contents"][2]["parts"][0]["functionResponse"]["name"] == "get_weather"


def test_images_become_inline_data_or_file_data() -> None:
    content = [
        ContentPart("text", text="what is this?"),
        ContentPart("image", image_url=PNG),
        ContentPart("image", image_url="https://example.com/cat.webp?x=1"),
        ContentPart("image", image_url="https://example.com/photo"),
    ]
    parts = body_of(req(Message("user", content)))["contents"][0]["parts"]
    assert parts == [
        {"text": "what is this?"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"fileUri": "https://example.com/cat.webp?x=1", "mimeType": "image/webp"}},
        {"fileData": {"fileUri": "https://example.com/photo", "mimeType": "image/jpeg"}},
    ]
    assert guess_mime("https://x/y/IMG.JPG") == "image/jpeg"
    assert guess_mime("gs://bucket/doc.pdf") == "application/pdf"
    with pytest.raises(InvalidRequestError):
        body_of(req(Message("user", [ContentPart("image", image_url="data:image/png,rawbytes")])))


def test_tools_become_function_declarations_with_a_gemini_schema() -> None:
    body = body_of(req(user("x"), tools=[WEATHER]))
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": {
                        "type": "OBJECT",
                        "properties": {"city": {"type": "STRING"}, "days": {"type": "INTEGER"}},
                        "required": ["city"],
                    },
                }
            ]
        }
    ]
    assert "toolConfig" not in body


def test_schema_conversion_covers_the_json_schema_features_gemini_lacks() -> None:
    schema = {
        "type": "object",
        "$defs": {"Unit": {"type": "string", "enum": ["C", "F"]}},
        "properties": {
            "unit": {"$ref": "#/$defs/Unit"},
            "note": {"type": ["string", "null"], "format": "uri", "examples": ["a"]},
            "count": {"anyOf": [{"type": "integer"}, {"type": "null"}], "description": "how many"},
            "kind": {"const": "fixed"},
            "level": {"enum": [1, 2]},
            "when": {"type": "string", "format": "date-time"},
            "either": {"oneOf": [{"type": "string"}, {"type": "number"}]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3, "uniqueItems": True},
        },
        "required": ["unit", "missing"],
        "additionalProperties": False,
    }
    out = to_gemini_schema(schema)
    assert out is not None
    props = out["properties"]
    assert props["unit"] == {"type": "STRING", "enum": ["C", "F"]}
    assert props["note"] == {"type": "STRING", "nullable": True, "example": "a"}
    assert props["count"] == {"type": "INTEGER", "nullable": True, "description": "how many"}
    assert props["kind"] == {"type": "STRING", "enum": ["fixed"]}
    assert props["level"] == {"type": "STRING", "enum": ["1", "2"]}
    assert props["when"] == {"type": "STRING", "format": "date-time"}
    assert props["either"] == {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]}
    assert props["tags"] == {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 3}
    assert out["required"] == ["unit"]
    assert "additionalProperties" not in out and "$defs" not in out


def test_schemas_gemini_cannot_express_fall_back_to_json_schema() -> None:
    free_form = Tool(
        "set_meta",
        parameters={"type": "object", "properties": {"meta": {"type": "object"}}, "$schema": "x", "strict": True},
    )
    recursive = Tool(
        "tree",
        parameters={
            "type": "object",
            "$defs": {"Node": {"type": "object", "properties": {"child": {"$ref": "#/$defs/Node"}}}},
            "properties": {"root": {"$ref": "#/$defs/Node"}},
        },
    )
    decls = body_of(req(user("x"), tools=[free_form, recursive]))["tools"][0]["functionDeclarations"]
    assert "parameters" not in decls[0]
    assert decls[0]["parametersJsonSchema"] == {"type": "object", "properties": {"meta": {"type": "object"}}}
    assert decls[1]["parametersJsonSchema"]["$defs"]["Node"]
    # no parameters at all: Gemini rejects an OBJECT without properties, so none are sent
    empty = body_of(req(user("x"), tools=[Tool("ping", parameters={"type": "object", "properties": {}})]))
    assert empty["tools"][0]["functionDeclarations"] == [{"name": "ping"}]


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (ForcedTool("get_weather"), {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
    ],
)
def test_tool_choice_becomes_function_calling_config(choice: Any, config: dict[str, Any]) -> None:
    body = body_of(req(user("x"), tools=[WEATHER], tool_choice=choice))
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_generation_config_fields() -> None:
    body = body_of(
        req(
            user("x"),
            temperature=0.3,
            top_p=0.9,
            max_tokens=100,
            stop=["END"],
            n=2,
            seed=7,
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            logprobs=True,
            top_logprobs=3,
            response_format=ResponseFormat("json_object"),
            extra={"top_k": 40, "reasoning_effort": "low", "safety_settings": [{"category": "c", "threshold": "t"}]},
        )
    )
    assert body["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.9,
        "maxOutputTokens": 100,
        "stopSequences": ["END"],
        "candidateCount": 2,
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": -0.5,
        "responseLogprobs": True,
        "logprobs": 3,
        "responseMimeType": "application/json",
        "topK": 40,
        "thinkingConfig": {"thinkingBudget": 1024},
    }
    assert body["safetySettings"] == [{"category": "c", "threshold": "t"}]
    assert "generationConfig" not in body_of(req(user("x"), extra={"unknown_openai_field": 1}))
    g3 = body_of(req(user("x"), extra={"reasoning_effort": "high"}), "gemini-3-pro-preview")
    assert g3["generationConfig"] == {"thinkingConfig": {"thinkingLevel": "high"}}


def test_json_schema_uses_response_json_schema() -> None:
    schema = {"$schema": "x", "type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False}
    gen = body_of(req(user("x"), response_format=ResponseFormat("json_schema", schema=schema, name="s", strict=True)))[
        "generationConfig"
    ]
    assert gen == {
        "responseMimeType": "application/json",
        "responseJsonSchema": {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "additionalProperties": False,
        },
    }
    assert "$schema" in schema  # the caller's schema is not modified


def test_model_path() -> None:
    assert model_path("gemini-2.5-flash") == "models/gemini-2.5-flash"
    assert model_path("models/gemini-2.5-flash") == "models/gemini-2.5-flash"
    assert model_path("tunedModels/my-model") == "tunedModels/my-model"


# -- Gemini -> internal ------------------------------------------------------------------


def test_decode_text_skips_thoughts() -> None:
    resp = decode_response(
        answer({"text": "thinking...", "thought": True}, {"text": "Hello "}, {"text": "world"}), MODEL
    )
    assert resp.id == "resp-1" and resp.model == "gemini-2.5-flash-001"
    assert resp.choices[0].message.content == "Hello world"
    assert resp.choices[0].message.tool_calls is None
    assert resp.choices[0].finish_reason == "stop"


def test_decode_function_calls() -> None:
    resp = decode_response(
        answer(
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "U0lH"},
            {"functionCall": {"name": "get_time", "id": "fc-7"}},
        ),
        MODEL,
    )
    msg = resp.choices[0].message
    assert msg.content is None
    assert msg.tool_calls is not None
    first, second = msg.tool_calls
    assert first.id.startswith("call_") and first.id.endswith(f"{SIGNATURE_SEP}U0lH")
    assert (first.name, orjson.loads(first.arguments)) == ("get_weather", {"city": "Paris"})
    assert (second.id, second.name, second.arguments) == ("fc-7", "get_time", "{}")
    assert resp.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons(reason: str, expected: str) -> None:
    assert decode_response(answer({"text": "partial"}, finish=reason), MODEL).choices[0].finish_reason == expected


def test_usage_with_thoughts_cache_and_tool_prompt() -> None:
    usage = decode_usage(
        {
            "promptTokenCount": 100,
            "candidatesTokenCount": 20,
            "thoughtsTokenCount": 30,
            "cachedContentTokenCount": 64,
            "toolUsePromptTokenCount": 5,
            "totalTokenCount": 155,
        }
    )
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (105, 50, 155)
    assert (usage.cached_tokens, usage.reasoning_tokens, usage.estimated) == (64, 30, False)
    assert decode_usage(None) is None


def test_prompt_block_is_a_content_policy_error() -> None:
    data = {
        "promptFeedback": {
            "blockReason": "PROHIBITED_CONTENT",
            "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH"}],
        }
    }
    with pytest.raises(UpstreamStatusError) as info:
        decode_response(data, MODEL, provider="g")
    err = info.value
    assert (err.upstream_status, err.code, err.status, err.retryable) == (400, "content_policy_violation", 400, False)
    assert "PROHIBITED_CONTENT" in err.message and "HARM_CATEGORY_HARASSMENT=HIGH" in err.message


def test_empty_safety_finish_is_a_content_policy_error_but_partial_output_is_not() -> None:
    blocked = {"candidates": [{"finishReason": "SAFETY", "index": 0}]}
    with pytest.raises(UpstreamStatusError, match="finishReason SAFETY") as info:
        decode_response(blocked, MODEL)
    assert info.value.code == "content_policy_violation"
    partial = decode_response(answer({"text": "Once upon"}, finish="SAFETY"), MODEL)
    assert partial.choices[0].finish_reason == "content_filter"
    assert partial.choices[0].message.content == "Once upon"


def test_decode_logprobs_to_openai_shape() -> None:
    data = answer({"text": "Hi"})
    data["candidates"][0]["logprobsResult"] = {
        "chosenCandidates": [{"token": "Hi", "logProbability": -0.5}],
        "topCandidates": [
            {"candidates": [{"token": "Hi", "logProbability": -0.5}, {"token": "Yo", "logProbability": -2}]}
        ],
    }
    lp = decode_response(data, MODEL).choices[0].logprobs
    assert lp["content"][0]["token"] == "Hi" and lp["content"][0]["logprob"] == -0.5
    assert [t["token"] for t in lp["content"][0]["top_logprobs"]] == ["Hi", "Yo"]


def test_malformed_responses_raise_value_errors() -> None:
    with pytest.raises(ValueError, match="no candidates"):
        decode_response({"usageMetadata": {}}, MODEL)
    with pytest.raises(ValueError):
        decode_response({"candidates": [{"content": {"parts": [{"functionCall": {}}]}}]}, MODEL)


def test_stream_decoder_sequence() -> None:
    dec = StreamDecoder(model=MODEL)
    chunks = dec.feed(answer({"text": "Hel"}, finish=None)) + dec.feed(
        answer({"text": "lo"}, {"functionCall": {"name": "f", "args": {"a": 1}}}, usageMetadata={"promptTokenCount": 3})
    )
    deltas = [c.choices[0] for c in chunks]
    assert deltas[0].role == "assistant" and not deltas[0].has_output()
    assert [d.content for d in deltas[1:3]] == ["Hel", "lo"]
    assert deltas[2].tool_calls is not None and deltas[2].tool_calls[0].arguments == '{"a":1}'
    assert deltas[3].finish_reason == "tool_calls"
    assert dec.finished
    final = dec.final()
    assert final is not None and final.choices == [] and final.usage is not None and final.usage.prompt_tokens == 3


def test_stream_decoder_block_after_output_finishes_with_content_filter() -> None:
    dec = StreamDecoder(model=MODEL)
    dec.feed(answer({"text": "Once"}, finish=None))
    chunks = dec.feed({"candidates": [{"finishReason": "SAFETY", "index": 0}]})
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    with pytest.raises(UpstreamStatusError):
        StreamDecoder(model=MODEL).feed({"promptFeedback": {"blockReason": "SAFETY"}})


def test_parse_google_errors() -> None:
    quota = {
        "error": {
            "code": 429,
            "message": "You exceeded your current quota.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "32s"}],
        }
    }
    assert parse_google_error(orjson.dumps(quota)) == (
        "You exceeded your current quota.",
        "rate_limit_exceeded",
        "RESOURCE_EXHAUSTED",
        32.0,
    )
    too_long = {
        "error": {
            "code": 400,
            "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
            "status": "INVALID_ARGUMENT",
        }
    }
    assert parse_google_error(orjson.dumps([too_long]))[1] == "context_length_exceeded"
    bad_key = {
        "error": {
            "code": 400,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
        }
    }
    assert parse_google_error(orjson.dumps(bad_key))[1] == "invalid_api_key"
    plain = {"error": {"code": 400, "message": "Bad field", "status": "INVALID_ARGUMENT"}}
    assert parse_google_error(orjson.dumps(plain))[1] == "invalid_argument"
    assert parse_google_error(b"<html>502</html>") == ("<html>502</html>", None, None, None)


def test_error_from_response_prefers_retry_after_header_then_retry_info() -> None:
    provider = GeminiProvider("g", GeminiProviderConfig(api_key="sekrit"))
    body = orjson.dumps(
        {
            "error": {
                "code": 429,
                "message": "slow down",
                "status": "RESOURCE_EXHAUSTED",
                "details": [{"retryDelay": "2.5s"}],
            }
        }
    )
    assert provider.error_from_response(429, body, {}, MODEL).retry_after == 2.5
    assert provider.error_from_response(429, body, {"Retry-After": "9"}, MODEL).retry_after == 9.0
    assert provider.auth_headers() == {"x-goog-api-key": "sekrit"}
    assert provider.url(MODEL, "generateContent") == (
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )
    versioned = GeminiProvider("g", GeminiProviderConfig(base_url="http://proxy.local/google/v1"))
    assert (
        versioned.url(MODEL, "batchEmbedContents")
        == "http://proxy.local/google/v1/models/gemini-2.5-flash:batchEmbedContents"
    )


# -- the adapter against FakeGemini over HTTP --------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key="test-key") as server:
        yield server


@pytest.fixture
async def provider(fake: FakeGemini) -> AsyncIterator[GeminiProvider]:
    p = GeminiProvider("gem", GeminiProviderConfig(base_url=fake.base_url, api_key="test-key"))
    yield p
    await p.aclose()


async def collect(provider: GeminiProvider, request: ChatRequest, model: str = MODEL) -> list[ChatChunk]:
    return [c async for c in provider.stream(request, model, CALL)]


def text_of(chunks: list[ChatChunk]) -> str:
    return "".join(d.content or "" for c in chunks for d in c.choices)


async def test_chat_plain(provider: GeminiProvider, fake: FakeGemini) -> None:
    resp = await provider.chat(req(Message("system", "Be brief."), user("hello there")), MODEL, CALL)
    assert resp.choices[0].message.content == "gemini-2.5-flash says: hello there"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.model == MODEL and resp.id
    assert resp.usage is not None and resp.usage.prompt_tokens > 0
    sent = fake.requests[-1]
    assert sent["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert sent["body"]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}


async def test_stream_plain(provider: GeminiProvider, fake: FakeGemini) -> None:
    chunks = await collect(provider, req(user("stream this please")))
    assert chunks[0].choices[0].role == "assistant"
    assert text_of(chunks) == "gemini-2.5-flash says: stream this please"
    finishes = [d.finish_reason for c in chunks for d in c.choices if d.finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5 + 12  # words + thoughts
    assert len({c.id for c in chunks}) == 1
    assert fake.requests[-1]["path"].endswith(":streamGenerateContent")


async def test_tools_round_trip_with_thought_signatures(provider: GeminiProvider, fake: FakeGemini) -> None:
    model = "gemini-3-pro-preview"
    first = await provider.chat(req(user("weather in Paris?"), tools=[WEATHER]), model, CALL)
    calls = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls" and calls is not None
    assert calls[0].name == "get_weather" and orjson.loads(calls[0].arguments) == {"city": "example city"}
    assert SIGNATURE_SEP in calls[0].id
    follow = req(
        user("weather in Paris?"),
        Message("assistant", None, tool_calls=calls),
        Message("tool", '{"temp": 21}', tool_call_id=calls[0].id),
        tools=[WEATHER],
    )
    second = await provider.chat(follow, model, CALL)
    assert second.choices[0].message.content == "gemini-3-pro-preview says: weather in Paris?"
    sent = fake.requests[-1]["body"]["contents"]
    assert sent[1]["parts"][0]["thoughtSignature"]
    assert sent[2]["parts"][0]["functionResponse"] == {"name": "get_weather", "response": {"temp": 21}}

    # without the signature, Gemini 3 refuses the history (as the real API does)
    stripped = [ToolCall(calls[0].id.split(SIGNATURE_SEP)[0], calls[0].name, calls[0].arguments)]
    follow.messages[1] = Message("assistant", None, tool_calls=stripped)
    follow.messages[2] = Message("tool", "{}", tool_call_id=stripped[0].id)
    with pytest.raises(UpstreamStatusError, match="thought_signature") as info:
        await provider.chat(follow, model, CALL)
    assert info.value.upstream_status == 400 and not info.value.retryable


async def test_stream_tool_call_is_one_complete_delta(provider: GeminiProvider) -> None:
    chunks = await collect(provider, req(user("weather?"), tools=[WEATHER], tool_choice=ForcedTool("get_weather")))
    deltas = [tc for c in chunks for d in c.choices for tc in d.tool_calls or []]
    assert len(deltas) == 1
    assert deltas[0].id and deltas[0].name == "get_weather"
    assert orjson.loads(deltas[0].arguments or "") == {"city": "example city"}
    assert [d.finish_reason for c in chunks for d in c.choices if d.finish_reason] == ["tool_calls"]


async def test_tool_choice_none_gets_text(provider: GeminiProvider) -> None:
    resp = await provider.chat(req(user("hi"), tools=[WEATHER], tool_choice="none"), MODEL, CALL)
    assert resp.choices[0].message.tool_calls is None and resp.choices[0].message.content


async def test_images(provider: GeminiProvider, fake: FakeGemini) -> None:
    content = [
        ContentPart("text", text="describe"),
        ContentPart("image", image_url=PNG),
        ContentPart("image", image_url="https://example.com/a.png"),
    ]
    with_images = await provider.chat(req(Message("user", content)), MODEL, CALL)
    without = await provider.chat(req(user("describe")), MODEL, CALL)
    assert with_images.usage is not None and without.usage is not None
    assert with_images.usage.prompt_tokens - without.usage.prompt_tokens == 2 * 85
    parts = fake.requests[-2]["body"]["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
    assert parts[2] == {"fileData": {"fileUri": "https://example.com/a.png", "mimeType": "image/png"}}


async def test_json_mode_and_schema(provider: GeminiProvider) -> None:
    resp = await provider.chat(req(user("list"), response_format=ResponseFormat("json_object")), MODEL, CALL)
    assert orjson.loads(resp.choices[0].message.text()) == {"model": MODEL, "answer": "list"}
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    rf = ResponseFormat("json_schema", schema=schema, name="person", strict=True)
    resp = await provider.chat(req(user("person"), response_format=rf), MODEL, CALL)
    assert orjson.loads(resp.choices[0].message.text()) == {"name": "example name", "age": 1}


async def test_stop_reasons_and_candidates(provider: GeminiProvider) -> None:
    resp = await provider.chat(req(user("one two three four five"), max_tokens=2), MODEL, CALL)
    assert resp.choices[0].finish_reason == "length"
    assert resp.choices[0].message.content == "gemini-2.5-flash says:"
    resp = await provider.chat(req(user("alpha STOP beta"), stop=["STOP"]), MODEL, CALL)
    assert resp.choices[0].message.content == "gemini-2.5-flash says: alpha "
    resp = await provider.chat(req(user("twice"), n=2), MODEL, CALL)
    assert [c.index for c in resp.choices] == [0, 1]
    chunks = await collect(provider, req(user("one two three"), max_tokens=3))
    assert [d.finish_reason for c in chunks for d in c.choices if d.finish_reason] == ["length"]


async def test_usage_cached_and_thoughts(provider: GeminiProvider) -> None:
    long_prompt = user(" ".join(f"word{i}" for i in range(1100)))
    first = await provider.chat(req(long_prompt), MODEL, CALL)
    second = await provider.chat(req(long_prompt), MODEL, CALL)
    assert first.usage is not None and second.usage is not None
    assert first.usage.cached_tokens == 0
    assert second.usage.cached_tokens >= 1024
    assert second.usage.reasoning_tokens == 12
    # the answer's 1102 words plus the thoughts
    assert second.usage.completion_tokens == 1102 + 12
    assert second.usage.total_tokens == second.usage.prompt_tokens + second.usage.completion_tokens
    no_thinking = await provider.chat(req(user("hi")), "gemini-2.0-flash", CALL)
    assert no_thinking.usage is not None and no_thinking.usage.reasoning_tokens == 0


async def test_logprobs_over_http(provider: GeminiProvider) -> None:
    resp = await provider.chat(req(user("hi"), logprobs=True, top_logprobs=2), MODEL, CALL)
    lp = resp.choices[0].logprobs
    assert [t["token"] for t in lp["content"]] == ["gemini-2.5-flash", " says:", " hi"]
    assert len(lp["content"][0]["top_logprobs"]) == 2


async def test_safety_block_is_a_clear_error(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.inject(MODEL, Fault(code="safety", times=2))
    with pytest.raises(UpstreamStatusError, match=r"blocked the prompt.*blockReason SAFETY") as info:
        await provider.chat(req(user("something")), MODEL, CALL)
    assert (info.value.code, info.value.status, info.value.retryable) == ("content_policy_violation", 400, False)
    with pytest.raises(UpstreamStatusError, match="blockReason SAFETY"):
        await collect(provider, req(user("something")))
    # a candidate blocked with no content, non-streaming and streaming
    with pytest.raises(UpstreamStatusError, match=r"blocked the response.*finishReason SAFETY") as info:
        await provider.chat(req(user("please BLOCKME")), MODEL, CALL)
    assert "HARM_CATEGORY_DANGEROUS_CONTENT" in info.value.message
    with pytest.raises(UpstreamStatusError, match="finishReason SAFETY"):
        await collect(provider, req(user("please BLOCKME")))
    assert (await provider.chat(req(user("fine now")), MODEL, CALL)).choices[0].message.content


async def test_rate_limit_with_retry_after(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.inject(MODEL, status=429, retry_after="7", times=1)
    with pytest.raises(UpstreamStatusError) as info:
        await provider.chat(req(user("hi")), MODEL, CALL)
    err = info.value
    assert (err.upstream_status, err.retryable, err.retry_after, err.code) == (429, True, 7.0, "rate_limit_exceeded")
    assert err.status == 429 and "quota" in err.message
    assert (await provider.chat(req(user("hi")), MODEL, CALL)).choices[0].message.content
    assert fake.attempts(MODEL) == 2


@pytest.mark.parametrize(
    ("status", "code", "expected_code", "retryable"),
    [
        (400, "context_length_exceeded", "context_length_exceeded", False),
        (500, None, "internal", True),
        (503, None, "unavailable", True),
        (404, None, "not_found", False),
    ],
)
async def test_error_mapping(
    provider: GeminiProvider, fake: FakeGemini, status: int, code: str | None, expected_code: str, retryable: bool
) -> None:
    fake.inject(MODEL, status=status, code=code, times=1)
    with pytest.raises(UpstreamStatusError) as info:
        await provider.chat(req(user("hi")), MODEL, CALL)
    assert (info.value.upstream_status, info.value.code, info.value.retryable) == (status, expected_code, retryable)


async def test_validation_errors_from_the_fake(provider: GeminiProvider) -> None:
    with pytest.raises(UpstreamStatusError, match="candidate_count") as info:
        await provider.chat(req(user("hi"), n=9), MODEL, CALL)
    assert (info.value.upstream_status, info.value.code) == (400, "invalid_argument")
    with pytest.raises(UpstreamStatusError, match="not supported for generateContent") as info:
        await provider.chat(req(user("hi")), "gemini-embedding-001", CALL)
    assert info.value.upstream_status == 404


async def test_auth_errors(fake: FakeGemini) -> None:
    wrong = GeminiProvider("gem", GeminiProviderConfig(base_url=fake.url, api_key="wrong-key"))
    missing = GeminiProvider("gem", GeminiProviderConfig(base_url=fake.url))
    try:
        with pytest.raises(UpstreamStatusError, match="API key not valid") as info:
            await wrong.chat(req(user("hi")), MODEL, CALL)
        assert (info.value.upstream_status, info.value.code, info.value.status) == (401, "invalid_api_key", 502)
        assert "wrong-key" not in str(info.value)
        with pytest.raises(UpstreamStatusError, match="unregistered callers") as info:
            await missing.chat(req(user("hi")), MODEL, CALL)
        assert (info.value.upstream_status, info.value.code) == (403, "permission_denied")
    finally:
        await wrong.aclose()
        await missing.aclose()


async def test_truncated_stream(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.inject(MODEL, no_done=True, times=1)
    seen: list[ChatChunk] = []
    with pytest.raises(UpstreamConnectionError, match="ended before"):
        async for chunk in provider.stream(req(user("a b c d")), MODEL, CALL):
            seen.append(chunk)
    assert text_of(seen) and not any(d.finish_reason for c in seen for d in c.choices)
    fake.inject(MODEL, cut_after=2, times=1)
    with pytest.raises(UpstreamConnectionError):
        await collect(provider, req(user("a b c d")))


async def test_malformed_stream_event(provider: GeminiProvider, fake: FakeGemini) -> None:
    fake.inject(MODEL, malformed_after=1, times=1)
    with pytest.raises(UpstreamMalformedError, match="malformed stream event"):
        await collect(provider, req(user("a b c d")))


async def test_embeddings(provider: GeminiProvider, fake: FakeGemini) -> None:
    model = "gemini-embedding-001"
    resp = await provider.embed(EmbeddingRequest(model="e", input=["hello world", "bye"], dimensions=8), model, CALL)
    assert len(resp.data) == 2 and all(len(v) == 8 for v in resp.data)
    assert resp.data[0] != resp.data[1]
    assert resp.usage.estimated and resp.usage.prompt_tokens == 3 + 1
    sent = fake.requests[-1]
    assert sent["path"] == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert sent["body"]["requests"][0] == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "hello world"}]},
        "outputDimensionality": 8,
    }
    full = await provider.embed(EmbeddingRequest(model="e", input=["x"]), model, CALL)
    assert len(full.data[0]) == 3072
    with pytest.raises(InvalidRequestError, match="token arrays"):
        await provider.embed(EmbeddingRequest(model="e", input=[[1, 2, 3]]), model, CALL)


async def test_list_models_pages_and_health() -> None:
    names = [f"gemini-test-{i}" for i in range(5)]
    async with FakeGemini(models=names, page_size=2) as server:
        p = GeminiProvider("gem", GeminiProviderConfig(base_url=server.url, api_key="k"))
        try:
            models = await p.list_models()
            assert [m.id for m in models] == names
            assert models[0].owned_by == "google" and models[0].context_window == 1048576
            assert "generateContent" in models[0].details["supportedGenerationMethods"]
            health = await p.health()
            assert health.ok and health.detail == "5 models"
        finally:
            await p.aclose()


# -- the fake's own wire behaviour -------------------------------------------------------


async def test_fake_streams_a_json_array_without_alt_sse_and_accepts_key_param(fake: FakeGemini) -> None:
    url = f"{fake.url}/v1beta/models/{MODEL}:streamGenerateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "a b"}]}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, params={"key": "test-key"}, json=body) as resp:
            assert resp.status == 200 and resp.content_type == "application/json"
            events = orjson.loads(await resp.read())
        assert isinstance(events, list) and len(events) > 1
        assert events[-1]["candidates"][0]["finishReason"] == "STOP"
        async with session.post(url, json=body) as resp:
            assert resp.status == 403
            err = (await resp.json())["error"]
            assert (err["code"], err["status"]) == (403, "PERMISSION_DENIED")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"contents": [{"role": "user", "parts": [{"text": "x"}]}], "foo": 1}, 'Unknown name "foo"'),
        ({"contents": []}, "contents is not specified"),
        ({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, "valid role"),
        ({"contents": [{"role": "user", "parts": []}]}, "must not be empty"),
        (
            {
                "contents": [
                    {"role": "user", "parts": [{"text": "x"}]},
                    {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
                    {"role": "user", "parts": [{"functionResponse": {"name": "g", "response": {}}}]},
                ]
            },
            "name of each function response",
        ),
        (
            {
                "contents": [{"role": "user", "parts": [{"text": "x"}]}],
                "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "object"}}]}],
            },
            "should be non-empty for OBJECT type",
        ),
        (
            {
                "contents": [{"role": "user", "parts": [{"text": "x"}]}],
                "tools": [
                    {
                        "functionDeclarations": [
                            {
                                "name": "f",
                                "parameters": {
                                    "type": "object",
                                    "properties": {"a": {"type": "string"}},
                                    "additionalProperties": False,
                                },
                            }
                        ]
                    }
                ],
            },
            'Unknown name "additionalProperties"',
        ),
    ],
)
async def test_fake_rejects_what_the_real_api_rejects(fake: FakeGemini, body: dict[str, Any], message: str) -> None:
    url = f"{fake.url}/v1beta/models/{MODEL}:generateContent"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, headers={"x-goog-api-key": "test-key"}, json=body) as resp,
    ):
        assert resp.status == 400
        err = (await resp.json())["error"]
    assert err["status"] == "INVALID_ARGUMENT" and message in err["message"]


async def test_fake_accepts_snake_case_and_serves_embed_content(fake: FakeGemini) -> None:
    headers = {"x-goog-api-key": "test-key"}
    async with aiohttp.ClientSession(headers=headers) as session:
        snake: dict[str, Any] = {
            "contents": [{"role": "user", "parts": [{"text": "one two three"}]}],
            "generation_config": {"max_output_tokens": 2},
        }
        async with session.post(f"{fake.url}/v1beta/models/{MODEL}:generateContent", json=snake) as resp:
            assert resp.status == 200
            assert (await resp.json())["candidates"][0]["finishReason"] == "MAX_TOKENS"
        embed = {"content": {"parts": [{"text": "hi"}]}, "outputDimensionality": 4}
        async with session.post(f"{fake.url}/v1beta/models/text-embedding-004:embedContent", json=embed) as resp:
            assert len((await resp.json())["embedding"]["values"]) == 4


# -- reasoning_effort: each model's way of thinking, in its range --------------------------------

THINKING_CASES = [
    ("gemini-2.5-pro", "none", {"thinkingBudget": 128}),  # 2.5 Pro cannot stop thinking: its least
    ("gemini-2.5-pro", "xhigh", {"thinkingBudget": 32768}),
    ("gemini-2.5-flash", "none", {"thinkingBudget": 0}),
    ("gemini-2.5-flash", "xhigh", {"thinkingBudget": 24576}),
    ("gemini-2.5-flash-lite", "none", {"thinkingBudget": 0}),
    ("gemini-2.5-flash-lite", "minimal", {"thinkingBudget": 512}),
    ("gemini-3-pro-preview", "xhigh", {"thinkingLevel": "high"}),
    ("gemini-3-flash-preview", "minimal", {"thinkingLevel": "low"}),
    ("gemini-flash-latest", "medium", {"thinkingBudget": 8192}),  # an alias: a budget works on 2.5 and 3
]


@pytest.mark.parametrize(("model", "effort", "expected"), THINKING_CASES)
def test_reasoning_effort_is_each_models_thinking_config(model: str, effort: str, expected: dict[str, Any]) -> None:
    body = encode_request(req(user("x"), extra={"reasoning_effort": effort}), model)
    assert body["generationConfig"]["thinkingConfig"] == expected


def test_reasoning_effort_is_dropped_for_a_model_that_cannot_think() -> None:
    body = encode_request(req(user("x"), extra={"reasoning_effort": "high"}), "gemini-2.0-flash", reasoning=False)
    assert "generationConfig" not in body
    own = encode_request(
        req(user("x"), extra={"thinking_config": {"thinkingBudget": 0}}), "gemini-2.0-flash", reasoning=False
    )
    assert own["generationConfig"]["thinkingConfig"] == {"thinkingBudget": 0}  # an explicit config is sent as given


async def test_the_fake_takes_every_mapped_config_and_refuses_what_the_api_refuses(provider: GeminiProvider) -> None:
    for model, effort, _ in THINKING_CASES:
        if model == "gemini-flash-latest":
            continue
        answer = await provider.chat(req(user("x"), extra={"reasoning_effort": effort}), model, CALL)
        assert answer.choices[0].message.content, (model, effort)
    refused = [
        ("gemini-2.5-pro", {"thinkingBudget": 0}, "only works in thinking mode"),
        ("gemini-2.5-flash", {"thinkingBudget": 40000}, "between 1 and 24576"),
        ("gemini-2.5-flash", {"thinkingLevel": "high"}, "Thinking level"),
        ("gemini-2.0-flash", {"thinkingBudget": 1024}, "not supported"),
    ]
    for model, config, words in refused:
        with pytest.raises(UpstreamStatusError) as err:
            await provider.chat(req(user("x"), extra={"thinking_config": config}), model, CALL)
        assert err.value.upstream_status == 400 and words in str(err.value), (model, config)
