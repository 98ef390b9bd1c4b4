"""D5 (issue #13): an ad-hoc ``provider:model`` with no price cannot walk around a USD budget.

Before: a key under a USD budget asked for ``openai:<an unpriced model>``; it was served and counted
as $0, so the budget never applied. Now it is a 400 before anything is sent upstream, whenever a
USD budget applies to the caller (a config budget or the key's own ``budget_usd``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.helpers import ServerProcess

MASTER = "master-key-unpriced-0123456789"
AUTH = {"Authorization": f"Bearer {MASTER}"}


def chat(srv: ServerProcess, model: str, key: str = MASTER) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(
        srv.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def upstream_models(fake: FakeServer) -> list[str]:
    return [str(r.get("model")) for r in fake.requests]


@pytest.fixture
def budgeted(fakes: dict[str, FakeServer], tmp_path: Path) -> Iterator[ServerProcess]:
    cfg = gateway_config(fakes, master_key=MASTER)
    cfg["budgets"] = [{"name": "org-daily", "scope": "organization", "limit_usd": 5, "period": "day"}]
    srv = ServerProcess(cfg, tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


def new_key(srv: ServerProcess, **limits: Any) -> str:
    if httpx.get(srv.url + "/admin/orgs/acme", headers=AUTH).status_code == 404:
        assert httpx.post(srv.url + "/admin/orgs", json={"name": "Acme", "id": "acme"}, headers=AUTH).status_code == 201
    resp = httpx.post(srv.url + "/admin/keys", json={"org_id": "acme", "name": "k", **limits}, headers=AUTH)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


def test_an_unpriced_adhoc_model_under_a_usd_budget_is_refused(
    budgeted: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    key = new_key(budgeted)
    resp = chat(budgeted, "openai:my-unpriced-finetune", key)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["code"] == "model_not_priced" and err["param"] == "model"
    assert "my-unpriced-finetune" in err["message"] and "org-daily" in err["message"]
    assert "my-unpriced-finetune" not in upstream_models(fakes["openai"])  # nothing was sent


def test_a_priced_adhoc_model_is_served_and_counted(budgeted: ServerProcess) -> None:
    assert chat(budgeted, "openai:gpt-4o-mini", new_key(budgeted)).status_code == 200


def test_a_key_budget_is_a_usd_budget_too(fakes: dict[str, FakeServer], tmp_path: Path) -> None:
    srv = ServerProcess(gateway_config(fakes, master_key=MASTER), tmp_path)
    try:
        unlimited = new_key(srv)
        limited = new_key(srv, budget_usd=1.0)
        assert chat(srv, "openai:my-unpriced-finetune", limited).status_code == 400
        # no USD budget applies: nothing to walk around, the request goes upstream
        assert chat(srv, "openai:my-unpriced-finetune", unlimited).status_code != 400
        assert "my-unpriced-finetune" in upstream_models(fakes["openai"])
    finally:
        srv.stop()
