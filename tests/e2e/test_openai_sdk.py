"""The official OpenAI SDK against a running gateway, with each wire format's fake behind it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest

from modelyard.testing import FakeServer
from tests.e2e.conftest import CHAT_MODELS, KINDS
from tests.helpers import ServerProcess

MODELS = [CHAT_MODELS[k][0] for k in KINDS]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PNG = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
def sdk(server: ServerProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-client", max_retries=0) as c:
        yield c


@pytest.mark.compat("openai", "Chat Completions")
@pytest.mark.parametrize("model", MODELS)
def test_chat_sync(sdk: openai.OpenAI, server: ServerProcess, model: str) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
    )
    resp = raw.parse()
    assert resp.model == model
    assert resp.choices[0].message.content is not None
    assert resp.choices[0].message.content.endswith("says: hello there")
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None and resp.usage.total_tokens > 0
    h = raw.headers
    assert h["x-modelyard-model"] == model
    assert h["x-modelyard-route"] == model
    assert h["x-modelyard-attempts"] == "1"
    assert h["x-modelyard-fallback"] == "false"
    assert h["x-request-id"]
    assert float(h["x-modelyard-overhead-ms"]) >= 0


@pytest.mark.compat("openai", "streaming", "async")
@pytest.mark.parametrize("model", MODELS)
async def test_chat_async_and_stream_agree(sdk: openai.OpenAI, server: ServerProcess, model: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0) as aclient:
        msgs = [{"role": "user", "content": "stream me a reply please"}]
        full = await aclient.chat.completions.create(model=model, messages=msgs)  # type: ignore[arg-type]
        stream = await aclient.chat.completions.create(
            model=model,
            messages=msgs,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
        parts: list[str] = []
        usage = None
        finish = None
        async for chunk in stream:
            assert chunk.model == model
            if chunk.usage is not None:
                usage = chunk.usage
            for c in chunk.choices:
                parts.append(c.delta.content or "")
                finish = c.finish_reason or finish
    assert "".join(parts) == full.choices[0].message.content
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_stream_without_include_usage_sends_no_usage(sdk: openai.OpenAI, server: ServerProcess, model: str) -> None:
    chunks = list(sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], stream=True))
    assert chunks and all(c.usage is None for c in chunks)


@pytest.mark.compat("openai", "tools")
@pytest.mark.parametrize("model", MODELS)
def test_tools_round_trip(sdk: openai.OpenAI, server: ServerProcess, model: str) -> None:
    c = sdk
    msgs: list[dict[str, object]] = [{"role": "user", "content": "weather in Paris?"}]
    first = c.chat.completions.create(model=model, messages=msgs, tools=[WEATHER])  # type: ignore[arg-type,list-item]
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)
    msgs.append(choice.message.model_dump(exclude_none=True))
    msgs.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'})
    second = c.chat.completions.create(model=model, messages=msgs, tools=[WEATHER])  # type: ignore[arg-type,list-item]
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content


@pytest.mark.compat("openai", "tools", "streaming")
@pytest.mark.parametrize("model", MODELS)
def test_streamed_tool_calls_reassemble(sdk: openai.OpenAI, server: ServerProcess, model: str) -> None:
    c = sdk
    msgs = [{"role": "user", "content": "weather in Rome?"}]
    full = c.chat.completions.create(model=model, messages=msgs, tools=[WEATHER])  # type: ignore[arg-type,list-item]
    names: dict[int, str] = {}
    args: dict[int, str] = {}
    finish = None
    for chunk in c.chat.completions.create(model=model, messages=msgs, tools=[WEATHER], stream=True):  # type: ignore[arg-type,list-item]
        for ch in chunk.choices:
            finish = ch.finish_reason or finish
            for tc in ch.delta.tool_calls or []:
                if tc.function and tc.function.name:
                    names[tc.index] = tc.function.name
                if tc.function and tc.function.arguments:
                    args[tc.index] = args.get(tc.index, "") + tc.function.arguments
    assert finish == "tool_calls"
    expected = full.choices[0].message.tool_calls
    assert expected is not None
    assert names[0] == expected[0].function.name
    assert json.loads(args[0]) == json.loads(expected[0].function.arguments)


@pytest.mark.compat("openai", "structured output")
@pytest.mark.parametrize("model", MODELS)
def test_json_mode(sdk: openai.OpenAI, server: ServerProcess, model: str) -> None:
    resp = sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "give me json"}],
        response_format={"type": "json_object"},
    )
    content = resp.choices[0].message.content
    assert content is not None
    assert isinstance(json.loads(content), dict)


@pytest.mark.compat("openai", "images")
@pytest.mark.parametrize("model", MODELS)
def test_image_parts(sdk: openai.OpenAI, server: ServerProcess, model: str, fakes: dict[str, FakeServer]) -> None:
    resp = sdk.chat.completions.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": PNG}}],
            }
        ],
    )
    assert resp.choices[0].message.content
    kind = next(k for k in KINDS if CHAT_MODELS[k][0] == model)
    sent = fakes[kind].requests[-1]["body"]
    assert "iVBORw0KGgo" in json.dumps(sent)  # the image reached the upstream in its own format


def test_max_tokens_length_and_stop(sdk: openai.OpenAI, server: ServerProcess) -> None:
    c = sdk
    resp = c.chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "one two three four"}], max_tokens=2
    )
    assert resp.choices[0].finish_reason == "length"
    resp = c.chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": "alpha STOP beta"}], stop=["STOP"]
    )
    assert "beta" not in (resp.choices[0].message.content or "")


def test_n_and_passthrough_fields(sdk: openai.OpenAI, server: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    resp = sdk.chat.completions.create(
        model="gpt",
        messages=[{"role": "user", "content": "hi"}],
        n=2,
        seed=3,
        user="u-1",
        extra_body={"vendor_knob": {"x": 1}},
    )
    assert len(resp.choices) == 2
    sent = fakes["openai"].requests[-1]["body"]
    assert sent["vendor_knob"] == {"x": 1} and sent["seed"] == 3 and sent["user"] == "u-1"
    assert sent["model"] == "gpt-4o"
    assert "modelyard" not in sent


def test_provider_colon_model(sdk: openai.OpenAI, server: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="openai:gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.parse().model == "openai:gpt-4o-mini"
    assert raw.headers["x-modelyard-provider"] == "openai"
    assert fakes["openai"].requests[-1]["body"]["model"] == "gpt-4o-mini"
    r2 = sdk.chat.completions.create(model="ollama:mistral:7b", messages=[{"role": "user", "content": "x"}])
    assert r2.model == "ollama:mistral:7b"
    assert fakes["ollama"].requests[-1]["body"]["model"] == "mistral:7b"


def test_default_route_and_route_name(sdk: openai.OpenAI, server: ServerProcess) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model="main", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-modelyard-route"] == "main"
    assert raw.parse().model == "gpt"


def test_fallback_is_named(sdk: openai.OpenAI, server: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].inject("gpt-4o", status=503)
    raw = sdk.chat.completions.with_raw_response.create(model="main", messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-modelyard-fallback"] == "true"
    assert raw.headers["x-modelyard-model"] == "gpt-mini"
    assert raw.parse().model == "gpt-mini"
    assert int(raw.headers["x-modelyard-attempts"]) >= 2


@pytest.mark.compat("openai", "embeddings")
def test_embeddings(sdk: openai.OpenAI, server: ServerProcess) -> None:
    c = sdk
    resp = c.embeddings.create(model="emb", input=["a b c", "d"])  # the SDK asks for base64
    assert len(resp.data) == 2 and len(resp.data[0].embedding) == 16
    assert abs(sum(v * v for v in resp.data[0].embedding) - 1) < 1e-3
    floats = c.embeddings.create(model="emb", input="a b c", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(resp.data[0].embedding, abs=1e-6)
    assert resp.usage.prompt_tokens == 4


@pytest.mark.parametrize("model", ["gem", "llama"])
def test_embeddings_other_kinds(sdk: openai.OpenAI, server: ServerProcess, model: str) -> None:
    kind_model = {"gem": "gemini:text-embedding-004", "llama": "ollama:nomic-embed-text:latest"}[model]
    resp = sdk.embeddings.create(model=kind_model, input=["hello world"])
    assert len(resp.data) == 1 and len(resp.data[0].embedding) > 0


@pytest.mark.compat("openai", "model listing")
def test_models_list(sdk: openai.OpenAI, server: ServerProcess) -> None:
    ids = [m.id for m in sdk.models.list()]
    assert ids[0] == "main"
    assert {"gpt", "claude", "gem", "llama", "emb"} <= set(ids)
