"""The built-in price table (issue #13, part 4): the models users run are priced, with dates."""

from __future__ import annotations

import re

import pytest

from modelyard.config.defaults import ENV_PROVIDERS
from modelyard.config.prices import PRICE_TABLE, lookup_price

REQUIRED = [
    "gpt-4",
    "gpt-4-turbo",
    "gpt-3.5-turbo",
    "gpt-4o",
    "gpt-4o-mini",
    "gemini-1.5-flash",
    "gemini-1.5-pro",
    "gemini-2.0-flash",
    "claude-3-haiku",
    "claude-3-sonnet",
    "claude-3-opus",
    "claude-3-5-sonnet",
    "claude-3-5-haiku",
    "claude-3-7-sonnet",
    "claude-sonnet-4",
    "claude-opus-4",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-opus-4-1",
    *(default for *_, default in ENV_PROVIDERS if default is not None),
]


@pytest.mark.parametrize("model", REQUIRED)
def test_the_models_users_run_have_a_price(model: str) -> None:
    price = lookup_price(model)
    assert price is not None, f"{model} has no price"
    assert price.input > 0 and price.output >= 0


@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4-turbo-2024-04-09", "gpt-4-turbo"),
        ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("claude-3-sonnet-20240229", "claude-3-sonnet"),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
        ("models/gemini-1.5-pro-002", "gemini-1.5-pro"),
        ("gemini-1.5-flash-latest", "gemini-1.5-flash"),
    ],
)
def test_dated_and_prefixed_names_find_their_price(name: str, base: str) -> None:
    assert lookup_price(name) == PRICE_TABLE[base]


def test_every_entry_says_when_it_was_taken() -> None:
    for model, price in PRICE_TABLE.items():
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", price.source_date), model


def test_open_models_are_not_priced_by_name() -> None:
    # the price of an open model depends on the host that serves it: the config must give it
    for name in ("meta-llama/Llama-3.1-8B-Instruct", "llama3.2", "mixtral-8x7b", "qwen2.5-72b-instruct"):
        assert lookup_price(name) is None, name
