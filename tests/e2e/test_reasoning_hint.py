"""OpenAI's ``reasoning_effort`` is a hint: it becomes Anthropic's ``thinking`` only for a model that
can think (``models.<name>.capabilities.reasoning``). Claude 3.5 and older answer ``thinking`` with a
400 ("'claude-3-5-haiku-20241022' does not support thinking."), which the fake answers as the API
does; a request that merely asks for some reasoning effort is served by them without it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
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
    config["models"]["opus-47"] = {"provider": "anthropic", "model": "claude-opus-4-7"}
    config["models"]["sonnet-46"] = {"provider": "anthropic", "model": "claude-sonnet-4-6"}
    config["models"]["gem-pro"] = {"provider": "gemini", "model": "gemini-2.5-pro"}
    config["models"]["gem-20"] = {"provider": "gemini", "model": "gemini-2.0-flash"}
    config["models"]["gpt5"] = {"provider": "openai", "model": "gpt-5"}
    config["models"]["qwen3"] = {"provider": "ollama", "model": "qwen3:8b"}
    config["models"]["oss"] = {"provider": "ollama", "model": "gpt-oss:20b"}
    config["routes"]["mixed"] = {"models": ["claude"], "fallbacks": ["haiku"]}
    config["routes"]["4o-to-5"] = {"models": ["gpt"], "fallbacks": ["gpt5"]}
    config["routes"]["new-to-old"] = {"models": ["opus-47"], "fallbacks": ["claude"]}
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


# -- adaptive thinking (Claude 4.6 and later) and what thinking cannot be combined with ----------


@pytest.mark.parametrize("stream", (False, True))
@pytest.mark.parametrize(
    ("model", "effort", "thinking", "level"),
    (
        ("opus-47", "xhigh", {"type": "adaptive"}, "xhigh"),
        ("sonnet-46", "xhigh", {"type": "adaptive"}, "max"),
        ("claude", "high", {"type": "enabled", "budget_tokens": 4096}, None),
    ),
)
def test_reasoning_effort_takes_each_models_way_of_thinking(
    gateway: ServerProcess,
    fakes: dict[str, FakeServer],
    model: str,
    effort: str,
    thinking: dict[str, object],
    level: str | None,
    stream: bool,
) -> None:
    """Claude Opus 4.7 refuses a thinking budget (only adaptive thinking with an effort), Claude 4.6
    predates the xhigh effort, 4.5 knows only budgets; and thinking refuses a temperature (which
    LangChain and many SDK users always send): the request is served on each, and thinks."""
    ask = {"model": model, "messages": [{"role": "user", "content": "think hard"}], "reasoning_effort": effort}
    with _client(gateway) as c:
        if stream:
            chunks = list(c.chat.completions.create(**ask, temperature=0.7, top_p=0.5, stream=True))  # type: ignore[call-overload]
            reasoning = "".join(
                getattr(ch.choices[0].delta, "reasoning_content", None) or "" for ch in chunks if ch.choices
            )
            text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        else:
            answer = c.chat.completions.create(**ask, temperature=0.7, top_p=0.5)  # type: ignore[call-overload]
            reasoning = getattr(answer.choices[0].message, "reasoning_content", None) or ""
            text = answer.choices[0].message.content or ""
    assert text and reasoning
    sent = fakes["anthropic"].requests[-1]["body"]
    assert sent["thinking"] == thinking and sent.get("output_config") == ({"effort": level} if level else None)
    assert "temperature" not in sent
    # Opus 4.7 takes no sampling parameters at all; the others a top_p of 0.95 or more with thinking
    assert sent.get("top_p") == (None if model == "opus-47" else 0.95)


def test_json_mode_with_reasoning_effort_is_served_without_thinking(
    gateway: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    """JSON mode forces a tool call on Anthropic models, which thinking refuses: the hint gives way."""
    with _client(gateway) as c:
        answer = c.chat.completions.create(
            model="opus-47",
            messages=[{"role": "user", "content": "a colour as JSON"}],
            response_format={"type": "json_object"},
            reasoning_effort="high",
        )
    assert isinstance(json.loads(answer.choices[0].message.content or ""), dict)
    sent = fakes["anthropic"].requests[-1]["body"]
    assert "thinking" not in sent and sent["tool_choice"]["type"] == "tool"


def test_a_fallback_from_adaptive_to_budget_thinking_answers(
    gateway: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    """Each attempt is encoded for its own model: adaptive for Opus 4.7, a budget for Sonnet 4.5."""
    fakes["anthropic"].inject("claude-opus-4-7", status=529, code="overloaded_error")
    with _client(gateway) as c:
        answer = c.chat.completions.with_raw_response.create(
            model="new-to-old", messages=[{"role": "user", "content": "hello"}], reasoning_effort="low"
        )
    assert answer.headers["x-modelyard-model"] == "claude"
    *tried, served = (r["body"] for r in fakes["anthropic"].requests)
    assert tried and all(
        b["thinking"] == {"type": "adaptive"} and b["output_config"] == {"effort": "low"} for b in tried
    )
    assert served["thinking"] == {"type": "enabled", "budget_tokens": 1024} and "output_config" not in served


def test_messages_api_takes_output_config(gateway: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    """Anthropic's own SDK: ``output_config.effort`` reaches the model, ``output_config.format`` is
    a structured output served by any model, a bad effort is a 400 in Anthropic's error shape."""
    with anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0) as c:
        answer = c.messages.create(
            model="opus-47",
            max_tokens=2000,
            messages=[{"role": "user", "content": "think"}],
            thinking={"type": "adaptive"},
            output_config={"effort": "low"},
        )
        assert [b.type for b in answer.content] == ["thinking", "text"]
        assert fakes["anthropic"].requests[-1]["body"]["output_config"] == {"effort": "low"}
        schema = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]}
        for model in ("opus-47", "gpt"):
            shaped = c.messages.create(
                model=model,
                max_tokens=500,
                messages=[{"role": "user", "content": "a colour"}],
                output_config={"format": {"type": "json_schema", "schema": schema}},
            )
            text = "".join(b.text for b in shaped.content if b.type == "text")
            assert isinstance(json.loads(text)["colour"], str), model
        with pytest.raises(anthropic.BadRequestError) as err:
            c.messages.create(
                model="opus-47",
                max_tokens=100,
                messages=[{"role": "user", "content": "x"}],
                output_config={"effort": "extreme"},  # type: ignore[typeddict-item]
            )
        assert err.value.status_code == 400 and "output_config.effort" in str(err.value)


