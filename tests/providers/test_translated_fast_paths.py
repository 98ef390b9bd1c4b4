"""The translated streams' fast paths give what their general paths give.

Gemini's ``StreamDecoder.more_text`` and Anthropic's ``StreamTranslator.more_text`` take an event
that is only more answer text straight to its text, and ``translated_stream`` merges the texts of
one read into one chunk; the SSE parser reads an ``event:`` + ``data:`` block without its line
loop.  Each test runs the adapter's real ``stream()`` over real SSE bytes, cut into reads at random,
once as it is and once with the fast path switched off (``more_text`` answers None: every event
goes through ``feed``, one chunk per text, merged by ``coalesce``), and compares what comes out:
every chunk (id, model, deltas, usage, ``more``), its frame for an OpenAI client, and the error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.config.schema import AnthropicProviderConfig, GeminiProviderConfig
from modelyard.providers._http import _fields
from modelyard.providers.anthropic import AnthropicProvider, StreamTranslator
from modelyard.providers.base import CallOptions, Provider
from modelyard.providers.gemini import GeminiProvider, StreamDecoder
from modelyard.testing.replay import ReplayTransport
from modelyard.types import ChatRequest, Message
from modelyard.wire.openai import ChunkEncoder

REQUEST = ChatRequest(model="m", messages=[Message(role="user", content="hi")], stream=True)


async def _run(provider: Provider, pieces: list[bytes]) -> tuple[list[tuple[Any, ...]], str | None]:
    """What the stream gives: each chunk as (id, model, deltas, usage, more, frame), and the error."""
    provider._client = ReplayTransport(pieces)  # type: ignore[assignment]
    encoder = ChunkEncoder("client-model", "chatcmpl-1", 1)
    out: list[tuple[Any, ...]] = []
    error = None
    try:
        async for c in provider.stream(REQUEST, "m", CallOptions(timeout_s=10)):
            out.append((c.id, c.model, c.choices, c.usage, c.more, encoder.encode(c)))
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    return out, error


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One loop for all examples: a stream that fails leaves its SSE generators to be closed by
    the loop later, as the server's loop does (``asyncio.run`` per example would race with that)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def _both(loop: asyncio.AbstractEventLoop, provider: Provider, decoder: type, pieces: list[bytes]) -> None:
    fast = loop.run_until_complete(_run(provider, pieces))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(decoder, "more_text", lambda self, data: None)
        general = loop.run_until_complete(_run(provider, pieces))
    assert fast == general


def _cut(body: bytes, data: st.DataObject) -> list[bytes]:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=8), label="cuts"))
    return [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if body[a:b]]


# -- Gemini ------------------------------------------------------------------------------

_TEXT = st.text(alphabet=st.sampled_from(["a", " ", "é", '"', "\\", "\n", "😀"]), max_size=4)


def _gemini_event(kind: str, text: str, n: int = 5) -> dict[str, Any]:
    """One GenerateContentResponse of a kind, as the API sends them (``n``: output tokens so far)."""
    parts: list[dict[str, Any]] = [{"text": text}]
    cand: dict[str, Any] = {"index": 0}
    if kind == "two_parts":
        parts = [{"text": text}, {"text": text + "!"}]
    elif kind == "thought":
        parts = [{"text": text, "thought": True}]
    elif kind == "call":
        parts = [{"functionCall": {"id": "call-1", "name": "f", "args": {"x": text}}}]  # an id: not a random one
    elif kind == "signed_text":
        parts = [{"text": text, "thoughtSignature": "sig"}]
    elif kind in ("STOP", "MAX_TOKENS", "SAFETY", "STOP_no_usage"):
        cand["finishReason"] = kind.removesuffix("_no_usage")
    elif kind == "safety_ratings":
        cand["safetyRatings"] = [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"}]
    elif kind == "second_candidate":
        cand["index"] = 1
    elif kind == "logprobs":
        cand["logprobsResult"] = {"chosenCandidates": [{"token": text, "logProbability": -0.5}]}
    cand["content"] = {"parts": parts, "role": "model"}
    usage = {"promptTokenCount": 3, "candidatesTokenCount": n, "totalTokenCount": 3 + n}
    event: dict[str, Any] = {"candidates": [cand], "usageMetadata": usage, "responseId": "r-1"}
    if kind in ("no_usage", "STOP_no_usage"):
        del event["usageMetadata"]
    event["modelVersion"] = "gemini-x-002" if kind == "new_version" else "gemini-x-001"
    if kind == "blocked_prompt":
        return {"promptFeedback": {"blockReason": "SAFETY"}, "responseId": "r-1"}
    if kind == "error":
        return {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}
    return event


_GEMINI_KINDS = st.sampled_from(
    ["text"] * 8
    + ["two_parts", "thought", "call", "signed_text", "STOP", "MAX_TOKENS", "SAFETY", "safety_ratings"]
    + ["second_candidate", "logprobs", "no_usage", "new_version", "blocked_prompt", "error", "malformed"]
)


def _gemini_body(events: list[tuple[str, str]], last: str | None) -> bytes:
    out = []
    for n, (kind, text) in enumerate(events):
        raw = b'{"candidates": [' if kind == "malformed" else orjson.dumps(_gemini_event(kind, text, n))
        out.append(b"data: " + raw + b"\r\n\r\n")
    if last is not None:
        out.append(b"data: " + orjson.dumps(_gemini_event(last, "", len(events))) + b"\r\n\r\n")
    return b"".join(out)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(_GEMINI_KINDS, _TEXT), max_size=14),
    st.sampled_from([None, "STOP", "MAX_TOKENS", "STOP_no_usage"]),
    st.data(),
)
def test_gemini_fast_path_gives_what_the_general_path_gives(
    loop: asyncio.AbstractEventLoop, events: list[tuple[str, str]], last: str | None, data: st.DataObject
) -> None:
    provider = GeminiProvider("gem", GeminiProviderConfig(base_url="http://127.0.0.1:9", api_key="k"))
    _both(loop, provider, StreamDecoder, _cut(_gemini_body(events, last), data))


@pytest.mark.parametrize(
    ("events", "last"),
    [
        ([("thought", "hm"), ("text", "a"), ("text", "b"), ("SAFETY", "")], None),  # text after a thought: not blocked
        ([("thought", "hm"), ("SAFETY", "")], None),  # blocked: no output
        ([("text", "a"), ("text", ""), ("text", "b")], "STOP"),  # an empty text makes no chunk
        ([("text", "a"), ("text", "b"), ("no_usage", "c")], "STOP_no_usage"),  # the last usage seen counts
        ([("text", "a"), ("new_version", "b"), ("text", "c")], "STOP"),
        ([("text", "a"), ("text", "b"), ("error", ""), ("text", "c")], "STOP"),  # chunks, then the error
        ([("text", "a"), ("text", "b"), ("malformed", "")], "STOP"),
        ([("text", "a"), ("two_parts", "b"), ("safety_ratings", "c"), ("call", "d"), ("text", "e")], "STOP"),
        ([("text", "a"), ("second_candidate", "b"), ("text", "c")], "STOP"),
        ([("text", "a"), ("text", "b"), ("text", "c")], None),  # cut short, after a run of texts
    ],
)
def test_gemini_fast_path_table(
    loop: asyncio.AbstractEventLoop, events: list[tuple[str, str]], last: str | None
) -> None:
    provider = GeminiProvider("gem", GeminiProviderConfig(base_url="http://127.0.0.1:9", api_key="k"))
    body = _gemini_body(events, last)
    for pieces in ([body], [body[i : i + 7] for i in range(0, len(body), 7)]):
        _both(loop, provider, StreamDecoder, pieces)


def test_gemini_texts_of_one_read_skip_feed_and_make_one_chunk(
    loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only equal: the fast path is taken (``feed`` sees only the first and the last event)."""
    fed: list[dict[str, Any]] = []
    general = StreamDecoder.feed
    monkeypatch.setattr(StreamDecoder, "feed", lambda self, data: fed.append(data) or general(self, data))
    provider = GeminiProvider("gem", GeminiProviderConfig(base_url="http://127.0.0.1:9", api_key="k"))
    body = _gemini_body([("text", "a"), ("text", "b"), ("text", "c"), ("text", "d")], "STOP")
    chunks, error = loop.run_until_complete(_run(provider, [body]))
    assert error is None and len(fed) == 2
    assert [[(d.role, d.content, d.finish_reason) for d in c[2]] for c in chunks] == [
        [("assistant", "", None)],
        [(None, "abcd", None)],
        [(None, None, "stop")],
        [],
    ]
    assert chunks[-1][3] is not None and chunks[-1][3].total_tokens == 3 + 4


