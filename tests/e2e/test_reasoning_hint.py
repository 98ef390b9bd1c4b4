"""OpenAI's ``reasoning_effort`` is a hint: it becomes Anthropic's ``thinking`` only for a model that
can think (``models.<name>.capabilities.reasoning``). Claude 3.5 and older answer ``thinking`` with a
400 ("'claude-3-5-haiku-20241022' does not support thinking."), which the fake answers as the API
does; a request that merely asks for some reasoning effort is served by them without it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from modelyard.config.capabilities import capabilities_of
from modelyard.config.schema import ModelConfig
from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.helpers import ServerProcess


@pytest.fixture(scope="module")
def gateway(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = gateway_config(fakes)
    config["models"]["haiku"] = {"provider": "anthropic", "model": "claude-3-5-haiku-20241022"}
    config["models"]["haiku-45"] = {"provider": "anthropic", "model": "claude-haiku-4-5"}
    config["models"]["sonnet-off"] = {
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "capabilities": {"reasoning": False},
    }
    config["routes"]["mixed"] = {"models": ["claude"], "fallbacks": ["haiku"]}
    proc = ServerProcess(config, Path(tmp_path_factory.mktemp("reasoning-hint")))
    try:
        yield proc
    finally:
        proc.stop()


def _client(gateway: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="k", max_retries=0)


@pytest.mark.parametrize("stream", (False, True))
@pytest.mark.parametrize(
    ("model", "thinks"), (("claude", True), ("haiku-45", True), ("haiku", False), ("sonnet-off", False))
)
def test_reasoning_effort_becomes_thinking_only_where_the_model_can_think(
    gateway: ServerProcess, fakes: dict[str, FakeServer], model: str, thinks: bool, stream: bool
) -> None:
    with _client(gateway) as c:
        if stream:
            text = "".join(
                chunk.choices[0].delta.content or ""
                for chunk in c.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": "think about it"}],
                    reasoning_effort="low",
                    stream=True,
                )
                if chunk.choices
            )
        else:
            answer = c.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "think about it"}], reasoning_effort="low"
            )
            text = answer.choices[0].message.content or ""
    assert text
    sent = fakes["anthropic"].requests[-1]["body"]
    if thinks:
        assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    else:
        assert "thinking" not in sent


def test_a_fallback_that_cannot_think_still_answers(gateway: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    """The route's first model fails; its fallback, Claude 3.5 Haiku, gets the request without
    ``thinking`` (sent, it would be a 400 and the whole request would fail)."""
    fakes["anthropic"].inject("claude-sonnet-4-5", status=529, code="overloaded_error")  # cleared after the test
    with _client(gateway) as c:
        answer = c.chat.completions.with_raw_response.create(
            model="mixed", messages=[{"role": "user", "content": "hello"}], reasoning_effort="medium"
        )
    assert answer.headers["x-modelyard-model"] == "haiku"
    *tried, served = (r["body"] for r in fakes["anthropic"].requests)
    assert tried and all(b["model"] == "claude-sonnet-4-5" and b["thinking"]["budget_tokens"] == 2048 for b in tried)
    assert served["model"] == "claude-3-5-haiku-20241022" and "thinking" not in served


def test_who_can_think_by_default() -> None:
    """Claude 3.7 and later think (unknown Claude models too: the upstream decides); 3.5 and older do
    not; the config says otherwise per model."""

    def reasons(upstream: str, kind: str = "anthropic", **caps: bool) -> bool:
        model = ModelConfig(provider="p", model=upstream, capabilities=caps)
        return capabilities_of(model, kind, upstream)["reasoning"]

    assert reasons("claude-sonnet-4-5") and reasons("claude-opus-4-1") and reasons("claude-haiku-4-5")
    assert reasons("claude-3-7-sonnet-20250219") and reasons("claude-some-future-model")
    assert not reasons("claude-3-5-haiku-20241022") and not reasons("claude-3-5-sonnet-latest")
    assert not reasons("claude-3-opus-20240229") and not reasons("claude-2.1")
    assert not reasons("claude-sonnet-4-5", reasoning=False)
    assert not reasons("anthropic/claude-3-5-haiku", kind="openai")
