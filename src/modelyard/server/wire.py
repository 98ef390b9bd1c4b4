"""Internal shapes -> the OpenAI JSON modelyard serves (responses, stream chunks, embeddings)."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson

from modelyard.types import ChatChunk, ChatResponse, EmbeddingResponse, Message, Usage

__all__ = ["DONE", "encode_chunk", "encode_embeddings", "encode_response", "encode_usage", "sse_error"]

DONE = b"data: [DONE]\n\n"


def encode_usage(u: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }
    if u.estimated:
        out["estimated"] = True
    return out


def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": m.text() if isinstance(m.content, list) else m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    out["refusal"] = m.refusal
    return out


def encode_response(r: ChatResponse, model: str) -> bytes:
    """A ``chat.completion`` body; ``model`` is the configured name of the model that answered."""
    body: dict[str, Any] = {
        "id": r.id,
        "object": "chat.completion",
        "created": r.created,
        "model": model,
        "choices": [
            {
                "index": c.index,
                "message": _message(c.message),
                "logprobs": c.logprobs,
                "finish_reason": c.finish_reason,
            }
            for c in r.choices
        ],
    }
    if r.usage is not None:
        body["usage"] = encode_usage(r.usage)
    if r.system_fingerprint is not None:
        body["system_fingerprint"] = r.system_fingerprint
    return orjson.dumps(body)


def encode_chunk(c: ChatChunk, model: str, *, chunk_id: str, created: int) -> bytes:
    """One SSE frame (``data: {...}\\n\\n``) for a chunk, under a stable id for the whole stream."""
    choices = []
    for d in c.choices:
        delta: dict[str, Any] = {}
        if d.role is not None:
            delta["role"] = d.role
        if d.content is not None:
            delta["content"] = d.content
        if d.refusal is not None:
            delta["refusal"] = d.refusal
        if d.tool_calls:
            delta["tool_calls"] = [
                {
                    "index": t.index,
                    **({"id": t.id, "type": "function"} if t.id else {}),
                    "function": {
                        **({"name": t.name} if t.name is not None else {}),
                        "arguments": t.arguments or "",
                    },
                }
                for t in d.tool_calls
            ]
        choices.append({"index": d.index, "delta": delta, "logprobs": d.logprobs, "finish_reason": d.finish_reason})
    body: dict[str, Any] = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if c.usage is not None:
        body["usage"] = encode_usage(c.usage)
    if c.system_fingerprint is not None:
        body["system_fingerprint"] = c.system_fingerprint
    return b"data: " + orjson.dumps(body) + b"\n\n"


def sse_error(error: dict[str, Any]) -> bytes:
    """An in-stream error event in OpenAI's shape (the OpenAI SDK raises it as an APIError)."""
    return b"data: " + orjson.dumps(error) + b"\n\n"


def encode_embeddings(r: EmbeddingResponse, model: str, encoding_format: str) -> bytes:
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
            if encoding_format == "base64"
            else v,
        }
        for i, v in enumerate(r.data)
    ]
    usage = {"prompt_tokens": r.usage.prompt_tokens, "total_tokens": r.usage.total_tokens or r.usage.prompt_tokens}
    return orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage})
