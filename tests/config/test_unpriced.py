"""Unpriced models (issue #13, part 4): a USD budget over a model with no price is a config error;
local models are free by default; ``config check`` warns about every unpriced model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelyard.config import parse_config
from modelyard.config.prices import unpriced_models
from modelyard.errors import ConfigError


def config(**extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "providers": {
            "custom": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "x"},
            "box": {"kind": "ollama", "base_url": "http://127.0.0.1:9"},
        },
        "models": {
            "mine": {"provider": "custom", "model": "my-finetune"},
            "gpt": {"provider": "custom", "model": "gpt-4o"},
            "llama": {"provider": "box", "model": "llama3.2"},
        },
        "routes": {"main": {"models": ["gpt"], "fallbacks": ["mine"]}, "local": {"models": ["llama"]}},
    }
    cfg.update(extra)
    return cfg


def test_a_usd_budget_over_an_unpriced_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(config(budgets=[{"name": "monthly", "limit_usd": 100}]))
    text = str(info.value)
    assert "models.mine" in text and "my-finetune" in text and "monthly" in text
    assert "input_cost_per_mtok" in text and "free: true" in text


def test_a_route_budget_covers_only_its_models() -> None:
    parse_config(config(budgets=[{"name": "l", "scope": "route", "target": "local", "limit_usd": 5}]))
    with pytest.raises(ConfigError, match=r"models\.mine"):
        parse_config(config(budgets=[{"name": "m", "scope": "route", "target": "main", "limit_usd": 5}]))


def test_a_token_budget_needs_no_price() -> None:
    parse_config(config(budgets=[{"name": "pool", "limit_tokens": 20_000_000, "period": "total"}]))


@pytest.mark.parametrize(
    "fix", [{"free": True}, {"input_cost_per_mtok": 0.5, "output_cost_per_mtok": 1.0}], ids=["free", "price"]
)
def test_either_fix_is_accepted(fix: dict[str, Any]) -> None:
    cfg = config(budgets=[{"name": "monthly", "limit_usd": 100}])
    cfg["models"]["mine"].update(fix)
    parse_config(cfg)
    assert unpriced_models(parse_config(cfg)) == []


def test_local_models_are_free_unless_marked_otherwise() -> None:
    cfg = parse_config(config())
    assert unpriced_models(cfg) == ["mine"]
    paid = config()
    paid["models"]["llama"]["free"] = False
    assert unpriced_models(parse_config(paid)) == ["mine", "llama"]


def test_config_check_warns_about_every_unpriced_model(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config()))
    out = subprocess.run(
        [str(Path(sys.executable).parent / "modelyard"), "config", "check", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    text = " ".join((out.stdout + out.stderr).split())
    assert "models.mine: no price for 'my-finetune'" in text and "free: true" in text
    assert "models.gpt: no price" not in text and "models.llama: no price" not in text
    assert "models.gpt.capabilities:" in text  # the capabilities lines name every model


def test_config_check_fails_with_a_usd_budget(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config(budgets=[{"name": "monthly", "limit_usd": 100}])))
    out = subprocess.run(
        [str(Path(sys.executable).parent / "modelyard"), "config", "check", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 2
    text = " ".join((out.stdout + out.stderr).split())
    assert "models.mine" in text and "monthly" in text and "free: true" in text
