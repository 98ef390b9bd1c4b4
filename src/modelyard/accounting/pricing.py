"""Prices and cost: a built-in price table, per-model overrides, the cost of a call, token estimates.

Prices are USD per million tokens.  :func:`price_for` looks the upstream model up in the table
(tolerating provider prefixes and dated/versioned suffixes) and lets the model's config override
each field; :func:`cost` applies a price to a :class:`~modelyard.types.Usage` in OpenAI's convention
(``prompt_tokens`` includes cached reads and cache writes).

Token estimates never touch the network: :func:`estimate_input_tokens` is a calibrated
characters-per-token heuristic (tiktoken is deliberately not used: it downloads its BPE files on
first use, and modelyard must work offline).
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from modelyard.config.prices import PRICE_TABLE, Price, lookup_price, normalize_model_name, price_for
from modelyard.config.schema import ModelConfig
from modelyard.types import ChatRequest, EmbeddingRequest, Usage

__all__ = [
    "PRICE_TABLE",
    "Price",
    "cost",
    "estimate_embedding_input_tokens",
    "estimate_input_tokens",
    "estimate_text_tokens",
    "lookup_price",
    "normalize_model_name",
    "price_for",
    "worst_case_cost",
    "worst_case_output_tokens",
]

#: Anthropic bills 5-minute cache writes at 1.25x the base input price.
CACHE_WRITE_MULTIPLIER = 1.25
#: ... and 1-hour cache writes at 2x.
CACHE_WRITE_1H_MULTIPLIER = 2.0
#: Output allowance when neither the request nor the model config caps it.
DEFAULT_MAX_OUTPUT_TOKENS = 4096


def cost(price: Price | None, usage: Usage) -> float:
    """USD for one call. ``prompt_tokens`` includes cached reads and cache writes (OpenAI's convention)."""
    if price is None:
        return 0.0
    if usage.cached_tokens <= 0 and usage.cache_write_tokens <= 0:  # most calls: the same sum, shorter
        return (max(0, usage.prompt_tokens) * price.input + max(0, usage.completion_tokens) * price.output) / 1_000_000
    cached = max(0, usage.cached_tokens)
    written = max(0, usage.cache_write_tokens)
    written_1h = min(written, max(0, usage.cache_write_1h_tokens))
    fresh = max(0, usage.prompt_tokens - cached - written)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    write_rate = price.input * CACHE_WRITE_MULTIPLIER if price.cache_write is None else price.cache_write
    total = (
        fresh * price.input
        + cached * cached_rate
        + (written - written_1h) * write_rate
        + written_1h * price.input * CACHE_WRITE_1H_MULTIPLIER
        + max(0, usage.completion_tokens) * price.output
    )
    return total / 1_000_000


def worst_case_cost(price: Price | None, input_tokens: int, max_output_tokens: int) -> float:
    """USD if every input token is fresh and the model writes ``max_output_tokens``."""
    if price is None:
        return 0.0
    return (max(0, input_tokens) * price.input + max(0, max_output_tokens) * price.output) / 1_000_000


def worst_case_output_tokens(req: ChatRequest, model_cfg: ModelConfig | None, input_tokens: int) -> int:
    """The most output a request can produce: its max_tokens (capped by the model's), else the model's
    cap, else what the context window leaves, else :data:`DEFAULT_MAX_OUTPUT_TOKENS`; times ``n``."""
    cap = model_cfg.max_output_tokens if model_cfg else None
    window = model_cfg.context_window if model_cfg else None
    if req.max_tokens is not None:
        out = min(req.max_tokens, cap) if cap else req.max_tokens
    elif cap:
        out = cap
    elif window:
        out = max(1, window - input_tokens)
    else:
        out = DEFAULT_MAX_OUTPUT_TOKENS
    return max(0, out) * max(1, req.n or 1)


# -- token estimates -------------------------------------------------------------------------

#: Average characters per token of English prose and code for current BPE tokenizers
#: (cl100k/o200k, Claude's, Gemini's are all close to 4; code and JSON run nearer 3.5).
#: We use 3.6 to err on the high side: the estimate feeds budget reservations.
CHARS_PER_TOKEN = 3.6
#: CJK ideographs, kana and hangul: about one token per character.
CJK_TOKENS_PER_CHAR = 1.0
#: Other non-ASCII letters (accented Latin, Cyrillic, Greek, ...): about two characters a token.
OTHER_CHARS_PER_TOKEN = 2.0
#: Per-message framing (role, separators) and reply priming, as in OpenAI's chat format.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REPLY = 3
#: An image, whatever its size (high detail: OpenAI's 1024x1024 tile count is 765, Claude's
#: largest is ~1,600); ``detail: low`` is OpenAI's fixed 85.
TOKENS_PER_IMAGE = 1600
TOKENS_PER_LOW_DETAIL_IMAGE = 85


def _is_cjk(cp: int) -> bool:
    return 0x2E80 <= cp <= 0x9FFF or 0xAC00 <= cp <= 0xD7AF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x2FFFF


def estimate_text_tokens(text: str) -> int:
    """Tokens of a text by character class; never less than one token per whitespace-separated word."""
    if not text:
        return 0
    if text.isascii():
        return max(math.ceil(len(text) / CHARS_PER_TOKEN), len(text.split()))
    ascii_chars = cjk = other = 0
    for ch in text:
        cp = ord(ch)
        if cp < 128:
            ascii_chars += 1
        elif _is_cjk(cp):
            cjk += 1
        else:
            other += 1
    estimate = ascii_chars / CHARS_PER_TOKEN + cjk * CJK_TOKENS_PER_CHAR + other / OTHER_CHARS_PER_TOKEN
    return max(math.ceil(estimate), len(text.split()))


def _json_tokens(value: Any) -> int:
    return estimate_text_tokens(orjson.dumps(value).decode())


def estimate_embedding_input_tokens(req: EmbeddingRequest) -> int:
    """An estimate of an embedding request's input tokens (texts by character class, token ids as given)."""
    return sum(estimate_text_tokens(x) if isinstance(x, str) else len(x) for x in req.input)


def estimate_input_tokens(req: ChatRequest) -> int:
    """An estimate of a chat request's input tokens: text, images, tool calls and definitions, framing."""
    total = TOKENS_PER_REPLY
    for m in req.messages:
        total += TOKENS_PER_MESSAGE
        if m.name:
            total += 1 + estimate_text_tokens(m.name)
        if isinstance(m.content, str):
            total += estimate_text_tokens(m.content)
        elif m.content:
            for part in m.content:
                if part.type == "image":
                    total += TOKENS_PER_LOW_DETAIL_IMAGE if part.detail == "low" else TOKENS_PER_IMAGE
                else:
                    total += estimate_text_tokens(part.text)
        for call in m.tool_calls or ():
            total += 3 + estimate_text_tokens(call.name) + estimate_text_tokens(call.arguments)
        if m.refusal:
            total += estimate_text_tokens(m.refusal)
    if req.tools:
        total += 8
        for tool in req.tools:
            total += 6 + estimate_text_tokens(tool.name) + estimate_text_tokens(tool.description or "")
            if tool.parameters:
                total += _json_tokens(tool.parameters)
    if req.response_format is not None and req.response_format.schema:
        total += _json_tokens(req.response_format.schema)
    return total
