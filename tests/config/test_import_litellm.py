"""``modelyard import-litellm`` (#15 point 7): a LiteLLM proxy config becomes a valid modelyard
config, with what did not map listed by YAML path; the result then serves against the fakes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import yaml

from modelyard.config.litellm import convert_litellm
from modelyard.config.loader import parse_config
from modelyard.testing import fake_class
from tests.helpers import BIN, ServerProcess

LITELLM = {
    "model_list": [
        {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/OPENAI_API_KEY",
                                                    "rpm": 100}},
        {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_base": "os.environ/OPENAI_BASE_2",
                                                    "api_key": "os.environ/OPENAI_API_KEY_2", "tpm": 50000}},
        {"model_name": "claude", "litellm_params": {"model": "anthropic/claude-sonnet-4-5",
                                                    "api_key": "os.environ/ANTHROPIC_API_KEY"},
         "model_info": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05}},
        {"model_name": "local", "litellm_params": {"model": "ollama_chat/llama3.2", "api_base": "http://localhost:11434"}},
        {"model_name": "embed", "litellm_params": {"model": "openai/text-embedding-3-small",
                                                   "api_key": "os.environ/OPENAI_API_KEY"},
         "model_info": {"mode": "embedding"}},
        {"model_name": "bedrock", "litellm_params": {"model": "bedrock/anthropic.claude-v2"}},
    ],
    "router_settings": {"routing_strategy": "latency-based-routing", "num_retries": 2, "timeout": 30,
                        "redis_host": "localhost"},
    "litellm_settings": {"fallbacks": [{"gpt-4o": ["claude", "local"]}], "max_budget": 100, "budget_duration": "30d",
                         "drop_params": True},
    "general_settings": {"master_key": "sk-1234", "database_url": "os.environ/DATABASE_URL", "alerting": ["slack"]},
}  # fmt: skip


def test_the_mapping() -> None:
    conv = convert_litellm(LITELLM)
    cfg = conv.config
    assert cfg["providers"]["openai"] == {"kind": "openai", "api_key": "${OPENAI_API_KEY}"}
    second = next(p for n, p in cfg["providers"].items() if p.get("api_key") == "${OPENAI_API_KEY_2}")
    assert second["base_url"] == "${OPENAI_BASE_2}"
    assert cfg["routes"]["gpt-4o"] == {
        "models": ["gpt-4o-1", "gpt-4o-2"],
        "strategy": "latency",
        "fallbacks": ["claude", "local"],
        "retries": 2,
        "timeout_s": 30.0,
    }
    assert cfg["models"]["gpt-4o-1"]["rpm"] == 100 and cfg["models"]["gpt-4o-2"]["tpm"] == 50000
    assert (
        cfg["models"]["claude"]["input_cost_per_mtok"] == 3.0
        and cfg["models"]["claude"]["output_cost_per_mtok"] == 15.0
    )
    assert cfg["models"]["embed"]["mode"] == "embedding"
    assert cfg["budgets"] == [{"name": "litellm-max-budget", "limit_usd": 100.0, "period": "month"}]
    assert cfg["server"] == {"master_key": "${MODELYARD_MASTER_KEY}"} and cfg["database"] == "${DATABASE_URL}"
    unmapped = dict(conv.unmapped)
    assert "model_list[5].litellm_params.model" in unmapped  # bedrock
    assert {"router_settings.redis_host", "litellm_settings.drop_params", "general_settings.alerting"} <= set(unmapped)
    env = {"OPENAI_BASE_2": "https://vllm.example/v1", "DATABASE_URL": "postgresql://db/gw"}
    missing: list[tuple[str, str]] = []
    parse_config(cfg, env=env, missing_env=missing)  # valid once the variables are set
    assert {p for p, _ in missing} >= {"providers.openai.api_key", "providers.anthropic.api_key"}


def test_the_command_writes_a_config_that_serves(tmp_path: Path) -> None:
    fake = fake_class("openai")().start_in_thread()
    try:
        src = tmp_path / "litellm.yaml"
        src.write_text(yaml.safe_dump({
            "model_list": [
                {"model_name": "chat", "litellm_params": {"model": "openai/gpt-4o", "api_base": fake.base_url,  # type: ignore[attr-defined]
                                                          "api_key": "sk-x"}},
                {"model_name": "chat", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": fake.base_url,  # type: ignore[attr-defined]
                                                          "api_key": "sk-x"}},
            ],
            "router_settings": {"routing_strategy": "simple-shuffle"},
        }))  # fmt: skip
        out = tmp_path / "modelyard.yaml"
        run = subprocess.run(
            [str(BIN / "modelyard"), "import-litellm", str(src), "-o", str(out)], capture_output=True, text=True
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "ok: 2 models, 1 routes" in run.stderr and "a literal key was copied" in run.stderr
        srv = ServerProcess(None, tmp_path, args=["--config", str(out)])
        try:
            r = httpx.post(
                f"{srv.url}/v1/chat/completions",
                json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 200 and r.headers["x-modelyard-model"] in ("chat-1", "chat-2")
        finally:
            srv.stop()
    finally:
        fake.stop_thread()
