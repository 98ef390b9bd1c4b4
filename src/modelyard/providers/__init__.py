"""Provider adapters: one module per wire format, behind :class:`~modelyard.providers.base.Provider`."""

from __future__ import annotations

import importlib

from modelyard.config.schema import ProviderConfig
from modelyard.providers.base import CallOptions, Provider

__all__ = ["PROVIDER_CLASSES", "CallOptions", "Provider", "build_provider", "provider_class"]

#: kind -> "module:Class"; modules are imported on first use so start-up stays fast.
PROVIDER_CLASSES: dict[str, str] = {
    "openai": "modelyard.providers.openai:OpenAIProvider",
    "anthropic": "modelyard.providers.anthropic:AnthropicProvider",
    "gemini": "modelyard.providers.gemini:GeminiProvider",
    "ollama": "modelyard.providers.ollama.provider:OllamaProvider",
    "llamacpp": "modelyard.providers.llamacpp.provider:LlamaCppProvider",
}


def provider_class(kind: str) -> type[Provider]:
    module_name, _, cls_name = PROVIDER_CLASSES[kind].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    assert isinstance(cls, type) and issubclass(cls, Provider)
    return cls


def build_provider(name: str, config: ProviderConfig) -> Provider:
    return provider_class(config.kind)(name, config)
