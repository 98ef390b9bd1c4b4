"""The typed configuration: one immutable object, validated once at load.

Unknown keys are errors (``extra="forbid"``); the loader turns pydantic's errors into messages
that name the YAML path and suggest the key that was probably meant.
"""

from __future__ import annotations

import itertools
import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, field_validator, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "LOCAL_KINDS",
    "LOCAL_MODEL_FIELDS",
    "PROVIDER_CONFIG_CLASSES",
    "AlertConfig",
    "AnthropicProviderConfig",
    "BreakerConfig",
    "BudgetConfig",
    "CacheConfig",
    "CapabilitiesConfig",
    "Config",
    "ConfigPolicy",
    "DatabaseConfig",
    "GeminiProviderConfig",
    "KeysConfig",
    "LlamaCppProviderConfig",
    "LocalProviderConfig",
    "ModelConfig",
    "OllamaProviderConfig",
    "OpenAIProviderConfig",
    "ProviderConfig",
    "ProviderConfigBase",
    "ProviderKind",
    "ResponsesConfig",
    "RouteConfig",
    "ServerConfig",
    "TLSConfig",
    "TracingConfig",
    "UsageConfig",
    "provider_config",
]

ProviderKind = Literal["openai", "anthropic", "gemini", "ollama", "llamacpp"]
Strategy = Literal["round_robin", "random", "weighted", "least_busy", "latency", "cost", "priority", "auto"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(4000, ge=1, le=65535)
    #: largest accepted request body, in megabytes
    max_body_mb: float = Field(20, gt=0)
    master_key: SecretStr | None = None
    #: the request line and headers of one request: at most this many KiB and headers (else 431)
    max_header_kb: float = Field(64, gt=0, le=1024)
    max_headers: int = Field(128, ge=8, le=10_000)
    #: seconds for a client to send a request's headers, and the longest pause inside its body
    header_timeout_s: float = Field(10.0, gt=0, le=3600)
    body_timeout_s: float = Field(30.0, gt=0, le=3600)
    #: seconds an idle keep-alive connection stays open
    keep_alive_s: float = Field(5.0, gt=0, le=3600)
    #: without a master key: Host/Origin values besides loopback that may use the gateway
    #: (``gateway.internal``, ``gateway.internal:4000``); see SECURITY.md
    allowed_hosts: tuple[str, ...] = ()
    #: a token that reads /metrics besides the master key (for Prometheus); see docs/api.md
    metrics_token: SecretStr | None = None
    #: serve /metrics without authentication on this port, bound to 127.0.0.1 only
    metrics_port: int | None = Field(None, ge=1, le=65535)
    #: label cost and budget metrics with organisation and key ids (off: no tenant ids in /metrics)
    metrics_org_labels: bool = False
    #: the dashboard's session cookie: ``auto`` marks it Secure when the request came over https
    #: (directly or per X-Forwarded-Proto), ``always`` marks it Secure always
    cookie_secure: Literal["auto", "always"] = "auto"
    #: on SIGTERM, /ready answers 503 for this many seconds while requests are still served (the
    #: load balancer stops sending), then the server stops accepting and finishes what is in flight
    drain_s: float = Field(0.0, ge=0, le=300)


class HealthConfig(_Strict):
    """Active health checks of one provider.

    ``list_models`` (default): ``GET /models`` (or the kind's listing); when the upstream does not
    serve it (404/405), a 1-token chat probe instead.  ``chat_probe``: a 1-token completion on the
    provider's cheapest configured model, skipped while real traffic shows the provider healthy.
    ``none``: no active check (passive health from real traffic still applies).
    """

    method: Literal["list_models", "chat_probe", "none"] = "list_models"
    #: seconds between checks; unset: ``health_check_interval_s`` (30) for list_models, 300 for chat_probe
    interval_s: float | None = Field(None, ge=0)

    def interval(self, legacy_s: float) -> float:
        if self.method == "none":
            return 0.0
        if self.interval_s is not None:
            return self.interval_s
        return 300.0 if self.method == "chat_probe" else legacy_s


class TLSConfig(_Strict):
    """TLS towards one provider's upstream (see docs/providers.md, "Network: proxies and TLS")."""

    #: check the upstream's certificate and host name (false: don't; a warning is logged once)
    verify: bool = True
    #: a PEM file of CA certificates to trust instead of the system's (a private CA)
    ca_bundle: str | None = None
    #: a PEM client certificate (and its key, unless the file holds both): mutual TLS
    client_cert: str | None = None
    client_key: str | None = None

    @field_validator("ca_bundle", "client_cert", "client_key")
    @classmethod
    def _file_exists(cls, value: str | None) -> str | None:
        if value is not None and not os.path.isfile(value):
            raise PydanticCustomError("file_not_found", "file not found: {path}", {"path": value})
        return value

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TLSConfig:
        if self.client_key is not None and self.client_cert is None:
            raise ValueError("client_key is set but client_cert is not")
        return self


class ProviderConfigBase(_Strict):
    """What every provider kind understands; each kind's class adds its own keys (and only those)."""

    kind: ProviderKind
    #: the API root; each kind has a default (OpenAI's, Anthropic's, Google AI's, localhost:11434)
    base_url: str | None = None
    api_key: SecretStr | None = None
    #: extra HTTP headers sent with every upstream request
    headers: dict[str, str] = Field(default_factory=dict)
    #: the HTTP proxy for this provider (``http://[user:pass@]host:port``); ``none`` or empty: no proxy;
    #: unset: the HTTP_PROXY/HTTPS_PROXY/NO_PROXY environment variables (loopback upstreams bypass them)
    proxy: str | None = None
    #: TLS towards the upstream: certificate checks, a private CA, a client certificate
    tls: TLSConfig = Field(default_factory=TLSConfig)
    #: default per-attempt timeouts for this provider's models
    timeout_s: float = Field(60.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    #: size of the pooled connection set to this provider
    max_connections: int = Field(256, ge=1)
    #: old name of ``health.interval_s`` (an alias; ``config check`` warns about it)
    health_check_interval_s: float = Field(30.0, ge=0)
    #: how this provider's health is checked: see HealthConfig
    health: HealthConfig = Field(default_factory=lambda: HealthConfig())
    #: True for providers that run on this machine or network (a vLLM server behind ``kind: openai``,
    #: say); unset: by kind (ollama and llamacpp are local)
    local: bool | None = None

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() in ("", "none"):
            return value if value is None else ""
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, or none")
        return value


class OpenAIProviderConfig(ProviderConfigBase):
    """The OpenAI API and everything that speaks it (vLLM, LM Studio, hosted endpoints)."""

    kind: Literal["openai"] = "openai"


class AnthropicProviderConfig(ProviderConfigBase):
    kind: Literal["anthropic"] = "anthropic"
    #: the ``anthropic-version`` header (default: the version the adapter is written for)
    api_version: str | None = None


class GeminiProviderConfig(ProviderConfigBase):
    kind: Literal["gemini"] = "gemini"


class _LocalProviderConfig(ProviderConfigBase):
    """The lifecycle keys of the kinds whose models are loaded and unloaded (see local-models.md)."""

    #: how long a model stays loaded when idle (``30m``, ``-1`` never, ``0``)
    keep_alive: str | int | None = None
    #: models to load at start-up
    preload: tuple[str, ...] = ()
    #: at most this many loaded at once (the least recently used idle one is unloaded)
    max_loaded: int | None = Field(None, ge=1)
    #: memory budget for loaded models, in MB
    memory_budget_mb: float | None = Field(None, gt=0)


class OllamaProviderConfig(_LocalProviderConfig):
    kind: Literal["ollama"] = "ollama"
    #: pull a missing model through /api/pull instead of failing
    auto_pull: bool = False


class LlamaCppProviderConfig(_LocalProviderConfig):
    """In-process GGUF models through llama-cpp-python."""

    kind: Literal["llamacpp"] = "llamacpp"
    #: a folder of ``.gguf`` files, each served under its file name without the extension
    models_dir: str | None = None
    #: context size and threads per loaded model
    n_ctx: int = Field(4096, ge=128)
    n_threads: int | None = Field(None, ge=1)


#: A provider's config: the class is chosen by ``kind``, so a key of another kind is an error.
ProviderConfig = Annotated[
    OpenAIProviderConfig
    | AnthropicProviderConfig
    | GeminiProviderConfig
    | OllamaProviderConfig
    | LlamaCppProviderConfig,
    Field(discriminator="kind"),
]
#: The config of a provider whose models are loaded and unloaded (the lifecycle manager's).
LocalProviderConfig = OllamaProviderConfig | LlamaCppProviderConfig

#: kind -> its config class
PROVIDER_CONFIG_CLASSES: dict[str, type[ProviderConfigBase]] = {
    "openai": OpenAIProviderConfig,
    "anthropic": AnthropicProviderConfig,
    "gemini": GeminiProviderConfig,
    "ollama": OllamaProviderConfig,
    "llamacpp": LlamaCppProviderConfig,
}
#: the kinds whose models are local and have a lifecycle (keep_alive, preload, load_timeout_s)
LOCAL_KINDS: tuple[str, ...] = tuple(
    k for k, c in PROVIDER_CONFIG_CLASSES.items() if issubclass(c, _LocalProviderConfig)
)

_PROVIDER_ADAPTER: TypeAdapter[ProviderConfig] = TypeAdapter(ProviderConfig)


def provider_config(**values: Any) -> ProviderConfig:
    """Build the config class of ``values["kind"]``, validated as the loader would (raises ValidationError)."""
    return _PROVIDER_ADAPTER.validate_python(values)


class BreakerConfig(_Strict):
    """When a model's circuit opens (it is skipped) and when it is tried again."""

    #: consecutive failures that open the circuit
    failure_threshold: int = Field(5, ge=1)
    #: or: this failure ratio over ``window_s`` once the window holds ``min_requests`` outcomes
    error_rate: float = Field(0.5, gt=0, le=1)
    window_s: float = Field(60.0, gt=0)
    min_requests: int = Field(20, ge=1)
    #: open -> half-open (one probe request at a time) after this many seconds
    cooldown_s: float = Field(15.0, gt=0)


class CapabilitiesConfig(_Strict):
    """What a model can do; unset keys come from the known model, then the provider kind
    (``modelyard config check`` shows the result; see docs/configuration.md)."""

    vision: bool | None = None
    tools: bool | None = None
    json_schema: bool | None = None
    multiple_choices: bool | None = None
    embeddings: bool | None = None
    reasoning: bool | None = None
    prefill: bool | None = None


class ModelConfig(_Strict):
    provider: str
    #: false: the model stays configured but serves nothing (routes skip it; asking for it is a 404)
    enabled: bool = True
    #: the upstream model name or endpoint id; defaults to the model's own name
    model: str | None = None
    input_cost_per_mtok: float | None = Field(None, ge=0)
    output_cost_per_mtok: float | None = Field(None, ge=0)
    cached_input_cost_per_mtok: float | None = Field(None, ge=0)
    #: what the model is for (shown in /v1/models and config check)
    description: str | None = Field(None, max_length=500)
    #: the model costs nothing (a self-hosted endpoint): no price needed under USD budgets.
    #: Unset: true for local providers (ollama, llamacpp), false otherwise
    free: bool | None = None
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
    #: images, tools, JSON schema, n > 1, embeddings, reasoning, prefill (unset: the defaults)
    capabilities: CapabilitiesConfig = Field(default_factory=CapabilitiesConfig)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    #: what the model serves: chat completions, embeddings, or both
    mode: Literal["chat", "embedding"] = "chat"
    # local models only (the loader rejects them on a model of a cloud kind: LOCAL_MODEL_FIELDS)
    #: load at start-up; idle time before unloading (overrides the provider's)
    preload: bool = False
    keep_alive: str | int | None = None
    #: longest wait for a load before failing over (when the route allows fallback)
    load_timeout_s: float | None = Field(None, gt=0)


#: the model keys only the local kinds (LOCAL_KINDS) understand
LOCAL_MODEL_FIELDS: tuple[str, ...] = ("keep_alive", "preload", "load_timeout_s")


class AutoTierConfig(_Strict):
    """One tier of an ``auto`` route: its models (tried in this order) and the highest prompt
    complexity it takes (the last tier takes everything above the one before it)."""

    name: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
    models: tuple[str, ...] = Field(min_length=1)
    max_complexity: float = Field(1.0, ge=0, le=1)


#: what the judge is asked when a route's auto.judge sets no rubric
DEFAULT_RUBRIC = (
    "Does the answer respond to the request correctly, completely and without errors? "
    "1 means fully correct and complete, 0 means wrong, empty or off-topic."
)


class JudgeConfig(_Strict):
    """LLM-as-judge for an ``auto`` route: a configured model scores answers 0..1 against a rubric;
    a score under ``threshold`` escalates the request to the next tier."""

    model: str
    rubric: str = Field(DEFAULT_RUBRIC, min_length=1, max_length=4000)
    threshold: float = Field(0.5, ge=0, le=1)
    #: the share of answers judged (the others are served unjudged)
    sample_rate: float = Field(1.0, ge=0, le=1)
    #: the judge's own deadline, seconds (a judge that does not answer in time lets the answer through)
    timeout_s: float = Field(20.0, gt=0, le=600)


class AutoConfig(_Strict):
    """``strategy: auto``: the shipped classifier picks a tier per prompt (docs/routing.md)."""

    tiers: tuple[AutoTierConfig, ...] = Field(min_length=1, max_length=8)
    #: a tier below the last is chosen only when its expected quality (1 - p_hard) reaches this
    min_expected_quality: float = Field(0.0, ge=0, le=1)
    judge: JudgeConfig | None = None
    #: another trained weights file (scripts/train_classifier.py); unset: the shipped one
    classifier: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> AutoConfig:
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must differ: {', '.join(names)}")
        ceilings = [t.max_complexity for t in self.tiers[:-1]]
        if any(b <= a for a, b in itertools.pairwise(ceilings)):
            raise ValueError("tiers go from the cheapest up: each max_complexity must be above the one before")
        if len(self.tiers) > 1 and "max_complexity" in self.tiers[-1].model_fields_set:
            raise ValueError(
                "the last tier takes every prompt above the tier before it: leave its max_complexity unset"
            )
        return self


class CanaryConfig(_Strict):
    """A/B: send ``percent`` of the route's requests to ``model`` first (sticky per ``user`` or
    ``X-Modelyard-Session``); their usage records say ``source: canary``."""

    model: str
    percent: float = Field(gt=0, le=100)


class ShadowConfig(_Strict):
    """Mirror ``percent`` of the route's requests to ``model`` in the background: the client gets
    the primary's answer; the shadow's is checked by the route's validators (and ``judge``) and
    recorded with ``source: shadow``, its cost counted against ``scope: shadow`` budgets only."""

    model: str
    percent: float = Field(gt=0, le=100)
    judge: JudgeConfig | None = None
    #: shadow calls in flight at once in this process; a mirror beyond it is skipped (and counted)
    max_concurrency: int = Field(8, ge=1, le=1000)


class RouteConfig(_Strict):
    models: tuple[str, ...] = Field(min_length=1)
    fallbacks: tuple[str, ...] = ()
    strategy: Strategy = "round_robin"
    #: same-model retries for retryable errors
    retries: int = Field(1, ge=0)
    #: attempts in total, over all models
    max_attempts: int = Field(4, ge=1)
    #: deadline for the whole request, in seconds
    timeout_s: float | None = Field(None, gt=0)
    #: first-token timeout of streamed attempts on this route (over the models' own and the adaptive one)
    ttft_timeout_s: float | None = Field(None, gt=0, le=3600)
    description: str | None = None
    #: per-route defaults of the request options
    fallback: bool = True
    local_first: bool = False
    local_only: bool = False
    prefer: Literal["custom", "provider", "local"] | None = None
    #: task type -> model or route (the request option ``task`` picks one)
    tasks: dict[str, str] = Field(default_factory=dict)
    #: output validators: non_empty, json, json_schema, regex:..., python:pkg.module:fn
    validators: tuple[str, ...] = ()
    #: schema for the ``json_schema`` validator (else the request's response_format schema)
    json_schema: dict[str, Any] | None = None
    #: the model whose price "savings" are measured against
    baseline_model: str | None = None
    #: exact-match response cache lifetime for this route (unset: no caching)
    cache_ttl_s: float | None = Field(None, gt=0)
    #: the longest TTL a request may ask for with the cache_ttl_s option (unset: cache_ttl_s)
    cache_max_ttl_s: float | None = Field(None, gt=0)
    #: the default of the request option max_cost_usd for this route (a request may set its own)
    max_cost_usd: float | None = Field(None, gt=0, le=1e9)
    #: strategy auto: the tiers, the quality floor and the judge (docs/routing.md)
    auto: AutoConfig | None = None
    #: A/B: a share of the requests to a candidate model first (docs/compare.md)
    canary: CanaryConfig | None = None
    #: a share of the requests mirrored to a candidate in the background (docs/compare.md)
    shadow: ShadowConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _auto_models(cls, value: Any) -> Any:
        """An auto route's ``models`` default to its tiers' models, cheapest tier first."""
        if isinstance(value, dict) and "models" not in value and isinstance(value.get("auto"), dict):
            tiers = value["auto"].get("tiers")
            if isinstance(tiers, (list, tuple)):
                models: list[Any] = []
                for tier in tiers:
                    if isinstance(tier, dict) and isinstance(tier.get("models"), (list, tuple)):
                        models += [m for m in tier["models"] if m not in models]
                return {**value, "models": models}
        return value

    @model_validator(mode="after")
    def _auto_strategy(self) -> RouteConfig:
        if self.strategy == "auto" and self.auto is None:
            raise ValueError("strategy auto needs an auto section (tiers of models)")
        if self.auto is not None and self.strategy != "auto":
            raise ValueError("an auto section needs strategy: auto")
        if self.auto is not None:
            missing = [m for t in self.auto.tiers for m in t.models if m not in self.models]
            if missing:
                raise ValueError(f"auto tiers name models the route does not list in models: {', '.join(missing)}")
        return self


class BudgetConfig(_Strict):
    """A spending or token limit. ``scope`` + ``target`` say what it covers."""

    name: str
    #: shadow: shadow traffic only (which counts against no other budget); target: a route
    scope: Literal["global", "organization", "key", "route", "model", "shadow"] = "global"
    #: the organisation id, key id, route or model it covers; unset: each one of the scope separately
    target: str | None = None
    limit_usd: float | None = Field(None, gt=0)
    limit_tokens: int | None = Field(None, gt=0)
    period: Literal["day", "month", "total"] = "month"
    #: fractions of the limit at which to record an alert (and call the webhook) once per period
    alert_at: tuple[float, ...] = (0.8,)
    #: fraction of the limit at which requests are refused with 429 (the emergency stop)
    stop_at: float = Field(1.0, gt=0)
    webhook: str | None = None


class KeysConfig(_Strict):
    """The virtual keys' cache in front of the database (docs/configuration.md)."""

    #: a key change made by another process without Redis is seen within this many seconds
    cache_ttl_s: float = Field(5.0, gt=0, le=3600)
    #: while the database cannot be read, a key looked up less than this long ago is served as it
    #: was then (revocations made before the outage hold); 0: refuse at once
    stale_ttl_s: float = Field(300.0, ge=0, le=86_400)


class UsageConfig(_Strict):
    #: flush queued usage records at least this often
    flush_interval_ms: int = Field(100, ge=1)
    #: and whenever this many are queued
    batch_size: int = Field(500, ge=1)
    #: records held in memory while the store is down, before spilling to ``spill_path``
    max_queue: int = Field(10000, ge=1)
    spill_path: str = "./modelyard-usage-spill.jsonl"


class CacheConfig(_Strict):
    #: where cached responses live: memory (per process) or redis (the ``state`` URL)
    backend: Literal["memory", "redis"] = "memory"
    max_entries: int = Field(10000, ge=1)


class AlertConfig(_Strict):
    """An alert (docs/management.md#alerts): an event, ``/admin/alerts`` and an optional signed webhook."""

    name: str = Field(min_length=1, max_length=200)
    #: provider_down: a provider's health checks fail; breaker_open: a model's breaker opens;
    #: error_rate / latency_p95: over ``threshold`` in the last ``window_s``; budget: a budget alert
    kind: Literal["provider_down", "breaker_open", "error_rate", "latency_p95", "budget"]
    #: what it watches: provider (provider_down), model (breaker_open, error_rate, latency_p95),
    #: route (error_rate, latency_p95), or global (every one of the kind's own scope)
    scope: Literal["global", "provider", "model", "route"] = "global"
    #: the provider, model or route (unset: each one of the scope)
    target: str | None = None
    #: error_rate: a fraction (0-1); latency_p95: milliseconds; budget: the fraction of the limit
    threshold: float | None = Field(None, ge=0, allow_inf_nan=False)
    window_s: float = Field(300.0, gt=0, le=86_400)
    #: error_rate and latency_p95 stay quiet below this many requests in the window
    min_requests: int = Field(10, ge=1)
    #: POSTed JSON on firing and resolving, signed with ``secret`` (HMAC-SHA256), retried 3 times
    webhook: str | None = None
    secret: SecretStr | None = None

    @model_validator(mode="after")
    def _check(self) -> AlertConfig:
        if self.kind in ("error_rate", "latency_p95") and self.threshold is None:
            raise PydanticCustomError("alert_threshold", "{kind} needs a threshold", {"kind": self.kind})
        if self.kind == "error_rate" and self.threshold is not None and self.threshold > 1:
            raise PydanticCustomError("alert_threshold", "an error_rate threshold is a fraction from 0 to 1", {})
        allowed = {
            "provider_down": ("global", "provider"),
            "breaker_open": ("global", "model"),
            "error_rate": ("global", "model", "route"),
            "latency_p95": ("global", "model", "route"),
            "budget": ("global",),
        }[self.kind]
        if self.scope not in allowed:
            raise PydanticCustomError(
                "alert_scope",
                "{kind} alerts take scope {allowed}",
                {"kind": self.kind, "allowed": " or ".join(allowed)},
            )
        if self.webhook is not None:
            if not self.webhook.startswith(("http://", "https://")):
                raise PydanticCustomError("alert_webhook", "webhook must be an http:// or https:// URL", {})
            if self.secret is None or not self.secret.get_secret_value():
                raise PydanticCustomError(
                    "alert_secret", "a webhook needs a secret (its deliveries are signed with HMAC-SHA256)", {}
                )
        return self


class TracingConfig(_Strict):
    """``tracing:``: OpenTelemetry spans of requests and attempts (docs/observability.md)."""

    #: the OTLP/HTTP traces endpoint, e.g. http://127.0.0.1:4318/v1/traces (unset: tracing is off)
    otlp_endpoint: str | None = None
    service_name: str = Field("modelyard", min_length=1, max_length=200)
    #: put prompt and answer text in spans (off: they may hold personal data)
    capture_content: bool = False
    #: the share of new traces recorded (an incoming sampled traceparent is always followed)
    sample_ratio: float = Field(1.0, ge=0, le=1)

    @field_validator("otlp_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class ResponsesConfig(_Strict):
    """``responses:``: how long Responses API answers with ``store: true`` are kept."""

    retention_s: float = Field(86_400.0, ge=60, le=90 * 86_400)


class ConfigPolicy(_Strict):
    """``config:``: how config changes made through the admin API and the file meet (docs/management.md)."""

    #: file: only the file (admin writes answer 405); api: only the admin API (file changes are
    #: ignored after the first import); both: a changed file is imported unless an API change
    #: happened since its last import
    source: Literal["file", "api", "both"] = "both"
    #: how often a replica checks the database for a revision another replica activated
    poll_interval_s: float = Field(2.0, gt=0, le=3600)
    #: the longest a deploy's probe of one model may take
    probe_timeout_s: float = Field(15.0, gt=0, le=600)
    #: list every provider's models this often and send a discovery.new event for new ones (unset: off)
    discovery_interval_s: float | None = Field(None, ge=1, le=7 * 86_400)


class CompareConfig(_Strict):
    """Comparison runs (docs/compare.md)."""

    #: python graders the API may name: name -> pkg.module:function (code is never sent through the API)
    graders: dict[str, str] = Field(default_factory=dict)


class DatabaseConfig(_Strict):
    """``database:``: the URL alone (``database: postgresql://...``), or this mapping."""

    url: str = "sqlite:///./modelyard.db"
    #: prepared statements asyncpg keeps per PostgreSQL connection (unset: its default, 100); 0
    #: behind PgBouncer in transaction mode, where a statement prepared on one server connection
    #: is not there on the next
    statement_cache: int | None = Field(None, ge=0, le=10_000)


class Config(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    routes: dict[str, RouteConfig] = Field(default_factory=dict)
    default_route: str | None = None
    #: shared state (budgets, rate limits, cache): "memory" for one process, or a redis:// URL
    state: str = "memory"
    budgets: tuple[BudgetConfig, ...] = ()
    usage: UsageConfig = Field(default_factory=UsageConfig)
    keys: KeysConfig = Field(default_factory=KeysConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    config: ConfigPolicy = Field(default_factory=ConfigPolicy)
    alerts: tuple[AlertConfig, ...] = ()
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    responses: ResponsesConfig = Field(default_factory=ResponsesConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)

    @field_validator("state")
    @classmethod
    def _state_files(cls, value: str) -> str:
        """The TLS files of a ``rediss://`` URL exist (else Redis would look unreachable forever)."""
        from urllib.parse import parse_qs, urlsplit

        try:
            query = parse_qs(urlsplit(value).query)
        except ValueError:
            return value
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            for file in query.get(name, []):
                if not os.path.isfile(file):
                    raise PydanticCustomError(
                        "file_not_found", "{name}: file not found: {path}", {"name": name, "path": file}
                    )
        return value

    @field_validator("database", mode="before")
    @classmethod
    def _database_url(cls, value: Any) -> Any:
        """``database: <url>`` is short for ``database: {url: <url>}``."""
        return {"url": value} if isinstance(value, str) else value

    def master_key(self) -> str | None:
        """The admin key: ``server.master_key``, else the MODELYARD_MASTER_KEY environment variable."""
        if self.server.master_key is not None and self.server.master_key.get_secret_value():
            return self.server.master_key.get_secret_value()
        return os.environ.get("MODELYARD_MASTER_KEY") or None

    def describe(self) -> dict[str, Any]:
        """A summary safe to show (no secrets)."""
        return {
            "providers": {n: p.kind for n, p in self.providers.items()},
            "models": sorted(self.models),
            "routes": sorted(self.routes),
            "default_route": self.default_route,
        }
