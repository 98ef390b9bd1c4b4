"""Reasoning output (#15 point 3), from every provider's own wire shape to ``reasoning_content``.

Each decoder is fed what its upstream really sends (shapes from the providers' API references):
OpenAI-compatible ``reasoning_content`` / ``reasoning`` (DeepSeek-R1, vLLM, Qwen, OpenRouter),
Anthropic ``thinking`` blocks and ``thinking_delta`` events, Gemini ``thought: true`` parts, and
Ollama's ``message.thinking``.  The reasoning is the first token of a stream (contracts).
"""

from __future__ import annotations

import orjson

from modelyard.providers import anthropic, gemini, openai
from modelyard.providers.ollama import provider as ollama
from modelyard.types import ChoiceDelta
from modelyard.wire.openai import encode_chunk, encode_response


def test_openai_compatible_reasoning_content_and_reasoning() -> None:
    data = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "42", "reasoning_content": "think"},
                "finish_reason": "stop",
            }
        ],
    }
    resp = openai.decode_response(data, "deepseek-reasoner")
    assert resp.choices[0].message.reasoning == "think"
    body = orjson.loads(encode_response(resp, "r1"))
    assert body["choices"][0]["message"]["reasoning_content"] == "think"
    chunk = openai.decode_chunk({"choices": [{"index": 0, "delta": {"reasoning": "step"}}]}, "m")
    assert chunk.choices[0].reasoning == "step" and chunk.choices[0].has_output()
    frame = orjson.loads(encode_chunk(chunk, "m", chunk_id="c", created=1)[6:])
    assert frame["choices"][0]["delta"] == {"reasoning_content": "step"}
    plain = openai.decode_response({"choices": [{"message": {"content": "hi"}}]}, "m")
    assert "reasoning_content" not in orjson.loads(encode_response(plain, "m"))["choices"][0]["message"]


def test_anthropic_thinking_blocks_and_deltas() -> None:
    data = {
        "id": "msg_1",
        "content": [
            {"type": "thinking", "thinking": "Let me add.", "signature": "sig"},
            {"type": "text", "text": "4"},
        ],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 3, "output_tokens": 5},
    }
    resp = anthropic.decode_response(data, "claude-sonnet-4-5")
    assert resp.choices[0].message.reasoning == "Let me add." and resp.choices[0].message.content == "4"
    t = anthropic.StreamTranslator("claude-sonnet-4-5")
    events = [
        {"type": "message_start", "message": {"id": "m", "model": "claude", "usage": {"input_tokens": 3}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "s"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "4"}},
    ]
    deltas: list[ChoiceDelta] = [d for e in events for c in t.feed(e) for d in c.choices]
    assert [d.reasoning for d in deltas if d.reasoning] == ["Hmm"]
    assert [d.content for d in deltas if d.content] == ["4"]
    first = next(d for d in deltas if d.has_output())
    assert first.reasoning == "Hmm"  # the first token is the first reasoning delta


def test_gemini_thought_parts() -> None:
    data = {
        "candidates": [
            {
                "index": 0,
                "content": {"role": "model", "parts": [{"text": "pondering", "thought": True}, {"text": "yes"}]},
                "finishReason": "STOP",
            }
        ],
        "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 1, "thoughtsTokenCount": 7},
    }
    resp = gemini.decode_response(data, "gemini-2.5-flash")
    assert resp.choices[0].message.reasoning == "pondering" and resp.choices[0].message.content == "yes"
    assert resp.usage is not None and resp.usage.reasoning_tokens == 7
    d = gemini.StreamDecoder(model="gemini-2.5-flash")
    chunks = d.feed({"candidates": [{"index": 0, "content": {"parts": [{"text": "hm", "thought": True}]}}]})
    assert [c.choices[0].reasoning for c in chunks if c.choices and c.choices[0].reasoning] == ["hm"]


def test_ollama_thinking() -> None:
    resp = ollama.decode_chat_response(
        {"model": "qwen3", "message": {"role": "assistant", "content": "ok", "thinking": "why"}, "done": True},
        "qwen3",
    )
    assert resp.choices[0].message.reasoning == "why"
    d = ollama.StreamDecoder(id="x", model="qwen3")
    chunks = d.decode_line({"model": "qwen3", "message": {"role": "assistant", "content": "", "thinking": "hmm"}})
    assert any(c.choices and c.choices[0].reasoning == "hmm" for c in chunks)


