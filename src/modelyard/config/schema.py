"""The typed configuration: one immutable object, validated once at load.

Unknown keys are errors (``extra="forbid"``); the loader turns pydantic's errors into messages
that name the YAML path and suggest the key that was probably meant.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = [
    "Config",
    "ModelConfig",
    "ProviderConfig",
    "ProviderKind",
    "RouteConfig",
    "ServerConfig",
]

ProviderKind = Literal["openai", "anthropic", "gemini", "ollama"]
Strategy = Literal["round_robin", "random", "weighted", "least_busy", "latency", "cost", "priority"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(4000, ge=1, le=65535)
    #: largest accepted request body, in megabytes
    max_body_mb: float = Field(20, gt=0)
    master_key: SecretStr | None = None


class ProviderConfig(_Strict):
    kind: ProviderKind
    #: the API root; each kind has a default (OpenAI's, Anthropic's, Google AI's, localhost:11434)
    base_url: str | None = None
    api_key: SecretStr | None = None
    #: extra HTTP headers sent with every upstream request
    headers: dict[str, str] = Field(default_factory=dict)
    #: default per-attempt timeouts for this provider's models
    timeout_s: float = Field(60.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    #: size of the pooled connection set to this provider
    max_connections: int = Field(256, ge=1)
    #: Anthropic ``anthropic-version`` header
    api_version: str | None = None
    #: True for providers that run on this machine or network (Ollama is local by default)
    local: bool | None = None
    #: Ollama: how long the server keeps a model loaded after a request (``5m``, ``-1``, ``0``)
    keep_alive: str | int | None = None

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class ModelConfig(_Strict):
    provider: str
    #: the upstream model name or endpoint id; defaults to the model's own name
    model: str | None = None
    input_cost_per_mtok: float | None = Field(None, ge=0)
    output_cost_per_mtok: float | None = Field(None, ge=0)
    cached_input_cost_per_mtok: float | None = Field(None, ge=0)
    context_window: int | None = Field(None, gt=0)
    max_output_tokens: int | None = Field(None, gt=0)
    max_concurrency: int | None = Field(None, ge=1)
    max_queue: int = Field(100, ge=0)
    queue_timeout_s: float = Field(30.0, gt=0)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    timeout_s: float | None = Field(None, gt=0)
    connect_timeout_s: float | None = Field(None, gt=0)
    ttft_timeout_s: float | None = Field(None, gt=0)
    stall_timeout_s: float | None = Field(None, gt=0)
    weight: float = Field(1.0, ge=0)
    tags: tuple[str, ...] = ()
    supports_prefill: bool = False
    #: what the model serves: chat completions, embeddings, or both
    mode: Literal["chat", "embedding"] = "chat"


class RouteConfig(_Strict):
    models: tuple[str, ...] = Field(min_length=1)
    fallbacks: tuple[str, ...] = ()
    strategy: Strategy = "round_robin"
    retries: int = Field(1, ge=0)
    max_attempts: int = Field(4, ge=1)
    timeout_s: float | None = Field(None, gt=0)
    description: str | None = None


class Config(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    database: str = "sqlite:///./modelyard.db"
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    default_route: str | None = None

    def describe(self) -> dict[str, Any]:
        """A summary safe to show (no secrets)."""
        return {
            "providers": {n: p.kind for n, p in self.providers.items()},
            "models": sorted(self.models),
            "routes": sorted(self.routes),
            "default_route": self.default_route,
        }
