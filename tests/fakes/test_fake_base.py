"""The machinery every fake provider shares (``modelyard.testing._fake_base``).

Deterministic answers and embeddings are tested as pure functions; the server side (faults,
attempts, control endpoint, stream faults, thread lifecycle) through a minimal wire format
defined here, over real loopback HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import math
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from pydantic import BaseModel

from modelyard.testing._fake_base import (
    FakeServer,
    Fault,
    Prompt,
    Reply,
    count_tokens,
    embedding_base64,
    fake_embedding,
    make_reply,
)

# =====================================================================================
# a tiny JSON Schema checker for the subset structured outputs use
# =====================================================================================


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    for part in ref.lstrip("#").split("/"):
        if part:
            node = node[part]
    assert isinstance(node, dict)
    return node


_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def is_valid(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> bool:
    root = schema if root is None else root
    if "$ref" in schema:
        return is_valid(value, _resolve(schema["$ref"], root), root)
    if "anyOf" in schema and not any(is_valid(value, s, root) for s in schema["anyOf"]):
        return False
    if "oneOf" in schema and sum(is_valid(value, s, root) for s in schema["oneOf"]) != 1:
        return False
    if "allOf" in schema and not all(is_valid(value, s, root) for s in schema["allOf"]):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if "const" in schema and value != schema["const"]:
        return False
    kinds = schema.get("type")
    if kinds is not None:
        kinds = kinds if isinstance(kinds, list) else [kinds]
        if not any(_TYPES[k](value) for k in kinds):
            return False
    if isinstance(value, dict):
        props = schema.get("properties", {})
        if any(k not in value for k in schema.get("required", [])):
            return False
        if schema.get("additionalProperties") is False and any(k not in props for k in value):
            return False
        if not all(is_valid(v, props[k], root) for k, v in value.items() if k in props):
            return False
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            return False
        if "items" in schema and not all(is_valid(v, schema["items"], root) for v in value):
            return False
    return True


def test_the_checker_itself_rejects_invalid_instances() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"anyOf": [{"type": "string"}, {"type": "null"}]}},
        "required": ["a", "b"],
        "additionalProperties": False,
    }
    assert is_valid({"a": 1, "b": None}, schema)
    assert not is_valid({"a": 1}, schema)
    assert not is_valid({"a": "1", "b": "x"}, schema)
    assert not is_valid({"a": 1, "b": 2}, schema)
    assert not is_valid({"a": 1, "b": "x", "c": 0}, schema)
    assert not is_valid({"a": True, "b": "x"}, schema)


# =====================================================================================
# make_reply
# =====================================================================================

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}


def prompt(text: str = "hello there", **kw: Any) -> Prompt:
    kw.setdefault("message_count", 1)
    return Prompt(model="m1", last_user_text=text, all_text=kw.pop("all_text", text), **kw)


def test_plain_text_reply() -> None:
    r = make_reply(prompt("hello there"))
    assert r.text == "m1 says: hello there"
    assert r.tool_calls == []
    assert r.finish == "stop"
    assert r.input_tokens == 2 + 3
    assert r.output_tokens == count_tokens(r.text) == 4
    assert r.cached_tokens == 0


def test_input_tokens_count_words_messages_and_images() -> None:
    r = make_reply(prompt("a b c", all_text="sys words a b c", message_count=2, image_count=2))
    assert r.input_tokens == 5 + 2 * 3 + 2 * 85


def test_same_prompt_same_reply() -> None:
    assert make_reply(prompt("x y")) == make_reply(prompt("x y"))


@pytest.mark.parametrize("choice", ["auto", "required"])
def test_tool_call_when_tools_are_offered(choice: str) -> None:
    p = prompt("weather?", tools=[("get_weather", WEATHER_SCHEMA), ("ping", {})], tool_choice=choice)
    r = make_reply(p)
    assert r.text is None
    assert r.finish == "tool_calls"
    assert len(r.tool_calls) == 1
    call_id, name, args = r.tool_calls[0]
    assert name == "get_weather"  # the first tool
    assert call_id.startswith("call_") and len(call_id) == len("call_") + 24
    assert args == {"city": "example city", "unit": "celsius"}
    assert is_valid(args, WEATHER_SCHEMA)
    assert r.output_tokens > 0


def test_forced_tool_choice_calls_that_tool() -> None:
    p = prompt("x", tools=[("get_weather", WEATHER_SCHEMA), ("ping", {"type": "object"})], tool_choice="ping")
    r = make_reply(p)
    assert [(name, args) for _, name, args in r.tool_calls] == [("ping", {})]


def test_tool_choice_none_gives_text() -> None:
    r = make_reply(prompt("x", tools=[("get_weather", WEATHER_SCHEMA)], tool_choice="none"))
    assert r.tool_calls == [] and r.text == "m1 says: x" and r.finish == "stop"


def test_text_after_a_tool_result() -> None:
    r = make_reply(prompt("weather?", tools=[("get_weather", WEATHER_SCHEMA)], has_tool_result=True))
    assert r.tool_calls == []
    assert r.text == "m1 says: weather?"
    assert r.finish == "stop"


def test_tool_call_ids_are_deterministic_per_prompt() -> None:
    tools = [("get_weather", WEATHER_SCHEMA)]
    a = make_reply(prompt("one", tools=tools)).tool_calls[0][0]
    assert a == make_reply(prompt("one", tools=tools)).tool_calls[0][0]
    assert a != make_reply(prompt("two", tools=tools)).tool_calls[0][0]


def test_json_mode() -> None:
    r = make_reply(prompt("the question", json_mode=True))
    assert r.text is not None
    assert orjson.loads(r.text) == {"model": "m1", "answer": "the question"}
    assert r.finish == "stop"


SCHEMAS: dict[str, dict[str, Any]] = {
    "primitives": {
        "type": "object",
        "properties": {
            "s": {"type": "string"},
            "i": {"type": "integer"},
            "n": {"type": "number"},
            "b": {"type": "boolean"},
            "z": {"type": "null"},
        },
        "required": ["s", "i", "n", "b", "z"],
        "additionalProperties": False,
    },
    "nested": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                    "required": ["sku", "qty"],
                    "additionalProperties": False,
                },
            },
            "meta": {"type": "object", "properties": {"k": {"type": "string"}}, "required": ["k"]},
        },
        "required": ["items", "meta"],
    },
    "enum-const": {
        "type": "object",
        "properties": {
            "color": {"enum": ["red", "green"]},
            "version": {"const": 2},
            "lvl": {"type": "integer", "enum": [3, 4]},
        },
        "required": ["color", "version", "lvl"],
    },
    "type-lists": {
        "type": "object",
        "properties": {"a": {"type": ["string", "null"]}, "b": {"type": ["null", "integer"]}},
        "required": ["a", "b"],
    },
    "optional-props": {
        "type": "object",
        "properties": {"need": {"type": "string"}, "maybe": {"type": "integer"}},
        "required": ["need"],
        "additionalProperties": False,
    },
    "refs-and-nullables": {
        "$defs": {
            "Address": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "zip": {"anyOf": [{"type": "integer"}, {"type": "null"}]}},
                "required": ["city", "zip"],
                "additionalProperties": False,
            }
        },
        "type": "object",
        "properties": {
            "home": {"$ref": "#/$defs/Address"},
            "work": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]},
            "past": {"type": "array", "items": {"$ref": "#/$defs/Address"}},
        },
        "required": ["home", "work", "past"],
        "additionalProperties": False,
    },
    "allOf": {
        "definitions": {"Base": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}},
        "allOf": [{"$ref": "#/definitions/Base"}, {"properties": {"name": {"type": "string"}}, "required": ["name"]}],
    },
    "oneOf": {
        "type": "object",
        "properties": {"v": {"oneOf": [{"type": "integer"}, {"type": "string"}]}},
        "required": ["v"],
    },
    "recursive": {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "label": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                    "parent": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
                },
                "required": ["label", "children", "parent"],
            }
        },
        "$ref": "#/$defs/Node",
    },
    "top-level-array": {"type": "array", "items": {"type": "number"}},
}


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_json_schema_instance_is_valid(name: str) -> None:
    schema = SCHEMAS[name]
    r = make_reply(prompt("x", json_schema=schema))
    assert r.text is not None and r.finish == "stop"
    assert is_valid(orjson.loads(r.text), schema), r.text


@pytest.mark.parametrize("name", [n for n in SCHEMAS if n != "top-level-array"])  # tool parameters are objects
def test_tool_arguments_are_valid_for_the_tool_schema(name: str) -> None:
    schema = SCHEMAS[name]
    (_, _, args) = make_reply(prompt("x", tools=[("t", schema)])).tool_calls[0]
    assert is_valid(args, schema), args


class Color(enum.Enum):
    red = "red"
    blue = "blue"


class Part(BaseModel):
    name: str
    weight: float | None


class Widget(BaseModel):
    id: int
    color: Color
    tags: list[str]
    parts: list[Part]
    main: Part
    note: str | None = None
    active: bool = True


def test_json_schema_instance_validates_with_pydantic() -> None:
    schema = Widget.model_json_schema()
    r = make_reply(prompt("x", json_schema=schema))
    assert r.text is not None
    w = Widget.model_validate_json(r.text)
    assert w.color is Color.red and isinstance(w.main, Part)


def test_stop_sequence_cuts_the_text() -> None:
    r = make_reply(prompt("alpha beta gamma", stop=[" beta"]))
    assert r.text == "m1 says: alpha"
    assert r.finish == "stop"
    assert r.output_tokens == 3


def test_earliest_stop_sequence_wins_and_empty_ones_are_ignored() -> None:
    r = make_reply(prompt("one two three four", stop=["", "four", "two"]))
    assert r.text == "m1 says: one "


def test_absent_stop_sequence_changes_nothing() -> None:
    assert make_reply(prompt("a b", stop=["zzz"])).text == "m1 says: a b"


def test_max_tokens_gives_length() -> None:
    r = make_reply(prompt("one two three four", max_tokens=3))
    assert r.text == "m1 says: one"
    assert r.finish == "length"
    assert r.output_tokens == 3


def test_max_tokens_exactly_enough_is_stop() -> None:
    r = make_reply(prompt("one two", max_tokens=4))
    assert r.text == "m1 says: one two" and r.finish == "stop"


def long_prompt(words: int) -> Prompt:
    text = " ".join(f"w{i}" for i in range(words))
    return prompt(text, message_count=1)


@pytest.mark.parametrize(("words", "cached"), [(1021, 1024), (1200, 1152), (2000, 1920)])
def test_cached_tokens_when_seen_before_and_long(words: int, cached: int) -> None:
    p = long_prompt(words)
    assert make_reply(p).cached_tokens == 0
    r = make_reply(p, seen_before=True)
    assert r.input_tokens == words + 3
    assert r.cached_tokens == cached
    assert r.cached_tokens % 128 == 0 and r.cached_tokens <= r.input_tokens


def test_no_cached_tokens_below_1024() -> None:
    r = make_reply(long_prompt(1020), seen_before=True)
    assert r.input_tokens == 1023
    assert r.cached_tokens == 0


def test_pieces_rebuild_the_text() -> None:
    r = Reply("m1 says:  two  spaces", [], "stop", 1, 1)
    assert "".join(r.pieces()) == r.text
    assert r.pieces()[:2] == ["m1", " says:"]
    assert Reply(None, [], "tool_calls", 1, 1).pieces() == []
    assert Reply("", [], "stop", 1, 0).pieces() == []


# =====================================================================================
# fake_embedding
# =====================================================================================


def test_fake_embedding_is_deterministic() -> None:
    assert fake_embedding("hello") == fake_embedding("hello")
    assert fake_embedding("hello") != fake_embedding("hello!")


@pytest.mark.parametrize("dims", [1, 8, 16, 100, 1536])
def test_fake_embedding_is_a_unit_vector_of_the_asked_size(dims: int) -> None:
    v = fake_embedding("some text", dims)
    assert len(v) == dims
    assert all(isinstance(x, float) and -1.0 <= x <= 1.0 for x in v)
    assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, abs_tol=1e-4)


def test_fake_embedding_differs_per_text() -> None:
    vecs = {tuple(fake_embedding(f"text {i}", 8)) for i in range(50)}
    assert len(vecs) == 50


def test_embedding_base64_is_little_endian_float32() -> None:
    v = fake_embedding("x", 8)
    raw = base64.b64decode(embedding_base64(v))
    assert len(raw) == 8 * 4
    back = struct.unpack("<8f", raw)
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(back, v, strict=True))


# =====================================================================================
# Fault
# =====================================================================================


def test_fault_from_json() -> None:
    f = Fault.from_json({"status": 429, "retry_after": "2", "times": 1})
    assert f == Fault(status=429, retry_after="2", times=1)
    assert f.is_request_level


def test_fault_from_json_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="retry_afer"):
        Fault.from_json({"status": 429, "retry_afer": "2"})
    with pytest.raises(ValueError, match="model"):
        Fault.from_json({"model": "gpt-4o"})  # the control endpoint pops it first


@pytest.mark.parametrize(
    ("fault", "request_level"),
    [
        (Fault(status=500), True),
        (Fault(hang=True), True),
        (Fault(reset=True), True),
        (Fault(cut_after=2), False),
        (Fault(delay_s=0.1), False),
        (Fault(no_done=True), False),
    ],
)
def test_fault_is_request_level(fault: Fault, request_level: bool) -> None:
    assert fault.is_request_level is request_level


# =====================================================================================
# FakeServer, through a minimal wire format
# =====================================================================================


class EchoFake(FakeServer):
    """POST /echo {"model", "stream"?, "key"?}: JSON, or five SSE frames and a terminal one."""

    kind = "echo"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/echo", self.echo)

    def error_response(self, status: int, message: str, code: str | None) -> web.Response:
        return self.json({"failure": {"message": message, "code": code}}, status)

    async def echo(self, request: web.Request) -> web.StreamResponse:
        body = await self.read_json(request)
        if not isinstance(body, dict) or "model" not in body:
            raise self.bad_request("model is required", "missing_model")
        fault = await self.begin(request, body["model"], body)
        if body.get("stream"):
            frames = [f"data: {i}\n\n".encode() for i in range(5)]
            return await self.write_stream(
                request, frames, fault, terminal=b"data: END\n\n", malformed=b"data: {oops\n\n"
            )
        return self.json({"model": body["model"], "seen_before": self.seen_before(body.get("key"))})


@pytest.fixture
async def echo() -> AsyncIterator[EchoFake]:
    async with EchoFake() as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def post(http: aiohttp.ClientSession, fake: FakeServer, model: str, **body: Any) -> tuple[int, Any]:
    async with http.post(f"{fake.url}/echo", json={"model": model, **body}) as resp:
        return resp.status, await resp.json()


async def stream(http: aiohttp.ClientSession, fake: FakeServer, model: str = "m", **kw: Any) -> bytes:
    async with http.post(f"{fake.url}/echo", json={"model": model, "stream": True}, **kw) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        return await resp.read()


CLEAN = b"".join(f"data: {i}\n\n".encode() for i in range(5)) + b"data: END\n\n"


async def test_start_binds_a_free_port(echo: EchoFake) -> None:
    assert echo.port != 0
    assert echo.url == f"http://127.0.0.1:{echo.port}"


async def test_clean_request_and_stream(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    assert await post(http, echo, "m") == (200, {"model": "m", "seen_before": False})
    assert await stream(http, echo) == CLEAN


async def test_attempts_and_request_log(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    await post(http, echo, "a", extra=1)
    await post(http, echo, "a")
    await post(http, echo, "b")
    assert (echo.attempts("a"), echo.attempts("b"), echo.attempts("c"), echo.attempts()) == (2, 1, 0, 3)
    assert echo.requests[0] == {"path": "/echo", "model": "a", "body": {"model": "a", "extra": 1}, "auth": None}
    # validation failures happen before begin(): not an attempt
    async with http.post(f"{echo.url}/echo", json={"nope": 1}) as resp:
        assert resp.status == 400
        assert await resp.json() == {"failure": {"message": "model is required", "code": "missing_model"}}
    assert echo.attempts() == 3


async def test_request_log_keeps_the_last_200(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    for i in range(205):
        echo.requests.append({"path": "/x", "model": str(i), "body": None})
    await post(http, echo, "last")
    assert len(echo.requests) == 200
    assert echo.requests[-1]["model"] == "last"


async def test_invalid_json_body_is_a_400_in_the_wire_format(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{echo.url}/echo", data=b"{nope") as resp:
        assert resp.status == 400
        assert (await resp.json())["failure"]["message"] == "request body is not valid JSON"


async def test_seen_before(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    assert (await post(http, echo, "m", key={"a": 1, "b": 2}))[1]["seen_before"] is False
    assert (await post(http, echo, "m", key={"b": 2, "a": 1}))[1]["seen_before"] is True  # key order ignored
    assert (await post(http, echo, "m", key={"a": 1}))[1]["seen_before"] is False
    echo.reset()
    assert (await post(http, echo, "m", key={"a": 1, "b": 2}))[1]["seen_before"] is False


async def test_status_fault_with_retry_after_and_default_messages(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    echo.inject("m", status=429, retry_after="5", times=1)
    echo.inject("m", status=400, code="context_length_exceeded", times=1)
    echo.inject("m", status=400, code="x", message="custom words", times=1)
    async with http.post(f"{echo.url}/echo", json={"model": "m"}) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "5"
        assert (await resp.json())["failure"]["message"] == "Rate limit reached for requests"
    status, body = await post(http, echo, "m")
    assert status == 400 and body["failure"]["code"] == "context_length_exceeded"
    assert "maximum context length" in body["failure"]["message"]
    assert await post(http, echo, "m") == (400, {"failure": {"message": "custom words", "code": "x"}})
    assert (await post(http, echo, "m"))[0] == 200


async def test_faults_queue_per_model_with_star_fallback(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    echo.inject("a", status=500, times=1)
    echo.inject("a", status=502, times=1)
    echo.inject("*", status=503, times=3)
    got = [(await post(http, echo, m))[0] for m in ["a", "b", "a", "a", "c", "a", "b"]]
    # a: its own queue first (500, 502), then the "*" queue; "*" is shared by every model
    assert got == [500, 503, 502, 503, 503, 200, 200]


async def test_unlimited_fault_until_cleared(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    echo.inject("a", status=500)
    echo.inject("b", status=500)
    assert [(await post(http, echo, "a"))[0] for _ in range(3)] == [500, 500, 500]
    echo.clear_faults("a")
    assert (await post(http, echo, "a"))[0] == 200
    assert (await post(http, echo, "b"))[0] == 500
    echo.clear_faults()
    assert (await post(http, echo, "b"))[0] == 200


async def test_inject_accepts_a_fault_object(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    echo.inject("m", Fault(status=418, times=1))
    assert (await post(http, echo, "m"))[0] == 418


async def test_times_counts_streams_and_plain_requests_alike(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    echo.inject("m", no_done=True, times=2)
    assert await stream(http, echo) == CLEAN[: -len(b"data: END\n\n")]
    await post(http, echo, "m")  # consumes the second one
    assert await stream(http, echo) == CLEAN


async def test_delay(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    echo.inject("m", delay_s=0.2, times=1)
    start = time.monotonic()
    assert (await post(http, echo, "m"))[0] == 200
    assert time.monotonic() - start >= 0.19


async def test_reset_drops_the_connection_before_headers(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    echo.inject("m", reset=True, times=1)
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(http, echo, "m")
    assert (await post(http, echo, "m"))[0] == 200


async def test_hang_never_answers(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    echo.inject("m", hang=True, times=1)
    with pytest.raises(TimeoutError):
        async with http.post(f"{echo.url}/echo", json={"model": "m"}, timeout=aiohttp.ClientTimeout(total=0.3)):
            pass
    assert echo.attempts("m") == 1


async def test_stop_releases_a_hanging_request(http: aiohttp.ClientSession) -> None:
    fake = await EchoFake().start()
    fake.inject("m", hang=True)
    task = asyncio.create_task(post(http, fake, "m"))
    await asyncio.sleep(0.1)
    assert not task.done()
    await asyncio.wait_for(fake.stop(), 3)
    with pytest.raises(aiohttp.ClientError):
        await asyncio.wait_for(task, 3)


async def test_cut_after(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    echo.inject("m", cut_after=2)
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(f"{echo.url}/echo", json={"model": "m", "stream": True}) as resp:
            async for chunk in resp.content.iter_any():
                received += chunk
    assert received == b"data: 0\n\ndata: 1\n\n"


async def test_malformed_after(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    echo.inject("m", malformed_after=1)
    assert await stream(http, echo) == b"data: 0\n\ndata: {oops\n\n" + CLEAN[len(b"data: 0\n\n") :]


async def test_no_done(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    echo.inject("m", no_done=True)
    body = await stream(http, echo)
    assert body.endswith(b"data: 4\n\n") and b"END" not in body


async def test_stall_after(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    echo.inject("m", stall_after=3, stall_s=0.3)
    start = time.monotonic()
    arrivals: list[tuple[float, bytes]] = []
    async with http.post(f"{echo.url}/echo", json={"model": "m", "stream": True}) as resp:
        async for line in resp.content:
            if line.strip():
                arrivals.append((time.monotonic() - start, line.strip()))
    assert [b for _, b in arrivals] == [b"data: 0", b"data: 1", b"data: 2", b"data: 3", b"data: 4", b"data: END"]
    assert arrivals[3][0] - arrivals[2][0] >= 0.25  # the silence is between frames 2 and 3


async def test_first_token_delay(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    echo.inject("m", first_token_delay_s=0.3)
    start = time.monotonic()
    async with http.post(f"{echo.url}/echo", json={"model": "m", "stream": True}) as resp:
        headers_at = time.monotonic() - start
        first = await resp.content.readline()
        first_at = time.monotonic() - start
        rest = await resp.read()
    assert first_at - headers_at >= 0.25  # headers at once, the first frame after the delay
    assert first + rest == CLEAN


async def test_reset_clears_faults_attempts_and_log(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    await post(http, echo, "m")
    echo.inject("m", status=500)
    echo.reset()
    assert echo.attempts() == 0 and list(echo.requests) == []
    assert (await post(http, echo, "m"))[0] == 200


async def test_control_endpoint(echo: EchoFake, http: aiohttp.ClientSession) -> None:
    async def ctl(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with http.request(method, f"{echo.url}/_fake/{path}", json=body) as resp:
            return resp.status, await resp.json()

    assert await ctl("POST", "faults", {"model": "m", "status": 503, "times": 1}) == (200, {"ok": True})
    assert await ctl("POST", "faults", {"status": 500}) == (200, {"ok": True})  # model defaults to "*"
    assert (await post(http, echo, "m"))[0] == 503
    assert (await post(http, echo, "other"))[0] == 500
    assert await ctl("GET", "attempts") == (200, {"attempts": {"m": 1, "other": 1}})
    status, log = await ctl("GET", "requests")
    assert status == 200 and [r["model"] for r in log["requests"]] == ["m", "other"]
    assert await ctl("DELETE", "faults") == (200, {"ok": True})
    assert (await post(http, echo, "other"))[0] == 200
    status, err = await ctl("POST", "faults", {"model": "m", "hang": True, "sleep": 1})
    assert status == 400 and "sleep" in err["error"]
    assert (await post(http, echo, "m"))[0] == 200  # the rejected fault was not injected
    assert await ctl("POST", "reset") == (200, {"ok": True})
    assert await ctl("GET", "attempts") == (200, {"attempts": {}})


# =====================================================================================
# running in a thread
# =====================================================================================


def sync_post(fake: FakeServer, model: str) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{fake.url}/echo", data=orjson.dumps({"model": model}), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, orjson.loads(exc.read())


def port_is_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_start_in_thread_and_stop_thread() -> None:
    fake = EchoFake().start_in_thread()
    try:
        thread = fake._thread
        assert thread is not None and thread.is_alive() and thread is not threading.current_thread()
        assert port_is_open(fake.port)
        assert sync_post(fake, "m") == (200, {"model": "m", "seen_before": False})
        fake.inject("m", status=503, times=1)  # from this thread, applied in the server's
        assert sync_post(fake, "m")[0] == 503
        assert fake.attempts("m") == 2
    finally:
        fake.stop_thread()
    assert not thread.is_alive()
    assert not port_is_open(fake.port)
    fake.stop_thread()  # a second stop is harmless


def test_thread_context_manager() -> None:
    with EchoFake() as fake:
        port = fake.port
        assert sync_post(fake, "x")[0] == 200
    assert not port_is_open(port)


def test_stop_thread_without_start_is_a_no_op() -> None:
    EchoFake().stop_thread()


def test_stop_thread_releases_a_hanging_request() -> None:
    fake = EchoFake().start_in_thread()
    fake.inject("m", hang=True)
    outcome: list[BaseException | tuple[int, Any]] = []

    def worker() -> None:
        try:
            outcome.append(sync_post(fake, "m"))
        except BaseException as exc:
            outcome.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    time.sleep(0.2)
    assert outcome == []
    started = time.monotonic()
    fake.stop_thread()
    assert time.monotonic() - started < 5
    t.join(5)
    assert not t.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], Exception)
