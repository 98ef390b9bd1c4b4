"""The admin API refuses out-of-range numbers and unknown organisations with a 4xx in OpenAI's error
JSON (issue #11, D11): these were 500s, or a key that broke every request made with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.e2e.test_errors import assert_openai_error
from tests.helpers import ServerProcess

MASTER = "master-key-for-admin-validation-0123"
AUTH = {"Authorization": f"Bearer {MASTER}", "content-type": "application/json"}


@pytest.fixture(scope="module")
def srv(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir: Path = tmp_path_factory.mktemp("admin-validation")
    proc = ServerProcess(gateway_config(fakes, master_key=MASTER), workdir)
    try:
        resp = httpx.post(f"{proc.url}/admin/orgs", json={"name": "Org A", "id": "orgA"}, headers=AUTH)
        assert resp.status_code == 201, resp.text
        yield proc
    finally:
        proc.stop()


def raw(srv: ServerProcess, method: str, path: str, body: str) -> httpx.Response:
    return httpx.request(method, f"{srv.url}/admin{path}", content=body.encode(), headers=AUTH, timeout=10)


def new_key(srv: ServerProcess, **fields: Any) -> httpx.Response:
    return httpx.post(f"{srv.url}/admin/keys", json={"org_id": "orgA", "name": "k", **fields}, headers=AUTH)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e309", "1e300", "1000000001"])
def test_budget_must_be_finite_and_bounded(srv: ServerProcess, number: str) -> None:
    err = assert_openai_error(raw(srv, "POST", "/keys", f'{{"org_id":"orgA","name":"k","budget_usd":{number}}}'), 400)
    assert err["param"] == "budget_usd"
    key = new_key(srv).json()
    err = assert_openai_error(raw(srv, "PATCH", f"/keys/{key['id']}", f'{{"budget_usd":{number}}}'), 400)
    assert err["param"] == "budget_usd"


@pytest.mark.parametrize("field", ["rpm", "tpm"])
@pytest.mark.parametrize("number", [2**63, 2**70, 10**12 + 1])
def test_rates_are_bounded(srv: ServerProcess, field: str, number: int) -> None:
    err = assert_openai_error(new_key(srv, **{field: number}), 400)
    assert err["param"] == field
    key = new_key(srv).json()
    err = assert_openai_error(raw(srv, "PATCH", f"/keys/{key['id']}", f'{{"{field}":{number}}}'), 400)
    assert err["param"] == field


def test_largest_allowed_values_are_accepted_and_the_key_works(srv: ServerProcess) -> None:
    resp = new_key(srv, budget_usd=1e9, rpm=10**12, tpm=10**12)
    assert resp.status_code == 201, resp.text
    chat = httpx.post(
        f"{srv.url}/v1/chat/completions",
        json={"model": "gpt", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {resp.json()['key']}"},
        timeout=30,
    )
    assert chat.status_code == 200, chat.text


def test_credential_for_an_unknown_org_is_404(srv: ServerProcess) -> None:
    body = {"provider": "openai", "name": "n", "secret": "sk-x-123456789", "org_id": "nope"}
    err = assert_openai_error(httpx.post(f"{srv.url}/admin/credentials", json=body, headers=AUTH), 404)
    assert err["param"] == "org_id"
    body["org_id"] = "orgA"
    assert httpx.post(f"{srv.url}/admin/credentials", json=body, headers=AUTH).status_code == 201


def test_validation_errors_are_openai_error_json_naming_the_field(srv: ServerProcess) -> None:
    err = assert_openai_error(raw(srv, "POST", "/keys", '{"org_id":"orgA"}'), 400)
    assert err["param"] == "name" and err["type"] == "invalid_request_error"
    err = assert_openai_error(raw(srv, "POST", "/orgs", '{"name":"x","colour":"red"}'), 400)
    assert err["param"] == "colour"
    err = assert_openai_error(raw(srv, "POST", "/orgs", '{"name": '), 400)
    assert "not valid JSON" in err["message"]
    resp = httpx.get(f"{srv.url}/admin/budget-events", params={"limit": 0}, headers=AUTH)
    assert assert_openai_error(resp, 400)["param"] == "limit"
