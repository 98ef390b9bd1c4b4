"""Local models: the lifecycle manager shared by the llama.cpp and Ollama providers.

Each local provider owns one :class:`LocalModelManager` as ``provider.lifecycle`` (None on
providers without local models: ``Provider.lifecycle``).  :func:`modelyard.runtime.sync_runtime`
hands the managers the per-model settings of a runtime.
"""

from __future__ import annotations

from modelyard.local.base import STATES, LoadResult, LocalBackend, ModelBusyError, State, Subscription
from modelyard.local.manager import LocalModelManager
from modelyard.local.settings import (
    DEFAULT_KEEP_ALIVE_S,
    ModelSettings,
    parse_keep_alive,
    provider_settings,
)

__all__ = [
    "DEFAULT_KEEP_ALIVE_S",
    "STATES",
    "LoadResult",
    "LocalBackend",
    "LocalModelManager",
    "ModelBusyError",
    "ModelSettings",
    "State",
    "Subscription",
    "parse_keep_alive",
    "provider_settings",
]
