"""The response cache: key normalisation (hypothesis), memory LRU/TTL, Redis round trip/TTL, stream replay."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.cache.base import (
    CachedResponse,
    MemoryCache,
    cache_key,
    make_cache,
    replay_chunks,
)
from modelyard.cache.redis import RedisCache
from modelyard.config.schema import CacheConfig
from modelyard.errors import ConfigError
from modelyard.storage.redis import redis_client
from modelyard.types import ChatChunk, ChatResponse, Choice, Message, ToolCall, Usage
from modelyard.wire.openai import encode_chunk, parse_chat_request

# -- keys -----------------------------------------------------------------------------------------


def key_of(body: dict[str, Any], target: str = "route-a", org: str | None = "org1") -> str:
    return cache_key(parse_chat_request(body), target, org)


def reorder(value: Any) -> Any:
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: reorder(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reorder(v) for v in value]
    return value


json_leaf = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=8)
json_value = st.recursive(
    json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant"]), "content": st.text(min_size=1, max_size=30)}
)
tool = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {
                "name": st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
                "parameters": st.fixed_dictionaries(
                    {
                        "type": st.just("object"),
                        "properties": st.dictionaries(
                            st.text(min_size=1, max_size=5), st.just({"type": "string"}), max_size=3
                        ),
                    }
                ),
            }
        ),
    }
)
bodies = st.fixed_dictionaries(
    {"model": st.just("m"), "messages": st.lists(message, min_size=1, max_size=4)},
    optional={
        "temperature": st.floats(0, 2),
        "top_p": st.floats(0, 1),
        "max_tokens": st.integers(1, 4096),
        "seed": st.integers(0, 2**31),
        "stop": st.lists(st.text(min_size=1, max_size=4), max_size=3),
        "tools": st.lists(tool, min_size=1, max_size=2),
        "response_format": st.just(
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "r",
                    "schema": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}},
                },
            }
        ),
        "x_extra": json_value,
        "metadata": st.dictionaries(st.text(max_size=5), json_leaf, max_size=3),
    },
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_key_ignores_json_key_order(body: dict[str, Any]) -> None:
    assert key_of(body) == key_of(reorder(body))


@settings(max_examples=100)
@given(bodies, st.booleans(), st.booleans(), st.text(max_size=8), st.booleans())
def test_key_ignores_stream_user_and_modelyard_options(
    body: dict[str, Any], stream: bool, usage: bool, user: str, fallback: bool
) -> None:
    other = {**body, "stream": stream, "stream_options": {"include_usage": usage}, "user": user}
    other["modelyard"] = {"fallback": fallback}
    assert key_of(body) == key_of(other)


BASE: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "What is 2+2?"}]}
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}

CHANGES: list[tuple[str, Any]] = [
    ("messages", [{"role": "user", "content": "What is 2+3?"}]),
    ("messages", [{"role": "system", "content": "What is 2+2?"}]),
    ("messages", [{"role": "user", "content": "What is 2+2?", "name": "bob"}]),
    ("temperature", 0.5),
    ("top_p", 0.9),
    ("max_tokens", 10),
    ("max_completion_tokens", 10),
    ("n", 2),
    ("stop", ["\n"]),
    ("seed", 7),
    ("presence_penalty", 0.5),
    ("frequency_penalty", 0.5),
    ("logprobs", True),
    ("top_logprobs", 2),
    ("tools", [WEATHER]),
    ("tool_choice", "none"),
    ("tool_choice", {"type": "function", "function": {"name": "weather"}}),
    ("parallel_tool_calls", False),
    ("response_format", {"type": "json_object"}),
    ("reasoning_effort", "high"),  # an extra field modelyard passes through
    ("logit_bias", {"50256": -100}),
]


@pytest.mark.parametrize(("field", "value"), CHANGES, ids=[f"{f}={v!r}"[:40] for f, v in CHANGES])
def test_every_output_changing_parameter_changes_the_key(field: str, value: Any) -> None:
    assert key_of(BASE) != key_of({**BASE, field: value})


def test_target_and_organisation_are_part_of_the_key() -> None:
    keys = {key_of(BASE), key_of(BASE, target="route-b"), key_of(BASE, org=None), key_of(BASE, org="org2")}
    assert len(keys) == 4


def test_equivalent_spellings_share_a_key() -> None:
    assert key_of({**BASE, "temperature": 1}) == key_of({**BASE, "temperature": 1.0})
    assert key_of({**BASE, "max_tokens": 9}) == key_of({**BASE, "max_completion_tokens": 9})
    assert key_of({**BASE, "stop": ["a", "b"]}) == key_of({**BASE, "stop": ["b", "a"]})
    assert key_of({**BASE, "stop": "a"}) == key_of({**BASE, "stop": ["a"]})
    assert len(key_of(BASE)) == 64  # sha256 hex


# -- cached responses and the caches --------------------------------------------------------------


def response(text: str | None = "Hello there, this is a cached answer.", **kw: Any) -> ChatResponse:
    calls = kw.pop("tool_calls", None)
    msg = Message("assistant", text, tool_calls=calls)
    finish = "tool_calls" if calls else "stop"
    usage = Usage(prompt_tokens=12, completion_tokens=8, total_tokens=20, cached_tokens=4)
    return ChatResponse("chatcmpl-1", 1700000000, "gpt-4o-2024-08-06", [Choice(0, msg, finish)], usage, **kw)  # type: ignore[arg-type]


def test_cached_response_round_trips() -> None:
    resp = response("sure", tool_calls=[ToolCall("c1", "weather", '{"city":"Paris"}')], system_fingerprint="fp_1")
    resp.choices[0].logprobs = {"content": [{"token": "sure", "logprob": -0.1}]}
    entry = CachedResponse.of(resp, "gpt")
    again = CachedResponse.from_bytes(entry.to_bytes())
    assert again == entry and again.model == "gpt" and again.stored_at > 0
    assert again.to_response() == resp


async def test_memory_cache_evicts_least_recently_used() -> None:
    cache = MemoryCache(max_entries=2)
    entry = CachedResponse.of(response(), "gpt")
    await cache.set("a", entry, 60)
    await cache.set("b", entry, 60)
    assert await cache.get("a") == entry  # a is now the most recently used
    await cache.set("c", entry, 60)
    assert await cache.get("b") is None
    assert await cache.get("a") == entry and await cache.get("c") == entry
    assert len(cache) == 2


async def test_memory_cache_entries_expire() -> None:
    cache = MemoryCache()
    entry = CachedResponse.of(response(), "gpt")
    await cache.set("short", entry, 0.05)
    await cache.set("long", entry, 60)
    await cache.set("never", entry, 0)  # a zero TTL stores nothing
    assert await cache.get("short") == entry
    await asyncio.sleep(0.1)
    assert await cache.get("short") is None
    assert await cache.get("long") == entry and await cache.get("never") is None


async def test_memory_cache_hands_out_copies() -> None:
    cache = MemoryCache()
    await cache.set("k", CachedResponse.of(response(), "gpt"), 60)
    hit = await cache.get("k")
    assert hit is not None
    hit.response["choices"].clear()
    again = await cache.get("k")
    assert again is not None and again.response["choices"]


async def test_redis_cache_round_trip_and_ttl(redis_url: str, redis_prefix: str) -> None:
    cache = RedisCache(redis_client(redis_url), url=redis_url, key_prefix=redis_prefix, owns_client=True)
    raw = redis.Redis.from_url(redis_url)
    try:
        entry = CachedResponse.of(response(), "gpt")
        assert await cache.get("k") is None
        await cache.set("k", entry, 30)
        assert await cache.get("k") == entry
        assert 0 < raw.pttl(f"{redis_prefix}k") <= 30_000
        await cache.set("brief", entry, 0.1)
        await asyncio.sleep(0.25)
        assert await cache.get("brief") is None
        raw.set(f"{redis_prefix}junk", b"not json")
        assert await cache.get("junk") is None
    finally:
        raw.close()
        await cache.aclose()


async def test_redis_cache_down_is_a_miss_not_an_error() -> None:
    cache = make_cache(CacheConfig(backend="redis"), "redis://:pw@127.0.0.1:1/0")
    try:
        await cache.set("k", CachedResponse.of(response(), "gpt"), 60)
        assert await cache.get("k") is None
    finally:
        await cache.aclose()


def test_make_cache() -> None:
    assert isinstance(make_cache(CacheConfig(), "memory"), MemoryCache)
    small = make_cache(CacheConfig(max_entries=5), "memory")
    assert isinstance(small, MemoryCache) and small.max_entries == 5
    with pytest.raises(ConfigError, match=r"cache\.backend"):
        make_cache(CacheConfig(backend="redis"), "memory")


# -- replay -----------------------------------------------------------------------------------------


def reassemble(chunks: list[ChatChunk]) -> dict[str, Any]:
    content: dict[int, str] = defaultdict(str)
    tools: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
    out: dict[str, Any] = {"content": content, "tools": tools, "finish": {}, "roles": {}, "usage": None}
    for ch in chunks:
        encode_chunk(ch, "gpt", chunk_id=ch.id, created=ch.created)  # every chunk is servable
        if not ch.choices:
            out["usage"] = ch.usage
        for d in ch.choices:
            if d.role:
                out["roles"][d.index] = d.role
            content[d.index] += d.content or ""
            for t in d.tool_calls or []:
                slot = tools[d.index].setdefault(t.index, {"id": None, "name": None, "arguments": ""})
                slot["id"] = t.id or slot["id"]
                slot["name"] = t.name or slot["name"]
                slot["arguments"] += t.arguments or ""
            if d.finish_reason:
                out["finish"][d.index] = d.finish_reason
    return out


def test_replay_reassembles_content_tool_calls_and_usage() -> None:
    calls = [ToolCall("c1", "weather", '{"city": "Paris", "unit": "celsius", "days": 3}'), ToolCall("c2", "time", "{}")]
    resp = response("Let me check the weather and the time for you.", tool_calls=calls)
    chunks = replay_chunks(resp)
    assert chunks[0].choices[0].role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage == resp.usage
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert sum(1 for c in chunks if c.choices and c.choices[0].content) > 2  # really streamed in pieces
    got = reassemble(chunks)
    assert got["content"][0] == resp.choices[0].message.content
    assert [(t["id"], t["name"], t["arguments"]) for _, t in sorted(got["tools"][0].items())] == [
        (c.id, c.name, c.arguments) for c in calls
    ]
    assert all(c.id == resp.id and c.model == resp.model for c in chunks)


def test_replay_of_several_choices_without_usage() -> None:
    resp = ChatResponse(
        "x",
        1,
        "m",
        [Choice(0, Message("assistant", "one two"), "stop"), Choice(1, Message("assistant", None), "length")],
    )
    got = reassemble(replay_chunks(resp))
    assert dict(got["content"]) == {0: "one two", 1: ""}
    assert got["finish"] == {0: "stop", 1: "length"} and got["roles"] == {0: "assistant", 1: "assistant"}
    assert got["usage"] is None


@given(st.text(max_size=300))
def test_replay_preserves_any_text_exactly(text: str) -> None:
    got = reassemble(replay_chunks(response(text)))
    assert got["content"][0] == text
