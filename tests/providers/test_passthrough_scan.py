"""The pass-through's two halves: what the OpenAI adapter reads from a chunk it forwards
(``scan_chunk``) and how the front end rewrites it (``Forwarder``)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelyard.providers.openai import decode_chunk, merged, scan_chunk
from modelyard.types import ChatChunk
from modelyard.wire.openai import Forwarder


def _chunk(delta: dict[str, Any], finish: str | None = None, **top: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        **top,
    }


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_chunk({"content": "tok "}, usage=None), ("tok ", False)),
        (_chunk({"role": "assistant", "content": "", "refusal": None}), ("", False)),
        (_chunk({}, "stop"), (None, True)),
        (_chunk({"content": None}, "length"), (None, True)),
        (_chunk({"content": "x"}, obfuscation="abc", service_tier="default"), ("x", False)),
    ],
)
def test_plain_chunks_are_read_without_decoding(data: dict[str, Any], expected: tuple[Any, bool]) -> None:
    assert scan_chunk(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}),
        _chunk({"refusal": "no"}),
        _chunk({"reasoning_content": "think"}),
        _chunk({"reasoning": "think"}),
        _chunk({"content": "x"}, usage={"prompt_tokens": 1}),
        {**_chunk({"content": "x"}), "choices": [{"index": 0, "delta": {"content": "x"}, "logprobs": {"content": []}}]},
        {**_chunk({"content": "x"}), "choices": [{"index": 1, "delta": {"content": "x"}}]},
        {**_chunk({"content": "x"}), "choices": []},
        {"error": {"message": "overloaded"}},
        _chunk({"content": 5}),
        _chunk({"content": "x"}, 7),
        [1, 2],
        "text",
    ],
)
def test_everything_else_is_decoded_in_full(data: Any) -> None:
    assert scan_chunk(data) is None


def test_a_forwarded_chunk_decodes_lazily_to_what_a_decoded_one_is() -> None:
    data = _chunk({"role": "assistant", "content": 'a "quoted" \\ word'}, system_fingerprint="fp_1")
    raw = orjson.dumps(data)
    text, finished = scan_chunk(data) or ("", True)
    chunk = ChatChunk.passthrough([raw], "gpt-4o", merged, text=text, finished=finished)
    assert chunk.has_output() and not chunk.finished and chunk.text == 'a "quoted" \\ word'
    assert chunk == decode_chunk(data, "gpt-4o")
    assert chunk.id == "chatcmpl-up" and chunk.system_fingerprint == "fp_1"


def test_plain_chunks_that_arrived_together_decode_to_one_merged_delta() -> None:
    datas = [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hel"}),
        _chunk({"content": "lo"}, "stop"),
    ]
    raws = [orjson.dumps(d) for d in datas]
    chunk = ChatChunk.passthrough(raws, "gpt-4o", merged, text="Hello", finished=True)
    (delta,) = chunk.choices
    assert (delta.role, delta.content, delta.finish_reason) == ("assistant", "Hello", "stop")


def test_the_forwarder_rewrites_id_and_model_and_keeps_every_other_byte() -> None:
    raw = b'{"id":"chatcmpl-up","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024-08-06",' + (
        b'"choices":[{"index":0,"delta":{"content":"say \\"model\\": \\"x\\""}}],"obfuscation":"q"}'
    )
    frame = Forwarder("my-model", "chatcmpl-mine").frames([raw])
    assert frame is not None and frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    out = orjson.loads(frame[6:])
    assert out == {**orjson.loads(raw), "id": "chatcmpl-mine", "model": "my-model"}
    # spaced separators (Python servers) and members in another order
    spaced = b'{"choices": [{"index": 0, "delta": {"content": "hi"}}], "model" : "m", "id": "c-1"}'
    frame = Forwarder('a "quoted" name', "c-2").frames([spaced])
    assert frame is not None and orjson.loads(frame[6:])["model"] == 'a "quoted" name'
    assert orjson.loads(frame[6:])["id"] == "c-2"
    assert Forwarder("m", "c").frames([b'{"choices":[]}']) is None  # no id or model: encoded instead
    # a stream's later chunks reuse what the first taught it; a changed member is learnt again
    forward = Forwarder("mine", "c-9")
    second = raw.replace(b'"chatcmpl-up"', b'"chatcmpl-other"')
    frames = forward.frames([raw, raw, second])
    assert frames is not None
    events = [orjson.loads(e.removeprefix(b"data: ")) for e in frames.split(b"\n\n") if e]
    assert [(e["id"], e["model"]) for e in events] == [("c-9", "mine")] * 3


@given(st.text(max_size=40), st.sampled_from([None, "stop", "length"]))
def test_any_content_survives_the_round_trip(content: str, finish: str | None) -> None:
    data = _chunk({"content": content}, finish)
    raw = orjson.dumps(data)
    found = scan_chunk(orjson.loads(raw))
    assert found == (content, finish is not None)
    frame = Forwarder("m", "c").frames([raw])
    assert frame is not None
    assert orjson.loads(frame[6:])["choices"][0]["delta"]["content"] == content
