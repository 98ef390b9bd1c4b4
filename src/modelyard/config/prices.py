"""The built-in price table: USD per million tokens for the main providers' models, each with the
date it was taken (:attr:`Price.source_date`), and the lookup that tolerates provider prefixes and
dated suffixes.

It lives in the config layer so that loading a config can refuse a USD budget over a model with no
price (:mod:`modelyard.config.loader`); :mod:`modelyard.accounting.pricing` applies the prices.
Open models on OpenAI-compatible hosts are never priced by name: their price depends on the host,
so such a model needs ``input_cost_per_mtok``/``output_cost_per_mtok`` in its config (or
``free: true``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelyard.config.schema import LOCAL_KINDS, BudgetConfig, Config, ModelConfig

__all__ = [
    "LEGACY_TAKEN",
    "PRICE_TABLE",
    "TAKEN",
    "Price",
    "is_priced",
    "lookup_price",
    "normalize_model_name",
    "price_for",
    "unpriced_models",
    "unpriced_under_budgets",
]

#: when the current-generation figures below were taken from the providers' pages
TAKEN = "2026-11-22"
#: when the previous-generation figures (GPT-4, GPT-3.5, Claude 3 Sonnet, Gemini 1.5) were added
LEGACY_TAKEN = "2026-12-03"


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens. ``cached_input`` None: cached reads cost ``input``;
    ``cache_write`` None: cache writes cost ``input * 1.25``."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    #: when the figure was taken from the provider's price page (YYYY-MM-DD); "" for config prices
    source_date: str = ""


def _p(inp: float, cached: float | None, out: float, write: float | None = None, *, date: str = TAKEN) -> Price:
    return Price(input=inp, output=out, cached_input=cached, cache_write=write, source_date=date)


# Sources (stored copies of the providers' official pricing pages, read for this table in 2026):
# - OpenAI: https://platform.openai.com/docs/pricing (now developers.openai.com/api/docs/pricing),
#   standard tier; GPT-4.1/4o/o-series figures as listed 2025-06-03, GPT-5 family as listed from
#   2025-08 (cached input 90% off for GPT-5, 75% for GPT-4.1/o3/o4-mini, 50% for GPT-4o/o1).
# - Anthropic: https://platform.claude.com/docs/en/about-claude/pricing ("Model pricing": base input,
#   5-minute cache writes, cache hits, output).  1-hour cache writes (2x input) are not modelled.
# - Google: https://ai.google.dev/gemini-api/docs/pricing, paid tier, text input, prompts <= 200k tokens
#   (Gemini 2.5 Pro doubles its input price above 200k; that tier is not modelled).
# Batch, flex and priority tiers are not modelled.  Override any field per model in the config
# (input_cost_per_mtok, output_cost_per_mtok, cached_input_cost_per_mtok).
PRICE_TABLE: dict[str, Price] = {
    # OpenAI ------------------------------------------------------------------------------
    "gpt-5": _p(1.25, 0.125, 10.00),
    "gpt-5-chat": _p(1.25, 0.125, 10.00),
    "gpt-5.1": _p(1.25, 0.125, 10.00),
    "gpt-5-mini": _p(0.25, 0.025, 2.00),
    "gpt-5-nano": _p(0.05, 0.005, 0.40),
    "gpt-4.1": _p(2.00, 0.50, 8.00),
    "gpt-4.1-mini": _p(0.40, 0.10, 1.60),
    "gpt-4.1-nano": _p(0.10, 0.025, 0.40),
    "gpt-4o": _p(2.50, 1.25, 10.00),
    "gpt-4o-2024-05-13": _p(5.00, None, 15.00),
    "gpt-4o-mini": _p(0.15, 0.075, 0.60),
    "o1": _p(15.00, 7.50, 60.00),
    "o1-pro": _p(150.00, None, 600.00),
    "o1-mini": _p(1.10, 0.55, 4.40),
    "o3": _p(2.00, 0.50, 8.00),
    "o3-pro": _p(20.00, None, 80.00),
    "o3-mini": _p(1.10, 0.55, 4.40),
    "o4-mini": _p(1.10, 0.275, 4.40),
    # previous generations, still served (https://openai.com/api/pricing, legacy models)
    "gpt-4-turbo": _p(10.00, None, 30.00, date=LEGACY_TAKEN),
    "gpt-4-1106-preview": _p(10.00, None, 30.00, date=LEGACY_TAKEN),
    "gpt-4-0125-preview": _p(10.00, None, 30.00, date=LEGACY_TAKEN),
    "gpt-4": _p(30.00, None, 60.00, date=LEGACY_TAKEN),
    "gpt-4-32k": _p(60.00, None, 120.00, date=LEGACY_TAKEN),
    "gpt-3.5-turbo": _p(0.50, None, 1.50, date=LEGACY_TAKEN),
    "gpt-3.5-turbo-instruct": _p(1.50, None, 2.00, date=LEGACY_TAKEN),
    "text-embedding-3-small": _p(0.02, None, 0.0),
    "text-embedding-3-large": _p(0.13, None, 0.0),
    "text-embedding-ada-002": _p(0.10, None, 0.0),
    # Anthropic (input, cache read, output, 5-minute cache write) -------------------------
    "claude-opus-4-7": _p(5.00, 0.50, 25.00, 6.25),
    "claude-opus-4-6": _p(5.00, 0.50, 25.00, 6.25),
    "claude-opus-4-5": _p(5.00, 0.50, 25.00, 6.25),
    "claude-opus-4-1": _p(15.00, 1.50, 75.00, 18.75),
    "claude-opus-4": _p(15.00, 1.50, 75.00, 18.75),
    "claude-sonnet-4-6": _p(3.00, 0.30, 15.00, 3.75),
    "claude-sonnet-4-5": _p(3.00, 0.30, 15.00, 3.75),
    "claude-sonnet-4": _p(3.00, 0.30, 15.00, 3.75),
    "claude-3-7-sonnet": _p(3.00, 0.30, 15.00, 3.75),
    "claude-3-5-sonnet": _p(3.00, 0.30, 15.00, 3.75),
    "claude-haiku-4-5": _p(1.00, 0.10, 5.00, 1.25),
    "claude-3-5-haiku": _p(0.80, 0.08, 4.00, 1.00),
    "claude-3-opus": _p(15.00, 1.50, 75.00, 18.75),
    "claude-3-haiku": _p(0.25, 0.03, 1.25, 0.30),
    "claude-3-sonnet": _p(3.00, None, 15.00, date=LEGACY_TAKEN),
    # Google Gemini ----------------------------------------------------------------------
    "gemini-2.5-pro": _p(1.25, 0.125, 10.00),
    "gemini-2.5-flash": _p(0.30, 0.03, 2.50),
    "gemini-2.5-flash-lite": _p(0.10, 0.01, 0.40),
    "gemini-2.0-flash": _p(0.10, 0.025, 0.40),
    "gemini-2.0-flash-lite": _p(0.075, None, 0.30),
    # Gemini 1.5 (prompts <= 128k tokens; longer prompts cost twice as much, not modelled)
    "gemini-1.5-pro": _p(1.25, None, 5.00, date=LEGACY_TAKEN),
    "gemini-1.5-flash": _p(0.075, None, 0.30, date=LEGACY_TAKEN),
    "gemini-1.5-flash-8b": _p(0.0375, None, 0.15, date=LEGACY_TAKEN),
}

#: Other spellings of table entries.
_ALIASES = {
    "claude-opus-4-0": "claude-opus-4",
    "claude-sonnet-4-0": "claude-sonnet-4",
    "chatgpt-4o": "gpt-4o",
}

#: ``provider/model`` and ``provider:model`` prefixes that are not part of the model name.
_PREFIXES = frozenset(
    {"openai", "anthropic", "gemini", "google", "azure", "vertex_ai", "vertex", "bedrock", "models", "openrouter"}
)

#: Suffixes stripped one at a time (dates, versions, previews, aliases) until a table entry matches.
_SUFFIXES = (
    re.compile(r"-\d{4}-\d{2}-\d{2}$"),  # OpenAI snapshots: gpt-4o-2024-08-06
    re.compile(r"[-@]\d{8}$"),  # Anthropic snapshots: claude-sonnet-4-5-20250929, Vertex @20240620
    re.compile(r"-v\d+(:\d+)?$"),  # Bedrock versions: ...-v2:0
    re.compile(r"-(latest|exp)$"),
    re.compile(r"-(preview|exp)(-\d{2}-\d{2,4})?$"),  # Gemini previews: -preview-05-20, -exp-03-25
    re.compile(r"-\d{3}$"),  # Gemini stable versions: gemini-2.0-flash-001
    re.compile(r"-\d{4}$"),  # OpenAI MMDD snapshots: gpt-3.5-turbo-0125, gpt-4-0613
)


def normalize_model_name(name: str) -> str:
    """Lower-case, without a known provider prefix (``openai/``, ``models/``, ``anthropic.``)."""
    n = name.strip().lower()
    while True:
        head, sep, rest = n.partition("/")
        if sep and rest:
            n = rest
            continue
        head, sep, rest = n.partition(":")
        if sep and rest and head in _PREFIXES:
            n = rest
            continue
        break
    for vendor in ("anthropic.", "us.anthropic.", "eu.anthropic.", "apac.anthropic."):
        if n.startswith(vendor):
            n = n[len(vendor) :]
    return n


def lookup_price(upstream_model: str) -> Price | None:
    """The built-in price of a model, or None when the table does not know it."""
    n = normalize_model_name(upstream_model)
    for _ in range(len(_SUFFIXES) + 1):
        hit = PRICE_TABLE.get(_ALIASES.get(n, n))
        if hit is not None:
            return hit
        for pattern in _SUFFIXES:
            stripped = pattern.sub("", n)
            if stripped != n and stripped:
                n = stripped
                break
        else:
            return None
    return None


def price_for(model_cfg: ModelConfig | None, upstream_model: str) -> Price | None:
    """The price of a model: the table's, with each field the config sets taking precedence.

    None when neither the table nor the config knows anything (the call is then free: local models).
    """
    base = lookup_price(upstream_model)
    if model_cfg is None:
        return base
    inp, out = model_cfg.input_cost_per_mtok, model_cfg.output_cost_per_mtok
    cached = model_cfg.cached_input_cost_per_mtok
    if inp is None and out is None and cached is None:
        return base
    if base is None:
        return Price(input=inp or 0.0, output=out or 0.0, cached_input=cached)
    return Price(
        input=base.input if inp is None else inp,
        output=base.output if out is None else out,
        cached_input=base.cached_input if cached is None else cached,
        # not a config field: follows the input price when that is overridden (1.25x)
        cache_write=base.cache_write if inp is None else None,
    )


def is_priced(model: ModelConfig, upstream: str) -> bool:
    """The config or the table gives the model a price."""
    return (
        model.input_cost_per_mtok is not None
        or model.output_cost_per_mtok is not None
        or lookup_price(upstream) is not None
    )


def unpriced_models(cfg: Config) -> list[str]:
    """Configured models that cost money but have no price (their calls would count as $0)."""
    out: list[str] = []
    for name, model in cfg.models.items():
        provider = cfg.providers.get(model.provider)
        if provider is None:
            continue
        free = model.free if model.free is not None else provider.kind in LOCAL_KINDS  # local: free by default
        if not free and not is_priced(model, model.model or name):
            out.append(name)
    return out


def _covered(cfg: Config, budget: BudgetConfig) -> set[str]:
    """The configured models a USD budget can apply to."""
    if budget.scope == "model":
        return set(cfg.models) if budget.target is None else {budget.target}
    if budget.scope == "route" and budget.target is not None:
        route = cfg.routes.get(budget.target)
        if route is not None:
            return {*route.models, *route.fallbacks, *(m for m in route.tasks.values() if m in cfg.models)}
        return {budget.target} if budget.target in cfg.models else set()
    return set(cfg.models)  # global, organization, key, every route


def unpriced_under_budgets(cfg: Config) -> list[tuple[str, str]]:
    """(YAML path, message) for each unpriced model a USD budget covers: a config error, since the
    budget could not count its calls."""
    unpriced = unpriced_models(cfg)
    if not unpriced:
        return []
    problems: list[tuple[str, str]] = []
    for name in unpriced:
        budgets = [b.name for b in cfg.budgets if b.limit_usd is not None and name in _covered(cfg, b)]
        if budgets:
            upstream = cfg.models[name].model or name
            problems.append(
                (
                    f"models.{name}",
                    f"no price for {upstream!r}, and the USD budget {budgets[0]!r} covers it (its calls would "
                    "count as $0). Set input_cost_per_mtok and output_cost_per_mtok on the model, or mark it "
                    "free: true if it really costs nothing",
                )
            )
    return problems
