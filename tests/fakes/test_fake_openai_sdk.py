"""FakeOpenAI conformance: the official ``openai`` SDK (sync and async) pointed straight at the fake.

If the SDK can parse what the fake sends, the fake's shapes are the real API's shapes.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from modelyard.testing._fake_base import fake_embedding
from modelyard.testing.fake_openai import FakeOpenAI

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
USER = [{"role": "user", "content": "hello fake"}]


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeOpenAI]:
    """One fake (in a background thread) for the sync tests of this module; reset before each."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def fake(shared_fake: FakeOpenAI) -> FakeOpenAI:
    shared_fake.reset()
    return shared_fake


@pytest.fixture(scope="module")
def client(shared_fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    # shared too: building an SDK client (its TLS context) costs a few hundred milliseconds
    with openai.OpenAI(base_url=shared_fake.base_url, api_key="sk-test", max_retries=0, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def ctl(shared_fake: FakeOpenAI) -> Iterator[httpx.Client]:
    """A plain HTTP client for the fake's control endpoint."""
    with httpx.Client(base_url=shared_fake.url, timeout=5) as c:
        yield c


def async_client(fake: FakeOpenAI, **kw: Any) -> openai.AsyncOpenAI:
    kw.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=fake.base_url, api_key="sk-test", timeout=10, **kw)


# -- chat ---------------------------------------------------------------------------------


def test_sync_chat(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=20, temperature=0)  # type: ignore[arg-type]
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == "gpt-4o"
    assert r.system_fingerprint == "fp_fake"
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "gpt-4o says: hello fake"
    assert choice.message.refusal is None and choice.message.tool_calls is None
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (5, 4, 9)
    assert r.usage.prompt_tokens_details is not None and r.usage.prompt_tokens_details.cached_tokens == 0
    assert r.usage.completion_tokens_details is not None
    assert r.usage.completion_tokens_details.reasoning_tokens == 0
    assert fake.attempts("gpt-4o") == 1


async def test_async_chat() -> None:
    async with FakeOpenAI() as fake, async_client(fake) as client:
        r = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            n=2,
            logprobs=True,
            top_logprobs=1,
        )
        assert fake.attempts("gpt-4o-mini") == 1
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.message.content == "gpt-4o-mini says: hi" for c in r.choices)
    lp = r.choices[0].logprobs
    assert lp is not None and lp.content is not None
    assert "".join(t.token for t in lp.content) == "gpt-4o-mini says: hi"


def test_multimodal_and_developer_messages(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "developer", "content": "answer tersely"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}},
                ],
            },
        ],
    )
    assert r.choices[0].message.content == "gpt-4o says: what is this"
    assert r.usage is not None and r.usage.prompt_tokens == 5 + 2 * 3 + 85  # words + per-message + per-image


def test_max_tokens_gives_length(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o", messages=USER, max_completion_tokens=2)  # type: ignore[arg-type]
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == "gpt-4o says:"


# -- streaming ----------------------------------------------------------------------------


def test_sync_stream_with_include_usage(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=USER,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    with stream:
        chunks = list(stream)
    *body, last = chunks
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert body[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in body) == plain.choices[0].message.content
    assert body[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in body)
    assert last.choices == []
    assert last.usage is not None and plain.usage is not None
    assert last.usage.total_tokens == plain.usage.total_tokens


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    with client.chat.completions.create(model="gpt-4o", messages=USER, stream=True) as stream:  # type: ignore[arg-type]
        chunks = list(stream)
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_async_stream_with_include_usage() -> None:
    async with FakeOpenAI() as fake, async_client(fake) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=USER,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            n=2,
        )
        texts = {0: "", 1: ""}
        finishes: dict[int, str | None] = {}
        usage = None
        async with stream:
            async for chunk in stream:
                for c in chunk.choices:
                    texts[c.index] += c.delta.content or ""
                    if c.finish_reason:
                        finishes[c.index] = c.finish_reason
                usage = chunk.usage or usage
    assert texts == {0: "gpt-4o says: hello fake", 1: "gpt-4o says: hello fake"}
    assert finishes == {0: "stop", 1: "stop"}
    assert usage is not None and usage.completion_tokens == 8


# -- tools --------------------------------------------------------------------------------


def test_tool_call_then_tool_result(client: openai.OpenAI) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Oslo?"}]
    r = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])  # type: ignore[list-item]
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "example city", "unit": "c"}  # type: ignore[union-attr]
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "21C"},
    ]
    r2 = client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])  # type: ignore[list-item]
    assert r2.choices[0].finish_reason == "stop"
    assert r2.choices[0].message.content == "gpt-4o says: weather in Oslo?"


