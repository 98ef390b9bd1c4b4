"""The official ``anthropic`` SDK talks to FakeAnthropic and parses every answer."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from modelyard.testing.fake_anthropic import FakeAnthropic

MODEL = "claude-sonnet-4-6"
WEATHER: Any = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as server:
        yield server


@pytest.fixture(scope="module")
def shared_client(fake: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    c = anthropic.Anthropic(base_url=fake.url, api_key="sk-ant-test", max_retries=0)
    yield c
    c.close()


@pytest.fixture
def client(fake: FakeAnthropic, shared_client: anthropic.Anthropic) -> anthropic.Anthropic:
    fake.reset()
    return shared_client


def test_plain_message(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(
        model=MODEL,
        max_tokens=256,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello, Claude"}],
    )
    assert msg.id.startswith("msg_")
    assert msg.type == "message" and msg.role == "assistant" and msg.model == MODEL
    assert msg.content[0].type == "text"
    assert msg.content[0].text == f"{MODEL} says: Hello, Claude"
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.input_tokens > 0 and msg.usage.output_tokens == 4


def test_stop_sequence_and_max_tokens(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(
        model=MODEL,
        max_tokens=256,
        stop_sequences=["gamma"],
        messages=[{"role": "user", "content": "alpha beta gamma delta"}],
    )
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "gamma"
    msg = client.messages.create(model=MODEL, max_tokens=1, messages=[{"role": "user", "content": "a b c"}])
    assert msg.stop_reason == "max_tokens"


def test_streaming_helper_and_final_message(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL, max_tokens=256, messages=[{"role": "user", "content": "stream me"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == f"{MODEL} says: stream me"
    assert final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4 and final.usage.input_tokens > 0


def test_raw_event_stream(client: anthropic.Anthropic) -> None:
    events = list(
        client.messages.create(model=MODEL, max_tokens=256, stream=True, messages=[{"role": "user", "content": "hi"}])
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds[-2] == "message_delta"
    assert {"content_block_start", "content_block_delta", "content_block_stop"} <= set(kinds)


def test_tool_use_then_tool_result_round_trip(client: anthropic.Anthropic) -> None:
    question: Any = {"role": "user", "content": "What is the weather in Paris?"}
    first = client.messages.create(model=MODEL, max_tokens=256, tools=[WEATHER], messages=[question])
    assert first.stop_reason == "tool_use"
    use = first.content[-1]
    assert use.type == "tool_use"
    assert use.id.startswith("toolu_") and use.name == "get_weather" and use.input == {"city": "example city"}

    result: Any = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C"}]}
    second = client.messages.create(
        model=MODEL, max_tokens=256, tools=[WEATHER], messages=[question, first.to_param(), result]
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    assert second.content[0].text == f"{MODEL} says: What is the weather in Paris?"

    bad: Any = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_nope", "content": "x"}]}
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(model=MODEL, max_tokens=256, tools=[WEATHER], messages=[question, first.to_param(), bad])
    assert "tool_use_id" in str(err.value)


def test_streamed_tool_use(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model=MODEL,
        max_tokens=256,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    block = final.content[0]
    assert block.type == "tool_use" and block.input == {"city": "example city"}


def test_images_and_count_tokens(client: anthropic.Anthropic) -> None:
    content: Any = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "Describe these"},
    ]
    msg = client.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": content}])
    assert msg.content[0].type == "text" and msg.content[0].text.endswith("Describe these")
    count = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": content}])
    assert count.input_tokens == msg.usage.input_tokens


def test_models_list(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    models = list(client.models.list(limit=2))  # the SDK follows the pages itself
    assert [m.id for m in models] == fake.models
    assert models[0].display_name == "Claude Sonnet 4.6"
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("claude-none")


def test_injected_429_is_a_rate_limit_error(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    fake.inject(MODEL, status=429, retry_after="0", times=1)
    with pytest.raises(anthropic.RateLimitError) as err:
        client.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 429
    assert isinstance(err.value.body, dict) and err.value.body["error"]["type"] == "rate_limit_error"
    assert err.value.request_id is not None and err.value.request_id.startswith("req_")

    fake.inject(MODEL, status=429, retry_after="0", times=1)
    retrying = client.with_options(max_retries=1)
    msg = retrying.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert msg.stop_reason == "end_turn"
    assert fake.attempts(MODEL) == 3


def test_error_types(client: anthropic.Anthropic, fake: FakeAnthropic) -> None:
    fake.inject(MODEL, status=529, times=1)
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.BadRequestError, match="Input should be 'user' or 'assistant'"):
        client.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "system", "content": "hi"}])
    fake.inject(MODEL, code="overloaded_error", times=1)
    stream = client.messages.stream(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.APIStatusError, match="overloaded_error"), stream as s:
        s.get_final_message()


def test_wrong_key_is_an_authentication_error() -> None:
    with FakeAnthropic(api_key="sk-ant-right") as fake:
        c = anthropic.Anthropic(base_url=fake.url, api_key="sk-ant-wrong", max_retries=0)
        try:
            with pytest.raises(anthropic.AuthenticationError):
                c.messages.create(model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
        finally:
            c.close()
