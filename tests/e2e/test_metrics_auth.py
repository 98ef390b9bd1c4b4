"""D8 (issue #13): /metrics needs a key, names no tenant, and cannot be grown without bound."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.helpers import ServerProcess, free_port

MASTER = "master-key-metrics-0123456789"
TOKEN = "prometheus-scrape-token-42"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def srv(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cfg = gateway_config(fakes, master_key=MASTER, metrics_token=TOKEN, metrics_port=free_port())
    cfg["models"]["gpt"].update(input_cost_per_mtok=1.0, output_cost_per_mtok=2.0)
    cfg["usage"] = {"flush_interval_ms": 50}
    proc = ServerProcess(cfg, tmp_path_factory.mktemp("metrics"))
    proc.metrics_port = cfg["server"]["metrics_port"]  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        proc.stop()


def org_key(srv: ServerProcess) -> str:
    if httpx.get(srv.url + "/admin/orgs/acme-corp", headers=auth(MASTER)).status_code == 404:
        created = httpx.post(srv.url + "/admin/orgs", json={"name": "Acme", "id": "acme-corp"}, headers=auth(MASTER))
        assert created.status_code == 201, created.text
    resp = httpx.post(srv.url + "/admin/keys", json={"org_id": "acme-corp", "name": "k"}, headers=auth(MASTER))
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


def chat(srv: ServerProcess, key: str, model: str) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(srv.url + "/v1/chat/completions", json=body, headers=auth(key), timeout=30)


def test_metrics_need_the_master_key_or_the_metrics_token(srv: ServerProcess) -> None:
    anonymous = httpx.get(srv.url + "/metrics")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "authentication_error"
    assert httpx.get(srv.url + "/metrics", headers=auth("wrong")).status_code == 401
    virtual = org_key(srv)
    assert httpx.get(srv.url + "/metrics", headers=auth(virtual)).status_code == 401  # a tenant's key is not enough
    for key in (MASTER, TOKEN):
        resp = httpx.get(srv.url + "/metrics", headers=auth(key))
        assert resp.status_code == 200 and "modelyard_requests_total" in resp.text


def test_no_organisation_id_in_the_labels_by_default(srv: ServerProcess) -> None:
    key = org_key(srv)
    assert chat(srv, key, "gpt").status_code == 200
    text = httpx.get(srv.url + "/metrics", headers=auth(MASTER)).text
    assert "modelyard_cost_usd_total" in text
    assert "acme-corp" not in text and "key_" not in text


def test_ad_hoc_models_share_one_label(srv: ServerProcess) -> None:
    for suffix in ("a" * 200, "b" * 200):
        assert chat(srv, MASTER, f"openai:gpt-4o-{suffix}").status_code in (200, 404, 502)
    text = httpx.get(srv.url + "/metrics", headers=auth(MASTER)).text
    assert "a" * 200 not in text and "b" * 200 not in text
    assert chat(srv, MASTER, "openai:gpt-4o").status_code == 200
    text = httpx.get(srv.url + "/metrics", headers=auth(MASTER)).text
    assert 'model="adhoc"' in text and "openai:gpt-4o" not in text


def test_the_metrics_port_serves_loopback_without_a_key(srv: ServerProcess) -> None:
    port = srv.metrics_port  # type: ignore[attr-defined]
    resp = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert resp.status_code == 200 and "modelyard_requests_total" in resp.text
    # bound to 127.0.0.1 only: nothing listens on the other addresses of the machine
    addr = next(
        (
            a[4][0]
            for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
            if not a[4][0].startswith("127.")
        ),
        None,
    )
    if addr is not None:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://{addr}:{port}/metrics", timeout=2)
