"""The request parser: every malformed body is a 400 naming the parameter, never a crash."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.errors import InvalidRequestError, ModelyardError
from modelyard.routing.options import parse_options
from modelyard.types import ForcedTool
from modelyard.wire.openai import decode_body, parse_chat_request, parse_embedding_request


def chat(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}


def test_full_request_round_trip() -> None:
    body = chat(
        messages=[
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
        ],
        stream=True,
        stream_options={"include_usage": True},
        temperature=0.5,
        top_p=0.9,
        max_completion_tokens=100,
        n=2,
        stop="END",
        seed=7,
        user="u1",
        logprobs=True,
        top_logprobs=3,
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}}],
        tool_choice={"type": "function", "function": {"name": "f"}},
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
        some_vendor_field={"a": 1},
        modelyard={"fallback": False},
    )
    req = parse_chat_request(body)
    assert req.stream and req.include_usage
    assert req.max_tokens == 100 and req.max_tokens_field == "max_completion_tokens"
    assert req.stop == ["END"] and req.n == 2 and req.seed == 7
    assert isinstance(req.messages[1].content, list) and req.messages[1].content[1].media_type == "image/png"
    assert req.messages[2].tool_calls is not None and req.messages[2].tool_calls[0].name == "f"
    assert req.messages[3].tool_call_id == "c1"
    assert isinstance(req.tool_choice, ForcedTool) and req.tool_choice.name == "f"
    assert req.response_format is not None and req.response_format.type == "json_schema"
    assert req.extra == {"some_vendor_field": {"a": 1}}
    assert req.options == {"fallback": False}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": 3, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        (chat(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
        (chat(messages=[{"role": "user"}]), "messages[0].content"),
        (chat(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
        (chat(messages=[{"role": "user", "content": [{"type": "audio"}]}]), "messages[0].content[0].type"),
        (chat(temperature="hot"), "temperature"),
        (chat(temperature=3), "temperature"),
        (chat(max_tokens=0), "max_tokens"),
        (chat(max_tokens=True), "max_tokens"),
        (chat(n=0), "n"),
        (chat(stop=[1, 2]), "stop"),
        (chat(stream="yes"), "stream"),
        (chat(tools={"a": 1}), "tools"),
        (chat(tools=[{"type": "function", "function": {}}]), "tools[0].function.name"),
        (chat(tool_choice="sometimes"), "tool_choice"),
        (chat(response_format={"type": "yaml"}), "response_format.type"),
        (chat(modelyard=[1]), "modelyard"),
        (chat(reasoning_effort="extreme"), "reasoning_effort"),
        (chat(reasoning_effort=3), "reasoning_effort"),
    ],
)
def test_invalid_params_name_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_chat_request(body)
    assert info.value.param == param
    assert info.value.status == 400


@pytest.mark.parametrize("raw", [b"", b"{", b"[1,2]", b'"x"', b"\xff\xfe"])
def test_bad_json(raw: bytes) -> None:
    with pytest.raises(InvalidRequestError):
        decode_body(raw)


def test_embeddings_inputs() -> None:
    assert parse_embedding_request({"model": "e", "input": "a"}).input == ["a"]
    assert parse_embedding_request({"model": "e", "input": [1, 2]}).input == [[1, 2]]
    assert parse_embedding_request({"model": "e", "input": [[1], [2, 3]]}).input == [[1], [2, 3]]
    assert parse_embedding_request({"model": "e", "input": "a", "encoding_format": "base64"}).encoding_format == (
        "base64"
    )
    for bad in (
        {"model": "e"},
        {"model": "e", "input": []},
        {"model": "e", "input": [None]},
        {"model": "e", "input": "a", "encoding_format": "hex"},
        {"model": "e", "input": "a", "dimensions": 0},
    ):
        with pytest.raises(InvalidRequestError):
            parse_embedding_request(bad)


def test_options_from_headers_and_body() -> None:
    opts = parse_options({"timeout_s": 5}, {"x-modelyard-fallback": "false", "x-modelyard-local-only": "true"})
    assert opts.fallback is False and opts.local_only is True and opts.timeout_s == 5
    assert parse_options({"fallback": True}, {"x-modelyard-fallback": "false"}).fallback is True
    for bad in ({"fallback": "maybe"}, {"timeout_s": -1}, {"prefer": "cheap"}, {"colour": "red"}, {"max_attempts": 0}):
        with pytest.raises(InvalidRequestError):
            parse_options(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
keys = st.sampled_from(
    [
        "model",
        "messages",
        "stream",
        "temperature",
        "max_tokens",
        "tools",
        "tool_choice",
        "stop",
        "response_format",
        "n",
        "modelyard",
        "stream_options",
        "top_p",
        "seed",
        "logprobs",
    ]
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "tool", "system", "x"])},
    optional={"content": json_values, "tool_calls": json_values, "tool_call_id": json_values},
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, json_values, max_size=8), st.lists(message, max_size=3))
def test_parser_never_crashes(body: dict[str, Any], messages: list[dict[str, Any]]) -> None:
    if messages:
        body["messages"] = messages
    try:
        parse_chat_request(decode_body(orjson.dumps(body)))
    except ModelyardError as exc:
        assert exc.status == 400


def test_a_chat_body_without_a_model_parses_for_the_default_route() -> None:
    """The pipeline sends it to ``default_route`` (or answers 400 missing_required_parameter)."""
    assert parse_chat_request({"messages": [{"role": "user", "content": "x"}]}).model == ""


@pytest.mark.parametrize("effort", ["none", "minimal", "low", "medium", "high", "xhigh", None])
def test_reasoning_efforts_openai_defines_pass(effort: str | None) -> None:
    assert parse_chat_request(chat(reasoning_effort=effort)).extra == {"reasoning_effort": effort}
