"""Config rules: interpolation, unknown keys, cross references, YAML errors, environment defaults."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from modelyard.config import config_from_env, load_config, parse_config
from modelyard.errors import ConfigError
from tests.helpers import BIN

ISSUE_EXAMPLE = """
server: {host: 127.0.0.1, port: 4000, max_body_mb: 20}
database: sqlite:///./modelyard.db
providers:
  vanchin: {kind: openai, base_url: https://vanchin.streamlake.ai/api/gateway/v1/endpoints, api_key: ${VANCHIN_API_KEY}}
  openai:  {kind: openai, api_key: ${OPENAI_API_KEY}}
  claude:  {kind: anthropic, api_key: ${ANTHROPIC_API_KEY}}
  google:  {kind: gemini, api_key: ${GEMINI_API_KEY}}
  ollama:  {kind: ollama, base_url: http://localhost:11434}
models:
  model_1: {provider: vanchin, model: ep-xxxx, input_cost_per_mtok: 0.5, output_cost_per_mtok: 1.5,
            context_window: 32768, max_concurrency: 5, max_queue: 50, rpm: 600, tpm: 200000,
            timeout_s: 30, ttft_timeout_s: 10, tags: [general]}
  model_2: {provider: vanchin, model: ep-yyyy}
  model_3: {provider: vanchin, model: ep-zzzz}
  gpt-4o:  {provider: openai}
routes:
  project-planner: {models: [model_1], fallbacks: [model_2, model_3], strategy: round_robin}
default_route: project-planner
"""

ENV = {"VANCHIN_API_KEY": "v", "OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "a", "GEMINI_API_KEY": "g"}


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_issue_example_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ISSUE_EXAMPLE), env=ENV)
    assert cfg.providers["vanchin"].api_key is not None
    assert cfg.providers["vanchin"].api_key.get_secret_value() == "v"
    assert cfg.models["model_1"].max_concurrency == 5
    assert cfg.models["gpt-4o"].model is None  # defaults to the name at runtime
    assert cfg.routes["project-planner"].fallbacks == ("model_2", "model_3")
    assert cfg.default_route == "project-planner"


def test_missing_env_var_names_the_key(tmp_path: Path) -> None:
    env = dict(ENV)
    del env["GEMINI_API_KEY"]
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ISSUE_EXAMPLE), env=env)
    assert info.value.path == "providers.google.api_key"
    assert "GEMINI_API_KEY" in info.value.message


def test_env_default_and_empty_value() -> None:
    data = {"providers": {"p": {"kind": "openai", "base_url": "${BASE:-http://localhost:8000/v1}"}}}
    assert parse_config(data, env={}).providers["p"].base_url == "http://localhost:8000/v1"
    assert parse_config(data, env={"BASE": ""}).providers["p"].base_url == "http://localhost:8000/v1"
    assert parse_config(data, env={"BASE": "http://x:1/v1/"}).providers["p"].base_url == "http://x:1/v1"


def test_interpolation_inside_lists_reports_index() -> None:
    data = {
        "providers": {"p": {"kind": "openai"}},
        "models": {"m": {"provider": "p", "tags": ["ok", "${NOPE}"]}},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert info.value.path == "models.m.tags[1]"


def test_unknown_key_suggests_the_right_one() -> None:
    data = {"providers": {"p": {"kind": "openai", "base_ur": "http://x"}}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert info.value.path == "providers.p.base_ur"
    assert "did you mean 'base_url'" in info.value.message


def test_unknown_top_level_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"rotues": {}}, env={})
    assert info.value.path == "rotues"
    assert "did you mean 'routes'" in info.value.message


def test_wrong_type_names_path() -> None:
    data = {"providers": {"p": {"kind": "openai"}}, "models": {"m": {"provider": "p", "max_concurrency": "lots"}}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert info.value.path == "models.m.max_concurrency"


def test_bad_provider_kind() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"providers": {"p": {"kind": "opnai"}}}, env={})
    assert info.value.path == "providers.p.kind"
    assert "openai" in info.value.message


def test_unknown_references_are_errors() -> None:
    data = {
        "providers": {"p": {"kind": "openai"}},
        "models": {"m1": {"provider": "q"}, "m2": {"provider": "p"}},
        "routes": {"r": {"models": ["m2", "m3"], "fallbacks": ["m1", "m1"]}},
        "default_route": "rr",
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    msg = info.value.message
    assert "models.m1.provider: unknown provider 'q'" in msg
    assert "routes.r.models[1]: unknown model 'm3'" in msg
    assert "routes.r.fallbacks[1]: duplicate entry 'm1'" in msg
    assert "default_route: unknown route or model 'rr'" in msg


def test_route_and_model_name_clash() -> None:
    data = {
        "providers": {"p": {"kind": "openai"}},
        "models": {"x": {"provider": "p"}},
        "routes": {"x": {"models": ["x"]}},
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert info.value.path == "routes.x"


def test_route_needs_models() -> None:
    data = {"providers": {"p": {"kind": "openai"}}, "models": {"m": {"provider": "p"}}, "routes": {"r": {"models": []}}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert info.value.path == "routes.r.models"


def test_base_url_must_be_http() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"providers": {"p": {"kind": "openai", "base_url": "ftp://x"}}}, env={})
    assert info.value.path == "providers.p.base_url"


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "providers:\n  p: {kind: openai\n"), env={})
    assert "line" in info.value.message


def test_missing_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("/nonexistent/modelyard.yaml", env={})
    assert "cannot read" in info.value.message


def test_non_mapping_root() -> None:
    with pytest.raises(ConfigError):
        parse_config(["a"], env={})


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), env={})
    assert cfg.providers == {} and cfg.server.port == 4000


def test_secrets_not_in_repr() -> None:
    cfg = parse_config({"providers": {"p": {"kind": "openai", "api_key": "sk-supersecret"}}}, env={})
    assert "sk-supersecret" not in repr(cfg)
    assert "sk-supersecret" not in str(cfg.describe())


def test_config_from_env_builds_providers_and_default_route() -> None:
    env = {
        "OPENAI_API_KEY": "o",
        "GEMINI_API_KEY": "g",
        "OLLAMA_HOST": "localhost:11434",
        "MODELYARD_LOCAL_DEFAULT": "0",
    }
    cfg = config_from_env(env)
    assert set(cfg.providers) == {"openai", "gemini", "ollama"}
    assert cfg.providers["ollama"].base_url == "http://localhost:11434"
    assert cfg.default_route == "default"
    assert cfg.routes["default"].models == ("gpt-4o-mini",)
    assert cfg.routes["default"].fallbacks == ("gemini-2.5-flash",)


def test_config_from_empty_env() -> None:
    cfg = config_from_env({"MODELYARD_LOCAL_DEFAULT": "0"})
    assert cfg.providers == {} and cfg.routes == {} and cfg.default_route is None


def test_the_embedded_local_model_is_the_default_without_keys() -> None:
    # the dev extras install the `local` extra (llama-cpp-python and the Gemma package)
    cfg = config_from_env({})
    assert cfg.providers["local"].kind == "llamacpp"
    assert cfg.routes["default"].models == ("local:gemma3-270m",) and cfg.default_route == "default"
    cfg = config_from_env({"OPENAI_API_KEY": "o"})
    assert cfg.routes["default"].models == ("gpt-4o-mini",)
    assert cfg.routes["default"].fallbacks == ("local:gemma3-270m",)  # cloud on top, local as the last resort


def test_cli_config_check(tmp_path: Path) -> None:
    good = write(tmp_path, "providers: {p: {kind: openai}}\nmodels: {m: {provider: p}}\n")
    ok = subprocess.run([str(BIN / "modelyard"), "config", "check", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "ok" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: {p: {kind: openai, timeout: 3}}\n")
    res = subprocess.run([str(BIN / "modelyard"), "config", "check", str(bad)], capture_output=True, text=True)
    assert res.returncode == 2
    assert "providers.p.timeout" in res.stdout
    assert "did you mean 'timeout_s'" in res.stdout


def test_cli_models_table(tmp_path: Path) -> None:
    cfg = write(tmp_path, ISSUE_EXAMPLE)
    res = subprocess.run(
        [str(BIN / "modelyard"), "models", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env={**ENV, "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "model_1" in res.stdout and "ep-xxxx" in res.stdout and "project-planner" in res.stdout
    assert "v" not in [line.strip() for line in res.stdout.splitlines()]  # no key values printed


def test_model_and_route_names_follow_the_request_rule() -> None:
    # a name a request could not use (it would be refused with a 400) is a config error, said at load
    from modelyard.config import parse_config
    from modelyard.errors import ConfigError

    base = {"providers": {"p": {"kind": "openai", "api_key": "k"}}}
    parse_config({**base, "models": {"ollama:llama3:8b": {"provider": "p"}}})
    for models, routes in [
        ({"my model": {"provider": "p"}}, {}),
        ({"m": {"provider": "p"}}, {"../r": {"models": ["m"]}}),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config({**base, "models": models, "routes": routes})
        assert "the name" in str(info.value)
