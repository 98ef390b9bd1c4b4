"""The ``auto`` strategy's tier rules (#17 point 4): complexity ceilings, the quality floor, the
budget, the escalation order, and the config errors an operator gets for a wrong ``auto`` section."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.classify.model import Classification
from modelyard.config.loader import parse_config
from modelyard.errors import ConfigError
from modelyard.routing.auto import choose
from modelyard.runtime import Runtime


def config(auto: dict[str, Any] | None = None, **route: Any) -> dict[str, Any]:
    models = {
        name: {"provider": "p", "model": name, "input_cost_per_mtok": price, "output_cost_per_mtok": price * 4}
        for name, price in (("small", 0.1), ("small2", 0.2), ("medium", 1.0), ("large", 10.0))
    }
    return {
        "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9", "api_key": "k"}},
        "models": models,
        "routes": {
            "smart": {
                "strategy": "auto",
                "auto": auto
                or {
                    "tiers": [
                        {"name": "cheap", "models": ["small", "small2"], "max_complexity": 0.4},
                        {"name": "mid", "models": ["medium"], "max_complexity": 0.8},
                        {"name": "strong", "models": ["large"]},
                    ]
                },
                **route,
            }
        },
    }


def runtime(**kwargs: Any) -> Runtime:
    return Runtime(parse_config(config(**kwargs), env={}))


def names(choice: Any) -> list[str]:
    return [d.name for d in choice.order]


def c(complexity: float, p_hard: float = 0.2) -> Classification:
    return Classification(complexity=complexity, p_hard=p_hard, task="chat")


def test_models_default_to_the_tiers_and_the_tier_follows_complexity() -> None:
    rt = runtime()
    route = rt.routes["smart"]
    assert [d.name for d in route.pool] == ["small", "small2", "medium", "large"]
    assert route.auto is not None
    cheap = choose(route.auto, c(0.1), route.pool)
    assert cheap.tier == "cheap" and cheap.reason == "complexity 0.10 <= 0.4"
    # the chosen tier, then the tiers above (escalation), then the ones below (failover)
    assert names(cheap) == ["small", "small2", "medium", "large"]
    mid = choose(route.auto, c(0.4001), route.pool)
    assert mid.tier == "mid" and names(mid) == ["medium", "large", "small", "small2"]
    strong = choose(route.auto, c(0.95), route.pool)
    assert strong.tier == "strong" and strong.reason == "complexity 0.95 > 0.8"
    assert names(strong) == ["large", "medium", "small", "small2"]


def test_a_quality_floor_moves_the_prompt_up() -> None:
    rt = runtime(
        auto={
            "tiers": [
                {"name": "cheap", "models": ["small"], "max_complexity": 0.5},
                {"name": "mid", "models": ["medium"], "max_complexity": 0.9},
                {"name": "strong", "models": ["large"]},
            ],
            "min_expected_quality": 0.75,
        }
    )
    route = rt.routes["smart"]
    assert route.auto is not None
    assert choose(route.auto, c(0.1, p_hard=0.2), route.pool).tier == "cheap"  # 0.8 expected: enough
    up = choose(route.auto, c(0.1, p_hard=0.3), route.pool)  # 0.7 expected: not enough below the top
    assert up.tier == "strong" and "expected quality 0.70 < min_expected_quality 0.75" in up.reason


def test_a_budget_moves_the_prompt_down_to_the_best_tier_that_fits() -> None:
    rt = runtime()
    route = rt.routes["smart"]
    assert route.auto is not None
    price = {"small": 0.001, "small2": 0.002, "medium": 0.01, "large": 0.1}
    est = lambda d: price[d.name]  # noqa: E731
    fits_mid = choose(route.auto, c(0.99), route.pool, max_cost_usd=0.05, estimate=est)
    assert fits_mid.tier == "mid" and "tier strong does not fit max_cost_usd 0.05" in fits_mid.reason
    assert names(fits_mid)[0] == "medium"
    assert choose(route.auto, c(0.99), route.pool, max_cost_usd=0.0015, estimate=est).tier == "cheap"
    # nothing fits: the choice stands (the request is then refused with 402 by the accounting)
    assert choose(route.auto, c(0.99), route.pool, max_cost_usd=0.0001, estimate=est).tier == "strong"
    # an unpriced model fits any budget
    assert choose(route.auto, c(0.99), route.pool, max_cost_usd=0.05, estimate=lambda d: None).tier == "strong"


def test_a_tier_whose_models_are_all_disabled_is_skipped() -> None:
    cfg = config()
    cfg["models"]["medium"]["enabled"] = False
    rt = Runtime(parse_config(cfg, env={}))
    route = rt.routes["smart"]
    assert route.auto is not None
    choice = choose(route.auto, c(0.6), route.pool)
    assert choice.tier == "strong" and "medium" not in names(choice)


@pytest.mark.parametrize(
    ("route", "path", "message"),
    [
        ({"strategy": "auto", "models": ["small"]}, "routes.smart", "strategy auto needs an auto section"),
        (
            {"strategy": "cost", "models": ["small"], "auto": {"tiers": [{"name": "a", "models": ["small"]}]}},
            "routes.smart",
            "an auto section needs strategy: auto",
        ),
        (
            {
                "strategy": "auto",
                "auto": {
                    "tiers": [
                        {"name": "a", "models": ["small"], "max_complexity": 0.8},
                        {"name": "b", "models": ["large"], "max_complexity": 0.5},
                        {"name": "c", "models": ["medium"]},
                    ]
                },
            },
            "routes.smart.auto",
            "must be above the one before",
        ),
        (
            {
                "strategy": "auto",
                "auto": {
                    "tiers": [
                        {"name": "a", "models": ["small"], "max_complexity": 0.5},
                        {"name": "b", "models": ["large"], "max_complexity": 0.9},
                    ]
                },
            },
            "routes.smart.auto",
            "leave its max_complexity unset",
        ),
        (
            {"strategy": "auto", "models": ["small"], "auto": {"tiers": [{"name": "a", "models": ["large"]}]}},
            "routes.smart",
            "does not list in models: large",
        ),
        (
            {"strategy": "auto", "auto": {"tiers": [{"name": "a", "models": ["nope"]}]}},
            "routes.smart.models[0]",
            "unknown model 'nope'",
        ),
        (
            {"strategy": "auto", "auto": {"tiers": [{"name": "a", "models": ["small"]}], "judge": {"model": "judgy"}}},
            "routes.smart.auto.judge.model",
            "unknown model 'judgy'",
        ),
        (
            {"models": ["small"], "canary": {"model": "nope", "percent": 10}},
            "routes.smart.canary.model",
            "unknown model 'nope'",
        ),
        (
            {"models": ["small"], "shadow": {"model": "small", "percent": 10}},
            "routes.smart.shadow.model",
            "already the route's first model",
        ),
        (
            {"models": ["small"], "canary": {"model": "large", "percent": 0}},
            "routes.smart.canary.percent",
            "greater than 0",
        ),
        (
            {
                "strategy": "auto",
                "auto": {"tiers": [{"name": "a", "models": ["small"]}]},
                "canary": {"model": "large", "percent": 5},
            },
            "routes.smart.canary",
            "no canary",
        ),
        (
            {"strategy": "auto", "auto": {"tiers": [{"name": "a", "models": ["small"]}], "min_expected_quality": 2}},
            "routes.smart.auto.min_expected_quality",
            "less than or equal to 1",
        ),
    ],
)
def test_a_wrong_auto_section_is_a_config_error_naming_its_path(route: dict[str, Any], path: str, message: str) -> None:
    cfg = config()
    cfg["routes"]["smart"] = route
    with pytest.raises(ConfigError) as info:
        parse_config(cfg, env={})
    assert message in str(info.value)
    assert path in str(info.value)


def test_a_weights_file_that_is_not_a_classifier_is_a_config_error(tmp_path: Any) -> None:
    bad = tmp_path / "w.json"
    bad.write_text("[]")
    cfg = config(
        auto={"tiers": [{"name": "a", "models": ["small"]}], "classifier": str(bad)},
    )
    with pytest.raises(ConfigError) as info:
        Runtime(parse_config(cfg, env={}))
    assert "routes.smart.auto.classifier" in str(info.value)
