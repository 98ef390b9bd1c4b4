"""llama.cpp in-process: the provider (:mod:`.provider`, with its lifecycle backend), the engine
that runs one generation in a worker thread (:mod:`.engine`) and the prompt formats (:mod:`.prompts`)."""

from __future__ import annotations

from modelyard.providers.llamacpp.provider import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_MODEL,
    INSTALL_HINT,
    LlamaCppProvider,
    kv_cache_bytes,
)

__all__ = ["DEFAULT_MAX_TOKENS", "DEFAULT_MODEL", "INSTALL_HINT", "LlamaCppProvider", "kv_cache_bytes"]
