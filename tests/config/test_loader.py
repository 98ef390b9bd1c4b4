"""Config rules: interpolation, unknown keys, cross references, YAML errors, environment defaults."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import get_args

import pytest
from pydantic import ValidationError

from modelyard.config import config_from_env, load_config, parse_config
from modelyard.config.schema import (
    LOCAL_KINDS,
    PROVIDER_CONFIG_CLASSES,
    AnthropicProviderConfig,
    GeminiProviderConfig,
    LlamaCppProviderConfig,
    OllamaProviderConfig,
    OpenAIProviderConfig,
    ProviderKind,
    provider_config,
)
from modelyard.errors import ConfigError
from modelyard.providers import PROVIDER_CLASSES, provider_class
from modelyard.runtime import Runtime
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


# -- provider config per kind (a discriminated union on `kind`) -------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


OLLAMA = "it is an ollama setting"
LLAMACPP = "it is a llamacpp setting"
ANTHROPIC = "it is an anthropic setting"
LOCAL = "it is a setting of the local kinds: ollama, llamacpp"


@pytest.mark.parametrize(
    ("kind", "line", "why"),
    [
        ("openai", "auto_pull: true", OLLAMA),
        ("openai", "n_ctx: 8192", LLAMACPP),
        ("openai", "models_dir: /nope", LLAMACPP),
        ("openai", "n_threads: 4", LLAMACPP),
        ("openai", "api_version: '2023-06-01'", ANTHROPIC),
        ("gemini", "api_version: v1", ANTHROPIC),
        ("openai", "preload: [x]", LOCAL),
        ("anthropic", "keep_alive: 30m", LOCAL),
        ("gemini", "max_loaded: 2", LOCAL),
        ("openai", "memory_budget_mb: 4096", LOCAL),
        ("ollama", "n_ctx: 8192", LLAMACPP),
        ("ollama", "models_dir: /models", LLAMACPP),
        ("ollama", "api_version: x", ANTHROPIC),
        ("llamacpp", "auto_pull: true", OLLAMA),
    ],
)
def test_a_key_of_another_kind_is_an_error_naming_its_path(tmp_path: Path, kind: str, line: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"providers:\n  p:\n    kind: {kind}\n    {line}\n"), env={})
    assert info.value.path == f"providers.p.{line.split(':')[0]}"
    assert info.value.reason == f"not allowed for kind {kind!r} ({why})"


def test_every_key_of_another_kind_is_reported(tmp_path: Path) -> None:
    text = """
providers:
  fast: {kind: openai, auto_pull: true, n_ctx: 8192, models_dir: /nope, api_version: x, preload: [x]}
"""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert info.value.path == "providers.fast.auto_pull"
    lines = info.value.reason.splitlines()
    assert lines[0] == "5 problems:"
    assert lines[1:] == [
        f"  providers.fast.auto_pull: not allowed for kind 'openai' ({OLLAMA})",
        f"  providers.fast.n_ctx: not allowed for kind 'openai' ({LLAMACPP})",
        f"  providers.fast.models_dir: not allowed for kind 'openai' ({LLAMACPP})",
        f"  providers.fast.api_version: not allowed for kind 'openai' ({ANTHROPIC})",
        f"  providers.fast.preload: not allowed for kind 'openai' ({LOCAL})",
    ]


def test_errors_inside_a_kind_name_the_yaml_path_without_the_tag(tmp_path: Path) -> None:
    text = """
providers:
  box: {kind: ollama, base_ur: "http://x", keep_alive: [1], max_loaded: 0}