def test_tool_choice_none_and_forced(client: openai.OpenAI) -> None:
    ping = {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}
    r = client.chat.completions.create(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL, ping], tool_choice="none")  # type: ignore[list-item,arg-type]
    assert r.choices[0].message.tool_calls is None
    r = client.chat.completions.create(
        model="gpt-4o",
        messages=USER,  # type: ignore[arg-type]
        tools=[WEATHER_TOOL, ping],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "ping"}},
    )
    calls = r.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "ping"  # type: ignore[union-attr]


def test_streamed_tool_call_accumulates_in_the_sdk_helper(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL])  # type: ignore[list-item,arg-type]
    with client.chat.completions.stream(model="gpt-4o", messages=USER, tools=[WEATHER_TOOL]) as stream:  # type: ignore[list-item,arg-type]
        events = [e.type for e in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.delta" in events
    assert "tool_calls.function.arguments.done" in events
    assert final.choices[0].finish_reason == "tool_calls"
    got = final.choices[0].message.tool_calls
    want = plain.choices[0].message.tool_calls
    assert got is not None and want is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in got] == [  # type: ignore[union-attr]
        (c.id, c.function.name, c.function.arguments)  # type: ignore[union-attr]
        for c in want
    ]
    # strict tools: the helper parsed the arguments
    assert got[0].function.parsed_arguments == {"city": "example city", "unit": "c"}  # type: ignore[union-attr]


# -- structured output --------------------------------------------------------------------


