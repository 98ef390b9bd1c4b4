"""``GET /v1/stats``, ``GET /v1/budgets`` and ``POST /v1/estimate``.

The master key sees every organisation (and may filter with ``org_id``); a virtual key sees only
its own organisation's figures and budgets.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query, Request

from modelyard.accounting.budgets import Scope
from modelyard.accounting.pricing import estimate_input_tokens, worst_case_cost, worst_case_output_tokens
from modelyard.errors import AuthenticationError, InvalidRequestError, ModelyardError, ServiceUnavailableError
from modelyard.gateway.auth import Principal
from modelyard.gateway.pipeline import resolve_route
from modelyard.gateway.services import Services
from modelyard.routing.options import parse_options
from modelyard.routing.plan import plan_for
from modelyard.server.admin import budget_row
from modelyard.server.body import option_headers, read_body
from modelyard.storage.usage import parse_group_by
from modelyard.wire.openai import decode_body, parse_chat_request

if TYPE_CHECKING:
    from modelyard.server.state import AppState

__all__ = ["accounting_router"]


def _summary(total: dict[str, Any] | None) -> dict[str, Any]:
    """The seeds' monitoring report: requests and costs at a glance."""
    t = total or {}
    return {
        "requests": {
            "total": t.get("requests", 0),
            "success": t.get("successes", 0),
            "failures": t.get("failures", 0),
            "fallbacks": t.get("fallbacks", 0),
        },
        "costs": {
            "total": t.get("cost_usd", 0.0),
            "baseline": t.get("baseline_cost_usd", 0.0),
            "savings": t.get("savings_usd", 0.0),
            "savingsPercent": t.get("savings_percent", 0.0),
        },
    }


def accounting_router(gw: AppState) -> APIRouter:
    router = APIRouter(tags=["accounting"])

    async def who(request: Request) -> tuple[Services, Principal]:
        s = gw.services
        if s is None:
            raise ServiceUnavailableError("usage figures need the database, which is not running")
        principal = await s.auth.authenticate(request.headers, request.method)
        if s.auth.required and principal.kind == "anonymous":
            raise AuthenticationError("missing API key")
        return s, principal

    @router.get("/v1/stats", summary="Usage figures per model, route, provider, organisation or time bucket")
    async def stats(
        request: Request,
        group_by: str | None = Query(
            None,
            max_length=40,
            description="model, route, provider, org, key, error_class, failed_model, hour or day; or a time "
            "bucket and a dimension, e.g. day,model (each row then has the bucket in key and the value in group)",
        ),
        since: datetime | None = Query(None),
        until: datetime | None = Query(None),
        org_id: str | None = Query(None, description="master key only; a virtual key always sees its own"),
        source: str | None = Query(
            None,
            max_length=80,
            description="comma list of usage sources (production, canary, shadow, comparison, probe); default all",
        ),
    ) -> dict[str, Any]:
        s, principal = await who(request)
        try:
            grouping = parse_group_by(group_by)
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param="group_by") from None
        sources = _sources(source)
        scope = principal.org_id if principal.kind == "key" else org_id
        rows = await s.usage.stats(group_by=grouping, org_id=scope, since=since, until=until, sources=sources)
        total = await s.usage.stats(group_by=None, org_id=scope, since=since, until=until, sources=sources)
        return {
            "group_by": group_by,
            "org_id": scope,
            "source": list(sources) if sources else None,
            "data": rows,
            "total": total[0] if total else None,
            "summary": _summary(total[0] if total else None),
            "usage_writer": s.writer.status() if principal.kind != "key" else None,
        }

    @router.get("/v1/budgets", summary="Budgets that apply to the caller (all of them for the master key)")
    async def budgets(request: Request) -> dict[str, Any]:
        s, principal = await who(request)
        rows = await s.ledger.usage()
        if principal.kind == "key":
            mine = {f"organization:{principal.org_id}", f"key:{principal.key_id}", "global"}
            rows = [b for b in rows if b.scope in mine]
        return {"data": [budget_row(b) for b in rows]}

    @router.post("/v1/estimate", summary="Estimated tokens and cost per candidate, before anything is sent")
    async def estimate(request: Request) -> dict[str, Any]:
        s, principal = await who(request)
        req = parse_chat_request(decode_body(await read_body(request, gw.max_body)))
        opts = parse_options(req.options, option_headers(request))
        rt = gw.holder.current
        route = principal.admit(resolve_route(rt, req.model, opts))
        plan = plan_for(route, opts, stream=req.stream, peek=True, reasoning=req.asks_for_reasoning())  # no side effect
        n_in = estimate_input_tokens(req)
        candidates = []
        for dep in plan.candidates:
            price = dep.price
            n_out = worst_case_output_tokens(req, dep.config, n_in)
            worst = worst_case_cost(price, n_in, n_out)
            fits_budget = await _fits(s, principal, route.name, dep.name, worst, n_in + n_out)
            candidates.append(
                {
                    "model": dep.name,
                    "provider": dep.provider.name,
                    "upstream": dep.upstream,
                    "priced": price is not None,
                    "input_cost_usd": worst_case_cost(price, n_in, 0),
                    "max_output_tokens": n_out,
                    "worst_case_cost_usd": worst,
                    "fits_budgets": fits_budget,
                    "fits_max_cost": opts.max_cost_usd is None or worst <= opts.max_cost_usd,
                }
            )
        return {"route": route.name, "input_tokens": n_in, "input_tokens_estimated": True, "candidates": candidates}

    return router


async def _fits(s: Services, principal: Principal, route: str, model: str, usd: float, tokens: int) -> bool:
    """Whether a reservation of this size would pass every budget now (reserved and released at once)."""
    if not s.accountant.has_budgets:
        return True
    try:
        res = await s.ledger.reserve(Scope(principal.org_id, principal.key_id, route, model), usd=usd, tokens=tokens)
    except ModelyardError:
        return False
    await s.ledger.release(res)
    return True


_SOURCES = ("production", "canary", "shadow", "comparison", "probe")


def _sources(value: str | None) -> tuple[str, ...] | None:
    """``?source=production,canary`` as a tuple (400 for an unknown source)."""
    if not value:
        return None
    parts = tuple(dict.fromkeys(p.strip() for p in value.split(",") if p.strip()))
    unknown = [p for p in parts if p not in _SOURCES]
    if unknown or not parts:
        raise InvalidRequestError(
            f"unknown usage source {', '.join(unknown) or value!r}; expected a comma list of {', '.join(_SOURCES)}",
            param="source",
        )
    return parts
