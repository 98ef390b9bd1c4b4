"""The dashboard at ``/ui``: pages served by the gateway itself, offline (docs/dashboard.md).

Each page is a small server-rendered shell (Jinja2, autoescaped) and one script of our own,
``static/app.js``, that reads the same JSON the admin API and ``/v1/status`` serve and writes the
page with ``textContent`` only (so a name like ``<img src=x onerror=...>`` stays text).  Changes go
through the admin API, so the dashboard can do nothing the API would refuse: it is a client of it,
authenticated by a session cookie (:mod:`modelyard.gateway.sessions`) and a CSRF token.

Every response carries a strict Content-Security-Policy (no inline script or style, no other
origin).  Without a master key the pages are read-only and served to loopback clients only.
"""

from __future__ import annotations

import csv
import io
import time
from collections import deque
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from modelyard.errors import ModelyardError
from modelyard.gateway.auth import Admin
from modelyard.gateway.sessions import COOKIE, IDLE_S, Session
from modelyard.server.state import AppState
from modelyard.storage.keys import hash_key
from modelyard.storage.usage import parse_group_by

__all__ = ["CSP", "PAGES", "ui_router"]

CSP = (
    "default-src 'self'; script-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: (path, title) of the pages, in the navigation's order
PAGES = (
    ("overview", "Overview"),
    ("providers", "Providers"),
    ("models", "Models"),
    ("routes", "Routes"),
    ("usage", "Usage and cost"),
    ("compare", "Compare"),
    ("local", "Local models"),
    ("config", "Config"),
    ("keys", "Keys and budgets"),
)
_STATIC = {"app.js": "text/javascript", "app.css": "text/css", "favicon.svg": "image/svg+xml"}
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_CSV_GROUPS = ("model", "route", "provider", "org", "key", "hour", "day")
_CSV_COLUMNS = (
    "requests", "successes", "failures", "fallbacks", "tokens_in", "tokens_out", "tokens_cached", "cost_usd",
    "baseline_cost_usd", "savings_usd", "latency_p50_ms", "latency_p95_ms", "ttft_p50_ms", "cache_hits",
)  # fmt: skip
#: failed logins per client address per minute before 429
LOGIN_ATTEMPTS_PER_MINUTE = 10


def _host(value: str) -> str:
    """The host part of a Host header or an Origin (no scheme, no port)."""
    value = value.split("://", 1)[-1].split("/", 1)[0]
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _loopback_only(request: Request) -> bool:
    """Client, Host and (when sent) Origin are all loopback."""
    client = request.client.host if request.client is not None else ""
    origin = request.headers.get("origin")
    return (
        client in _LOOPBACK
        and _host(request.headers.get("host", "")) in _LOOPBACK
        and (origin is None or _host(origin) in _LOOPBACK)
    )


def _same_origin(request: Request) -> bool:
    """A form post from our own pages (the browser sends Origin on every POST)."""
    origin = request.headers.get("origin")
    return origin is None or _host(origin) == _host(request.headers.get("host", ""))


class _LoginLimiter:
    """Failed logins per client address in the last minute (per process)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._fails: dict[str, deque[float]] = {}

    def blocked(self, client: str, now: float) -> int:
        """Seconds to wait, 0 when the client may try."""
        fails = self._fails.get(client)
        if not fails:
            return 0
        while fails and now - fails[0] > 60:
            fails.popleft()
        return int(60 - (now - fails[0])) + 1 if len(fails) >= self.per_minute else 0

    def failed(self, client: str, now: float) -> None:
        if len(self._fails) > 10_000:
            self._fails.clear()
        self._fails.setdefault(client, deque()).append(now)


class _Assets:
    """The templates and static files, loaded on the first dashboard request (a gateway nobody
    browses does not pay for Jinja2 in memory or start-up time)."""

    def __init__(self) -> None:
        self._env: Any = None
        self._static: dict[str, bytes] = {}

    @property
    def env(self) -> Any:
        if self._env is None:
            from jinja2 import Environment, PackageLoader, select_autoescape

            loader = PackageLoader("modelyard.server.ui", "templates")
            self._env = Environment(loader=loader, autoescape=select_autoescape(default=True))
        return self._env

    def static(self, name: str) -> bytes:
        if name not in self._static:
            self._static[name] = files("modelyard.server.ui").joinpath("static", name).read_bytes()
        return self._static[name]


def ui_router(gw: AppState) -> APIRouter:
    router = APIRouter(prefix="/ui", include_in_schema=False)
    assets = _Assets()
    limiter = _LoginLimiter(LOGIN_ATTEMPTS_PER_MINUTE)

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = assets.env.get_template(template).render(pages=PAGES, **context)
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def secure(request: Request) -> bool:
        if gw.holder.current.config.server.cookie_secure == "always":
            return True
        return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"

    def set_cookie(response: Response, request: Request, value: str) -> None:
        response.set_cookie(
            COOKIE, value, max_age=IDLE_S, path="/", httponly=True, samesite="strict", secure=secure(request)
        )

    async def session_of(request: Request) -> tuple[tuple[Session, Admin] | None, str | None]:
        """The request's valid session and who it is, or (None, why not)."""
        services = gw.services
        if services is None or services.auth.sessions is None:
            return None, None
        try:
            return await services.auth.session(request.headers, "GET"), None
        except ModelyardError:
            return None, "Your session ended (idle too long, or its key was revoked): log in again."

    @router.get("")
    @router.get("/")
    async def home() -> Response:
        return RedirectResponse("/ui/overview", status_code=303, headers=_HEADERS)

    @router.get("/static/{name}")
    async def asset(name: str) -> Response:
        if name not in _STATIC:
            return Response(b"not found", status_code=404, headers=_HEADERS, media_type="text/plain")
        headers = {**_HEADERS, "Cache-Control": "public, max-age=300"}
        return Response(assets.static(name), media_type=_STATIC[name], headers=headers)

    @router.get("/login")
    async def login_form(request: Request) -> Response:
        if gw.services is None or gw.services.auth.sessions is None:
            return RedirectResponse("/ui/overview", status_code=303, headers=_HEADERS)
        _, why = await session_of(request)
        return page("login.html", error=why)

    @router.post("/login")
    async def login(request: Request) -> Response:
        services = gw.services
        codec = services.auth.sessions if services is not None else None
        if services is None or codec is None:
            return RedirectResponse("/ui/overview", status_code=303, headers=_HEADERS)
        if not _same_origin(request):
            return page("login.html", status=403, error="Log in from the gateway's own page.")
        client = request.client.host if request.client is not None else "?"
        now = time.monotonic()
        wait = limiter.blocked(client, now)
        if wait:
            response = page("login.html", status=429, error=f"Too many attempts: try again in {wait} s.")
            response.headers["Retry-After"] = str(wait)
            return response
        raw = (await request.body())[:4096].decode(errors="replace")
        key = (parse_qs(raw).get("key") or [""])[0].strip()
        subject: str | None = None
        if services.auth.is_master(key):
            subject = "master"
        elif key.startswith("my-") and services.keys is not None:
            check = await services.keys.check(key)
            if check.key is not None and check.key.role == "org_admin":
                subject = hash_key(key)
        if subject is None:
            limiter.failed(client, now)
            return page(
                "login.html", status=401, error="That key cannot log in: use the master key or an org admin key."
            )
        done = RedirectResponse("/ui/overview", status_code=303, headers=_HEADERS)
        set_cookie(done, request, codec.issue(subject))
        return done

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        found, _ = await session_of(request)
        codec = gw.services.auth.sessions if gw.services is not None else None
        token = (parse_qs((await request.body())[:4096].decode(errors="replace")).get("csrf") or [""])[0]
        if found is not None and codec is not None and not codec.csrf_ok(found[0], token):
            return Response(b"missing or wrong CSRF token", status_code=403, headers=_HEADERS, media_type="text/plain")
        response = RedirectResponse("/ui/login", status_code=303, headers=_HEADERS)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict", secure=secure(request))
        return response

    @router.get("/usage.csv")
    async def usage_csv(request: Request, group_by: str = "model", hours: int = 24) -> Response:
        """The Usage page's table as CSV (the org of an org admin's session only)."""
        services = gw.services
        if services is None:
            return Response(b"usage needs the database", status_code=503, headers=_HEADERS, media_type="text/plain")
        org_id: str | None = None
        if services.auth.sessions is None:
            if not _loopback_only(request):
                return Response(b"forbidden", status_code=403, headers=_HEADERS, media_type="text/plain")
        else:
            found, _ = await session_of(request)
            if found is None:
                return Response(b"log in at /ui/login", status_code=401, headers=_HEADERS, media_type="text/plain")
            org_id = found[1].org_id
        if group_by not in _CSV_GROUPS or not 1 <= hours <= 24 * 366:
            return Response(
                b"group_by: model, route, provider, org, key, hour or day; hours: 1..8784",
                status_code=400,
                headers=_HEADERS,
                media_type="text/plain",
            )
        since = datetime.now(UTC) - timedelta(hours=hours)
        rows = await services.usage.stats(group_by=parse_group_by(group_by), org_id=org_id, since=since)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow([group_by, *_CSV_COLUMNS])
        for row in rows:
            writer.writerow([row["key"], *(row.get(c) for c in _CSV_COLUMNS)])
        headers = {**_HEADERS, "Content-Disposition": f'attachment; filename="usage-{group_by}-{hours}h.csv"'}
        return Response(out.getvalue().encode(), media_type="text/csv", headers=headers)

    def _page_route(name: str, title: str) -> None:
        async def show(request: Request) -> Response:
            services = gw.services
            codec = services.auth.sessions if services is not None else None
            if codec is None:  # no master key: read-only, loopback only
                if not _loopback_only(request):
                    return page("denied.html", status=403, title=title)
                return page("page.html", page=name, title=title, mode="readonly", csrf="", who="", org="")
            found, _ = await session_of(request)
            if found is None:
                return RedirectResponse("/ui/login", status_code=303, headers=_HEADERS)
            session, who = found
            response = page(
                "page.html",
                page=name,
                title=title,
                mode="admin" if who.is_master else "org_admin",
                csrf=codec.csrf(session),
                who="master key" if who.is_master else f"org admin ({who.key.name or who.key.id})",  # type: ignore[union-attr]
                org=who.org_id or "",
            )
            fresh = codec.refreshed(session)
            if fresh is not None:
                set_cookie(response, request, fresh)
            return response

        router.add_api_route(f"/{name}", show, methods=["GET"])

    for name, title in PAGES:
        _page_route(name, title)
    return router
