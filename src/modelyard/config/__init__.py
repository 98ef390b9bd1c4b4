"""Configuration: the typed schema, the YAML loader and the environment defaults."""

from modelyard.config.defaults import config_from_env
from modelyard.config.loader import interpolate, load_config, parse_config
from modelyard.config.schema import Config, ModelConfig, ProviderConfig, RouteConfig, ServerConfig

__all__ = [
    "Config",
    "ModelConfig",
    "ProviderConfig",
    "RouteConfig",
    "ServerConfig",
    "config_from_env",
    "interpolate",
    "load_config",
    "parse_config",
]
