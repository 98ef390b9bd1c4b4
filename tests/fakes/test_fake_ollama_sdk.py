"""The official ``ollama`` Python SDK talks to :class:`FakeOllama` and parses every answer.

The SDK validates responses with pydantic models, so these tests check the fake's shapes
(field names, types, timestamps, NDJSON framing, error bodies) against a real client.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import ollama
import pytest

from modelyard.testing.fake_ollama import FakeOllama

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAcCBlCwAAAABJRU5ErkJggg=="
)
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


@pytest.fixture(scope="module")
def client(fake: FakeOllama) -> Iterator[ollama.Client]:
    with ollama.Client(host=fake.url) as c:
        yield c


@pytest.fixture(autouse=True)
def _fresh(fake: FakeOllama) -> None:
    fake.reset()


def test_chat(client: ollama.Client) -> None:
    resp = client.chat(model="llama3.2", messages=[{"role": "user", "content": "hello there"}])
    assert isinstance(resp, ollama.ChatResponse)
    assert resp.message.role == "assistant"
    assert resp.message.content == "llama3.2:latest says: hello there"
    assert resp.done is True and resp.done_reason == "stop"
    assert resp.prompt_eval_count == 5 and resp.eval_count == 4
    assert resp.total_duration and resp.load_duration and resp.eval_duration and resp.prompt_eval_duration
    assert resp.created_at is not None and datetime.fromisoformat(resp.created_at[:26]).year >= 2024


def test_chat_stream(client: ollama.Client) -> None:
    parts = list(client.chat(model="mistral:7b", messages=[{"role": "user", "content": "a b c"}], stream=True))
    assert all(isinstance(p, ollama.ChatResponse) for p in parts)
    assert [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert "".join(p.message.content or "" for p in parts) == "mistral:7b says: a b c"
    assert parts[-1].done_reason == "stop" and parts[-1].eval_count == 5


def test_tools_round_trip(client: ollama.Client) -> None:
    messages: list[Any] = [{"role": "user", "content": "weather in Paris?"}]
    first = client.chat(model="llama3.2", messages=messages, tools=[WEATHER])
    calls = first.message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].function.name == "get_weather"
    assert calls[0].function.arguments == {"city": "example city"}
    messages += [first.message, {"role": "tool", "content": "22C and sunny", "tool_name": "get_weather"}]
    second = client.chat(model="llama3.2", messages=messages, tools=[WEATHER])
    assert not second.message.tool_calls
    assert second.message.content == "llama3.2:latest says: weather in Paris?"


def test_python_function_as_tool(client: ollama.Client) -> None:
    def add_two_numbers(a: int, b: int) -> int:
        """Add two numbers.

        Args:
          a: The first number
          b: The second number
        """
        return a + b

    resp = client.chat(model="llama3.2", messages=[{"role": "user", "content": "1+2"}], tools=[add_two_numbers])
    assert resp.message.tool_calls is not None
    call = resp.message.tool_calls[0]
    assert call.function.name == "add_two_numbers" and call.function.arguments == {"a": 1, "b": 1}


def test_images_and_json_formats(client: ollama.Client) -> None:
    seen = client.chat(model="llama3.2", messages=[{"role": "user", "content": "what is it", "images": [PNG]}])
    assert seen.prompt_eval_count == 3 + 3 + 85
    as_json = client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}], format="json")
    assert as_json.message.content == '{"model":"llama3.2:latest","answer":"hi"}'
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    shaped = client.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}], format=schema)
    assert shaped.message.content == '{"age":1}'


def test_options_limit_the_answer(client: ollama.Client) -> None:
    resp = client.chat(
        model="llama3.2",
        messages=[{"role": "user", "content": "a b c d"}],
        options={"num_predict": 2, "temperature": 0},
    )
    assert resp.done_reason == "length" and resp.message.content == "llama3.2:latest says:"


def test_generate_load_and_unload(client: ollama.Client, fake: FakeOllama) -> None:
    loaded = client.generate(model="llama3.2")
    assert loaded.done and loaded.done_reason == "load" and fake.is_loaded("llama3.2")
    text = client.generate(model="llama3.2", prompt="why is the sky blue", system="be brief")
    assert text.response == "llama3.2:latest says: why is the sky blue" and text.context
    streamed = list(client.generate(model="llama3.2", prompt="x y", stream=True))
    assert "".join(p.response or "" for p in streamed) == "llama3.2:latest says: x y" and streamed[-1].done
    unloaded = client.generate(model="llama3.2", keep_alive=0)
    assert unloaded.done_reason == "unload" and not fake.is_loaded("llama3.2")


def test_load_duration_is_reported_on_the_first_request_only(client: ollama.Client, fake: FakeOllama) -> None:
    fake.set_load_time("mistral:7b", 0.2)
    try:
        cold = client.chat(model="mistral:7b", messages=[{"role": "user", "content": "a"}])
        warm = client.chat(model="mistral:7b", messages=[{"role": "user", "content": "a"}])
    finally:
        fake.set_load_time("mistral:7b", 0)
    assert cold.load_duration is not None and cold.load_duration >= 200_000_000
    assert warm.load_duration is not None and warm.load_duration < 100_000_000


def test_embed_and_legacy_embeddings(client: ollama.Client) -> None:
    resp = client.embed(model="nomic-embed-text", input=["first text", "second"])
    assert isinstance(resp, ollama.EmbedResponse)
    assert len(resp.embeddings) == 2 and len(resp.embeddings[0]) == 768
    assert resp.prompt_eval_count == 7 and resp.load_duration
    one = client.embed(model="nomic-embed-text", input="just one", dimensions=32)
    assert len(one.embeddings) == 1 and len(one.embeddings[0]) == 32
    legacy = client.embeddings(model="nomic-embed-text", prompt="hello")
    assert len(legacy.embedding) == 768


def test_list_ps_and_show(client: ollama.Client) -> None:
    listed = client.list()
    assert [m.model for m in listed.models] == ["llama3.2:latest", "mistral:7b", "nomic-embed-text:latest"]
    first = listed.models[0]
    assert first.size and first.digest and isinstance(first.modified_at, datetime)
    assert first.details is not None and first.details.family == "llama"
    assert client.ps().models == []
    client.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}], keep_alive="10m")
    running = client.ps().models
    assert [m.model for m in running] == ["llama3.2:latest"]
    assert running[0].size_vram and isinstance(running[0].expires_at, datetime)
    shown = client.show("llama3.2")
    assert isinstance(shown, ollama.ShowResponse)
    assert shown.modelinfo is not None and shown.modelinfo["llama.context_length"] == 131072
    assert shown.capabilities is not None and "tools" in shown.capabilities
    assert shown.details is not None and shown.details.parameter_size == "3.2B"


def test_pull_stream_and_blocking(client: ollama.Client, fake: FakeOllama) -> None:
    progress = list(client.pull("qwen2.5:0.5b", stream=True))
    assert all(isinstance(p, ollama.ProgressResponse) for p in progress)
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    assert any(p.total and p.completed == p.total for p in progress)
    assert "qwen2.5:0.5b" in [m.model for m in client.list().models]
    blocking = client.pull("llava")
    assert blocking.status == "success" and "llava:latest" in fake.installed
    with pytest.raises(ollama.ResponseError, match="file does not exist"):
        list(client.pull("not-in-registry:1b", stream=True))


def test_missing_model_is_a_404_response_error(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="phi4:14b", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == 404
    assert info.value.error == 'model "phi4:14b" not found, try pulling it first'
    with pytest.raises(ollama.ResponseError) as streamed:
        list(client.chat(model="phi4:14b", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert streamed.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as shown:
        client.show("phi4:14b")
    assert shown.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as embedded:
        client.embed(model="phi4:14b", input="x")
    assert embedded.value.status_code == 404


def test_validation_errors_are_400s(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as bad_option:
        client.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}], options={"num_predict": "many"})
    assert bad_option.value.status_code == 400 and "num_predict" in bad_option.value.error
    with pytest.raises(ollama.ResponseError) as bad_keep_alive:
        client.chat(model="llama3.2", messages=[{"role": "user", "content": "x"}], keep_alive="-1")
    assert bad_keep_alive.value.status_code == 400 and "missing unit" in bad_keep_alive.value.error
    with pytest.raises(ollama.ResponseError) as embed_only:
        client.chat(model="nomic-embed-text", messages=[{"role": "user", "content": "x"}])
    assert embed_only.value.status_code == 400


def test_in_band_stream_error(client: ollama.Client, fake: FakeOllama) -> None:
    fake.inject_stream_error("llama3.2", "model runner has unexpectedly stopped", after=1)
    got: list[ollama.ChatResponse] = []
    with pytest.raises(ollama.ResponseError, match="unexpectedly stopped"):
        for part in client.chat(model="llama3.2", messages=[{"role": "user", "content": "a b"}], stream=True):
            got.append(part)
    assert len(got) == 1


def test_version(client: ollama.Client, fake: FakeOllama) -> None:
    # the SDK has no version() call; its httpx client reaches the route directly
    assert client._client.get("/api/version").json() == {"version": fake.version}


async def test_async_client_chat_stream_and_tools() -> None:
    async with FakeOllama() as fake, ollama.AsyncClient(host=fake.url) as client:
        parts = [
            p
            async for p in await client.chat(
                model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        ]
        assert "".join(p.message.content or "" for p in parts) == "llama3.2:latest says: hi"
        assert parts[-1].done and parts[-1].eval_count == 3
        resp = await client.chat(model="llama3.2", messages=[{"role": "user", "content": "?"}], tools=[WEATHER])
        assert resp.message.tool_calls and resp.message.tool_calls[0].function.name == "get_weather"
        embedded = await client.embed(model="nomic-embed-text", input=["x"])
        assert len(embedded.embeddings) == 1
        progress = [p async for p in await client.pull("qwen2.5:0.5b", stream=True)]
        assert progress[-1].status == "success"
        with pytest.raises(ollama.ResponseError) as info:
            await client.chat(model="nope", messages=[{"role": "user", "content": "x"}])
        assert info.value.status_code == 404
