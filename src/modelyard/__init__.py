"""modelyard: a self-hosted LLM gateway and model router with an OpenAI-compatible API.

Public names are imported lazily so that ``import modelyard`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelyard.version import __version__

if TYPE_CHECKING:
    from modelyard.config import Config, load_config
    from modelyard.errors import ModelyardError
    from modelyard.sdk import ChatResult, Gateway, StreamResult

__all__ = ["ChatResult", "Config", "Gateway", "ModelyardError", "StreamResult", "__version__", "load_config"]

_LAZY = {
    "Gateway": "modelyard.sdk",
    "ChatResult": "modelyard.sdk",
    "StreamResult": "modelyard.sdk",
    "Config": "modelyard.config",
    "load_config": "modelyard.config",
    "ModelyardError": "modelyard.errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelyard' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
