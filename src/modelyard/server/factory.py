"""Build the ASGI app from a config source (used by ``modelyard serve`` and by multi-worker uvicorn)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from modelyard.config.source import ConfigSource
from modelyard.errors import ConfigError, StartupError
from modelyard.runtime import RuntimeHolder
from modelyard.server.app import FastPath, create_app
from modelyard.server.state import AppState
from modelyard.startup import EXIT_UNEXPECTED, describe, report

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
    try:
        gateway = build_gateway(path, watch=os.environ.get(ENV_WATCH) == "1")
    except (ConfigError, StartupError) as exc:
        # the parent prints the line (modelyard.startup); uvicorn's start-up code stops it rather
        # than starting this worker again and again
        log = logging.getLogger("modelyard.server")
        if not report(exc):  # a worker started again on SIGHUP: nobody else prints it
            log.error("%s: %s", *describe(exc)[:2])
        log.debug("worker start-up failed", exc_info=exc)
        sys.exit(EXIT_UNEXPECTED)
    return create_app(gateway)
