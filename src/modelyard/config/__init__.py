"""Configuration: the typed schema, the YAML loader and the environment defaults."""

from modelyard.config.defaults import config_from_env
from modelyard.config.loader import interpolate, load_config, parse_config
from modelyard.config.schema import (
    AnthropicProviderConfig,
    Config,
    GeminiProviderConfig,
    LlamaCppProviderConfig,
    LocalProviderConfig,
    ModelConfig,
    OllamaProviderConfig,
    OpenAIProviderConfig,
    ProviderConfig,
    ProviderConfigBase,
    RouteConfig,
    ServerConfig,
    provider_config,
)

__all__ = [
    "AnthropicProviderConfig",
    "Config",
    "GeminiProviderConfig",
    "LlamaCppProviderConfig",
    "LocalProviderConfig",
    "ModelConfig",
    "OllamaProviderConfig",
    "OpenAIProviderConfig",
    "ProviderConfig",
    "ProviderConfigBase",
    "RouteConfig",
    "ServerConfig",
    "config_from_env",
    "interpolate",
    "load_config",
    "parse_config",
    "provider_config",
]