# -- Anthropic ---------------------------------------------------------------------------


def _anthropic_event(kind: str, text: str, index: int) -> tuple[str, dict[str, Any]]:
    if kind == "text_delta":
        return "content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": text}}
    if kind == "thinking_delta":
        return "content_block_delta", {"index": index, "delta": {"type": "thinking_delta", "thinking": text}}
    if kind == "json_delta":
        return "content_block_delta", {"index": index, "delta": {"type": "input_json_delta", "partial_json": text}}
    if kind == "signature":
        return "content_block_delta", {"index": index, "delta": {"type": "signature_delta", "signature": "s"}}
    if kind == "text_start":
        return "content_block_start", {"index": index, "content_block": {"type": "text", "text": text}}
    if kind == "tool_start":
        block = {"type": "tool_use", "id": f"toolu_{index}", "name": "f", "input": {}}
        return "content_block_start", {"index": index, "content_block": block}
    if kind == "thinking_start":
        return "content_block_start", {"index": index, "content_block": {"type": "thinking", "thinking": ""}}
    if kind == "stop":
        return "content_block_stop", {"index": index}
    if kind == "ping":
        return "ping", {}
    if kind == "error":
        return "error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert kind == "message_delta"
    return "message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 4}}


_ANTHROPIC_KINDS = st.sampled_from(
    ["text_delta"] * 8
    + ["thinking_delta", "json_delta", "signature", "text_start", "tool_start", "thinking_start", "stop", "ping"]
    + ["error", "message_delta", "malformed", "unnamed"]
)


