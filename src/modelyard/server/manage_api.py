"""The management API: providers, models and routes changed at run time, config revisions,
deploys with probes, rollback, discovery, connection tests, the audit log and admin events.

Every write carries the revision it was based on (``If-Match: <id>`` or ``base_revision``); a
write without one is a 428, a stale one a 409 naming the active revision.  Every answer to a
config read or write has the active revision as its ``ETag``.  See docs/management.md.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response, StreamingResponse

from modelyard.config.capabilities import CAPABILITIES
from modelyard.errors import (
    InvalidRequestError,
    NotFoundError,
    PreconditionRequiredError,
    RateLimitError,
    ServiceUnavailableError,
)
from modelyard.gateway.auth import Admin
from modelyard.management import edits
from modelyard.management.discovery import discover
from modelyard.management.document import to_yaml
from modelyard.management.manager import Actor, ChangeResult, ConfigManager
from modelyard.management.probe import test_provider

if TYPE_CHECKING:
    from modelyard.server.state import AppState

__all__ = ["manage_router"]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]{0,199}$"
#: the largest revision id (a 32-bit integer column on PostgreSQL): beyond it a 4xx, not a database error
_REVISION_MAX = 2**31 - 1


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Based(_In):
    #: the revision this change is based on (or send If-Match: <id>)
    base_revision: int | None = Field(None, ge=1, le=_REVISION_MAX)


class EntryIn(_In):
    name: str = Field(pattern=_NAME, description="the new provider's, model's or route's name")
    config: dict[str, Any] = Field(description="its configuration, exactly as under providers/models/routes in YAML")
    base_revision: int | None = Field(None, ge=1, le=_REVISION_MAX)
    message: str = Field("", max_length=500)


class EntryPut(Based):
    config: dict[str, Any] = Field(description="the whole entry (PUT) or a JSON merge patch of it (PATCH)")
    message: str = Field("", max_length=500)


class SwitchIn(Based):
    model: str = Field(min_length=1, max_length=200, description="the configured model the route should use")
    keep_previous: bool = Field(True, description="keep the route's previous models as its first fallbacks")
    message: str = Field("", max_length=500)


class DeployIn(Based):
    document: dict[str, Any] | None = Field(None, description="a whole config document (the YAML as JSON)")
    patch: dict[str, Any] | None = Field(None, description="a JSON merge patch (RFC 7386) of the active document")
    probe: bool | Literal["load"] = Field(
        True, description="probe every new or changed model first; 'load' also loads local models"
    )
    message: str = Field("", max_length=500)


class ValidateIn(_In):
    document: dict[str, Any] | None = None
    patch: dict[str, Any] | None = None


class RollbackIn(Based):
    revision: int | None = Field(
        None, ge=1, le=_REVISION_MAX, description="the revision to go back to (default: the active one's parent)"
    )


class DiscoveryApplyIn(Based):
    add: list[str] = Field(default_factory=list, description="'provider:upstream-model' ids from discovery's 'new'")
    update: list[str] = Field(default_factory=list, description="model names from discovery's 'updated'")
    remove: list[str] = Field(default_factory=list, description="model names from discovery's 'deprecated'")


class RevisionOut(BaseModel):
    id: int
    parent_id: int | None
    source: str
    actor: str
    message: str
    created_at: str
    content_hash: str


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class RevisionRow(RevisionOut):
    active: bool


class RevisionsOut(BaseModel):
    active: int | None
    data: list[RevisionRow]


class ConfigOut(RevisionOut):
    document: dict[str, Any] = Field(description="the whole config, secrets as ${VAR} or credential:NAME")
    file_conflict: dict[str, Any] | None
    policy: str


class RevisionDetailOut(RevisionOut):
    active: bool
    document: dict[str, Any]
    diff_parent: str
    diff_active: str


class ValidateOut(BaseModel):
    valid: bool
    warnings: list[str]
    diff: str


class EntryOut(_Out):
    name: str
    config: dict[str, Any] = Field(description="the entry as the document has it")


class EntriesOut(BaseModel):
    data: list[EntryOut]


class ProbeOut(BaseModel):
    model: str
    ok: bool
    latency_ms: float
    method: str
    error: str | None


class ProviderTestOut(BaseModel):
    provider: str
    reachable: bool
    auth_ok: bool | None
    models: list[str]
    model_count: int
    latency_ms: float
    probe: ProbeOut | None
    error: str | None


class UpstreamModelsOut(BaseModel):
    provider: str
    data: list[dict[str, Any]]


class DiscoveryOut(BaseModel):
    new: list[dict[str, Any]]
    updated: list[dict[str, Any]]
    deprecated: list[dict[str, Any]]
    errors: dict[str, str]


class AuditEntryOut(BaseModel):
    id: int | None
    ts: str | None
    actor: str
    org_id: str | None
    action: str
    target: str
    before: Any
    after: Any
    revision_id: int | None
    request_id: str | None
    client: str | None


class AuditOut(BaseModel):
    data: list[AuditEntryOut]


class AlertsOut(BaseModel):
    data: list[dict[str, Any]]
    recent: list[dict[str, Any]]


class ChangeOut(BaseModel):
    revision: RevisionOut
    changed: bool
    diff: str
    probes: list[dict[str, Any]]
    warnings: list[str]


class ProviderTestLimiter:
    """At most ``per_minute`` connection tests per provider (each one costs an upstream call)."""

    def __init__(self, per_minute: int = 10) -> None:
        self.per_minute = per_minute
        self._calls: dict[str, deque[float]] = {}

    def check(self, provider: str) -> None:
        now = time.monotonic()
        calls = self._calls.setdefault(provider, deque())
        while calls and now - calls[0] > 60:
            calls.popleft()
        if len(calls) >= self.per_minute:
            wait = max(1, int(60 - (now - calls[0])) + 1)
            raise RateLimitError(
                f"provider {provider!r} was tested {self.per_minute} times in the last minute; try again in {wait} s",
                retry_after=wait,
            )
        calls.append(now)


def _base(if_match: str | None, body_base: int | None) -> int:
    if body_base is not None:
        return body_base
    if if_match:
        value = if_match.strip().removeprefix("W/").strip('"').strip()
        if value.isascii() and value.isdigit() and int(value) <= _REVISION_MAX:
            return int(value)
        raise InvalidRequestError("If-Match must be a revision id, for example If-Match: 12", param="If-Match")
    raise PreconditionRequiredError(
        "say which revision this change is based on: If-Match: <revision id> or base_revision "
        "(GET /admin/config gives the active one in its ETag)",
        param="If-Match",
    )


def _actor(request: Request) -> Actor:
    client = request.client.host if request.client is not None else None
    who: Admin = getattr(request.state, "admin", None) or Admin()
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    return Actor(who.actor, org_id=who.org_id, request_id=request_id, client=client)


def _json(body: Any, *, revision: int | None = None, status: int = 200) -> Response:
    headers = {"ETag": f'"{revision}"'} if revision is not None else None
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def _change(result: ChangeResult, status: int = 200) -> Response:
    rev = result.revision
    assert rev is not None
    body = {
        "revision": rev.summary(),
        "changed": result.changed,
        "diff": result.diff,
        "probes": [p.public() for p in result.probes],
        "warnings": result.warnings,
    }
    return _json(body, revision=rev.id, status=status)


def manage_router(gw: AppState) -> APIRouter:
    tests = ProviderTestLimiter()

    async def caller(request: Request) -> tuple[ConfigManager, Admin]:
        services = gw.services
        if services is None:
            raise ServiceUnavailableError("the management API needs the database, which is not running")
        who = await services.auth.admin(request.headers, request.method)
        if gw.manager is None:
            raise ServiceUnavailableError("the config manager is not running (no master key at start-up)")
        request.state.admin = who
        return gw.manager, who

    async def manager(pair: tuple[ConfigManager, Admin] = Depends(caller)) -> ConfigManager:
        """The master key only."""
        pair[1].require_master("this part of the management API")
        return pair[0]

    def granted(scope: str) -> Any:
        async def check(pair: tuple[ConfigManager, Admin] = Depends(caller)) -> ConfigManager:
            pair[1].require_scope(scope)
            return pair[0]

        return Depends(check)

    M = Depends(manager)
    A = Depends(caller)
    router = APIRouter(prefix="/admin", tags=["management"])
    IfMatch = Header(None, alias="If-Match", description="the revision the change is based on")

    # -- config and revisions --------------------------------------------------------------------

    @router.get(
        "/config",
        summary="The active config revision and its document (secrets as references)",
        response_model=ConfigOut,
    )
    async def get_config(m: ConfigManager = M) -> Response:
        rev = m.revision
        if rev is None:
            raise NotFoundError("no config revision is active yet", code="revision_not_found")
        body = {**rev.summary(), "document": rev.document, "file_conflict": m.file_conflict, "policy": m.policy}
        return _json(body, revision=rev.id)

    @router.get("/config/export", summary="The active revision as YAML (for keeping the config in git)")
    async def export(m: ConfigManager = M) -> Response:
        rev = m.revision
        if rev is None:
            raise NotFoundError("no config revision is active yet", code="revision_not_found")
        header = f"# modelyard config, revision {rev.id} ({rev.source}, {rev.created_at.isoformat()})\n"
        return Response(header + to_yaml(rev.document), media_type="application/yaml", headers={"ETag": f'"{rev.id}"'})

    @router.get("/config/revisions", summary="Config revisions, newest first", response_model=RevisionsOut)
    async def revisions(
        limit: int = Query(50, ge=1, le=500),
        before: int | None = Query(None, ge=1, le=_REVISION_MAX),
        m: ConfigManager = M,
    ) -> dict[str, Any]:
        active = m.revision.id if m.revision else None
        return {
            "active": active,
            "data": [
                {**r.summary(), "active": r.id == active} for r in await m.revisions.list(limit=limit, before=before)
            ],
        }

    @router.get(
        "/config/revisions/{revision_id}",
        summary="One revision, with its diff against its parent and the active one",
        response_model=RevisionDetailOut,
    )
    async def revision(revision_id: int = Path(ge=1, le=_REVISION_MAX), m: ConfigManager = M) -> dict[str, Any]:
        from modelyard.management.document import diff

        rev = await m.get(revision_id)
        parent = await m.revisions.get(rev.parent_id) if rev.parent_id is not None else None
        active = m.revision
        return {
            **rev.summary(),
            "active": active is not None and active.id == rev.id,
            "document": rev.document,
            "diff_parent": diff(parent.document if parent else None, rev.document, f"r{rev.parent_id}", f"r{rev.id}"),
            "diff_active": diff(active.document, rev.document, f"r{active.id}", f"r{rev.id}") if active else "",
        }

    def _document(m: ConfigManager, document: dict[str, Any] | None, patch: dict[str, Any] | None) -> dict[str, Any]:
        if (document is None) == (patch is None):
            raise InvalidRequestError("send exactly one of 'document' (a whole config) or 'patch'", param="document")
        return document if document is not None else edits.merge(m.document(), patch or {})

    @router.post(
        "/config/validate",
        summary="Validate a document or a patch without changing anything (dry run)",
        response_model=ValidateOut,
    )
    async def validate(body: ValidateIn, m: ConfigManager = M) -> dict[str, Any]:
        from modelyard.management.document import diff

        doc = _document(m, body.document, body.patch)
        _, warnings = await m.validate(doc)
        active = m.revision
        return {
            "valid": True,
            "warnings": warnings,
            "diff": diff(active.document if active else None, doc, "active", "new"),
        }

    @router.post(
        "/config/deploy", summary="Validate, probe the new or changed models, then activate", response_model=ChangeOut
    )
    async def deploy(
        request: Request, body: DeployIn, if_match: str | None = IfMatch, m: ConfigManager = M
    ) -> Response:
        base = _base(if_match, body.base_revision)
        doc = _document(m, body.document, body.patch)

        def replace(d: dict[str, Any]) -> None:
            d.clear()
            d.update(doc)

        result = await m.change(
            replace,
            base=base,
            actor=_actor(request),
            action="config.deploy",
            target="config",
            message=body.message,
            probe=body.probe is not False,
            probe_load=body.probe == "load",
        )
        return _change(result)

    @router.post(
        "/config/rollback",
        summary="Activate an earlier revision's document (as a new revision)",
        response_model=ChangeOut,
    )
    async def rollback(
        request: Request, body: RollbackIn, if_match: str | None = IfMatch, m: ConfigManager = M
    ) -> Response:
        base = _base(if_match, body.base_revision)
        return _change(await m.rollback(to=body.revision, base=base, actor=_actor(request)))

    # -- providers, models, routes ----------------------------------------------------------------

    def _views(m: ConfigManager, section: str) -> dict[str, dict[str, Any]]:
        doc = m.document()
        part = doc.get(section) or {}
        return {name: _view(gw, section, name, entry) for name, entry in part.items()}

    for section in ("providers", "models", "routes"):
        _crud(router, section, granted(f"{section}:write"), IfMatch, _views)

    @router.post(
        "/providers/{name}/test",
        summary="Test a provider: connect, authenticate, list models, 1-token probe",
        response_model=ProviderTestOut,
    )
    async def test(name: str, m: ConfigManager = M) -> dict[str, Any]:
        rt = gw.holder.current
        provider = rt.providers.get(name)
        if provider is None:
            raise NotFoundError(f"no provider {name!r}", code="provider_not_found")
        tests.check(name)
        probe = next((d for d in rt.models.values() if d.provider is provider and d.config.mode == "chat"), None)
        result = await test_provider(provider, probe, timeout_s=rt.config.config.probe_timeout_s)
        if result.probe is not None and probe is not None:
            m.record_probe(probe, result.probe)
        return result.public()

    @router.get(
        "/providers/{name}/models",
        summary="The provider's own model listing (upstream)",
        response_model=UpstreamModelsOut,
    )
    async def upstream_models(name: str, m: ConfigManager = M) -> dict[str, Any]:
        provider = gw.holder.current.providers.get(name)
        if provider is None:
            raise NotFoundError(f"no provider {name!r}", code="provider_not_found")
        listed = await provider.list_models()
        return {
            "provider": name,
            "data": [
                {"id": u.id, "owned_by": u.owned_by, "context_window": u.context_window, "details": u.details}
                for u in listed
            ],
        }

    def toggle(enabled: bool) -> Any:
        """The enable and disable endpoints (one mutation, two directions)."""
        action = "model.enable" if enabled else "model.disable"

        async def endpoint(
            request: Request,
            name: str,
            body: Based | None = None,
            if_match: str | None = IfMatch,
            m: ConfigManager = granted("models:write"),
        ) -> Response:
            base = _base(if_match, body.base_revision if body else None)
            mutate = edits.set_enabled(name, enabled)
            return _change(
                await m.change(mutate, base=base, actor=_actor(request), action=action, target=f"model:{name}")
            )

        return endpoint

    router.add_api_route(
        "/models/{name:path}/enable",
        toggle(True),
        methods=["POST"],
        response_model=ChangeOut,
        summary="Enable a model (routes use it again)",
    )
    router.add_api_route(
        "/models/{name:path}/disable",
        toggle(False),
        methods=["POST"],
        response_model=ChangeOut,
        summary="Disable a model (routes skip it; asking for it is a 404)",
    )

    @router.post(
        "/routes/{name}/switch",
        summary="Switch a route's model (the feature assignment switch)",
        response_model=ChangeOut,
    )
    async def switch(
        request: Request,
        name: str,
        body: SwitchIn,
        if_match: str | None = IfMatch,
        m: ConfigManager = granted("routes:write"),
    ) -> Response:
        base = _base(if_match, body.base_revision)
        mutate = edits.switch_route(name, body.model, keep_previous=body.keep_previous)
        result = await m.change(
            mutate,
            base=base,
            actor=_actor(request),
            action="route.switch",
            target=f"route:{name}",
            message=body.message or f"route {name} -> {body.model}",
        )
        return _change(result)

    # -- discovery ---------------------------------------------------------------------------------

    @router.get(
        "/discovery",
        summary="Models the providers offer against the configured catalog: new, updated, deprecated",
        response_model=DiscoveryOut,
    )
    async def discovery(m: ConfigManager = M) -> dict[str, Any]:
        return (await discover(gw.holder.current, m.document())).public()

    @router.post(
        "/discovery/apply",
        summary="Apply a selection of discovery's findings as one revision",
        response_model=ChangeOut,
    )
    async def apply(
        request: Request, body: DiscoveryApplyIn, if_match: str | None = IfMatch, m: ConfigManager = M
    ) -> Response:
        base = _base(if_match, body.base_revision)
        found = await discover(gw.holder.current, m.document())
        mutate = found.selection(add=body.add, update=body.update, remove=body.remove)
        result = await m.change(
            mutate,
            base=base,
            actor=_actor(request),
            action="discovery.apply",
            target="models",
            message=f"discovery: +{len(body.add)} ~{len(body.update)} -{len(body.remove)}",
            source="discovery",
        )
        return _change(result)

    # -- alerts, audit and events ---------------------------------------------------------------------

    @router.get(
        "/alerts",
        summary="The configured alerts, what fires now, and the latest firings and resolutions",
        response_model=AlertsOut,
    )
    async def alerts(m: ConfigManager = M) -> dict[str, Any]:
        watcher = gw.alerts
        return watcher.snapshot() if watcher is not None else {"data": [], "recent": []}

    @router.get(
        "/audit",
        summary="The audit log, newest first (filters: actor, target, action prefix, since)",
        response_model=AuditOut,
    )
    async def audit(
        actor: str | None = Query(None, max_length=200),
        target: str | None = Query(None, max_length=300),
        action: str | None = Query(None, max_length=64),
        since: datetime | None = Query(None),
        limit: int = Query(100, ge=1, le=1000),
        pair: tuple[ConfigManager, Admin] = A,
    ) -> dict[str, Any]:
        m, who = pair  # an org admin reads its own organisation's entries only
        entries = await m.audit.list(
            actor=actor, target=target, action=action, since=since, limit=limit, org_id=who.org_id
        )
        return {"data": [e.public() for e in entries]}

    @router.get(
        "/events", summary="Admin events as server-sent events (config, health, breakers, alerts, local models)"
    )
    async def events(
        request: Request,
        after: int | None = Query(None, ge=0, description="replay events after this id (or send Last-Event-ID)"),
        pair: tuple[ConfigManager, Admin] = A,
    ) -> StreamingResponse:
        m, who = pair  # an org admin gets its own organisation's events only
        last = request.headers.get("last-event-id")
        start = after if after is not None else (int(last) if last and last.isascii() and last.isdigit() else None)

        async def body() -> Any:
            yield b": modelyard admin events\n\n"
            async for event in m.events.subscribe(after=start, org_id=who.org_id):
                if event is None:
                    yield b": keep-alive\n\n"
                    continue
                data = orjson.dumps(event.public())
                yield f"id: {event.id}\nevent: {event.kind}\n".encode() + b"data: " + data + b"\n\n"

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return router


def _crud(router: APIRouter, section: str, M: Any, IfMatch: Any, views: Any) -> None:
    """List, get, create, replace, patch and delete for one section (providers, models or routes)."""
    what = section[:-1]
    path = "{name:path}" if section == "models" else "{name}"

    async def list_(m: ConfigManager = M) -> Response:
        return _json({"data": list(views(m, section).values())}, revision=m.revision.id if m.revision else None)

    async def get(name: str, m: ConfigManager = M) -> Response:
        found = views(m, section).get(name)
        if found is None:
            raise NotFoundError(f"no {what} {name!r}", code=f"{what}_not_found")
        return _json(found, revision=m.revision.id if m.revision else None)

    async def create(request: Request, body: EntryIn, if_match: str | None = IfMatch, m: ConfigManager = M) -> Response:
        base = _base(if_match, body.base_revision)
        mutate = edits.put_entry(section, body.name, body.config, create=True)
        result = await m.change(
            mutate,
            base=base,
            actor=_actor(request),
            action=f"{what}.create",
            target=f"{what}:{body.name}",
            message=body.message,
            probe=section != "routes",
        )
        return _change(result, status=201)

    def update(patch: bool) -> Any:
        """PUT (replace the entry) and PATCH (merge-patch it): one change, two ways."""

        async def endpoint(
            request: Request, name: str, body: EntryPut, if_match: str | None = IfMatch, m: ConfigManager = M
        ) -> Response:
            base = _base(if_match, body.base_revision)
            mutate = edits.put_entry(section, name, body.config, create=False, patch=patch)
            result = await m.change(
                mutate,
                base=base,
                actor=_actor(request),
                action=f"{what}.update",
                target=f"{what}:{name}",
                message=body.message,
            )
            return _change(result)

        return endpoint

    async def delete(
        request: Request,
        name: str,
        force: bool = Query(False, description="also remove it from whatever uses it"),
        base_revision: int | None = Query(None, ge=1, le=_REVISION_MAX),
        if_match: str | None = IfMatch,
        m: ConfigManager = M,
    ) -> Response:
        base = _base(if_match, base_revision)
        mutate = {"providers": edits.delete_provider, "models": edits.delete_model, "routes": edits.delete_route}[
            section
        ](name, force=force)
        result = await m.change(
            mutate, base=base, actor=_actor(request), action=f"{what}.delete", target=f"{what}:{name}"
        )
        return _change(result)

    router.add_api_route(
        f"/{section}",
        list_,
        methods=["GET"],
        response_model=EntriesOut,
        summary=f"List the {section} of the active revision",
    )
    router.add_api_route(
        f"/{section}",
        create,
        methods=["POST"],
        status_code=201,
        response_model=ChangeOut,
        summary=f"Create a {what} (a new revision)",
    )
    router.add_api_route(f"/{section}/{path}", get, methods=["GET"], response_model=EntryOut, summary=f"One {what}")
    router.add_api_route(
        f"/{section}/{path}",
        update(patch=False),
        methods=["PUT"],
        response_model=ChangeOut,
        summary=f"Replace a {what} (a new revision)",
    )
    router.add_api_route(
        f"/{section}/{path}",
        update(patch=True),
        methods=["PATCH"],
        response_model=ChangeOut,
        summary=f"Merge-patch a {what} (a new revision)",
    )
    router.add_api_route(
        f"/{section}/{path}",
        delete,
        methods=["DELETE"],
        response_model=ChangeOut,
        summary=f"Delete a {what} (409 while in use, unless force)",
    )


def _view(gw: AppState, section: str, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """An entry as the document has it, plus what the running gateway knows of it."""
    rt = gw.holder.current
    out: dict[str, Any] = {"name": name, "config": entry}
    if section == "providers":
        provider = rt.providers.get(name)
        if provider is not None:
            out["kind"] = provider.config.kind
            out["health"] = provider.health_state.state
            out["models"] = sorted(n for n, d in rt.models.items() if d.provider is provider)
    elif section == "models":
        dep = rt.models.get(name)
        if dep is not None:
            price = dep.price  # what accounting charges
            out.update(
                provider=dep.provider.name,
                upstream=dep.upstream,
                enabled=dep.config.enabled,
                capabilities={c: c in dep.capabilities for c in CAPABILITIES},
                price={
                    "input_per_mtok": price.input if price else None,
                    "output_per_mtok": price.output if price else None,
                },
                breaker=dep.state.breaker.state,
                in_flight=dep.state.limiter.in_flight,
                provider_health=dep.provider.health_state.state,
                figures=dep.state.stats.snapshot(),
                routes=sorted(
                    r for r, route in rt.routes.items() if name in route.config.models or name in route.config.fallbacks
                ),
            )
    else:
        route = rt.routes.get(name)
        if route is not None:
            out.update(
                primary=list(route.config.models),
                fallbacks=list(route.config.fallbacks),
                strategy=route.config.strategy,
            )
    return out