"""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    reason = info.value.reason
    assert "providers.box.base_ur: unknown key 'base_ur' (did you mean 'base_url'?)" in reason
    # keep_alive is `str | int`: one line for the key, not one per member type
    assert "providers.box.keep_alive: Input should be a valid string, or Input should be a valid integer" in reason
    assert "providers.box.max_loaded: Input should be greater than or equal to 1" in reason
    assert ".ollama." not in reason and ".str" not in reason


def test_an_unknown_key_of_no_kind_suggests_one_of_its_own_kind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "providers: {p: {kind: llamacpp, n_ctz: 8192}}\n"), env={})
    assert info.value.path == "providers.p.n_ctz"
    assert info.value.reason == "unknown key 'n_ctz' (did you mean 'n_ctx'?)"


KINDS = "openai, anthropic, gemini, ollama, llamacpp"


@pytest.mark.parametrize(
    ("provider", "path", "reason"),
    [
        ("{kind: opnai}", "providers.p.kind", f"unknown kind 'opnai' (did you mean 'openai'?); one of {KINDS}"),
        ("{kind: vllm}", "providers.p.kind", f"unknown kind 'vllm'; one of {KINDS}"),
        (
            "{kind: llama.cpp}",
            "providers.p.kind",
            f"unknown kind 'llama.cpp' (did you mean 'llamacpp'?); one of {KINDS}",
        ),
        ("{kind: 3}", "providers.p.kind", f"unknown kind '3'; one of {KINDS}"),
        ("{base_url: 'http://x'}", "providers.p.kind", f"is required: one of {KINDS}"),
        ("openai", "providers.p", f"must be a mapping with a 'kind' key (one of {KINDS})"),
    ],
)
def test_an_unknown_or_missing_kind_lists_the_kinds(tmp_path: Path, provider: str, path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"providers:\n  p: {provider}\n"), env={})
    assert info.value.path == path
    assert info.value.reason == reason


def test_a_valid_config_of_each_kind_loads(tmp_path: Path) -> None:
    text = """
providers:
  oai: {kind: openai, base_url: "http://localhost:8000/v1/", api_key: k, local: true, headers: {X-A: b},
        timeout_s: 30, connect_timeout_s: 2, max_connections: 8, health_check_interval_s: 0}
  claude: {kind: anthropic, api_key: k, api_version: "2023-06-01"}
  google: {kind: gemini, api_key: k}
  box: {kind: ollama, keep_alive: 10m, auto_pull: true, preload: [llama3.2], max_loaded: 2, memory_budget_mb: 8192}
  gguf: {kind: llamacpp, models_dir: /models, n_ctx: 8192, n_threads: 4, keep_alive: -1, preload: [tiny],
         max_loaded: 1, memory_budget_mb: 2048}
models:
  m-oai: {provider: oai}
  m-claude: {provider: claude}
  m-google: {provider: google}
  m-box: {provider: box, model: llama3.2, keep_alive: 5m, preload: true, load_timeout_s: 60}
  m-gguf: {provider: gguf, model: tiny, keep_alive: 0, preload: false, load_timeout_s: 10}
"""
    cfg = load_config(write(tmp_path, text), env={})
    p = cfg.providers
    assert isinstance(p["oai"], OpenAIProviderConfig)
    assert p["oai"].base_url == "http://localhost:8000/v1" and p["oai"].local is True
    assert p["oai"].headers == {"X-A": "b"} and p["oai"].max_connections == 8
    assert isinstance(p["claude"], AnthropicProviderConfig) and p["claude"].api_version == "2023-06-01"
    assert isinstance(p["google"], GeminiProviderConfig)
    box = p["box"]
    assert isinstance(box, OllamaProviderConfig)
    assert box.auto_pull and box.keep_alive == "10m" and box.preload == ("llama3.2",) and box.max_loaded == 2
    gguf = p["gguf"]
    assert isinstance(gguf, LlamaCppProviderConfig)
    assert (gguf.models_dir, gguf.n_ctx, gguf.n_threads, gguf.keep_alive) == ("/models", 8192, 4, -1)
    assert cfg.models["m-box"].keep_alive == "5m" and cfg.models["m-gguf"].load_timeout_s == 10
    assert cfg.describe()["providers"] == {
        "oai": "openai",
        "claude": "anthropic",
        "google": "gemini",
        "box": "ollama",
        "gguf": "llamacpp",
    }


@pytest.mark.parametrize("line", ["keep_alive: 5m", "preload: true", "preload: false", "load_timeout_s: 60"])
@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_local_model_keys_on_a_cloud_model_are_errors(tmp_path: Path, kind: str, line: str) -> None:
    key = line.split(":")[0]
    text = f"providers:\n  p: {{kind: {kind}, local: true}}\nmodels:\n  m:\n    provider: p\n    {line}\n"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert info.value.path == f"models.m.{key}"
    assert info.value.reason == f"only for local providers (ollama, llamacpp); provider 'p' is kind {kind!r}"


def test_local_model_keys_are_checked_with_the_other_references(tmp_path: Path) -> None:
    text = """
