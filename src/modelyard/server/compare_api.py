"""The comparison API: start a run in the background, follow it, read its result and report.

    POST /admin/comparisons                  start (202; 400 for a bad prompt set, an unknown model,
                                             an estimate over max_cost_usd)
    GET  /admin/comparisons                  the runs, newest first
    GET  /admin/comparisons/{id}             one run: status, progress, result when it ended
    GET  /admin/comparisons/{id}/events      progress as server-sent events
    GET  /admin/comparisons/{id}/report      the self-contained HTML report
    POST /admin/comparisons/{id}/cancel      stop it (what it spent is kept)
    GET  /admin/recommendations              per route: switch model or not, from production usage

The master key sees every run; an org admin key its organisation's, and its runs are charged to
its organisation (each call is a usage record with ``source: comparison``).  See docs/compare.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import HTMLResponse, Response, StreamingResponse

from modelyard.compare.production import MIN_REQUESTS, recommendations
from modelyard.compare.report import html_report
from modelyard.compare.service import ComparisonService
from modelyard.compare.spec import MAX_MODELS, ComparisonSpec, GraderSpec, SpecError, parse_prompts
from modelyard.errors import InvalidRequestError, NotFoundError, ServiceUnavailableError
from modelyard.gateway.auth import Admin, Principal

if TYPE_CHECKING:
    from modelyard.server.state import AppState

__all__ = ["compare_router"]


class ComparisonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(min_length=1, max_length=MAX_MODELS, description="1 to 8 configured models or routes")
    prompts: list[dict[str, Any]] | str = Field(
        description="the prompt set: a list of objects, or JSONL text (one object per line)"
    )
    iterations: int = Field(1, ge=1, le=20)
    concurrency: int = Field(4, ge=1, le=64)
    graders: list[str | dict[str, Any]] = Field(
        default_factory=list,
        description="exact, contains, regex:PATTERN, json_valid, json_schema, numeric[:TOL], judge:MODEL, "
        "python:NAME (a name from the config's compare.graders), or their object forms",
    )
    max_cost_usd: float | None = Field(None, gt=0, le=1e6)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    temperature: float | None = Field(None, ge=0, le=2)
    accurate_at: float = Field(1.0, gt=0, le=1)
    weights: dict[str, float] | None = None
    current: str | None = Field(None, description="the model recommendations compare against")
    route: str | None = Field(None, description="compare with this route's current model (added to models)")
    name: str | None = Field(None, max_length=200)


def _sse(event: dict[str, Any]) -> bytes:
    if event.get("type") == "keep-alive":
        return b": keep-alive\n\n"
    return f"event: {event.get('type', 'message')}\n".encode() + b"data: " + orjson.dumps(event) + b"\n\n"


def _public(row: dict[str, Any]) -> dict[str, Any]:
    spec = row.get("spec") or {}
    out = {
        "id": row["id"],
        "name": row.get("name"),
        "status": row["status"],
        "created_at": row["created_at"].isoformat() if row.get("created_at") else None,
        "finished_at": row["finished_at"].isoformat() if row.get("finished_at") else None,
        "created_by": row.get("created_by"),
        "spent_usd": row.get("spent_usd"),
        "models": spec.get("models", []),
        "prompts": len(spec.get("prompts", [])),
        "iterations": spec.get("iterations"),
    }
    if "result" in row:
        out["result"] = row["result"]
    return out


def compare_router(gw: AppState) -> APIRouter:
    router = APIRouter(prefix="/admin", tags=["comparisons"])

    async def caller(request: Request) -> tuple[ComparisonService, Admin]:
        services = gw.services
        comparisons = gw.comparison_service()
        if services is None or comparisons is None:
            raise ServiceUnavailableError("comparisons need the database, which is not running")
        who = await services.auth.admin(request.headers, request.method)
        return comparisons, who

    C = Depends(caller)

    def spec_of(body: ComparisonIn, cfg_graders: dict[str, str]) -> ComparisonSpec:
        try:
            prompts = parse_prompts(body.prompts)
        except SpecError as exc:
            raise InvalidRequestError(str(exc), param="prompts", code="invalid_prompt_set") from None
        models = list(body.models)
        current = body.current
        if body.route is not None:
            rt = gw.holder.current
            route = rt.routes.get(body.route)
            if route is None:
                raise NotFoundError(f"unknown route {body.route!r}", param="route")
            first = route.pool[0].name if route.pool else None
            if first is not None and first not in models:
                models.insert(0, first)
            current = current or first
        try:
            graders = tuple(GraderSpec.of(g) for g in body.graders)
        except (ValidationError, ValueError) as exc:
            raise InvalidRequestError(f"graders: {exc}".splitlines()[0][:300], param="graders") from None
        for g in graders:
            if g.kind == "python" and (g.target or "") not in cfg_graders:
                known = ", ".join(sorted(cfg_graders)) or "none configured"
                raise InvalidRequestError(
                    f"python grader {g.target!r}: the API takes only a name from the config's compare.graders "
                    f"({known}), never code",
                    param="graders",
                    code="grader_not_allowed",
                )
        try:
            return ComparisonSpec.model_validate(
                {
                    "models": models,
                    "prompts": prompts,
                    "iterations": body.iterations,
                    "concurrency": body.concurrency,
                    "graders": graders,
                    "max_cost_usd": body.max_cost_usd,
                    "max_tokens": body.max_tokens,
                    "temperature": body.temperature,
                    "accurate_at": body.accurate_at,
                    "current": current,
                    "route": body.route,
                    "name": body.name,
                    **({"weights": body.weights} if body.weights is not None else {}),
                }
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "body"
            raise InvalidRequestError(f"{where}: {err['msg']}", param=where) from None

    @router.post("/comparisons", status_code=202, summary="Start a comparison run (in the background)")
    async def start(body: ComparisonIn, pair: tuple[ComparisonService, Admin] = C) -> Response:
        service, who = pair
        spec = spec_of(body, dict(gw.holder.current.config.compare.graders))
        principal = Principal("master") if who.is_master else Principal("key", who.key)
        try:
            run = service.prepare(spec, principal)
        except SpecError as exc:
            raise InvalidRequestError(str(exc), param="models", code="invalid_comparison") from None
        await service.launch(run, org_id=who.org_id, created_by=who.actor)
        body_out = {
            "id": run.id,
            "status": run.status,
            "estimate_usd": run.estimate_usd,
            "calls": run.total,
            "events": f"/admin/comparisons/{run.id}/events",
            "report": f"/admin/comparisons/{run.id}/report",
        }
        return Response(orjson.dumps(body_out), status_code=202, media_type="application/json")

    @router.get("/comparisons", summary="Comparison runs, newest first")
    async def list_(pair: tuple[ComparisonService, Admin] = C) -> dict[str, Any]:
        service, who = pair
        rows = await service.store.list(who.org_id, every_org=who.is_master) if service.store else []
        return {"data": [_public(r) for r in rows]}

    async def row_of(service: ComparisonService, who: Admin, run_id: str) -> dict[str, Any]:
        row = await service.store.get(run_id, who.org_id, every_org=who.is_master) if service.store else None
        if row is None:
            raise NotFoundError(f"no comparison {run_id!r}", param="id")
        return row

    @router.get("/comparisons/{run_id}", summary="One comparison run: status, progress and, once ended, its result")
    async def get(run_id: str, pair: tuple[ComparisonService, Admin] = C) -> dict[str, Any]:
        service, who = pair
        out = _public(await row_of(service, who, run_id))
        run = service.live(run_id, who.org_id, every_org=who.is_master)
        if run is not None and run.status in ("queued", "running"):
            out["status"] = run.status
            out["progress"] = {"done": run.done, "total": run.total, "spent_usd": run.spent_usd + run.judge_cost_usd}
        return out

    @router.get("/comparisons/{run_id}/events", summary="A run's progress as server-sent events")
    async def events(run_id: str, pair: tuple[ComparisonService, Admin] = C) -> StreamingResponse:
        service, who = pair
        row = await row_of(service, who, run_id)

        async def body() -> Any:
            yield b": modelyard comparison events\n\n"
            if service.live(run_id, who.org_id, every_org=who.is_master) is None:
                # ended before this process's memory of it: one event with the stored status
                yield _sse({"type": "finished", "id": run_id, "status": row["status"], "spent_usd": row["spent_usd"]})
                return
            async for event in service.events(run_id, who.org_id, every_org=who.is_master):
                yield _sse(event)

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @router.get(
        "/comparisons/{run_id}/report", summary="The run's self-contained HTML report", response_class=HTMLResponse
    )
    async def report(run_id: str, pair: tuple[ComparisonService, Admin] = C) -> HTMLResponse:
        service, who = pair
        row = await row_of(service, who, run_id)
        if not row.get("result"):
            raise NotFoundError(f"comparison {run_id!r} has no result yet (status {row['status']})", param="id")
        return HTMLResponse(html_report(row["result"]))

    @router.post("/comparisons/{run_id}/cancel", summary="Stop a running comparison (what it spent is kept)")
    async def cancel(run_id: str, pair: tuple[ComparisonService, Admin] = C) -> dict[str, Any]:
        service, who = pair
        await row_of(service, who, run_id)
        return {"id": run_id, "cancelled": service.cancel(run_id, who.org_id, every_org=who.is_master)}

    @router.get("/recommendations", summary="Per route: switch model or not, from production usage and comparisons")
    async def recommend(
        request: Request,
        route: str | None = Query(None, max_length=200, description="one route (default: every route)"),
        days: float = Query(7.0, gt=0, le=366, description="the usage window, in days"),
        pair: tuple[ComparisonService, Admin] = C,
    ) -> dict[str, Any]:
        service, who = pair
        services = gw.services
        assert services is not None
        rt = gw.holder.current
        if route is not None and route not in rt.routes:
            raise NotFoundError(f"unknown route {route!r}", param="route")
        data = await recommendations(
            rt, services.database, service.store, route=route, days=days, org_id=who.org_id, every_org=who.is_master
        )
        return {"days": days, "min_requests": MIN_REQUESTS, "data": data}

    return router
