"""Ollama: the chat wire format and admin API (:mod:`.provider`) and its lifecycle backend (:mod:`.lifecycle`)."""

from __future__ import annotations

from modelyard.providers.ollama.lifecycle import OllamaBackend, canonical_ollama_name
from modelyard.providers.ollama.provider import (
    LoadedModel,
    OllamaProvider,
    StreamDecoder,
    decode_chat_response,
    encode_chat_request,
    encode_message,
    keep_alive_value,
)

__all__ = [
    "LoadedModel",
    "OllamaBackend",
    "OllamaProvider",
    "StreamDecoder",
    "canonical_ollama_name",
    "decode_chat_response",
    "encode_chat_request",
    "encode_message",
    "keep_alive_value",
]
