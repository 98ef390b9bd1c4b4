"""Resolved, ready-to-call routing tables: deployments (a model on a provider) and routes.

Built once per config version by :mod:`modelyard.runtime`; nothing here parses config on the
request path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modelyard.config.prices import Price, price_for
from modelyard.config.schema import ModelConfig, ProviderConfigBase, RouteConfig
from modelyard.providers.base import CallOptions, Provider
from modelyard.routing.breaker import CircuitBreaker
from modelyard.routing.limiter import ModelLimiter
from modelyard.routing.stats import ModelStats
from modelyard.routing.strategies import Strategy

if TYPE_CHECKING:
    from modelyard.routing.auto import AutoRoute
    from modelyard.validators import Validator

__all__ = ["Deployment", "ModelState", "Route"]


@dataclass(slots=True)
class ModelState:
    """Live state of one model: breaker, limits and figures. Survives a reload that leaves the model unchanged."""

    breaker: CircuitBreaker
    limiter: ModelLimiter
    stats: ModelStats = field(default_factory=ModelStats)


@dataclass(slots=True, eq=False)
class Deployment:
    """A configured model: its name, provider, upstream model id, limits and live state."""

    name: str
    provider: Provider
    upstream: str
    config: ModelConfig
    call: CallOptions
    ttft_timeout_s: float | None
    stall_timeout_s: float | None
    state: ModelState
    #: what it can do (models.<name>.capabilities, with the defaults resolved by the runtime)
    capabilities: frozenset[str] = frozenset(
        ("vision", "tools", "json_schema", "multiple_choices", "embeddings", "reasoning", "prefill")
    )
    #: its price (the table's, with the config's fields over it), worked out once, not per request
    price: Price | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.price = price_for(self.config, self.upstream)

    # -- the view a routing strategy reads (see routing.strategies.Candidate) --------------

    @property
    def weight(self) -> float:
        return self.config.weight

    @property
    def in_flight(self) -> int:
        return self.state.stats.in_flight

    @property
    def latency_ms(self) -> float | None:
        return self.state.stats.latency_ms

    @property
    def ttft_ms(self) -> float | None:
        return self.state.stats.ttft_ms

    @property
    def ttft_reasoning_ms(self) -> float | None:
        return self.state.stats.ttft_reasoning_ms

    @property
    def est_cost_usd(self) -> float | None:
        """Cost of a nominal request (1k tokens in, 250 out) for ranking by price."""
        c = self.config
        if c.input_cost_per_mtok is None and c.output_cost_per_mtok is None:
            return None
        return ((c.input_cost_per_mtok or 0.0) * 1000 + (c.output_cost_per_mtok or 0.0) * 250) / 1e6

    @property
    def is_local(self) -> bool:
        return self.provider.is_local or "local" in self.config.tags

    @property
    def provider_config(self) -> ProviderConfigBase:
        return self.provider.config


@dataclass(slots=True, eq=False)
class Route:
    name: str
    pool: list[Deployment]
    fallbacks: list[Deployment]
    strategy: Strategy
    config: RouteConfig
    #: output validators, built once from the route config
    validators: list[Validator] = field(default_factory=list)
    #: strategy auto: the tiers and the classifier (None for the other strategies)
    auto: AutoRoute | None = None

    @property
    def retries(self) -> int:
        return self.config.retries

    @property
    def max_attempts(self) -> int:
        return self.config.max_attempts

    @property
    def timeout_s(self) -> float | None:
        return self.config.timeout_s
