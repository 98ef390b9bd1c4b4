"""What a model can do: ``models.<name>.capabilities``, with defaults per provider kind and per known model.

One place answers "can this model take images, tools, a JSON schema, ``n > 1``, produce
embeddings, reason, continue an assistant prefill?".  A key set in the config wins; otherwise
the known model's entry (matched by the upstream name's prefix), then the provider kind's
default.  ``config check`` shows the result; the routing rule that a request no candidate can
serve is a 400 naming the parameter reads only this (contracts: "Model capabilities").
"""

from __future__ import annotations

from typing import Literal

from modelyard.config.schema import ModelConfig

__all__ = ["CAPABILITIES", "Capability", "capabilities_of"]

Capability = Literal["vision", "tools", "json_schema", "multiple_choices", "embeddings", "reasoning", "prefill"]
CAPABILITIES: tuple[Capability, ...] = (
    "vision",
    "tools",
    "json_schema",
    "multiple_choices",
    "embeddings",
    "reasoning",
    "prefill",
)

#: per provider kind, for a chat model (an embedding model: embeddings only)
_KIND: dict[str, dict[Capability, bool]] = {
    # Defaults are permissive (an unknown model may do it: the upstream decides) and known limits
    # deny: a kind's API that has no such thing, or a known model that cannot.
    # any OpenAI-compatible server: the OpenAI feature set, embeddings included (its /embeddings)
    "openai": {"vision": True, "tools": True, "json_schema": True, "multiple_choices": True, "embeddings": True},
    # Messages API: no n > 1, no embeddings; an assistant turn at the end is continued (prefill);
    # extended thinking from Claude 3.7 on (the older models are known below)
    "anthropic": {"vision": True, "tools": True, "json_schema": True, "prefill": True, "reasoning": True},
    # thinking from Gemini 2.5 on (the older models are known below)
    "gemini": {
        "vision": True,
        "tools": True,
        "json_schema": True,
        "multiple_choices": True,
        "embeddings": True,
        "reasoning": True,
    },
    # Ollama passes tools and images to the model (a text-only model may refuse); n > 1 is not served
    "ollama": {"vision": True, "tools": True, "json_schema": True, "embeddings": True, "prefill": True},
    # the in-process llama.cpp engine: text in, text out, one choice, no embeddings
    "llamacpp": {"json_schema": True, "prefill": True},
}

#: known upstream models (by name prefix, longest first): what differs from their kind's default
_KNOWN: tuple[tuple[str, dict[Capability, bool]], ...] = tuple(
    sorted(
        (
            ("gpt-4o", {"vision": True}),
            ("gpt-4.1", {"vision": True}),
            ("gpt-4-turbo", {"vision": True}),
            ("gpt-5", {"vision": True, "reasoning": True}),
            ("o1", {"vision": True, "reasoning": True, "multiple_choices": False}),
            ("o3", {"vision": True, "reasoning": True}),
            ("o4-mini", {"vision": True, "reasoning": True}),
            ("gpt-3.5", {"json_schema": False, "vision": False}),
            ("gpt-4-0", {"vision": False}),
            ("deepseek-chat", {"vision": False}),
            ("deepseek-reasoner", {"reasoning": True, "tools": False}),
            ("deepseek-r1", {"reasoning": True}),
            ("qwq", {"reasoning": True}),
            ("qwen3", {"reasoning": True}),
            ("qwen3-coder", {"reasoning": False}),
            ("gpt-oss", {"reasoning": True}),
            ("magistral", {"reasoning": True}),
            ("claude-3-7-sonnet", {"reasoning": True}),
            # no extended thinking: the API answers `thinking` with a 400 ("... does not support thinking")
            ("claude-3", {"reasoning": False}),
            ("claude-2", {"reasoning": False, "vision": False}),
            ("claude-instant", {"reasoning": False, "vision": False}),
            ("claude-sonnet-4", {"reasoning": True}),
            ("claude-opus-4", {"reasoning": True}),
            ("gemini-2.5", {"reasoning": True}),
            # no thinking: a thinkingConfig is refused or ignored
            ("gemini-1", {"reasoning": False}),
            ("gemini-pro", {"reasoning": False}),
            ("gemini-2.0", {"reasoning": False}),
            ("gemini-2.0-flash-thinking", {"reasoning": True}),
            ("gemma3", {"vision": True}),
        ),
        key=lambda item: -len(item[0]),
    )
)


def capabilities_of(model: ModelConfig, kind: str, upstream: str) -> dict[Capability, bool]:
    """The effective capabilities of a configured model (config, then known model, then kind)."""
    if model.mode == "embedding":
        out: dict[Capability, bool] = dict.fromkeys(CAPABILITIES, False)
        out["embeddings"] = True
    else:
        out = {**dict.fromkeys(CAPABILITIES, False), **_KIND.get(kind, _KIND["openai"])}
        name = upstream.rsplit("/", 1)[-1].lower()
        for prefix, changes in _KNOWN:
            if name.startswith(prefix):
                out.update(changes)
                break
        if kind == "llamacpp" and name.startswith("gemma3"):
            out["vision"] = False  # the in-process engine takes text only
    if model.supports_prefill:
        out["prefill"] = True
    for key in CAPABILITIES:
        value = getattr(model.capabilities, key)
        if value is not None:
            out[key] = value
    return out
