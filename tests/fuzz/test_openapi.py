"""Schemathesis against both OpenAPI documents (#19 point 2): every operation of ``/openapi.json``
and ``/admin/openapi.json``, as every role (no key, an app key, an org admin, the master key),
with generated requests: never a server error.

``make test`` runs a small budget per operation and role (``MODELYARD_SCHEMA_EXAMPLES``, default
3); ``make fuzz`` a large one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.helpers import ServerProcess

EXAMPLES = int(os.environ.get("MODELYARD_SCHEMA_EXAMPLES", "3"))
MASTER = "sk-master-schema-fuzz"


@pytest.fixture(scope="module")
def world(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    proc = ServerProcess(gateway_config(fakes), tmp_path_factory.mktemp("schema"), env={"MODELYARD_MASTER_KEY": MASTER})
    try:
        m = {"Authorization": f"Bearer {MASTER}"}
        httpx.post(f"{proc.url}/admin/orgs", json={"name": "a", "id": "org_a"}, headers=m, timeout=30)
        app = httpx.post(f"{proc.url}/admin/keys", json={"org_id": "org_a", "name": "app"}, headers=m).json()["key"]
        admin = httpx.post(
            f"{proc.url}/admin/keys", json={"org_id": "org_a", "name": "adm", "role": "org_admin"}, headers=m
        ).json()["key"]
        yield {"proc": proc, "tokens": {"none": None, "app": app, "org_admin": admin, "master": MASTER}}
    finally:
        proc.stop()


ROLES = ("none", "app", "org_admin", "master")


def _call(case: Any, world: dict[str, Any], role: str) -> None:
    token = world["tokens"][role]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if case.path.endswith("/events"):  # a server-sent event stream: the status, then hang up
        url = world["proc"].url + case.formatted_path
        with httpx.stream("GET", url, headers=headers, params=case.query, timeout=10) as r:
            assert r.status_code < 500, (case.path, r.status_code)
        return
    response = case.call(base_url=world["proc"].url, headers=headers, timeout=30)
    assert response.status_code < 500, (
        f"{role}: {case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    )


def _fuzz(world: dict[str, Any], path: str) -> int:
    """Every operation of the document at ``path``: EXAMPLES generated requests each, sent as
    every role.  (Schemathesis' own pytest plugin does not run under this pytest, so its
    strategies are driven by Hypothesis here.)"""
    schema = schemathesis.openapi.from_url(world["proc"].url + path, headers={"Authorization": f"Bearer {MASTER}"})
    operations = [r.ok() for r in schema.get_all_operations()]
    for op in operations:

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def run(case: Any) -> None:
            for role in ROLES:  # each generated request, sent as every role
                _call(case, world, role)

        run()
    assert httpx.get(world["proc"].url + "/health", timeout=5).status_code == 200
    return len(operations)


def test_every_v1_operation_as_every_role(world: dict[str, Any]) -> None:
    assert _fuzz(world, "/openapi.json") >= 8


def test_every_admin_operation_as_every_role(world: dict[str, Any]) -> None:
    assert _fuzz(world, "/admin/openapi.json") >= 40
