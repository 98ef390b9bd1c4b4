"""models.<name>.capabilities: the config wins, then the known model, then the provider kind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from modelyard.config.capabilities import CAPABILITIES, capabilities_of
from modelyard.config.schema import ModelConfig
from tests.helpers import BIN


def caps(kind: str, upstream: str, **cfg: object) -> set[str]:
    got = capabilities_of(ModelConfig.model_validate({"provider": "p", **cfg}), kind, upstream)
    assert set(got) == set(CAPABILITIES)
    return {k for k, v in got.items() if v}


def test_kind_defaults() -> None:
    assert caps("anthropic", "claude-3-5-haiku") == {"vision", "tools", "json_schema", "prefill"}
    # permissive for an unknown model (the upstream decides), except what the kind's API lacks
    assert caps("openai", "some-compatible-model") == {
        "vision",
        "tools",
        "json_schema",
        "multiple_choices",
        "embeddings",
    }
    assert caps("llamacpp", "gemma3-270m") == {"json_schema", "prefill"}  # text in, text out, one choice
    assert "multiple_choices" not in caps("ollama", "llama3.2:latest")
    assert "embeddings" not in caps("anthropic", "claude-3-5-haiku")


def test_known_models() -> None:
    assert {"vision", "multiple_choices"} <= caps("openai", "gpt-4o-mini")
    assert "reasoning" in caps("openai", "o3-mini") and "reasoning" in caps("anthropic", "claude-sonnet-4-5")
    assert "reasoning" in caps("gemini", "gemini-2.5-flash") and "reasoning" not in caps("gemini", "gemini-2.0-flash")
    assert "vision" in caps("ollama", "llava:13b") and "vision" not in caps("openai", "gpt-3.5-turbo")
    assert "tools" not in caps("openai", "deepseek-reasoner")


def test_config_wins_and_embeddings() -> None:
    assert "tools" not in caps("openai", "gpt-4o", capabilities={"tools": False})
    assert "vision" not in caps("openai", "my-finetune", capabilities={"vision": False})
    assert "prefill" in caps("openai", "vllm-model", supports_prefill=True)
    assert caps("openai", "text-embedding-3-small", mode="embedding") == {"embeddings"}


def test_config_check_shows_them(tmp_path: Path) -> None:
    cfg = {
        "providers": {"o": {"kind": "openai", "api_key": "k"}},
        "models": {"gpt-4o": {"provider": "o"}, "plain": {"provider": "o", "capabilities": {"tools": False}}},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([str(BIN / "modelyard"), "config", "check", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "models.gpt-4o.capabilities: vision, tools, json_schema, multiple_choices, embeddings" in out.stdout
    assert "models.plain.capabilities: vision, json_schema, multiple_choices, embeddings" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**cfg, "models": {"x": {"provider": "o", "capabilities": {"telepathy": True}}}}))
    out = subprocess.run([str(BIN / "modelyard"), "config", "check", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and "models.x.capabilities.telepathy" in out.stdout