providers: {cloud: {kind: openai}}
models:
  a: {provider: cloud, keep_alive: 5m, load_timeout_s: 3}
  b: {provider: nowhere, keep_alive: 5m}
"""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert info.value.reason.splitlines()[1:] == [
        "  models.a.keep_alive: only for local providers (ollama, llamacpp); provider 'cloud' is kind 'openai'",
        "  models.a.load_timeout_s: only for local providers (ollama, llamacpp); provider 'cloud' is kind 'openai'",
        "  models.b.provider: unknown provider 'nowhere' (defined: cloud)",
    ]


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_the_examples_load(example: Path) -> None:
    # the variables without a default must be set; those with one keep it
    required = {m.group(1) for m in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", example.read_text())}
    cfg = load_config(example, env=dict.fromkeys(required, "x"))
    assert cfg.providers and cfg.models


def test_provider_config_builds_the_class_of_the_kind() -> None:
    assert isinstance(provider_config(kind="ollama", auto_pull=True), OllamaProviderConfig)
    assert provider_config(kind="openai", api_key="k") == OpenAIProviderConfig(api_key="k")
    with pytest.raises(ValidationError):
        provider_config(kind="openai", auto_pull=True)
    with pytest.raises(ValidationError):
        OpenAIProviderConfig(n_ctx=8192)  # type: ignore[call-arg]


def test_the_kinds_agree_everywhere() -> None:
    assert tuple(PROVIDER_CONFIG_CLASSES) == get_args(ProviderKind) == tuple(PROVIDER_CLASSES)
    for kind, cls in PROVIDER_CONFIG_CLASSES.items():
        assert cls().kind == kind
        assert provider_class(kind).kind == kind
    assert LOCAL_KINDS == ("ollama", "llamacpp")


def test_a_provider_takes_only_its_own_kind() -> None:
    with pytest.raises(TypeError, match="OllamaProvider takes a 'ollama' provider config, not 'openai'"):
        provider_class("ollama")("p", OpenAIProviderConfig())


async def test_a_reload_keeps_the_providers_whose_config_did_not_change(tmp_path: Path) -> None:
    text = """
providers:
  oai: {kind: openai, api_key: k}
  claude: {kind: anthropic, api_key: k}
  box: {kind: ollama, keep_alive: 10m, preload: [a]}
  gguf: {kind: llamacpp, models_dir: /models}
models:
  m: {provider: box}
"""
    first = Runtime(load_config(write(tmp_path, text), env={}))
    same = Runtime(load_config(write(tmp_path, text), env={}), previous=first)
    changed_text = text.replace("api_key: k}\n  claude", "api_key: other}\n  claude").replace("10m", "20m")
    changed = Runtime(load_config(write(tmp_path, changed_text), env={}), previous=same)
    try:
        assert all(same.providers[n] is first.providers[n] for n in first.providers)
        assert changed.providers["oai"] is not same.providers["oai"]
        assert changed.providers["box"] is not same.providers["box"]
        assert changed.providers["claude"] is same.providers["claude"]
        assert changed.providers["gguf"] is same.providers["gguf"]
        # the same values under another kind are not equal
        assert OpenAIProviderConfig(api_key="k") != GeminiProviderConfig(api_key="k")
    finally:
        await first.close_unused(same)
        await same.close_unused(changed)
        await changed.close_unused(None)


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
