"""Prices and cost: table lookups under real-world model names, overrides, the cost formula, estimates."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelyard.accounting.pricing import (
    PRICE_TABLE,
    TOKENS_PER_IMAGE,
    TOKENS_PER_LOW_DETAIL_IMAGE,
    Price,
    cost,
    estimate_input_tokens,
    estimate_text_tokens,
    lookup_price,
    price_for,
    worst_case_cost,
    worst_case_output_tokens,
)
from modelyard.config.prices import TAKEN
from modelyard.config.schema import ModelConfig
from modelyard.types import ChatRequest, ContentPart, Message, ResponseFormat, Tool, ToolCall, Usage


@pytest.mark.parametrize(
    ("name", "entry"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("openai/gpt-4.1-mini", "gpt-4.1-mini"),
        ("openai:o3", "o3"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("gpt-5-chat-latest", "gpt-5-chat"),
        ("GPT-5-Mini", "gpt-5-mini"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-opus-4-20250514", "claude-opus-4"),
        ("claude-opus-4-0", "claude-opus-4"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("anthropic/claude-haiku-4-5", "claude-haiku-4-5"),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
        ("claude-3-5-sonnet@20240620", "claude-3-5-sonnet"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite"),
        ("gemini-2.5-pro-preview-06-05", "gemini-2.5-pro"),
        ("text-embedding-3-small", "text-embedding-3-small"),
    ],
)
def test_lookup_handles_dated_names_and_prefixes(name: str, entry: str) -> None:
    assert lookup_price(name) == PRICE_TABLE[entry]


def test_snapshot_with_its_own_price_wins_over_the_alias() -> None:
    assert lookup_price("gpt-4o-2024-05-13") == Price(5.0, 15.0, source_date=TAKEN)
    assert lookup_price("gpt-4o") == Price(2.5, 10.0, 1.25, source_date=TAKEN)


@pytest.mark.parametrize(
    "name", ["llama3.2:latest", "qwen2.5:7b", "gpt-4o-realtime-preview", "o3-deep", "", "my-model"]
)
def test_unknown_models_have_no_price(name: str) -> None:
    # no prefix matching: o3-deep must not be billed as o3, gpt-4o-realtime not as gpt-4o
    assert lookup_price(name) is None


def test_table_is_sane() -> None:
    for name, p in PRICE_TABLE.items():
        assert p.input > 0, name
        assert p.output >= p.input or name.startswith("text-embedding"), name
        assert p.cached_input is None or p.cached_input < p.input, name
        assert p.cache_write is None or p.cache_write == pytest.approx(p.input * 1.25, rel=0.05), name


def model(**kw: float) -> ModelConfig:
    return ModelConfig(provider="p", **kw)  # type: ignore[arg-type]


def test_config_overrides_each_field() -> None:
    table = PRICE_TABLE["claude-sonnet-4-5"]
    assert price_for(None, "claude-sonnet-4-5") == table
    assert price_for(model(), "claude-sonnet-4-5") == table
    assert price_for(model(output_cost_per_mtok=12), "claude-sonnet-4-5") == Price(3.0, 12.0, 0.3, 3.75)
    assert price_for(model(cached_input_cost_per_mtok=0.1), "claude-sonnet-4-5") == Price(3.0, 15.0, 0.1, 3.75)
    # a new input price: cache writes follow it (1.25x), cached reads keep the table's
    assert price_for(model(input_cost_per_mtok=2), "claude-sonnet-4-5") == Price(2.0, 15.0, 0.3, None)


def test_config_prices_a_model_the_table_does_not_know() -> None:
    assert price_for(None, "my-finetune") is None
    assert price_for(model(input_cost_per_mtok=1, output_cost_per_mtok=2), "my-finetune") == Price(1.0, 2.0)
    assert price_for(model(output_cost_per_mtok=2), "my-finetune") == Price(0.0, 2.0)


def test_cost_openai_convention_with_cached_tokens() -> None:
    p = Price(input=2.5, output=10.0, cached_input=1.25)
    usage = Usage(prompt_tokens=10_000, completion_tokens=1_000, cached_tokens=4_000)
    # 6,000 fresh at 2.50 + 4,000 cached at 1.25 + 1,000 out at 10.00, per million
    assert cost(p, usage) == pytest.approx((6_000 * 2.5 + 4_000 * 1.25 + 1_000 * 10) / 1e6)


def test_cached_tokens_without_a_cached_price_cost_the_input_rate() -> None:
    p = Price(input=3.0, output=6.0)
    assert cost(p, Usage(prompt_tokens=1000, cached_tokens=1000)) == pytest.approx(3000 / 1e6)


def test_anthropic_cache_writes() -> None:
    usage = Usage(prompt_tokens=10_000, completion_tokens=500, cached_tokens=2_000, cache_write_tokens=3_000)
    sonnet = PRICE_TABLE["claude-sonnet-4-5"]
    expected = (5_000 * 3.0 + 2_000 * 0.30 + 3_000 * 3.75 + 500 * 15.0) / 1e6
    assert cost(sonnet, usage) == pytest.approx(expected)
    # no write price: 1.25x input
    assert cost(Price(input=4.0, output=0.0), Usage(prompt_tokens=1000, cache_write_tokens=1000)) == pytest.approx(
        0.005
    )
    # 1-hour writes: 2x input, the rest of the writes at the 5-minute rate
    one_hour = Usage(prompt_tokens=10_000, cache_write_tokens=3_000, cache_write_1h_tokens=1_000)
    assert cost(sonnet, one_hour) == pytest.approx((7_000 * 3.0 + 2_000 * 3.75 + 1_000 * 6.0) / 1e6)


def test_cost_of_nothing() -> None:
    assert cost(None, Usage(prompt_tokens=10**6, completion_tokens=10**6)) == 0.0
    assert worst_case_cost(None, 10**6, 10**6) == 0.0
    assert cost(Price(1, 1), Usage()) == 0.0


def test_worst_case_cost() -> None:
    assert worst_case_cost(Price(input=2.0, output=8.0, cached_input=0.5), 1_000, 500) == pytest.approx(0.006)


def req(*messages: Message, **kw: object) -> ChatRequest:
    return ChatRequest(model="m", messages=list(messages) or [Message("user", "hi")], **kw)  # type: ignore[arg-type]


def test_worst_case_output_tokens() -> None:
    capped = model(max_output_tokens=1000)  # type: ignore[arg-type]
    assert worst_case_output_tokens(req(max_tokens=50), None, 10) == 50
    assert worst_case_output_tokens(req(max_tokens=5000), capped, 10) == 1000
    assert worst_case_output_tokens(req(), capped, 10) == 1000
    assert worst_case_output_tokens(req(), ModelConfig(provider="p", context_window=8000), 3000) == 5000
    assert worst_case_output_tokens(req(), None, 10) == 4096
    assert worst_case_output_tokens(req(max_tokens=100, n=3), None, 10) == 300


# -- estimates ------------------------------------------------------------------------------------

PROSE = (
    "Large language models read text as tokens: short, frequent pieces of words. In English a token is "
    "about four characters, so a page of prose of three thousand characters is around seven hundred tokens."
)


def test_english_estimate_is_close_and_errs_high() -> None:
    n = estimate_text_tokens(PROSE)
    assert len(PROSE) / 4.2 <= n <= len(PROSE) / 3.0
    assert estimate_text_tokens("The quick brown fox jumps over the lazy dog.") in range(10, 16)  # cl100k: 10


def test_cjk_and_accented_text() -> None:
    assert estimate_text_tokens("你好世界今天天气很好") >= 10  # ~1 token per ideograph
    assert estimate_text_tokens("Ça coûte très cher, déjà") >= 8


@given(st.text(max_size=400))
def test_text_estimate_bounds(text: str) -> None:
    n = estimate_text_tokens(text)
    assert n >= len(text.split())
    assert n <= len(text)  # never more than one token a character
    if text.isascii():
        assert n >= len(text) / 4


def test_request_estimate_counts_framing_images_tools() -> None:
    base = estimate_input_tokens(req(Message("user", "hi")))
    assert base == 3 + 4 + 1
    two = estimate_input_tokens(req(Message("system", "hi"), Message("user", "hi")))
    assert two == base + 4 + 1
    image = Message(
        "user", [ContentPart("text", text="hi"), ContentPart("image", image_url="data:image/png;base64,AA")]
    )
    low = Message("user", [ContentPart("text", text="hi"), ContentPart("image", image_url="u", detail="low")])
    assert estimate_input_tokens(req(image)) == base + TOKENS_PER_IMAGE
    assert estimate_input_tokens(req(low)) == base + TOKENS_PER_LOW_DETAIL_IMAGE
    tool = Tool("get_weather", "Current weather", {"type": "object", "properties": {"city": {"type": "string"}}})
    assert estimate_input_tokens(req(tools=[tool])) > base + 20
    call = Message("assistant", None, tool_calls=[ToolCall("c1", "get_weather", '{"city": "Paris"}')])
    assert estimate_input_tokens(req(Message("user", "hi"), call)) > two
    schema = ResponseFormat("json_schema", schema={"type": "object", "properties": {"a": {"type": "integer"}}})
    assert estimate_input_tokens(req(response_format=schema)) > base


def test_pricing_never_imports_tiktoken() -> None:
    code = (
        "import sys, modelyard.accounting.pricing as p;"
        "from modelyard.types import ChatRequest, Message;"
        "p.estimate_input_tokens(ChatRequest(model='m', messages=[Message('user', 'hello')]));"
        "assert 'tiktoken' not in sys.modules, 'tiktoken imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
