"""The official ``google-genai`` SDK against FakeGemini: the fake must speak the real wire format."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google import genai
from google.genai import errors, types

from modelyard.testing.fake_gemini import FakeGemini

MODEL = "gemini-2.5-flash"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeGemini]:
    with FakeGemini(api_key="test") as fake:
        yield fake


@pytest.fixture
def fake(server: FakeGemini) -> FakeGemini:
    server.reset()
    return server


@pytest.fixture(scope="module")
def client(server: FakeGemini) -> Iterator[genai.Client]:
    # one client for the module: building one costs ~0.4 s (TLS context)
    c = genai.Client(api_key="test", http_options=types.HttpOptions(base_url=server.url))
    yield c
    c.close()


def get_weather(city: str) -> dict[str, object]:
    """Get the current weather for a city."""
    return {"city": city, "temp_c": 21}


WEATHER = types.FunctionDeclaration(
    name="get_weather",
    description="Get the current weather for a city.",
    parameters=types.Schema(
        type=types.Type.OBJECT,
        properties={"city": types.Schema(type=types.Type.STRING)},
        required=["city"],
    ),
)


def test_generate_content(client: genai.Client, fake: FakeGemini) -> None:
    config = types.GenerateContentConfig(
        system_instruction="Be brief.",
        temperature=0.2,
        max_output_tokens=50,
        stop_sequences=["never"],
        response_logprobs=True,
        logprobs=2,
    )
    resp = client.models.generate_content(model=MODEL, contents="hello there", config=config)
    assert resp.text == "gemini-2.5-flash says: hello there"
    assert resp.response_id and resp.model_version == MODEL
    cand = resp.candidates[0] if resp.candidates else None
    assert cand is not None and cand.finish_reason == types.FinishReason.STOP
    assert cand.logprobs_result is not None and cand.logprobs_result.chosen_candidates
    usage = resp.usage_metadata
    assert usage is not None and usage.prompt_token_count and usage.thoughts_token_count == 12
    assert usage.total_token_count == usage.prompt_token_count + (usage.candidates_token_count or 0) + 12
    assert fake.requests[-1]["body"]["systemInstruction"]["parts"] == [{"text": "Be brief."}]


def test_generate_content_stream(client: genai.Client) -> None:
    chunks = list(client.models.generate_content_stream(model=MODEL, contents="stream these words"))
    assert len(chunks) > 1
    assert "".join(c.text or "" for c in chunks) == "gemini-2.5-flash says: stream these words"
    last = chunks[-1]
    assert last.candidates and last.candidates[0].finish_reason == types.FinishReason.STOP
    assert last.usage_metadata is not None and last.usage_metadata.candidates_token_count == 5


def test_function_calling_round_trip(client: genai.Client, fake: FakeGemini) -> None:
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER])],
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.ANY)
        ),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    question = types.Content(role="user", parts=[types.Part.from_text(text="Weather in Paris?")])
    first = client.models.generate_content(model=MODEL, contents=[question], config=config)
    calls = first.function_calls
    assert calls and calls[0].name == "get_weather" and calls[0].args == {"city": "example city"}
    assert first.candidates and first.candidates[0].content is not None
    answer = types.Part.from_function_response(name="get_weather", response=get_weather("Paris"))
    second = client.models.generate_content(
        model=MODEL,
        contents=[question, first.candidates[0].content, types.Content(role="user", parts=[answer])],
        config=config.model_copy(update={"tool_config": None}),
    )
    assert second.text == "gemini-2.5-flash says: Weather in Paris?"
    assert fake.attempts(MODEL) == 2


def test_automatic_function_calling_keeps_thought_signatures(client: genai.Client, fake: FakeGemini) -> None:
    # Gemini 3 attaches a thought signature to the call; the SDK must hand it back or the fake says 400.
    chat = client.chats.create(model="gemini-3-pro-preview", config=types.GenerateContentConfig(tools=[get_weather]))
    resp = chat.send_message("What is the weather in Paris?")
    assert resp.text == "gemini-3-pro-preview says: What is the weather in Paris?"
    assert fake.attempts("gemini-3-pro-preview") == 2
    call_turn, result_turn = fake.requests[-1]["body"]["contents"][1:3]
    assert call_turn["role"] == "model" and call_turn["parts"][0]["thoughtSignature"]
    assert result_turn["parts"][0]["functionResponse"]["response"] == {"result": {"city": "example city", "temp_c": 21}}


def test_json_schema_output_parses(client: genai.Client) -> None:
    config = types.GenerateContentConfig(
        response_mime_type="application/json",
        response_schema={"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}, "required": ["n"]},
    )
    resp = client.models.generate_content(model=MODEL, contents="a number", config=config)
    assert resp.parsed == {"n": 1}


def test_embed_content(client: genai.Client, fake: FakeGemini) -> None:
    resp = client.models.embed_content(
        model="gemini-embedding-001",
        contents=["first text", "second text"],
        config=types.EmbedContentConfig(output_dimensionality=32),
    )
    assert resp.embeddings is not None and len(resp.embeddings) == 2
    assert all(e.values is not None and len(e.values) == 32 for e in resp.embeddings)
    assert resp.embeddings[0].values != resp.embeddings[1].values
    assert fake.requests[-1]["path"].endswith("gemini-embedding-001:batchEmbedContents")


def test_safety_block_parses(client: genai.Client, fake: FakeGemini) -> None:
    fake.inject(MODEL, code="safety", times=1)
    resp = client.models.generate_content(model=MODEL, contents="hi")
    assert resp.prompt_feedback is not None
    assert resp.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    assert not resp.candidates and resp.text is None
    blocked = client.models.generate_content(model=MODEL, contents="please BLOCKME")
    assert blocked.candidates and blocked.candidates[0].finish_reason == types.FinishReason.SAFETY
    assert blocked.text is None


def test_rate_limit_surfaces_as_client_error(client: genai.Client, fake: FakeGemini) -> None:
    fake.inject(MODEL, status=429, retry_after="3", times=1)
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=MODEL, contents="hi")
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"
    assert client.models.generate_content(model=MODEL, contents="hi").text


def test_bad_api_key_is_rejected(client: genai.Client) -> None:
    config = types.GenerateContentConfig(http_options=types.HttpOptions(headers={"x-goog-api-key": "wrong"}))
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=MODEL, contents="hi", config=config)
    assert info.value.code == 400 and "API key not valid" in (info.value.message or "")
    assert info.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"


def test_list_models(client: genai.Client) -> None:
    names = [m.name for m in client.models.list()]
    assert "models/gemini-2.5-flash" in names and "models/gemini-embedding-001" in names


async def test_async_client(client: genai.Client) -> None:
    try:
        resp = await client.aio.models.generate_content(model=MODEL, contents="async hello")
        assert resp.text == "gemini-2.5-flash says: async hello"
        stream = await client.aio.models.generate_content_stream(model=MODEL, contents="async stream")
        text = "".join([chunk.text or "" async for chunk in stream])
        assert text == "gemini-2.5-flash says: async stream"
    finally:
        await client.aio.aclose()  # its connections belong to this test's event loop
