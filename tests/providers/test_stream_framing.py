"""SSE framing per read (``iter_sse``, ``iter_sse_data``), merging the text chunks of one read
(``coalesce``) and the per-stream encoder's fast path (``ChunkEncoder``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from modelyard.providers._http import iter_sse, iter_sse_data
from modelyard.providers.base import coalesce
from modelyard.types import ChatChunk, ChoiceDelta, ToolCallDelta, Usage
from modelyard.wire.openai import ChunkEncoder, encode_chunk


class _Body:
    status = 200
    headers: dict[str, str] = {}

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        for p in self.pieces:
            yield p


async def _events(pieces: list[bytes]) -> list[list[tuple[str, str]]]:
    return [[(e.event, e.data) for e in batch] async for batch in iter_sse(_Body(pieces), provider="p", model="m")]  # type: ignore[arg-type]


async def test_events_of_one_read_come_together_and_split_reads_are_joined() -> None:
    body = b"data: a\n\nevent: ping\ndata: b\n\n: comment\ndata: c1\ndata: c2\n\ndata: d"
    assert await _events([body]) == [[("message", "a"), ("ping", "b"), ("message", "c1\nc2")], [("message", "d")]]
    # the same bytes one at a time: one event per batch, nothing lost
    singles = await _events([bytes([b]) for b in body])
    assert [e for batch in singles for e in batch] == [
        ("message", "a"),
        ("ping", "b"),
        ("message", "c1\nc2"),
        ("message", "d"),
    ]


async def test_crlf_and_lone_cr_line_ends_even_split_across_reads() -> None:
    pieces = [b"data: x\r", b"\n\r\ndata: y\r\r", b"data: z\r\n\r\n"]
    assert [e for b in await _events(pieces) for e in b] == [("message", "x"), ("message", "y"), ("message", "z")]


async def test_data_payloads_stay_bytes() -> None:
    out = [b async for b in iter_sse_data(_Body([b'data: {"a":1}\n\ndata:[DONE]\n\n']))]  # type: ignore[arg-type]
    assert out == [[b'{"a":1}', b"[DONE]"]]


@settings(max_examples=60)
@given(
    st.lists(
        st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12),
        min_size=1,
        max_size=6,
    ),
    st.data(),
)
def test_any_split_of_the_bytes_gives_the_same_events(datas: list[str], data: st.DataObject) -> None:
    import asyncio

    body = b"".join(b"data: " + d.encode() + b"\r\n\r\n" for d in datas)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=5)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if body[a:b]]
    got = asyncio.run(_events(pieces))
    assert [d for batch in got for _, d in batch] == datas


def _text(t: str, **kw: object) -> ChatChunk:
    return ChatChunk("c", 1, "m", [ChoiceDelta(content=t, **kw)])  # type: ignore[arg-type]


def test_coalesce_merges_consecutive_text_and_keeps_everything_else_apart() -> None:
    role = ChatChunk("c", 1, "m", [ChoiceDelta(role="assistant", content="")])
    call = ChatChunk("c", 1, "m", [ChoiceDelta(tool_calls=[ToolCallDelta(index=0, id="t", name="f", arguments="")])])
    finish = ChatChunk("c", 1, "m", [ChoiceDelta(finish_reason="stop")])
    usage = ChatChunk("c", 1, "m", [], Usage(1, 2, 3))
    chunks = [role, _text("a"), _text("b"), _text("c"), call, _text("d"), _text("e", reasoning="r"), finish, usage]
    out = coalesce(chunks)
    assert [c.choices[0].content if c.choices else None for c in out] == ["", "abc", None, "d", "e", None, None]
    assert [c.more for c in out] == [True] * 6 + [False]
    assert coalesce([_text("x")])[0].more is False


def test_the_encoder_fast_path_writes_what_encode_chunk_writes() -> None:
    enc = ChunkEncoder("my-model", "chatcmpl-1", 123)
    for chunk in (
        _text('he said "hi" \u00e9\n'),
        _text("x", role="assistant"),
        _text("x", finish_reason="stop"),
        ChatChunk("c", 1, "m", [ChoiceDelta(content="x")], system_fingerprint="fp"),
        ChatChunk("c", 1, "m", [ChoiceDelta(index=1, content="x")]),
    ):
        expected = encode_chunk(chunk, "my-model", chunk_id="chatcmpl-1", created=123)
        assert orjson.loads(enc.encode(chunk)[6:]) == orjson.loads(expected[6:])
    other = enc.encode(_text("x"), model="fallback")
    assert orjson.loads(other[6:])["model"] == "fallback"
