"""The dashboard's HTTP rules without a browser (#16): cookie flags, headers on every page, CSV export."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.helpers import ServerProcess

MASTER = "sk-master-dashboard-http"


@pytest.fixture
def secure_gw(fakes: dict[str, FakeServer], tmp_path: Path) -> Iterator[ServerProcess]:
    config = gateway_config(fakes, cookie_secure="always")
    proc = ServerProcess(config, tmp_path, env={"MODELYARD_MASTER_KEY": MASTER})
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def gw(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(gateway_config(fakes), tmp_path_factory.mktemp("dash"), env={"MODELYARD_MASTER_KEY": MASTER})
    try:
        yield proc
    finally:
        proc.stop()


def login(gw: ServerProcess, **headers: str) -> httpx.Response:
    return httpx.post(f"{gw.url}/ui/login", data={"key": MASTER}, headers=headers)


def test_the_cookie_is_secure_behind_https_or_when_told(gw: ServerProcess, secure_gw: ServerProcess) -> None:
    plain = login(gw).headers["set-cookie"]
    assert "HttpOnly" in plain and "SameSite=strict" in plain and "Secure" not in plain and MASTER not in plain
    assert "Secure" in login(gw, **{"X-Forwarded-Proto": "https"}).headers["set-cookie"]
    assert "Secure" in login(secure_gw).headers["set-cookie"]


def test_every_page_and_asset_carries_the_policy(gw: ServerProcess) -> None:
    cookie = login(gw).cookies
    for path in ("/ui/login", "/ui/overview", "/ui/static/app.js", "/ui/static/app.css", "/ui/static/nope.js"):
        r = httpx.get(f"{gw.url}{path}", cookies=cookie)
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in httpx.get(f"{gw.url}/ui/overview", cookies=cookie).text  # no inline script
    assert httpx.get(f"{gw.url}/ui/overview").status_code == 303  # no session: to the login page
    assert (
        httpx.post(f"{gw.url}/ui/login", data={"key": MASTER}, headers={"Origin": "https://evil.example"}).status_code
        == 403
    )


def test_usage_csv_export(gw: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {MASTER}"}
    for model in ("gpt", "gpt", "claude"):
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=headers).status_code == 200
    cookie = login(gw).cookies
    r = None
    for _ in range(40):  # usage records are written in batches, off the request path
        r = httpx.get(f"{gw.url}/ui/usage.csv?group_by=model&hours=24", cookies=cookie)
        rows = list(csv.reader(io.StringIO(r.text)))
        if sum(int(x[1]) for x in rows[1:]) >= 3:
            break
        import time

        time.sleep(0.25)
    assert r is not None and r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert rows[0][:3] == ["model", "requests", "successes"]
    assert {x[0]: int(x[1]) for x in rows[1:]} == {"gpt": 2, "claude": 1}
    assert httpx.get(f"{gw.url}/ui/usage.csv").status_code == 401
    assert httpx.get(f"{gw.url}/ui/usage.csv?group_by=secret", cookies=cookie).status_code == 400


def test_stats_by_time_bucket_and_dimension(gw: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {MASTER}"}
    body = {"model": "gem", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=headers).status_code == 200
    rows: list[dict[str, object]] = []
    for _ in range(40):
        rows = httpx.get(f"{gw.url}/v1/stats?group_by=hour,model", headers=headers).json()["data"]
        if any(r["group"] == "gem" for r in rows):
            break
        import time

        time.sleep(0.25)
    gem = next(r for r in rows if r["group"] == "gem")
    assert str(gem["key"]).endswith(":00:00Z") and gem["requests"] == 1
    bad = httpx.get(f"{gw.url}/v1/stats?group_by=model,day", headers=headers)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"
