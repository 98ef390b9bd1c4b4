"""The admin API (``/admin/...``): organisations, virtual keys, provider credentials, budgets.

Every call needs the master key (``Authorization: Bearer <MODELYARD_MASTER_KEY>``), or an
``org_admin`` key for its own organisation's keys, credentials, budgets and budget events.  A key's
plaintext is returned once, at creation; only its hash is stored.  Credentials are encrypted at
rest and only ever returned masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from modelyard.errors import ConflictError, NotFoundError, PermissionDeniedError, ServiceUnavailableError
from modelyard.gateway.auth import Admin
from modelyard.gateway.services import Services
from modelyard.management.audit import Actor, write_audit

if TYPE_CHECKING:
    from modelyard.server.state import AppState

__all__ = ["MAX_BUDGET_USD", "MAX_RATE", "admin_router", "budget_row"]

#: upper bounds of a key's limits: finite, and inside a 64-bit database integer
MAX_BUDGET_USD = 1e9
MAX_RATE = 10**12


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrgIn(_In):
    name: str = Field(min_length=1, max_length=200)
    id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")


class OrgPatch(_In):
    name: str = Field(min_length=1, max_length=200)


class KeyIn(_In):
    org_id: str
    name: str = Field(min_length=1, max_length=200)
    allowed_routes: list[str] | None = None
    allowed_models: list[str] | None = None
    rpm: int | None = Field(None, ge=1, le=MAX_RATE)
    tpm: int | None = Field(None, ge=1, le=MAX_RATE)
    budget_usd: float | None = Field(None, gt=0, le=MAX_BUDGET_USD, allow_inf_nan=False)
    expires_at: datetime | None = None
    #: app (the /v1 API) or org_admin (its organisation's part of /admin); set by the master key only
    role: Literal["app", "org_admin"] = "app"
    #: admin grants (providers:write, models:write, routes:write); set by the master key only
    scopes: list[Literal["providers:write", "models:write", "routes:write"]] | None = None


class KeyPatch(_In):
    name: str | None = Field(None, min_length=1, max_length=200)
    allowed_routes: list[str] | None = None
    allowed_models: list[str] | None = None
    rpm: int | None = Field(None, ge=1, le=MAX_RATE)
    tpm: int | None = Field(None, ge=1, le=MAX_RATE)
    budget_usd: float | None = Field(None, gt=0, le=MAX_BUDGET_USD, allow_inf_nan=False)
    expires_at: datetime | None = None
    role: Literal["app", "org_admin"] | None = None
    scopes: list[Literal["providers:write", "models:write", "routes:write"]] | None = None


class CredentialIn(_In):
    provider: str = Field(min_length=1)
    name: str = Field(min_length=1, max_length=200)
    secret: str = Field(min_length=1, repr=False)
    org_id: str | None = None


def admin_router(gw: AppState) -> APIRouter:
    @dataclass(slots=True)
    class Ctx:
        s: Services
        who: Admin
        request: Request

        async def audit(self, action: str, target: str, *, after: Any = None, org_id: str | None = None) -> None:
            """One audit entry per change (the management plane's log: GET /admin/audit)."""
            client = self.request.client.host if self.request.client is not None else None
            org = org_id if org_id is not None else self.who.org_id
            actor = Actor(
                self.who.actor, org_id=org, request_id=self.request.headers.get("x-request-id"), client=client
            )
            await write_audit(self.s.audit, gw.events, actor, action, target, after=after)

    async def ctx(request: Request) -> Ctx:
        s = gw.services
        if s is None:
            raise ServiceUnavailableError("the admin API needs the database, which is not running")
        return Ctx(s, await s.auth.admin(request.headers, request.method), request)

    async def ctx_master(request: Request) -> Ctx:
        c = await ctx(request)
        c.who.require_master(f"{request.method} {request.url.path}")  # before the body is validated
        return c

    router = APIRouter(prefix="/admin", tags=["admin"])
    C = Depends(ctx)
    CM = Depends(ctx_master)

    # -- organisations ---------------------------------------------------------------------------

    @router.post("/orgs", status_code=201, summary="Create an organisation (master key)")
    async def create_org(body: OrgIn, c: Ctx = CM) -> dict[str, Any]:
        c.who.require_master("creating an organisation")
        org = await c.s.keys.create_org(body.name, org_id=body.id)
        await c.audit("org.create", f"org:{org.id}", after={"name": org.name}, org_id=org.id)
        return {"id": org.id, "name": org.name, "created_at": org.created_at.isoformat()}

    @router.get("/orgs", summary="List organisations (an org admin sees its own)")
    async def list_orgs(c: Ctx = C) -> dict[str, Any]:
        orgs = [o for o in await c.s.keys.list_orgs() if c.who.is_master or o.id == c.who.org_id]
        return {"data": [{"id": o.id, "name": o.name, "created_at": o.created_at.isoformat()} for o in orgs]}

    @router.get("/orgs/{org_id}", summary="One organisation")
    async def get_org(org_id: str, c: Ctx = C) -> dict[str, Any]:
        c.who.require_org(org_id)
        org = await c.s.keys.get_org(org_id)
        if org is None:
            raise NotFoundError(f"no organisation {org_id!r}", code="org_not_found")
        return {"id": org.id, "name": org.name, "created_at": org.created_at.isoformat()}

    @router.patch("/orgs/{org_id}", summary="Rename an organisation (master key)")
    async def update_org(org_id: str, body: OrgPatch, c: Ctx = CM) -> dict[str, Any]:
        c.who.require_master("renaming an organisation")
        org = await c.s.keys.update_org(org_id, name=body.name)
        await c.audit("org.update", f"org:{org_id}", after={"name": org.name}, org_id=org_id)
        return {"id": org.id, "name": org.name, "created_at": org.created_at.isoformat()}

    @router.delete(
        "/orgs/{org_id}", summary="Delete an organisation, its keys and credentials (usage stays; master key)"
    )
    async def delete_org(org_id: str, c: Ctx = CM) -> dict[str, Any]:
        c.who.require_master("deleting an organisation")
        await c.s.keys.delete_org(org_id)
        await c.s.refresh_budgets()
        await c.audit("org.delete", f"org:{org_id}", org_id=org_id)
        return {"id": org_id, "deleted": True}

    # -- keys ------------------------------------------------------------------------------------

    def _org_scope(c: Ctx) -> str | None:
        """The organisation an org admin's key lookups are confined to (None: the master key)."""
        return c.who.org_id

    @router.post("/keys", status_code=201, summary="Create a virtual key (the plaintext is shown once)")
    async def create_key(body: KeyIn, c: Ctx = C) -> dict[str, Any]:
        c.who.require_org(body.org_id)
        if body.role != "app" or body.scopes:
            c.who.require_master("setting a key's role or scopes")
        plaintext, key = await c.s.keys.create_key(
            body.org_id,
            body.name,
            allowed_routes=body.allowed_routes,
            allowed_models=body.allowed_models,
            rpm=body.rpm,
            tpm=body.tpm,
            budget_usd=body.budget_usd,
            expires_at=body.expires_at,
            role=body.role,
            scopes=body.scopes,
        )
        if key.budget_usd:
            await c.s.refresh_budgets()
        await c.audit("key.create", f"key:{key.id}", after=_jsonable(key.public()), org_id=key.org_id)
        return {**key.public(), "key": plaintext, "note": "store this key now: it is not shown again"}

    @router.get("/keys", summary="List keys (never their plaintext; an org admin sees its organisation's)")
    async def list_keys(org_id: str | None = Query(None), c: Ctx = C) -> dict[str, Any]:
        if org_id is not None:
            c.who.require_org(org_id)
        return {"data": [k.public() for k in await c.s.keys.list_keys(org_id or _org_scope(c))]}

    @router.get("/keys/{key_id}", summary="One key")
    async def get_key(key_id: str, c: Ctx = C) -> dict[str, Any]:
        key = await c.s.keys.get_key(key_id, org_id=_org_scope(c))
        if key is None:
            raise NotFoundError(f"no key {key_id!r}", code="key_not_found")
        return key.public()

    @router.patch(
        "/keys/{key_id}", summary="Change a key's limits, routes, budget, expiry (role and scopes: master key)"
    )
    async def update_key(key_id: str, body: KeyPatch, c: Ctx = C) -> dict[str, Any]:
        changes = body.model_dump(exclude_unset=True)
        if "role" in changes or "scopes" in changes:
            c.who.require_master("setting a key's role or scopes")
            if changes.get("role") is None:
                changes.pop("role", None)
        key = await c.s.keys.update_key(key_id, org_id=_org_scope(c), **changes)
        await c.s.refresh_budgets()
        await c.audit("key.update", f"key:{key_id}", after=_jsonable(changes), org_id=key.org_id)
        return key.public()

    @router.post("/keys/{key_id}/revoke", summary="Revoke a key (requests with it get 401)")
    async def revoke_key(key_id: str, c: Ctx = C) -> dict[str, Any]:
        key = await c.s.keys.revoke_key(key_id, org_id=_org_scope(c))
        await c.audit("key.revoke", f"key:{key_id}", org_id=key.org_id)
        return key.public()

    @router.delete("/keys/{key_id}", summary="Delete a key")
    async def delete_key(key_id: str, c: Ctx = C) -> dict[str, Any]:
        await c.s.keys.delete_key(key_id, org_id=_org_scope(c))
        await c.s.refresh_budgets()
        await c.audit("key.delete", f"key:{key_id}")
        return {"id": key_id, "deleted": True}

    # -- provider credentials --------------------------------------------------------------------

    def creds(s: Services) -> Any:
        if s.credentials is None:
            raise ServiceUnavailableError("credentials need a master key")
        return s.credentials

    @router.post(
        "/credentials",
        status_code=201,
        summary="Store a provider credential (encrypted at rest; an org admin: its organisation's own)",
    )
    async def put_credential(body: CredentialIn, c: Ctx = C) -> dict[str, Any]:
        if not c.who.is_master and body.org_id is None:
            raise PermissionDeniedError(
                "an org_admin key stores credentials of its own organisation only: set org_id",
                param="org_id",
                code="other_organisation",
            )
        c.who.require_org(body.org_id)
        if body.org_id is not None and await c.s.keys.get_org(body.org_id) is None:
            raise NotFoundError(f"no organisation {body.org_id!r}", param="org_id", code="org_not_found")
        record = await creds(c.s).put(body.provider, body.name, body.secret, body.org_id)
        await c.audit("credential.put", f"credential:{body.name}", after={"masked": record.masked}, org_id=body.org_id)
        if gw.manager is not None:  # a provider may use it (api_key: credential:NAME): next request uses it
            await gw.manager.credentials_changed()
        return dict(record.public())

    @router.get("/credentials", summary="List credentials (masked; an org admin sees its organisation's)")
    async def list_credentials(org_id: str | None = Query(None), c: Ctx = C) -> dict[str, Any]:
        if org_id is not None:
            c.who.require_org(org_id)
        return {"data": [r.public() for r in await creds(c.s).list(org_id or _org_scope(c))]}

    def _not_in_use(record: Any) -> None:
        """A gateway-wide credential the active config names (``api_key: credential:NAME``) cannot
        go: the running config keeps its secret, but no revision could be built again (a reload, a
        deploy, a restart) until the reference is changed.  An organisation's own copy may go: that
        organisation falls back to the gateway's key."""
        manager = gw.manager
        if record is None or record.org_id is not None or manager is None or manager.revision is None:
            return
        from modelyard.management.document import references

        rev = manager.revision
        users = sorted(path for path, name in references(rev.document).items() if name == record.name)
        if users:
            raise ConflictError(
                f"credential {record.name!r} is used by {', '.join(users)} in the active config (revision "
                f"{rev.id}): point them at another credential or remove them first",
                code="credential_in_use",
            )

    @router.delete("/credentials/{credential_id}", summary="Delete a credential")
    async def delete_credential(credential_id: str, c: Ctx = C) -> dict[str, Any]:
        _not_in_use(next((r for r in await creds(c.s).list(_org_scope(c)) if r.id == credential_id), None))
        await creds(c.s).delete(credential_id, org_id=_org_scope(c))
        await c.audit("credential.delete", f"credential:{credential_id}")
        if gw.manager is not None:
            await gw.manager.credentials_changed()
        return {"id": credential_id, "deleted": True}

    # -- budgets -----------------------------------------------------------------------------------

    @router.get("/budgets", summary="Every budget's use in its current period (an org admin: its organisation's)")
    async def budgets(c: Ctx = C) -> dict[str, Any]:
        rows = await c.s.ledger.usage()
        if not c.who.is_master:
            own = {f"organization:{c.who.org_id}"} | {f"key:{k.id}" for k in await c.s.keys.list_keys(c.who.org_id)}
            rows = [b for b in rows if b.scope in own]
        return {"data": [budget_row(b) for b in rows]}

    @router.get("/budget-events", summary="Alerts and emergency stops, newest first")
    async def budget_events(
        org_id: str | None = Query(None), limit: int = Query(100, ge=1, le=1000), c: Ctx = C
    ) -> dict[str, Any]:
        if org_id is not None:
            c.who.require_org(org_id)
        events = await c.s.events.list(org_id=org_id or _org_scope(c), limit=limit)
        return {
            "data": [
                {
                    "ts": e.ts.isoformat(),
                    "budget": e.budget,
                    "scope": e.scope_key,
                    "kind": e.kind,
                    "fraction": e.fraction,
                    "message": e.message,
                    "org_id": e.org_id,
                }
                for e in events
            ]
        }

    return router


def budget_row(b: Any) -> dict[str, Any]:
    return {
        "budget": b.budget,
        "scope": b.scope,
        "period": b.period,
        "period_start": b.period_start.isoformat() if b.period_start else None,
        "period_end": b.period_end.isoformat() if b.period_end else None,
        "limit_usd": b.limit_usd,
        "limit_tokens": b.limit_tokens,
        "used_usd": b.used_usd,
        "used_tokens": b.used_tokens,
        "reserved_usd": b.reserved_usd,
        "reserved_tokens": b.reserved_tokens,
        "fraction": b.fraction,
        "state": b.state,
    }


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
