"""The legacy OpenAI Completions API (``POST /v1/completions``), translated to chat.

The prompt becomes one user message and every provider is asked through the chat pipeline; the
answer comes back in the ``text_completion`` shape.  What a chat model cannot do as the legacy
API did is refused with a 400 naming the parameter: ``suffix``, ``echo``, ``best_of`` > 1,
``logprobs``, a list of several prompts, and prompts given as token arrays.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelyard.errors import InvalidRequestError
from modelyard.types import ChatChunk, ChatRequest, ChatResponse
from modelyard.wire.openai import encode_usage, parse_chat_request

__all__ = ["encode_completion", "encode_completion_chunk", "parse_completion_request"]

#: legacy fields that mean the same on chat
_SAME = (
    "model",
    "n",
    "stop",
    "seed",
    "user",
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "stream",
    "stream_options",
    "modelyard",
)
_REFUSED = {
    "suffix": "suffix (insertion) is not available when the completion is served by a chat model",
    "echo": "echo is not available when the completion is served by a chat model",
}


def parse_completion_request(body: Any) -> ChatRequest:
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object", param=None)
    for key, why in _REFUSED.items():
        if body.get(key) not in (None, False, ""):
            raise InvalidRequestError(f"{why}; leave out '{key}'", param=key, code="unsupported_parameter")
    best_of = body.get("best_of")
    if best_of is not None and best_of != 1:
        raise InvalidRequestError("best_of > 1 is not supported; use n", param="best_of", code="unsupported_parameter")
    if body.get("logprobs") is not None:
        raise InvalidRequestError(
            "prompt logprobs are not available from a chat model; use /v1/chat/completions with logprobs",
            param="logprobs",
            code="unsupported_parameter",
        )
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise InvalidRequestError(
                "prompt must be one string (several prompts, or token arrays, are not supported: send one "
                "request per prompt)",
                param="prompt",
                code="unsupported_parameter",
            )
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequestError("prompt is required and must be a string", param="prompt")
    chat: dict[str, Any] = {k: body[k] for k in _SAME if k in body}
    chat["messages"] = [{"role": "user", "content": prompt}]
    # the legacy API's default is 16 tokens
    chat["max_tokens"] = body.get("max_tokens", 16)
    unknown = set(body) - set(_SAME) - {"prompt", "max_tokens", "best_of", "logprobs", *_REFUSED}
    if unknown:
        raise InvalidRequestError(f"unknown parameter {sorted(unknown)[0]!r}", param=sorted(unknown)[0])
    return parse_chat_request(chat)


def _cmpl_id(request_id: str) -> str:
    return f"cmpl-{request_id.removeprefix('req_')[:29]}"


def encode_completion(resp: ChatResponse, model: str, request_id: str, cost_usd: float) -> bytes:
    body: dict[str, Any] = {
        "id": _cmpl_id(request_id),
        "object": "text_completion",
        "created": resp.created,
        "model": model,
        "choices": [
            {"text": c.message.text(), "index": c.index, "logprobs": None, "finish_reason": c.finish_reason}
            for c in resp.choices
        ],
    }
    if resp.usage is not None:
        body["usage"] = encode_usage(resp.usage, cost_usd)
    return orjson.dumps(body)


def encode_completion_chunk(
    chunk: ChatChunk, model: str, request_id: str, created: int, cost_usd: float | None = None
) -> bytes | None:
    """One ``data:`` frame, or None for a chunk with nothing for a completion (a role-only delta)."""
    choices = [
        {"text": d.content or "", "index": d.index, "logprobs": None, "finish_reason": d.finish_reason}
        for d in chunk.choices
        if d.content or d.finish_reason
    ]
    body: dict[str, Any] = {
        "id": _cmpl_id(request_id),
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if chunk.usage is not None:
        body["usage"] = encode_usage(chunk.usage, cost_usd)
    elif not choices:
        return None
    return b"data: " + orjson.dumps(body) + b"\n\n"