def test_json_object_mode(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o", messages=USER, response_format={"type": "json_object"})  # type: ignore[arg-type]
    assert json.loads(r.choices[0].message.content or "") == {"model": "gpt-4o", "answer": "hello fake"}


def test_json_schema_response_format(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "year": {"type": "integer"},
            "rating": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "genre": {"type": "string", "enum": ["drama", "comedy"]},
        },
        "required": ["title", "year", "rating", "tags", "genre"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model="gpt-4o",
        messages=USER,  # type: ignore[arg-type]
        response_format={"type": "json_schema", "json_schema": {"name": "movie", "schema": schema, "strict": True}},
    )
    data = json.loads(r.choices[0].message.content or "")
    assert set(data) == set(schema["required"])  # type: ignore[arg-type]
    assert isinstance(data["year"], int) and isinstance(data["rating"], float)
    assert isinstance(data["tags"], list) and data["genre"] in ("drama", "comedy")


class Genre(enum.Enum):
    drama = "drama"
    comedy = "comedy"


class Person(BaseModel):
    name: str
    born: int | None


class Movie(BaseModel):
    title: str
    year: int
    genre: Genre
    director: Person
    cast: list[Person]
    sequel_of: str | None


def test_sdk_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    """``.parse()`` sends a strict schema with ``$defs``/``$ref`` and ``anyOf`` nullables."""
    r = client.chat.completions.parse(model="gpt-4o", messages=USER, response_format=Movie)  # type: ignore[arg-type]
    movie = r.choices[0].message.parsed
    assert isinstance(movie, Movie)
    assert isinstance(movie.director, Person)
    assert movie.genre is Genre.drama
    assert len(movie.cast) == 1


# -- embeddings and models ----------------------------------------------------------------


def test_embeddings_default_base64(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    r = client.embeddings.create(model="text-embedding-3-small", input=["one", "two words"])
    assert fake.requests[-1]["body"]["encoding_format"] == "base64"  # the SDK's default
    assert [d.index for d in r.data] == [0, 1]
    for d, text in zip(r.data, ["one", "two words"], strict=True):
        expected = fake_embedding(text)
        assert len(d.embedding) == len(expected)
        assert max(abs(a - b) for a, b in zip(d.embedding, expected, strict=True)) < 1e-6
    assert r.model == "text-embedding-3-small"
    assert (r.usage.prompt_tokens, r.usage.total_tokens) == (3, 3)


async def test_embeddings_float_async() -> None:
    async with FakeOpenAI() as fake, async_client(fake) as client:
        r = await client.embeddings.create(
            model="text-embedding-3-small", input="hello", encoding_format="float", dimensions=8
        )
        assert fake.requests[-1]["body"]["encoding_format"] == "float"
    assert r.data[0].embedding == fake_embedding("hello", 8)


def test_models_list(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    models = list(client.models.list())
    assert [m.id for m in models] == fake.models
    assert all(m.object == "model" and m.owned_by == "fake" for m in models)


async def test_models_list_async() -> None:
    async with FakeOpenAI(models=["a", "b"]) as fake, async_client(fake) as client:
        page = await client.models.list()
    assert [m.id for m in page.data] == ["a", "b"]


# -- faults -------------------------------------------------------------------------------


def test_injected_429_is_a_rate_limit_error(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.inject("gpt-4o", status=429, retry_after="3", times=1)
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
    e = info.value
    assert e.status_code == 429
    assert e.response.headers["retry-after"] == "3"
    assert e.type == "rate_limit_error"
    assert client.chat.completions.create(model="gpt-4o", messages=USER).choices  # type: ignore[arg-type]


async def test_injected_429_async_and_the_sdk_retry_honours_retry_after() -> None:
    async with FakeOpenAI() as fake:
        fake.inject("gpt-4o", status=429, retry_after="0.01", times=1)
        async with async_client(fake) as client:
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
        fake.inject("gpt-4o", status=429, retry_after="0.01", times=1)
        async with async_client(fake, max_retries=1) as retrying:
            r = await retrying.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
        assert r.choices[0].finish_reason == "stop"
        assert fake.attempts("gpt-4o") == 3


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_injected_statuses_map_to_sdk_errors(
    fake: FakeOpenAI, client: openai.OpenAI, status: int, error: type[openai.APIStatusError]
) -> None:
    fake.inject("gpt-4o", status=status)
    with pytest.raises(error) as info:
        client.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
    assert info.value.status_code == status
    assert isinstance(info.value.message, str) and info.value.message


def test_injected_context_length_code(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.inject("gpt-4o", status=400, code="context_length_exceeded")
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
    assert info.value.code == "context_length_exceeded"
    assert info.value.type == "invalid_request_error"
    assert "maximum context length" in info.value.message


def test_stream_cut_is_an_sdk_error(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.inject("gpt-4o", cut_after=2)
    with (
        pytest.raises(openai.APIConnectionError),
        client.chat.completions.create(model="gpt-4o", messages=USER, stream=True) as stream,  # type: ignore[arg-type]
    ):
        list(stream)


# -- the control endpoint over HTTP -------------------------------------------------------


def test_control_endpoint(fake: FakeOpenAI, client: openai.OpenAI, ctl: httpx.Client) -> None:
    r = ctl.post("/_fake/faults", json={"model": "gpt-4o", "status": 429, "retry_after": "2", "times": 1})
    assert r.status_code == 200 and r.json() == {"ok": True}
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
    client.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
    client.embeddings.create(model="text-embedding-3-small", input="x")
    assert ctl.get("/_fake/attempts").json() == {"attempts": {"gpt-4o": 2, "text-embedding-3-small": 1}}
    logged = ctl.get("/_fake/requests").json()["requests"]
    assert [(q["path"], q["model"]) for q in logged] == [
        ("/v1/chat/completions", "gpt-4o"),
        ("/v1/chat/completions", "gpt-4o"),
        ("/v1/embeddings", "text-embedding-3-small"),
    ]
    assert logged[0]["body"]["messages"] == USER

    # a persistent fault for every model, cleared by DELETE
    assert ctl.post("/_fake/faults", json={"status": 503}).status_code == 200
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=USER)  # type: ignore[arg-type]
    assert ctl.delete("/_fake/faults").json() == {"ok": True}
    client.chat.completions.create(model="gpt-4o-mini", messages=USER)  # type: ignore[arg-type]

    # reset clears faults, attempts and the request log
    ctl.post("/_fake/faults", json={"model": "gpt-4o", "status": 500})
    assert ctl.post("/_fake/reset").json() == {"ok": True}
    assert ctl.get("/_fake/attempts").json() == {"attempts": {}}
    assert ctl.get("/_fake/requests").json() == {"requests": []}
    assert client.chat.completions.create(model="gpt-4o", messages=USER).choices  # type: ignore[arg-type]
    assert fake.attempts() == 1


@pytest.mark.parametrize(
    "body",
    [
        b'{"status": 429, "bogus": 1}',
        b'{"model": "gpt-4o", "retry_afer": "2"}',
        b"not json",
        b"[1, 2]",
    ],
)
def test_control_endpoint_rejects_bad_faults(
    fake: FakeOpenAI, client: openai.OpenAI, ctl: httpx.Client, body: bytes
) -> None:
    r = ctl.post("/_fake/faults", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "error" in r.json()
    # nothing was injected
    assert client.chat.completions.create(model="gpt-4o", messages=USER).choices[0].finish_reason == "stop"  # type: ignore[arg-type]


def test_fault_times_semantics(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    def call() -> str:
        try:
            client.chat.completions.create(model="gpt-4o", messages=USER)  # type: ignore[arg-type]
        except openai.APIStatusError as exc:
            return str(exc.status_code)
        return "ok"

    fake.inject("gpt-4o", status=500, times=2)
    assert [call() for _ in range(3)] == ["500", "500", "ok"]
    # faults queue in order; an unlimited fault stays until cleared
    fake.inject("gpt-4o", status=503, times=1)
    fake.inject("gpt-4o", status=429)
    assert [call() for _ in range(4)] == ["503", "429", "429", "429"]
    fake.clear_faults("gpt-4o")
    assert call() == "ok"
    assert fake.attempts("gpt-4o") == 8


# -- validation errors --------------------------------------------------------------------


def assert_openai_error_shape(exc: openai.APIStatusError) -> None:
    body = exc.response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model": "", "messages": USER},
        {"model": "gpt-4o", "messages": []},
        {"model": "gpt-4o", "messages": USER, "max_tokens": 0},
        {"model": "gpt-4o", "messages": USER, "max_tokens": -5},
        {"model": "gpt-4o", "messages": USER, "max_completion_tokens": 0},
        {"model": "gpt-4o", "messages": USER, "extra_body": {"max_tokens": "ten"}},
        {"model": "gpt-4o", "messages": USER, "n": 0},
        {"model": "gpt-4o", "messages": [{"role": "wizard", "content": "x"}]},
        {"model": "gpt-4o", "messages": [{"role": "tool", "content": "x"}]},
        {"model": "gpt-4o", "messages": USER, "tools": ["not-a-tool"]},
        {"model": "gpt-4o", "messages": USER, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
    ],
    ids=[
        "empty-model",
        "empty-messages",
        "max_tokens-0",
        "max_tokens-negative",
        "max_completion_tokens-0",
        "max_tokens-string",
        "n-0",
        "bad-role",
        "tool-without-id",
        "bad-tool",
        "schema-missing",
    ],
)
def test_validation_errors_are_bad_requests(fake: FakeOpenAI, client: openai.OpenAI, kwargs: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**kwargs)
    assert info.value.status_code == 400
    assert_openai_error_shape(info.value)
    assert fake.attempts() == 0  # rejected before it counts as an attempt


def test_missing_model_key(fake: FakeOpenAI, ctl: httpx.Client) -> None:
    r = ctl.post("/v1/chat/completions", json={"messages": USER})
    bad_json = ctl.post("/v1/chat/completions", content=b"{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "you must provide a model parameter"
    assert bad_json.status_code == 400 and bad_json.json()["error"]["type"] == "invalid_request_error"


async def test_validation_error_async() -> None:
    async with FakeOpenAI() as fake, async_client(fake) as client:
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="gpt-4o", messages=[])
        assert_openai_error_shape(info.value)
        with pytest.raises(openai.BadRequestError):
            await client.embeddings.create(model="text-embedding-3-small", input=[])
