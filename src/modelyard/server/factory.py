"""Build the ASGI app from a config source (used by ``modelyard serve`` and by multi-worker uvicorn)."""

from __future__ import annotations

import os
from pathlib import Path

from modelyard.config.source import ConfigSource
from modelyard.runtime import RuntimeHolder
from modelyard.server.app import FastPath, create_app
from modelyard.server.state import AppState

__all__ = ["ENV_CONFIG", "ENV_WATCH", "app_from_env", "build_gateway"]

#: set by ``modelyard serve`` for worker processes
ENV_CONFIG = "MODELYARD_CONFIG"
ENV_WATCH = "MODELYARD_WATCH"


def build_gateway(config_path: str | Path | None, *, watch: bool = False) -> AppState:
    source = ConfigSource(config_path)
    config = source.load()
    return AppState(holder=RuntimeHolder(config, source=source.describe()), source=source, watch=watch)


def app_from_env() -> FastPath:
    """Factory for ``uvicorn --factory``: reads MODELYARD_CONFIG (a path; unset = environment defaults)."""
    path = os.environ.get(ENV_CONFIG) or None
    return create_app(build_gateway(path, watch=os.environ.get(ENV_WATCH) == "1"))