def test_anthropic_signed_blocks_survive_decode_stream_cache_and_encode() -> None:
    """Signed thinking and redacted_thinking blocks come out of a response and of a stream equal,
    survive the response cache's replay, and go back to Anthropic unchanged and first."""
    from modelyard.cache.base import assemble_response, replay_chunks, response_from_data, response_to_data
    from modelyard.types import Message, ToolCall

    blocks = [
        {"type": "thinking", "thinking": "Let me add.", "signature": "sig-1"},
        {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"},
        {"type": "thinking", "thinking": "Two plus two.", "signature": "sig-2"},
    ]
    data = {
        "id": "msg_1",
        "content": [*blocks, {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {"a": 2}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 3, "output_tokens": 5},
    }
    resp = anthropic.decode_response(data, "claude-sonnet-4-5")
    m = resp.choices[0].message
    assert m.reasoning_blocks == blocks and m.reasoning == "Let me add.Two plus two."
    assert response_from_data(response_to_data(resp)).choices[0].message.reasoning_blocks == blocks
    t = anthropic.StreamTranslator("claude-sonnet-4-5")
    events: list[dict[str, object]] = [{"type": "message_start", "message": {"id": "m", "usage": {}}}]
    for i, b in enumerate(blocks):
        if b["type"] == "redacted_thinking":
            events.append({"type": "content_block_start", "index": i, "content_block": b})
        else:
            events += [
                {"type": "content_block_start", "index": i, "content_block": {"type": "thinking", "thinking": ""}},
                {
                    "type": "content_block_delta",
                    "index": i,
                    "delta": {"type": "thinking_delta", "thinking": b["thinking"]},
                },
                {
                    "type": "content_block_delta",
                    "index": i,
                    "delta": {"type": "signature_delta", "signature": b["signature"]},
                },
            ]
        events.append({"type": "content_block_stop", "index": i})
    events += [
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ]
    chunks = [c for e in events for c in t.feed(e)]
    streamed = assemble_response(chunks, None)
    assert streamed is not None and streamed.choices[0].message.reasoning_blocks == blocks
    replayed = assemble_response(replay_chunks(resp), resp.usage)
    assert replayed is not None and replayed.choices[0].message.reasoning_blocks == blocks
    back = Message("assistant", "", tool_calls=[ToolCall("toolu_1", "add", '{"a": 2}')], reasoning_blocks=blocks)
    _, turns = anthropic.encode_messages([Message("user", "2+2?"), back])
    assert turns[1]["content"][:3] == blocks and turns[1]["content"][3]["type"] == "tool_use"


def test_anthropic_cache_control_is_encoded_where_it_was_put() -> None:
    from modelyard.types import ChatRequest, ContentPart, Message, Tool

    mark = {"type": "ephemeral"}
    req = ChatRequest(
        model="claude",
        messages=[
            Message("system", [ContentPart("text", "rules", cache_control={"type": "ephemeral", "ttl": "1h"})]),
            Message("user", [ContentPart("text", "question", cache_control=mark)]),
        ],
        tools=[Tool("t", parameters={"type": "object"}, cache_control=mark)],
        extra={"cache_control": mark, "thinking": {"type": "enabled", "budget_tokens": 1024}},
    )
    body = anthropic.encode_request(req, "claude-sonnet-4-5", stream=False).body
    assert body["system"] == [{"type": "text", "text": "rules", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    assert body["messages"][0]["content"] == [{"type": "text", "text": "question", "cache_control": mark}]
    assert body["tools"][0]["cache_control"] == mark and body["cache_control"] == mark
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    usage = anthropic.decode_usage(
        {
            "input_tokens": 10,
            "cache_creation_input_tokens": 2048,
            "cache_read_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 2048},
            "output_tokens": 5,
        }
    )
    assert usage is not None and usage.cache_write_1h_tokens == 2048 and usage.prompt_tokens == 2058
