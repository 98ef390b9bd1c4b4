"""Where the config comes from (a YAML file, or the environment) and how it is reloaded."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from modelyard.config.defaults import config_from_env
from modelyard.config.loader import load_config
from modelyard.config.schema import Config

__all__ = ["ConfigSource"]

log = logging.getLogger("modelyard.config")


class ConfigSource:
    """A YAML file, or (with no file) the environment's provider keys."""

    def __init__(self, path: str | Path | None = None, env: Mapping[str, str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._env = env

    @property
    def env(self) -> Mapping[str, str]:
        return os.environ if self._env is None else self._env

    def describe(self) -> str:
        return str(self.path) if self.path is not None else "environment"

    def load(self) -> Config:
        """Read and validate (blocking: call it from a thread in async code)."""
        if self.path is not None:
            return load_config(self.path, env=self.env)
        return config_from_env(self.env)

    def mtime(self) -> float | None:
        if self.path is None:
            return None
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    async def aload(self) -> Config:
        return await asyncio.to_thread(self.load)

    async def watch(self, on_change: asyncio.Queue[str], interval_s: float = 1.0) -> None:
        """Put a message on ``on_change`` whenever the file's modification time changes."""
        last = await asyncio.to_thread(self.mtime)
        while True:
            await asyncio.sleep(interval_s)
            current = await asyncio.to_thread(self.mtime)
            if current is not None and current != last:
                last = current
                await on_change.put("file changed")