@pytest.mark.parametrize(
    ("model", "effort", "sent"),
    (
        ("gem-pro", "none", {"thinkingBudget": 128}),  # 2.5 Pro cannot stop thinking (0 is a 400)
        ("gem-pro", "xhigh", {"thinkingBudget": 32768}),
        ("gem", "xhigh", {"thinkingBudget": 24576}),  # 2.5 Flash's most
        ("gem-20", "high", None),  # Gemini 2.0 does not think: the hint is dropped
    ),
)
def test_reasoning_effort_on_gemini_stays_in_each_models_range(
    gateway: ServerProcess, fakes: dict[str, FakeServer], model: str, effort: str, sent: dict[str, int] | None
) -> None:
    with _client(gateway) as c:
        answer = c.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "think"}],
            reasoning_effort=effort,  # type: ignore[arg-type]
        )
    assert answer.choices[0].message.content
    body = fakes["gemini"].requests[-1]["body"]
    assert (body.get("generationConfig") or {}).get("thinkingConfig") == sent


# -- OpenAI's reasoning models take max_completion_tokens and the default sampling ----------------


def test_a_claude_sdk_call_served_by_gpt_5(gateway: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    """The Messages API requires max_tokens, and its callers often set a temperature: GPT-5
    refuses both ("Use 'max_completion_tokens' instead"; "Only the default (1) value is supported")."""
    with anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0) as c:
        answer = c.messages.create(
            model="gpt5",
            max_tokens=300,
            messages=[{"role": "user", "content": "hello"}],
            extra_body={"temperature": 0.3},  # this SDK's create() no longer takes it as an argument
        )
    assert answer.content and answer.content[0].type == "text"
    sent = fakes["openai"].requests[-1]["body"]
    assert sent["model"] == "gpt-5" and sent["max_completion_tokens"] == 300
    assert "max_tokens" not in sent and "temperature" not in sent


@pytest.mark.parametrize("stream", (False, True))
def test_a_fallback_from_gpt_4o_to_gpt_5_answers(
    gateway: ServerProcess, fakes: dict[str, FakeServer], stream: bool
) -> None:
    """Each attempt is encoded for its own model: gpt-4o keeps max_tokens and the temperature."""
    fakes["openai"].inject("gpt-4o", status=503)
    with _client(gateway) as c:
        ask = {
            "model": "4o-to-5",
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 50,
            "temperature": 0.2,
        }
        if stream:
            text = "".join(
                ch.choices[0].delta.content or ""
                for ch in c.chat.completions.create(**ask, stream=True)
                if ch.choices  # type: ignore[call-overload]
            )
        else:
            text = c.chat.completions.create(**ask).choices[0].message.content or ""  # type: ignore[call-overload]
    assert text.startswith("gpt-5")
    tried = [r["body"] for r in fakes["openai"].requests if r["body"]["model"] == "gpt-4o"]
    served = fakes["openai"].requests[-1]["body"]
    assert tried and all(b["max_tokens"] == 50 and b["temperature"] == 0.2 for b in tried)
    assert served["max_completion_tokens"] == 50 and "temperature" not in served


def test_opus_4_7_gets_no_sampling_parameters(gateway: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    """Claude Opus 4.7 refuses temperature, top_p and top_k ("`temperature` is deprecated for this
    model"): they are left out for it, kept for Sonnet 4.5."""
    ask = {"messages": [{"role": "user", "content": "hello"}], "temperature": 0.2, "top_p": 0.5}
    with _client(gateway) as c:
        for model, kept in (("opus-47", False), ("claude", True)):
            answer = c.chat.completions.create(model=model, **ask)  # type: ignore[call-overload]
            assert answer.choices[0].message.content
            sent = fakes["anthropic"].requests[-1]["body"]
            assert ("temperature" in sent, "top_p" in sent) == (kept, kept), model


@pytest.mark.parametrize(
    ("model", "effort", "think", "reasons"),
    (
        ("qwen3", "high", True, True),
        ("qwen3", "none", False, False),  # a local thinking model answers at once
        ("oss", "medium", "medium", True),
        ("llama", "high", None, False),  # Llama 3.2 does not think: the hint is dropped
    ),
)
def test_reasoning_effort_on_ollama_is_think(
    gateway: ServerProcess,
    fakes: dict[str, FakeServer],
    model: str,
    effort: str,
    think: bool | str | None,
    reasons: bool,
) -> None:
    for name in ("qwen3:8b", "gpt-oss:20b"):  # installed after each test's reset of the fakes
        fakes["ollama"].install(name)  # type: ignore[attr-defined]
    with _client(gateway) as c:
        answer = c.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "think"}],
            reasoning_effort=effort,  # type: ignore[arg-type]
        )
    assert answer.choices[0].message.content
    assert bool(getattr(answer.choices[0].message, "reasoning_content", None)) is reasons
    assert fakes["ollama"].requests[-1]["body"].get("think") == think
