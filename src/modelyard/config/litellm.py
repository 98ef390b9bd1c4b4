"""``modelyard import-litellm``: a LiteLLM proxy config turned into a modelyard config.

What maps (and how):

* ``model_list`` entries: ``litellm_params.model`` ``<provider>/<model>`` becomes a model on a
  provider of that kind (``openai``, ``anthropic``, ``gemini``, ``ollama``/``ollama_chat``, and
  ``hosted_vllm``/``openai`` with an ``api_base`` as an OpenAI-compatible provider). ``api_key:
  os.environ/VAR`` becomes ``${VAR}``; ``api_base``, ``rpm``, ``tpm``, ``timeout`` and
  ``model_info`` prices per token (as prices per million) carry over. Deployments that share a
  ``model_name`` become one route of that name with all of them in its pool.
* ``router_settings``/``litellm_settings``: ``routing_strategy``, ``num_retries``, ``timeout``,
  ``fallbacks`` (and ``context_window_fallbacks``, as plain fallbacks), ``max_budget`` with
  ``budget_duration`` of 1d or 30d, and the cache TTL.
* ``general_settings``: ``master_key`` (as ``${MODELYARD_MASTER_KEY}``), ``database_url``.

Everything else is listed, with its YAML path, as not mapped.  Nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Conversion", "convert_litellm"]

_KINDS = {
    "openai": "openai",
    "text-completion-openai": "openai",
    "hosted_vllm": "openai",
    "openai_compatible": "openai",
    "anthropic": "anthropic",
    "gemini": "gemini",
    "ollama": "ollama",
    "ollama_chat": "ollama",
}
_STRATEGIES = {
    "simple-shuffle": "random",
    "least-busy": "least_busy",
    "latency-based-routing": "latency",
    "cost-based-routing": "cost",
    "usage-based-routing": "least_busy",
    "usage-based-routing-v2": "least_busy",
}
_NAME = re.compile(r"[^A-Za-z0-9._:/@+-]+")


@dataclass(slots=True)
class Conversion:
    config: dict[str, Any]
    #: (YAML path in the LiteLLM config, why it was not mapped or how it was approximated)
    unmapped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _secret(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("os.environ/"):
        return "${" + value.removeprefix("os.environ/") + "}"
    return value


def _name(value: str) -> str:
    return _NAME.sub("-", value).strip("-") or "model"


def _period(duration: Any) -> str | None:
    return {"1d": "day", "24h": "day", "30d": "month", "1mo": "month"}.get(str(duration))


def convert_litellm(doc: Any) -> Conversion:
    if not isinstance(doc, dict):
        return Conversion({}, [("", "the LiteLLM config must be a mapping")])
    out: dict[str, Any] = {"providers": {}, "models": {}, "routes": {}}
    conv = Conversion(out)
    providers: dict[tuple[str, str | None, Any], str] = {}
    groups: dict[str, list[str]] = {}

    for i, entry in enumerate(doc.get("model_list") or []):
        path = f"model_list[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("model_name"), str):
            conv.unmapped.append((path, "no model_name"))
            continue
        params = entry.get("litellm_params") or {}
        target = str(params.get("model") or "")
        prefix, sep, upstream = target.partition("/")
        if not sep:
            prefix, upstream = "openai", target
        kind = _KINDS.get(prefix)
        base = params.get("api_base")
        if kind is None:
            conv.unmapped.append((f"{path}.litellm_params.model", f"provider {prefix!r} has no modelyard kind"))
            continue
        if prefix in ("hosted_vllm", "openai_compatible") and not base:
            conv.unmapped.append((f"{path}.litellm_params.api_base", f"{prefix} needs api_base"))
            continue
        key = (kind, base, _secret(params.get("api_key")))
        pname = providers.get(key)
        if pname is None:
            pname = kind if kind not in out["providers"] else f"{kind}-{len(providers) + 1}"
            pcfg: dict[str, Any] = {"kind": kind}
            if base:
                pcfg["base_url"] = _secret(base)
            if key[2] is not None:
                pcfg["api_key"] = key[2]
                if isinstance(key[2], str) and not key[2].startswith("${"):
                    conv.notes.append(f"providers.{pname}.api_key: a literal key was copied; prefer ${{VAR}}")
            providers[key] = pname
            out["providers"][pname] = pcfg
        group = entry["model_name"]
        members = groups.setdefault(group, [])
        mname = _name(group) if not members else f"{_name(group)}-{len(members) + 1}"
        model: dict[str, Any] = {"provider": pname, "model": upstream}
        for src, dst in (("rpm", "rpm"), ("tpm", "tpm"), ("timeout", "timeout_s")):
            if params.get(src) is not None:
                model[dst] = params[src]
        info = entry.get("model_info") or {}
        for src, dst in (
            ("input_cost_per_token", "input_cost_per_mtok"),
            ("output_cost_per_token", "output_cost_per_mtok"),
        ):
            cost = info.get(src, params.get(src))
            if isinstance(cost, int | float):
                model[dst] = round(cost * 1_000_000, 6)
        if info.get("mode") == "embedding":
            model["mode"] = "embedding"
        for extra in sorted(
            set(params)
            - {"model", "api_key", "api_base", "rpm", "tpm", "timeout", "input_cost_per_token", "output_cost_per_token"}
        ):
            conv.unmapped.append((f"{path}.litellm_params.{extra}", "no modelyard equivalent"))
        members.append(mname)
        out["models"][mname] = model

    router = {**(doc.get("litellm_settings") or {}), **(doc.get("router_settings") or {})}
    strategy = _STRATEGIES.get(str(router.get("routing_strategy") or "simple-shuffle"))
    if router.get("routing_strategy") and strategy is None:
        conv.unmapped.append(("router_settings.routing_strategy", f"{router['routing_strategy']!r} has no equivalent"))
    if str(router.get("routing_strategy", "")).startswith("usage-based"):
        conv.notes.append("routing_strategy usage-based-routing became least_busy (the closest modelyard strategy)")
    fallbacks: dict[str, list[str]] = {}
    for setting in ("fallbacks", "context_window_fallbacks"):
        for j, rule in enumerate(router.get(setting) or []):
            if not isinstance(rule, dict):
                continue
            for src, dsts in rule.items():
                fallbacks.setdefault(src, []).extend(d for d in (dsts or []) if d not in fallbacks.get(src, []))
            if setting == "context_window_fallbacks":
                conv.notes.append(f"{setting}[{j}] became ordinary fallbacks (they apply to context errors too)")
    # a model name that has several deployments or fallbacks is a route; its models get a suffix
    for group, members in groups.items():
        if len(members) == 1 and group not in fallbacks:
            continue
        if members[0] == _name(group):
            out["models"][f"{members[0]}-1"] = out["models"].pop(members[0])
            members[0] = f"{members[0]}-1"
        route: dict[str, Any] = {"models": list(members)}
        if strategy and len(members) > 1:
            route["strategy"] = strategy
        out["routes"][_name(group)] = route
    for src, dsts in fallbacks.items():
        route = out["routes"].get(_name(src))
        if route is None:
            conv.unmapped.append((f"router_settings.fallbacks.{src}", "no model_list entry of that name"))
            continue
        chain: list[str] = []
        for dst in dsts:
            if dst not in groups:
                conv.unmapped.append((f"router_settings.fallbacks.{src}", f"fallback {dst!r} is not in model_list"))
                continue
            chain += [m for m in groups[dst] if m not in chain and m not in route["models"]]
        if chain:
            route["fallbacks"] = chain
    for route in out["routes"].values():
        if router.get("num_retries") is not None:
            route["retries"] = int(router["num_retries"])
        if router.get("timeout") is not None or router.get("request_timeout") is not None:
            route["timeout_s"] = float(router.get("timeout") or router["request_timeout"])
    cache = router.get("cache_params") or {}
    if router.get("cache") and isinstance(cache, dict) and cache.get("ttl"):
        for route in out["routes"].values():
            route["cache_ttl_s"] = float(cache["ttl"])
    elif router.get("cache"):
        conv.unmapped.append(("litellm_settings.cache", "no ttl in cache_params: set routes.<name>.cache_ttl_s"))
    if router.get("max_budget") is not None:
        period = _period(router.get("budget_duration"))
        if period is None:
            conv.unmapped.append(("litellm_settings.budget_duration", "only 1d and 30d map (to day and month)"))
        else:
            out["budgets"] = [
                {"name": "litellm-max-budget", "limit_usd": float(router["max_budget"]), "period": period}
            ]
    handled = {"routing_strategy", "fallbacks", "context_window_fallbacks", "num_retries", "timeout",
               "request_timeout", "cache", "cache_params", "max_budget", "budget_duration"}  # fmt: skip
    for section in ("litellm_settings", "router_settings"):
        for key in sorted(set(doc.get(section) or {}) - handled):
            conv.unmapped.append((f"{section}.{key}", "no modelyard equivalent"))

    general = doc.get("general_settings") or {}
    if general.get("master_key"):
        out["server"] = {"master_key": "${MODELYARD_MASTER_KEY}"}
        conv.notes.append(
            "general_settings.master_key: set MODELYARD_MASTER_KEY (keys made by LiteLLM do not carry over)"
        )
    if general.get("database_url"):
        out["database"] = _secret(general["database_url"])
    for key in sorted(set(general) - {"master_key", "database_url"}):
        conv.unmapped.append((f"general_settings.{key}", "no modelyard equivalent"))
    for key in sorted(set(doc) - {"model_list", "router_settings", "litellm_settings", "general_settings"}):
        conv.unmapped.append((key, "no modelyard equivalent"))
    if len(out["routes"]) == 0:
        del out["routes"]
    names = list(out["routes"]) if "routes" in out else list(out["models"])
    if names:
        out["default_route"] = names[0]
    return conv
