"""The exact-match response cache: same target, same messages, same parameters -> same answer.

:func:`cache_key` hashes a normalised request (sha256): the target, the organisation (tenants never
share entries), the messages and every parameter that changes the output; never ``stream``,
``stream_options``, ``user`` or modelyard's own options, so a streamed request can be answered from a
non-streamed one and vice versa (:func:`replay_chunks` turns a cached response into a stream).

:class:`MemoryCache` is a per-process LRU with TTLs;
:class:`~modelyard.cache.redis.RedisCache` shares entries between replicas (``SET ... PX``;
in its own module, so that only a gateway with the Redis backend imports redis-py).  A cache is an
optimisation: Redis errors are logged and read as a miss.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import orjson

from modelyard.config.schema import CacheConfig
from modelyard.errors import ConfigError
from modelyard.storage.redis_errors import is_redis_url
from modelyard.types import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Choice,
    ChoiceDelta,
    ContentPart,
    ForcedTool,
    Message,
    ReasoningParts,
    ToolCall,
    ToolCallDelta,
    Usage,
)

__all__ = [
    "CachedResponse",
    "MemoryCache",
    "ResponseCache",
    "assemble_response",
    "cache_key",
    "make_cache",
    "replay_chunks",
    "response_from_data",
    "response_to_data",
]

#: bump when the key's normal form changes, so old entries are never read with a new meaning
KEY_VERSION = 1


def _num(value: float | None) -> float | None:
    return None if value is None else float(value)


def _message(m: Message) -> dict[str, Any]:
    content: Any = m.content
    if isinstance(content, list):
        content = [asdict(p) for p in content]
    return {
        "role": m.role,
        "content": content,
        "name": m.name,
        "tool_calls": [asdict(c) for c in m.tool_calls] if m.tool_calls else None,
        "tool_call_id": m.tool_call_id,
        "refusal": m.refusal,
        "reasoning": m.reasoning,
        "reasoning_blocks": m.reasoning_blocks,
    }


def cache_key(req: ChatRequest, target: str, org_id: str | None) -> str:
    """The sha256 of everything that determines the answer; stable across JSON key order."""
    choice = req.tool_choice
    payload = {
        "v": KEY_VERSION,
        "target": target,
        "org": org_id,
        "messages": [_message(m) for m in req.messages],
        "temperature": _num(req.temperature),
        "top_p": _num(req.top_p),
        "max_tokens": req.max_tokens,
        "n": req.n,
        "stop": sorted(req.stop) if req.stop else None,
        "seed": req.seed,
        "presence_penalty": _num(req.presence_penalty),
        "frequency_penalty": _num(req.frequency_penalty),
        "logprobs": req.logprobs,
        "top_logprobs": req.top_logprobs,
        "tools": [asdict(t) for t in req.tools] if req.tools else None,
        "tool_choice": {"function": choice.name} if isinstance(choice, ForcedTool) else choice,
        "parallel_tool_calls": req.parallel_tool_calls,
        "response_format": asdict(req.response_format) if req.response_format else None,
        "extra": req.extra,
    }
    blob = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(blob).hexdigest()


# -- cached responses --------------------------------------------------------------------------


def response_to_data(resp: ChatResponse) -> dict[str, Any]:
    """A JSON-able form of a response that :func:`response_from_data` turns back into an equal one."""
    return {
        "id": resp.id,
        "created": resp.created,
        "model": resp.model,
        "choices": [
            {
                "index": c.index,
                "message": _message(c.message),
                "finish_reason": c.finish_reason,
                "logprobs": c.logprobs,
            }
            for c in resp.choices
        ],
        "usage": asdict(resp.usage) if resp.usage is not None else None,
        "system_fingerprint": resp.system_fingerprint,
    }


def _message_from(d: dict[str, Any]) -> Message:
    content = d.get("content")
    if isinstance(content, list):
        content = [ContentPart(**p) for p in content]
    calls = d.get("tool_calls")
    return Message(
        role=d["role"],
        content=content,
        name=d.get("name"),
        tool_calls=[ToolCall(**c) for c in calls] if calls else None,
        tool_call_id=d.get("tool_call_id"),
        refusal=d.get("refusal"),
        reasoning=d.get("reasoning"),
        reasoning_blocks=d.get("reasoning_blocks"),
    )


_USAGE_FIELDS = frozenset(f.name for f in fields(Usage))


def response_from_data(data: dict[str, Any]) -> ChatResponse:
    usage = data.get("usage")
    return ChatResponse(
        id=data["id"],
        created=int(data["created"]),
        model=data["model"],
        choices=[
            Choice(
                index=int(c["index"]),
                message=_message_from(c["message"]),
                finish_reason=c.get("finish_reason"),
                logprobs=c.get("logprobs"),
            )
            for c in data["choices"]
        ],
        usage=Usage(**{k: v for k, v in usage.items() if k in _USAGE_FIELDS}) if usage is not None else None,
        system_fingerprint=data.get("system_fingerprint"),
    )


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """What a hit needs: the response (JSON-able) and the configured name of the model that answered."""

    model: str
    response: dict[str, Any]
    #: when it was stored (Unix time), to report the entry's age
    stored_at: float = 0.0

    @classmethod
    def of(cls, resp: ChatResponse, model: str) -> CachedResponse:
        return cls(model=model, response=response_to_data(resp), stored_at=time.time())

    def to_response(self) -> ChatResponse:
        return response_from_data(self.response)

    def to_bytes(self) -> bytes:
        return orjson.dumps({"model": self.model, "response": self.response, "stored_at": self.stored_at})

    @classmethod
    def from_bytes(cls, blob: bytes) -> CachedResponse:
        data = orjson.loads(blob)
        return cls(model=data["model"], response=data["response"], stored_at=float(data.get("stored_at", 0.0)))


class ResponseCache(Protocol):
    async def get(self, key: str) -> CachedResponse | None: ...

    async def set(self, key: str, value: CachedResponse, ttl_s: float) -> None: ...

    async def aclose(self) -> None: ...


class MemoryCache:
    """A per-process LRU of at most ``max_entries``; each entry expires after its own TTL."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        #: key -> (monotonic deadline, serialised entry); stored serialised so callers never share state
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> CachedResponse | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[0] <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return CachedResponse.from_bytes(hit[1])

    async def set(self, key: str, value: CachedResponse, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        self._entries[key] = (time.monotonic() + ttl_s, value.to_bytes())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def aclose(self) -> None:
        self._entries.clear()


def make_cache(cfg: CacheConfig, state_url: str) -> ResponseCache:
    """The cache ``cache.backend`` asks for; ``redis`` uses the ``state`` URL."""
    if cfg.backend == "memory":
        return MemoryCache(cfg.max_entries)
    if not is_redis_url(state_url):
        raise ConfigError("the redis cache backend needs `state` to be a redis:// URL", path="cache.backend")
    # imported here: only a shared-state gateway pays for redis-py
    from modelyard.cache.redis import RedisCache
    from modelyard.storage.redis import redis_client

    return RedisCache(redis_client(state_url), url=state_url, owns_client=True)


# -- replaying a cached response as a stream -----------------------------------------------------

_WORDS = re.compile(r"\S*\s*")
#: words per replayed content chunk, characters per replayed tool-argument chunk
WORDS_PER_CHUNK = 3
ARGS_PER_CHUNK = 24


def _pieces(text: str) -> list[str]:
    words = [w for w in _WORDS.findall(text) if w]
    return ["".join(words[i : i + WORDS_PER_CHUNK]) for i in range(0, len(words), WORDS_PER_CHUNK)]


def replay_chunks(resp: ChatResponse) -> list[ChatChunk]:
    """The chunks a streaming upstream would have sent for ``resp``: per choice a role chunk, the
    content in pieces, tool-call deltas (id and name first, then the arguments in pieces), a finish
    chunk; then a usage chunk (no choices) when the response has usage."""

    def chunk(delta: ChoiceDelta) -> ChatChunk:
        return ChatChunk(resp.id, resp.created, resp.model, [delta], system_fingerprint=resp.system_fingerprint)

    out: list[ChatChunk] = []
    for c in resp.choices:
        m = c.message
        out.append(chunk(ChoiceDelta(index=c.index, role="assistant", content="")))
        out += [chunk(d) for d in _reasoning_deltas(c.index, m)]
        text = m.text()
        pieces = _pieces(text)
        for n, piece in enumerate(pieces):
            out.append(chunk(ChoiceDelta(index=c.index, content=piece, logprobs=c.logprobs if n == 0 else None)))
        if m.refusal:
            out.append(chunk(ChoiceDelta(index=c.index, refusal=m.refusal)))
        for i, call in enumerate(m.tool_calls or ()):
            head = ToolCallDelta(index=i, id=call.id, name=call.name, arguments="")
            out.append(chunk(ChoiceDelta(index=c.index, tool_calls=[head])))
            args = call.arguments
            for start in range(0, len(args), ARGS_PER_CHUNK):
                part = ToolCallDelta(index=i, arguments=args[start : start + ARGS_PER_CHUNK])
                out.append(chunk(ChoiceDelta(index=c.index, tool_calls=[part])))
        logprobs = c.logprobs if not pieces else None
        out.append(chunk(ChoiceDelta(index=c.index, finish_reason=c.finish_reason, logprobs=logprobs)))
    if resp.usage is not None:
        out.append(ChatChunk(resp.id, resp.created, resp.model, [], usage=resp.usage))
    return out


def _reasoning_deltas(index: int, m: Message) -> list[ChoiceDelta]:
    """The reasoning of an answer as a stream has it: per signed block its text in pieces and its
    signature (or the redacted block whole), else the plain reasoning text in pieces."""
    out: list[ChoiceDelta] = []
    for block in m.reasoning_blocks or ():
        if block.get("type") == "redacted_thinking":
            out.append(ChoiceDelta(index=index, redacted_reasoning=str(block.get("data") or "")))
            continue
        out += [ChoiceDelta(index=index, reasoning=p) for p in _pieces(str(block.get("thinking") or ""))]
        out.append(ChoiceDelta(index=index, reasoning_signature=str(block.get("signature") or "")))
    if not m.reasoning_blocks and m.reasoning:
        out += [ChoiceDelta(index=index, reasoning=p) for p in _pieces(m.reasoning)]
    return out


def assemble_response(chunks: list[ChatChunk], usage: Usage | None) -> ChatResponse | None:
    """The complete response a finished stream amounts to (the inverse of :func:`replay_chunks`).

    None when the chunks do not make a complete answer (a choice without a finish reason).
    """
    if not chunks:
        return None
    texts: dict[int, list[str]] = {}
    refusals: dict[int, list[str]] = {}
    calls: dict[int, dict[int, ToolCall]] = {}
    finish: dict[int, Any] = {}
    reasoning: dict[int, ReasoningParts] = {}
    for ch in chunks:
        for d in ch.choices:
            if d.reasoning or d.reasoning_signature is not None or d.redacted_reasoning:
                reasoning.setdefault(d.index, ReasoningParts()).feed(d)
            if d.content:
                texts.setdefault(d.index, []).append(d.content)
            if d.refusal:
                refusals.setdefault(d.index, []).append(d.refusal)
            for t in d.tool_calls or ():
                slot = calls.setdefault(d.index, {})
                call = slot.get(t.index)
                if call is None:
                    call = slot[t.index] = ToolCall(id=t.id or "", name=t.name or "", arguments="")
                if t.id:
                    call.id = t.id
                if t.name:
                    call.name = t.name
                call.arguments += t.arguments or ""
            if d.finish_reason:
                finish[d.index] = d.finish_reason
    indexes = sorted(set(texts) | set(calls) | set(finish) | set(refusals))
    if not indexes or any(i not in finish for i in indexes):
        return None
    first = chunks[0]
    choices = [
        Choice(
            index=i,
            message=Message(
                role="assistant",
                content="".join(texts[i]) if i in texts else (None if i in calls else ""),
                tool_calls=[calls[i][k] for k in sorted(calls[i])] if i in calls else None,
                refusal="".join(refusals[i]) if i in refusals else None,
                reasoning="".join(reasoning[i].texts) or None if i in reasoning else None,
                reasoning_blocks=reasoning[i].blocks or None if i in reasoning else None,
            ),
            finish_reason=finish[i],
        )
        for i in indexes
    ]
    return ChatResponse(first.id, first.created, first.model, choices, usage, first.system_fingerprint)
