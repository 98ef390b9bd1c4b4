"""The admin API (``/admin/...``): organisations, virtual keys, provider credentials, budgets.

Every call needs the master key (``Authorization: Bearer <MODELYARD_MASTER_KEY>``).  A key's
plaintext is returned once, at creation; only its hash is stored.  Credentials are encrypted at
rest and only ever returned masked.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from modelyard.errors import NotFoundError, ServiceUnavailableError
from modelyard.gateway.services import Services
from modelyard.storage.revisions import AuditEntry

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


class KeyPatch(_In):
    name: str | None = Field(None, min_length=1, max_length=200)
    allowed_routes: list[str] | None = None
    allowed_models: list[str] | None = None
    rpm: int | None = Field(None, ge=1, le=MAX_RATE)
    tpm: int | None = Field(None, ge=1, le=MAX_RATE)
    budget_usd: float | None = Field(None, gt=0, le=MAX_BUDGET_USD, allow_inf_nan=False)
    expires_at: datetime | None = None


class CredentialIn(_In):
    provider: str = Field(min_length=1)
    name: str = Field(min_length=1, max_length=200)
    secret: str = Field(min_length=1, repr=False)
    org_id: str | None = None


def admin_router(gw: AppState) -> APIRouter:
    def services(request: Request) -> Services:
        s = gw.services
        if s is None:
            raise ServiceUnavailableError("the admin API needs the database, which is not running")
        s.auth.require_master(request.headers)
        return s

    router = APIRouter(prefix="/admin", tags=["admin"])
    S = Depends(services)

    async def audit(
        request: Request, s: Services, action: str, target: str, *, after: Any = None, org_id: str | None = None
    ) -> None:
        """One audit entry per change (the management plane's log: GET /admin/audit)."""
        client = request.client.host if request.client is not None else None
        entry = AuditEntry(
            actor="master",
            action=action,
            target=target,
            after=after,
            org_id=org_id,
            request_id=request.headers.get("x-request-id"),
            client=client,
        )
        await s.audit.record(entry)
        gw.events.publish("audit", {"action": action, "target": target, "actor": "master"}, org_id=org_id)

    # -- organisations ---------------------------------------------------------------------------

    @router.post("/orgs", status_code=201, summary="Create an organisation")
    async def create_org(request: Request, body: OrgIn, s: Services = S) -> dict[str, Any]:
        org = await s.keys.create_org(body.name, org_id=body.id)
        await audit(request, s, "org.create", f"org:{org.id}", after={"name": org.name}, org_id=org.id)
        return {"id": org.id, "name": org.name, "created_at": org.created_at.isoformat()}

    @router.get("/orgs", summary="List organisations")
    async def list_orgs(s: Services = S) -> dict[str, Any]:
        orgs = await s.keys.list_orgs()
        return {"data": [{"id": o.id, "name": o.name, "created_at": o.created_at.isoformat()} for o in orgs]}

    @router.get("/orgs/{org_id}", summary="One organisation")
    async def get_org(org_id: str, s: Services = S) -> dict[str, Any]:
        org = await s.keys.get_org(org_id)
        if org is None:
            raise NotFoundError(f"no organisation {org_id!r}", code="org_not_found")
        return {"id": org.id, "name": org.name, "created_at": org.created_at.isoformat()}

    @router.patch("/orgs/{org_id}", summary="Rename an organisation")
    async def update_org(request: Request, org_id: str, body: OrgPatch, s: Services = S) -> dict[str, Any]:
        org = await s.keys.update_org(org_id, name=body.name)
        await audit(request, s, "org.update", f"org:{org_id}", after={"name": org.name}, org_id=org_id)
        return {"id": org.id, "name": org.name, "created_at": org.created_at.isoformat()}

    @router.delete("/orgs/{org_id}", summary="Delete an organisation, its keys and credentials (usage stays)")
    async def delete_org(request: Request, org_id: str, s: Services = S) -> dict[str, Any]:
        await s.keys.delete_org(org_id)
        await audit(request, s, "org.delete", f"org:{org_id}", org_id=org_id)
        await s.refresh_budgets()
        return {"id": org_id, "deleted": True}

    # -- keys ------------------------------------------------------------------------------------

    @router.post("/keys", status_code=201, summary="Create a virtual key (the plaintext is shown once)")
    async def create_key(request: Request, body: KeyIn, s: Services = S) -> dict[str, Any]:
        plaintext, key = await s.keys.create_key(
            body.org_id,
            body.name,
            allowed_routes=body.allowed_routes,
            allowed_models=body.allowed_models,
            rpm=body.rpm,
            tpm=body.tpm,
            budget_usd=body.budget_usd,
            expires_at=body.expires_at,
        )
        if key.budget_usd:
            await s.refresh_budgets()
        await audit(request, s, "key.create", f"key:{key.id}", after=_jsonable(key.public()), org_id=key.org_id)
        return {**key.public(), "key": plaintext, "note": "store this key now: it is not shown again"}

    @router.get("/keys", summary="List keys (never their plaintext)")
    async def list_keys(org_id: str | None = Query(None), s: Services = S) -> dict[str, Any]:
        return {"data": [k.public() for k in await s.keys.list_keys(org_id)]}

    @router.get("/keys/{key_id}", summary="One key")
    async def get_key(key_id: str, s: Services = S) -> dict[str, Any]:
        key = await s.keys.get_key(key_id)
        if key is None:
            raise NotFoundError(f"no key {key_id!r}", code="key_not_found")
        return key.public()

    @router.patch("/keys/{key_id}", summary="Change a key's limits, routes, budget or expiry")
    async def update_key(request: Request, key_id: str, body: KeyPatch, s: Services = S) -> dict[str, Any]:
        changes = body.model_dump(exclude_unset=True)
        key = await s.keys.update_key(key_id, **changes)
        await s.refresh_budgets()
        await audit(request, s, "key.update", f"key:{key_id}", after=_jsonable(changes), org_id=key.org_id)
        return key.public()

    @router.post("/keys/{key_id}/revoke", summary="Revoke a key (requests with it get 401)")
    async def revoke_key(request: Request, key_id: str, s: Services = S) -> dict[str, Any]:
        key = await s.keys.revoke_key(key_id)
        await audit(request, s, "key.revoke", f"key:{key_id}", org_id=key.org_id)
        return key.public()

    @router.delete("/keys/{key_id}", summary="Delete a key")
    async def delete_key(request: Request, key_id: str, s: Services = S) -> dict[str, Any]:
        await s.keys.delete_key(key_id)
        await s.refresh_budgets()
        await audit(request, s, "key.delete", f"key:{key_id}")
        return {"id": key_id, "deleted": True}

    # -- provider credentials --------------------------------------------------------------------

    def creds(s: Services) -> Any:
        if s.credentials is None:
            raise ServiceUnavailableError("credentials need a master key")
        return s.credentials

    @router.post("/credentials", status_code=201, summary="Store a provider credential (encrypted at rest)")
    async def put_credential(request: Request, body: CredentialIn, s: Services = S) -> dict[str, Any]:
        if body.org_id is not None and await s.keys.get_org(body.org_id) is None:
            raise NotFoundError(f"no organisation {body.org_id!r}", param="org_id", code="org_not_found")
        record = await creds(s).put(body.provider, body.name, body.secret, body.org_id)
        await audit(
            request, s, "credential.put", f"credential:{body.name}", after={"masked": record.masked}, org_id=body.org_id
        )
        if gw.manager is not None:  # a provider may use it (api_key: credential:NAME): next request uses it
            await gw.manager.credentials_changed()
        return dict(record.public())

    @router.get("/credentials", summary="List credentials (masked)")
    async def list_credentials(org_id: str | None = Query(None), s: Services = S) -> dict[str, Any]:
        return {"data": [r.public() for r in await creds(s).list(org_id)]}

    @router.delete("/credentials/{credential_id}", summary="Delete a credential")
    async def delete_credential(request: Request, credential_id: str, s: Services = S) -> dict[str, Any]:
        await creds(s).delete(credential_id)
        await audit(request, s, "credential.delete", f"credential:{credential_id}")
        return {"id": credential_id, "deleted": True}

    # -- budgets -----------------------------------------------------------------------------------

    @router.get("/budgets", summary="Every budget's use in its current period")
    async def budgets(s: Services = S) -> dict[str, Any]:
        return {"data": [budget_row(b) for b in await s.ledger.usage()]}

    @router.get("/budget-events", summary="Alerts and emergency stops, newest first")
    async def budget_events(
        org_id: str | None = Query(None), limit: int = Query(100, ge=1, le=1000), s: Services = S
    ) -> dict[str, Any]:
        events = await s.events.list(org_id=org_id, limit=limit)
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
