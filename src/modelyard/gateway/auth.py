"""Who is calling: the master key (admin), a virtual key (an organisation's), or nobody.

Authentication is on when a master key is configured (``server.master_key`` or
``MODELYARD_MASTER_KEY``): every ``/v1`` request then needs ``Authorization: Bearer <key>`` (or
``x-api-key``), and ``/admin`` needs the master key.  Without a master key the gateway serves
anyone (and refuses to bind to a non-loopback address), but a valid virtual key sent anyway still
attributes the request to its organisation.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

from modelyard.errors import AuthenticationError, PermissionDeniedError, RateLimitError
from modelyard.gateway.sessions import CSRF_HEADER, Session, SessionCodec, cookie_value
from modelyard.routing.deployment import Route
from modelyard.routing.limiter import ModelLimiter, Slot
from modelyard.routing.shared import Coordinator
from modelyard.storage.keys import KeyRecord, KeyStore

__all__ = ["ANONYMOUS", "ROLES", "SCOPES", "Admin", "Authenticator", "Principal"]

#: key roles: "app" uses the /v1 API only; "org_admin" also its organisation's part of /admin
ROLES = ("app", "org_admin")
#: admin grants the master key gives a key (an org admin's), one per config section
SCOPES = ("providers:write", "models:write", "routes:write")

_REASONS = {
    "unknown": "the API key is not valid",
    "revoked": "the API key was revoked",
    "expired": "the API key has expired",
    "malformed": "the API key is not a modelyard key",
}


#: how a caller gets a key, on a self-hosted gateway (said in every 401)
_GET_A_KEY = (
    "use the gateway's master key (server.master_key or MODELYARD_MASTER_KEY), or a virtual key "
    'created with it: POST /admin/keys {"org_id": ..., "name": ...}'
)


@dataclass(frozen=True, slots=True)
class Principal:
    kind: Literal["master", "key", "anonymous"]
    key: KeyRecord | None = None

    @property
    def org_id(self) -> str | None:
        return self.key.org_id if self.key is not None else None

    @property
    def key_id(self) -> str | None:
        return self.key.id if self.key is not None else None

    def admit(self, route: Route) -> Route:
        """The route as this key may use it: 403 for a route it may not use, and only the models it
        may use (pool and fallbacks alike), so a disallowed model can never answer."""
        key = self.key
        if key is None:
            return route
        if key.allowed_routes is not None and route.name not in key.allowed_routes:
            raise PermissionDeniedError(
                f"this key may not use {route.name!r} (allowed routes: {', '.join(key.allowed_routes) or 'none'})",
                param="model",
                code="route_not_allowed",
            )
        allowed = key.allowed_models
        if allowed is None:
            return route
        pool = [d for d in route.pool if d.name in allowed]
        fallbacks = [d for d in route.fallbacks if d.name in allowed]
        if len(pool) == len(route.pool) and len(fallbacks) == len(route.fallbacks):
            return route
        if not pool and not fallbacks:
            denied = [d.name for d in (*route.pool, *route.fallbacks)]
            raise PermissionDeniedError(
                f"this key may not use {', '.join(denied)} (allowed models: {', '.join(allowed) or 'none'})",
                param="model",
                code="model_not_allowed",
            )
        if not pool:  # only fallbacks are allowed: the first of them is the first choice
            pool, fallbacks = fallbacks[:1], fallbacks[1:]
        return replace(route, pool=pool, fallbacks=fallbacks)


ANONYMOUS = Principal("anonymous")


@dataclass(frozen=True, slots=True)
class Admin:
    """Who is calling the admin API: the master key (``key`` None), or an ``org_admin`` key."""

    key: KeyRecord | None = None

    @property
    def is_master(self) -> bool:
        return self.key is None

    @property
    def org_id(self) -> str | None:
        return self.key.org_id if self.key is not None else None

    @property
    def actor(self) -> str:
        return "master" if self.key is None else self.key.id

    def require_master(self, what: str) -> None:
        if self.key is not None:
            raise PermissionDeniedError(f"{what} needs the master key", code="master_key_required")

    def require_org(self, org_id: str | None) -> None:
        """403 unless the caller is the master key or an admin of ``org_id``."""
        if self.key is not None and org_id != self.key.org_id:
            raise PermissionDeniedError(
                f"an org_admin key of {self.key.org_id!r} may only manage its own organisation",
                code="other_organisation",
            )

    def can(self, scope: str) -> bool:
        return self.key is None or scope in self.key.scopes

    def require_scope(self, scope: str) -> None:
        if not self.can(scope):
            raise PermissionDeniedError(
                f"this key needs the {scope!r} grant (the master key gives it: PATCH /admin/keys/{{id}} "
                f'{{"scopes": ["{scope}"]}})',
                code="scope_required",
            )


def bearer(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return headers.get("x-api-key") or None


_SAFE = frozenset({"GET", "HEAD"})


class Authenticator:
    def __init__(self, master_key: str | None, keys: KeyStore | None) -> None:
        self._master = master_key.encode() if master_key else None
        self.keys = keys
        #: dashboard sessions (signed cookies), when there is a master key to sign them with
        self.sessions = SessionCodec(master_key) if master_key else None
        self._limits: OrderedDict[str, tuple[KeyRecord, ModelLimiter]] = OrderedDict()
        #: the keys' limits shared with the other replicas (state: redis://; None: per process)
        self.shared: Coordinator | None = None

    @property
    def required(self) -> bool:
        return self._master is not None

    def is_master(self, token: str | None) -> bool:
        return bool(self._master is not None and token and hmac.compare_digest(token.encode(), self._master))

    async def session_admin(self, headers: Mapping[str, str], method: str) -> Admin | None:
        """Who a request's dashboard session is (None without one); see :meth:`session`."""
        found = await self.session(headers, method)
        return found[1] if found is not None else None

    async def session(self, headers: Mapping[str, str], method: str) -> tuple[Session, Admin] | None:
        """The dashboard session a request carries and who it is (None without one).  Raises for a
        session that is over (its key revoked, expired or no longer an admin) and for a change
        without its CSRF token."""
        codec = self.sessions
        value = cookie_value(headers) if codec is not None else None
        if codec is None or value is None:
            return None
        session = codec.read(value)
        if session is None:
            raise AuthenticationError(
                "the dashboard session is over: log in again at /ui/login", code="session_expired"
            )
        if method.upper() not in _SAFE and not codec.csrf_ok(session, headers.get(CSRF_HEADER)):
            raise PermissionDeniedError(
                "a change made with a dashboard session needs its X-CSRF-Token header", code="csrf_failed"
            )
        if session.is_master:
            return session, Admin()
        check = await self.keys.check_digest(session.subject) if self.keys is not None else None
        if check is None or check.key is None or check.key.role != "org_admin":
            raise AuthenticationError(
                "the dashboard session is over: log in again at /ui/login", code="session_expired"
            )
        return session, Admin(check.key)

    async def authenticate(self, headers: Mapping[str, str], method: str = "POST") -> Principal:
        """The caller of a /v1 endpoint.  A dashboard session counts for reads (``method`` GET) only."""
        token = bearer(headers)
        if self.is_master(token):
            return Principal("master")
        if token is None and method.upper() in _SAFE and self.sessions is not None:
            who = await self.session_admin(headers, method)
            if who is not None:
                return Principal("master") if who.key is None else Principal("key", who.key)
        if token and self.keys is not None and token.startswith("my-"):
            check = await self.keys.check(token)
            if check.key is not None:
                return Principal("key", check.key)
            if self.required:
                raise AuthenticationError(f"{_REASONS[check.reason]}; {_GET_A_KEY}")
        if self.required:
            if not token:
                raise AuthenticationError(
                    f"missing API key: send 'Authorization: Bearer <key>'; {_GET_A_KEY}",
                    code="missing_api_key",
                )
            raise AuthenticationError(f"the API key is not valid; {_GET_A_KEY}")
        return ANONYMOUS

    async def admin(self, headers: Mapping[str, str], method: str = "POST") -> Admin:
        """The caller of an admin endpoint: the master key or an ``org_admin`` key (else 401/403),
        given as a bearer token or by a dashboard session (changes then need the CSRF token)."""
        if self._master is None:
            raise PermissionDeniedError(
                "the admin API is off: set MODELYARD_MASTER_KEY (or server.master_key) to use it",
                code="admin_disabled",
            )
        token = bearer(headers)
        if self.is_master(token):
            return Admin()
        if token is None:
            who = await self.session_admin(headers, method)
            if who is not None:
                return who
        if token and self.keys is not None and token.startswith("my-"):
            check = await self.keys.check(token)
            if check.key is None:
                raise AuthenticationError(f"{_REASONS[check.reason]}; the admin API needs the master key")
            if check.key.role != "org_admin":
                raise PermissionDeniedError(
                    "this key may use the /v1 API only: the admin API needs the master key or an org_admin key",
                    code="admin_not_allowed",
                )
            return Admin(check.key)
        raise AuthenticationError("the admin API needs the master key: 'Authorization: Bearer <master key>'")

    def require_master(self, headers: Mapping[str, str]) -> None:
        if self._master is None:
            raise PermissionDeniedError(
                "the admin API is off: set MODELYARD_MASTER_KEY (or server.master_key) to use it",
                code="admin_disabled",
            )
        if not self.is_master(bearer(headers)):
            raise AuthenticationError("the admin API needs the master key: 'Authorization: Bearer <master key>'")

    async def key_admit(self, principal: Principal, est_tokens: int) -> Slot | None:
        """Enforce the key's rpm/tpm in this process and, with shared state, across every replica
        (one window for the fleet). Raises RateLimitError (429) when over."""
        slot = self.key_slot(principal, est_tokens)
        shared = self.shared
        if slot is None or shared is None or principal.key is None:
            return slot
        key = principal.key
        admission = await shared.admit(
            f"k:{key.id}", rpm=key.rpm, tpm=key.tpm, max_concurrency=None, est_tokens=est_tokens
        )
        if not admission.granted:
            slot.release(0)
            raise RateLimitError(
                f"this key is over its limit (rpm {key.rpm or '-'}, tpm {key.tpm or '-'}, shared by every replica); "
                "retry later",
                retry_after=admission.retry_after,
                code="key_rate_limited",
            )
        if admission.lease:
            slot.on_release = lambda tokens: shared.release(admission, tokens)
        return slot

    def key_slot(self, principal: Principal, est_tokens: int) -> Slot | None:
        """Enforce the key's rpm/tpm (per process). Raises RateLimitError (429) when over."""
        key = principal.key
        if key is None or (key.rpm is None and key.tpm is None):
            return None
        entry = self._limits.get(key.id)
        if entry is None or entry[0].rpm != key.rpm or entry[0].tpm != key.tpm:
            limiter = ModelLimiter(
                f"key {key.id}", max_concurrency=None, max_queue=0, queue_timeout_s=0.001, rpm=key.rpm, tpm=key.tpm
            )
            entry = (key, limiter)
            self._limits[key.id] = entry
            if len(self._limits) > 10_000:
                self._limits.popitem(last=False)
        slot = entry[1].try_acquire(est_tokens)
        if slot is None:
            raise RateLimitError(
                f"this key is over its limit (rpm {key.rpm or '-'}, tpm {key.tpm or '-'}); retry later",
                retry_after=entry[1].retry_after(),
                code="key_rate_limited",
            )
        return slot
