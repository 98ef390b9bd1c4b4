"""Roles: every admin endpoint x every role x own/other organisation (#12 "Roles").

The endpoints come from ``/admin/openapi.json``, so an endpoint added later is in the matrix
without anyone remembering to add it.  Roles: no key, an app key, an org admin, an org admin with
the ``routes:write`` grant, and the master key.  Requests carry bodies that are either harmless
or invalid, so the master key's column changes nothing; an org admin's "own" column acts on a
victim key and credential of its own organisation.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.helpers import ServerProcess

MASTER = "sk-master-roles-test"
M = {"Authorization": f"Bearer {MASTER}"}

#: what an org admin may use (its own organisation's part)
ORG_ADMIN = (
    ("GET", "/admin/orgs"),
    ("GET", "/admin/orgs/{org_id}"),
    ("*", "/admin/keys"),
    ("*", "/admin/credentials"),
    ("GET", "/admin/budgets"),
    ("GET", "/admin/budget-events"),
    ("GET", "/admin/audit"),
    ("GET", "/admin/events"),
    # comparisons are charged to the org admin's organisation; recommendations read its usage
    ("*", "/admin/comparisons"),
    ("GET", "/admin/recommendations"),
)


def _org_admin_may(method: str, path: str) -> bool:
    return any((m in ("*", method)) and (path == p or (m == "*" and path.startswith(p + "/"))) for m, p in ORG_ADMIN)


def _org_scoped(method: str, path: str) -> bool:
    """Whether the request names an organisation's thing (so "other" means another organisation's)."""
    named = any(p in path for p in ("{org_id}", "{key_id}", "{credential_id}"))
    return named or (method == "POST" and path in ("/admin/keys", "/admin/credentials"))


def _scope(method: str, path: str) -> str | None:
    """The grant that opens an endpoint to an org admin (None: none does)."""
    for section in ("providers", "models", "routes"):
        if path == f"/admin/{section}" or path.startswith(f"/admin/{section}/"):
            if path.endswith(("/test", "/load", "/unload")) or (section == "providers" and path.endswith("/models")):
                return None
            return f"{section}:write"
    return None


@pytest.fixture(scope="module")
def world(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    proc = ServerProcess(gateway_config(fakes), tmp_path_factory.mktemp("roles"), env={"MODELYARD_MASTER_KEY": MASTER})
    try:

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            r = httpx.post(f"{proc.url}/admin{path}", json=body, headers=M, timeout=30)
            assert r.status_code == 201, r.text
            return dict(r.json())

        for org in ("org_a", "org_b"):
            post("/orgs", {"name": org, "id": org})
        keys = {
            "app": post("/keys", {"org_id": "org_a", "name": "app"})["key"],
            "admin": post("/keys", {"org_id": "org_a", "name": "admin", "role": "org_admin"})["key"],
            "admin+routes": post(
                "/keys", {"org_id": "org_a", "name": "router", "role": "org_admin", "scopes": ["routes:write"]}
            )["key"],
        }
        ids = {
            "own_key": post("/keys", {"org_id": "org_a", "name": "victim"})["id"],
            "other_key": post("/keys", {"org_id": "org_b", "name": "b"})["id"],
            "own_cred": post(
                "/credentials", {"provider": "openai", "name": "a", "secret": "sk-a-1", "org_id": "org_a"}
            )["id"],
            "other_cred": post(
                "/credentials", {"provider": "openai", "name": "b", "secret": "sk-b-1", "org_id": "org_b"}
            )["id"],
        }
        doc = httpx.get(f"{proc.url}/admin/openapi.json", headers=M, timeout=30).json()
        yield {"proc": proc, "keys": keys, "ids": ids, "paths": doc["paths"]}
    finally:
        proc.stop()


def _fill(path: str, ids: dict[str, str], side: str) -> str:
    org = "org_a" if side == "own" else "org_b"
    values = {
        "org_id": org,
        "key_id": ids["own_key" if side == "own" else "other_key"],
        "credential_id": ids["own_cred" if side == "own" else "other_cred"],
        "revision_id": "1",
    }
    section = path.split("/")[2]
    default_name = {"providers": "openai", "models": "gpt", "routes": "main"}.get(section, "nope")
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), default_name), path)


def _body(path: str, side: str) -> dict[str, Any] | None:
    org = "org_a" if side == "own" else "org_b"
    # valid bodies (an org admin's refusal for another organisation is decided on the body's org_id);
    # what the matrix creates is harmless: a key and a credential no provider uses
    if path == "/admin/keys":
        return {"org_id": org, "name": "made-in-matrix"}
    if path == "/admin/credentials":
        return {"provider": "openai", "name": "matrix", "secret": "sk-matrix-0000", "org_id": org}
    return {}


def _call(proc: ServerProcess, method: str, path: str, token: str | None, side: str, ids: dict[str, str]) -> int:
    url = proc.url + _fill(path, ids, side)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if path == "/admin/events":
        with httpx.stream("GET", url, headers=headers, timeout=10) as r:
            return r.status_code
    body = _body(path, side) if method in ("POST", "PUT", "PATCH") else None
    return httpx.request(method, url, headers=headers, json=body, timeout=30).status_code


def _endpoints(paths: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted(
        (m.upper(), p) for p, ops in paths.items() for m in ops if m in ("get", "post", "put", "patch", "delete")
    )


def test_the_matrix_covers_every_admin_endpoint(world: dict[str, Any]) -> None:
    endpoints = _endpoints(world["paths"])
    assert len(endpoints) >= 40, endpoints  # orgs, keys, credentials, budgets, config, sections, audit, events
    assert ("POST", "/admin/routes/{name}/switch") in endpoints and ("DELETE", "/admin/orgs/{org_id}") in endpoints


ROLES = ("none", "app", "admin", "admin+routes", "master")


@pytest.mark.parametrize("role", ROLES)
def test_every_admin_endpoint_for_every_role(world: dict[str, Any], role: str) -> None:
    proc, keys, ids = world["proc"], world["keys"], world["ids"]
    token = {"none": None, "master": MASTER}.get(role, keys.get(role))
    wrong: list[str] = []
    for method, path in _endpoints(world["paths"]):
        for side in ("own", "other") if role in ("admin", "admin+routes") else ("own",):
            # the master key acts on things that do not exist (its column must change nothing)
            status = _call(proc, method, path, token, side if role != "master" else "other", ids)
            scope = _scope(method, path)
            if role == "none":
                ok = status == 401
            elif role == "app":
                ok = status == 403
            elif role == "master":
                ok = status not in (401, 403)
            else:
                granted = _org_admin_may(method, path) or (role == "admin+routes" and scope == "routes:write")
                if not granted:
                    ok = status == 403
                elif side == "own" or not _org_scoped(method, path):
                    ok = status not in (401, 403)
                else:  # another organisation's thing: refused, or not found in its own organisation
                    ok = status in (403, 404)
            if not ok:
                wrong.append(f"{role} {side}: {method} {path} -> {status}")
    assert not wrong, "\n".join(wrong)


def test_org_admin_sees_only_its_own(world: dict[str, Any]) -> None:
    proc, keys = world["proc"], world["keys"]
    h = {"Authorization": f"Bearer {keys['admin']}"}
    listed = httpx.get(f"{proc.url}/admin/keys", headers=h).json()["data"]
    assert listed and {k["org_id"] for k in listed} == {"org_a"}
    assert [o["id"] for o in httpx.get(f"{proc.url}/admin/orgs", headers=h).json()["data"]] == ["org_a"]
    creds = httpx.get(f"{proc.url}/admin/credentials", headers=h).json()["data"]
    assert {c["org_id"] for c in creds} == {"org_a"}
    made = httpx.post(f"{proc.url}/admin/keys", headers=h, json={"org_id": "org_a", "name": "by-admin"})
    assert made.status_code == 201 and made.json()["role"] == "app"
    escalate = httpx.post(
        f"{proc.url}/admin/keys", headers=h, json={"org_id": "org_a", "name": "x", "role": "org_admin"}
    )
    assert escalate.status_code == 403 and escalate.json()["error"]["code"] == "master_key_required"
    grant = httpx.patch(f"{proc.url}/admin/keys/{made.json()['id']}", headers=h, json={"scopes": ["routes:write"]})
    assert grant.status_code == 403
    audit = httpx.get(f"{proc.url}/admin/audit", headers=h).json()["data"]
    assert audit and {e["org_id"] for e in audit} == {"org_a"}
    assert any(e["actor"] != "master" and e["action"] == "key.create" for e in audit)


def test_a_granted_org_admin_switches_routes_only(world: dict[str, Any]) -> None:
    proc, keys = world["proc"], world["keys"]
    h = {"Authorization": f"Bearer {keys['admin+routes']}"}
    base = httpx.get(f"{proc.url}/admin/routes", headers=h).headers["etag"].strip('"')
    r = httpx.post(f"{proc.url}/admin/routes/main/switch", headers={**h, "If-Match": base}, json={"model": "claude"})
    assert r.status_code == 200, r.text
    assert r.json()["revision"]["actor"].startswith("key_")
    denied = httpx.post(f"{proc.url}/admin/models/gpt/disable", headers={**h, "If-Match": str(int(base) + 1)})
    assert denied.status_code == 403 and "models:write" in denied.json()["error"]["message"]
    back = httpx.post(
        f"{proc.url}/admin/routes/main/switch", headers={**h, "If-Match": str(int(base) + 1)}, json={"model": "gpt"}
    )
    assert back.status_code == 200