def _anthropic_body(events: list[tuple[str, str, int]], end: bool) -> bytes:
    head = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": []}
    head["usage"] = {"input_tokens": 3, "output_tokens": 1}
    out = [_sse("message_start", {"message": head}), _sse(*_anthropic_event("text_start", "", 0))]
    for kind, text, index in events:
        if kind == "malformed":
            out.append(b'event: content_block_delta\ndata: {"index": 0, \n\n')
        elif kind == "unnamed":  # no event: line, the type in the data only
            name, data = _anthropic_event("text_delta", text, index)
            out.append(b"data: " + orjson.dumps({"type": name, **data}) + b"\n\n")
        else:
            out.append(_sse(*_anthropic_event(kind, text, index)))
    if end:
        out += [_sse(*_anthropic_event("message_delta", "", 0)), _sse("message_stop", {})]
    return b"".join(out)


@pytest.mark.parametrize(
    ("events", "end"),
    [
        ([("text_delta", "a", 0), ("text_delta", "b", 0), ("text_delta", "c", 0)], False),
        ([("text_delta", "a", 0), ("text_delta", "", 0), ("text_delta", "b", 0)], True),
        ([("text_delta", "a", 0), ("thinking_start", "", 1), ("text_delta", "b", 1), ("text_delta", "c", 0)], True),
        ([("text_delta", "a", 0), ("unnamed", "b", 0), ("ping", "", 0), ("text_delta", "c", 0)], True),
        ([("text_delta", "a", 0), ("text_delta", "b", 0), ("error", "", 0), ("text_delta", "c", 0)], True),
        ([("text_delta", "a", 0), ("malformed", "", 0)], True),
        ([("text_delta", "a", 0), ("stop", "", 0), ("tool_start", "", 1), ("json_delta", "{}", 1)], True),
    ],
)
def test_anthropic_fast_path_table(
    loop: asyncio.AbstractEventLoop, events: list[tuple[str, str, int]], end: bool
) -> None:
    provider = AnthropicProvider("ant", AnthropicProviderConfig(base_url="http://127.0.0.1:9", api_key="k"))
    body = _anthropic_body(events, end)
    for pieces in ([body], [body[i : i + 7] for i in range(0, len(body), 7)]):
        _both(loop, provider, StreamTranslator, pieces)


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(_ANTHROPIC_KINDS, _TEXT, st.sampled_from([0, 0, 0, 1, 2])), max_size=14),
    st.booleans(),
    st.data(),
)
def test_anthropic_fast_path_gives_what_the_general_path_gives(
    loop: asyncio.AbstractEventLoop, events: list[tuple[str, str, int]], end: bool, data: st.DataObject
) -> None:
    provider = AnthropicProvider("ant", AnthropicProviderConfig(base_url="http://127.0.0.1:9", api_key="k"))
    _both(loop, provider, StreamTranslator, _cut(_anthropic_body(events, end), data))


# -- the SSE parser's shortcuts ----------------------------------------------------------


def _fields_by_lines(block: bytes) -> tuple[bytes, list[bytes]]:
    """The WHATWG reading of one event block, line by line (what the shortcuts must agree with)."""
    event, data = b"", []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value
    return event, data


_LINE = st.one_of(
    st.builds(lambda v: b"data:" + v, st.binary(max_size=6)),
    st.builds(lambda v: b"data: " + v, st.binary(max_size=6)),
    st.builds(lambda v: b"event:" + v, st.binary(max_size=6)),
    st.builds(lambda v: b"event: " + v, st.binary(max_size=6)),
    st.sampled_from([b": comment", b"id: 1", b"retry: 5", b"data", b"event", b"eventx: y", b"datum: z"]),
).filter(lambda line: b"\n" not in line)


@settings(max_examples=400)
@given(st.lists(_LINE, min_size=1, max_size=3))
def test_the_sse_field_shortcuts_read_what_the_line_loop_reads(lines: list[bytes]) -> None:
    block = b"\n".join(lines)
    assert _fields(block) == _fields_by_lines(block)
