"""Keys, organisations, usage records, budgets, cache, stats and metrics through the real server."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.helpers import BIN, ServerProcess, wait_for

MASTER = "master-key-for-tests-0123456789"
MSG = [{"role": "user", "content": "hello there"}]
PLANTED = "sk-planted-secret-DO-NOT-LEAK-4242"


def admin(srv: ServerProcess, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(
        method, f"{srv.url}/admin{path}", headers={"Authorization": f"Bearer {MASTER}"}, timeout=10, **kw
    )


def chat(srv: ServerProcess, key: str | None, model: str = "gpt", **body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(
        f"{srv.url}/v1/chat/completions", json={"model": model, "messages": MSG, **body}, headers=headers, timeout=30
    )


def priced_config(fakes: dict[str, FakeServer], **extra: Any) -> dict[str, Any]:
    cfg = gateway_config(fakes, master_key=MASTER)
    cfg["models"]["gpt"].update(input_cost_per_mtok=1000.0, output_cost_per_mtok=2000.0)
    cfg["models"]["gpt-mini"].update(input_cost_per_mtok=10.0, output_cost_per_mtok=20.0)
    cfg["routes"]["main"]["baseline_model"] = "gpt"
    cfg["routes"]["cached"] = {"models": ["gpt-mini"], "cache_ttl_s": 60}
    cfg["usage"] = {"flush_interval_ms": 50}
    cfg.update(extra)
    return cfg


@pytest.fixture
def acct_server(fakes: dict[str, FakeServer], tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(priced_config(fakes), tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


def new_key(srv: ServerProcess, org: str, **kw: Any) -> dict[str, Any]:
    if admin(srv, "GET", f"/orgs/{org}").status_code == 404:
        assert admin(srv, "POST", "/orgs", json={"name": org.title(), "id": org}).status_code == 201
    resp = admin(srv, "POST", "/keys", json={"org_id": org, "name": "k", **kw})
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def stats(srv: ServerProcess, key: str, **params: Any) -> dict[str, Any]:
    resp = httpx.get(f"{srv.url}/v1/stats", params=params, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_keys_auth_and_org_isolation(acct_server: ServerProcess) -> None:
    srv = acct_server
    assert chat(srv, None).status_code == 401
    assert chat(srv, "my-not-a-real-key").status_code == 401
    a = new_key(srv, "acme")
    b = new_key(srv, "globex")
    assert a["key"].startswith("my-") and "store this key" in a["note"]
    listed = admin(srv, "GET", "/keys").json()["data"]
    assert all(a["key"] != k["key"] and k["key"].endswith("…") for k in listed)  # shown once, then masked
    for _ in range(3):
        assert chat(srv, a["key"]).status_code == 200
    assert chat(srv, b["key"]).status_code == 200
    assert wait_for(lambda: stats(srv, MASTER)["summary"]["requests"]["total"] == 4)
    mine = stats(srv, a["key"], org_id="globex")  # a key cannot look across organisations
    assert mine["org_id"] == "acme" and mine["summary"]["requests"]["total"] == 3
    assert stats(srv, b["key"])["summary"]["requests"]["total"] == 1
    by_org = {row["key"]: row["requests"] for row in stats(srv, MASTER, group_by="org")["data"]}
    assert by_org == {"acme": 3, "globex": 1}
    assert admin(srv, "POST", f"/keys/{a['id']}/revoke").status_code == 200
    resp = chat(srv, a["key"])
    assert resp.status_code == 401 and "revoked" in resp.json()["error"]["message"]
    expired = new_key(srv, "acme", expires_at="2020-01-01T00:00:00Z")
    resp = chat(srv, expired["key"])
    assert resp.status_code == 401 and "expired" in resp.json()["error"]["message"]
    assert admin(srv, "GET", "/orgs").status_code == 200
    assert (
        httpx.get(f"{srv.url}/admin/orgs", headers={"Authorization": f"Bearer {b['key']}"}).status_code == 403
    )  # a valid app key: authenticated, not allowed


def test_key_limits_and_allowed_routes(acct_server: ServerProcess) -> None:
    srv = acct_server
    k = new_key(srv, "acme", allowed_routes=["main", "gpt"], rpm=2)
    assert chat(srv, k["key"], model="main").status_code == 200
    resp = chat(srv, k["key"], model="claude")
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "route_not_allowed"
    assert chat(srv, k["key"], model="gpt").status_code == 200
    resp = chat(srv, k["key"], model="gpt")
    assert resp.status_code == 429 and "retry-after" in resp.headers


def test_usage_records_costs_savings_and_fallback_attribution(
    acct_server: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    srv = acct_server
    fakes["openai"].inject("gpt-4o", status=503)
    resp = chat(srv, MASTER, model="main")
    assert resp.status_code == 200 and resp.headers["x-modelyard-model"] == "gpt-mini"
    usage = resp.json()["usage"]
    db = srv.workdir / "modelyard.db"
    assert wait_for(lambda: _count(db, "usage_requests") == 1)
    row = _rows(
        db,
        "SELECT model, provider, tokens_in, tokens_out, cost_usd, baseline_cost_usd, fallback, attempts, "
        "success FROM usage_requests",
    )[0]
    expected = (usage["prompt_tokens"] * 10 + usage["completion_tokens"] * 20) / 1e6
    baseline = (usage["prompt_tokens"] * 1000 + usage["completion_tokens"] * 2000) / 1e6
    assert row[:4] == ("gpt-mini", "openai", usage["prompt_tokens"], usage["completion_tokens"])
    assert row[4] == pytest.approx(expected) and row[5] == pytest.approx(baseline)
    assert row[6:] == (1, 3, 1)
    attempts = _rows(db, "SELECT attempt_number, model, success, cost_usd, status FROM usage_attempts ORDER BY 1")
    assert [(a[1], a[2]) for a in attempts] == [("gpt", 0), ("gpt", 0), ("gpt-mini", 1)]
    assert attempts[0][3] == 0 and attempts[0][4] == 503  # failed attempts are recorded, never billed
    summary = stats(srv, MASTER)["summary"]
    assert summary["requests"] == {"total": 1, "success": 1, "failures": 0, "fallbacks": 1}
    assert summary["costs"]["savings"] == pytest.approx(baseline - expected)
    assert summary["costs"]["savingsPercent"] == pytest.approx(100 * (baseline - expected) / baseline, rel=1e-3)


def test_failed_request_is_recorded(acct_server: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    srv = acct_server
    fakes["openai"].inject("*", status=500)
    assert chat(srv, MASTER, model="gpt").status_code == 502
    db = srv.workdir / "modelyard.db"
    assert wait_for(lambda: _count(db, "usage_requests") == 1)
    assert _rows(db, "SELECT success, status, cost_usd FROM usage_requests") == [(0, 502, 0.0)]
    assert _count(db, "usage_attempts") == 2


def test_budget_exact_under_concurrency(fakes: dict[str, FakeServer], tmp_path: Path) -> None:
    limit = 0.05
    cfg = priced_config(
        fakes,
        budgets=[
            {"name": "tiny", "scope": "route", "target": "gpt", "limit_usd": limit, "period": "day", "alert_at": [0.5]}
        ],
    )
    srv = ServerProcess(cfg, tmp_path)
    try:

        async def run() -> list[int]:
            async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {MASTER}"}) as client:

                async def one() -> int:
                    r = await client.post(
                        f"{srv.url}/v1/chat/completions", json={"model": "gpt", "messages": MSG, "max_tokens": 5}
                    )
                    return r.status_code

                return list(await asyncio.gather(*(one() for _ in range(200))))

        codes = asyncio.run(run())
        assert set(codes) <= {200, 429} and codes.count(429) > 0 and codes.count(200) > 0
        budget = next(b for b in admin(srv, "GET", "/budgets").json()["data"] if b["budget"] == "tiny")
        one_reservation = ((3 + 4 + 3) * 1000 + 5 * 2000) / 1e6 * 2  # generous upper bound of one worst case
        assert budget["used_usd"] <= limit + one_reservation
        assert budget["reserved_usd"] == pytest.approx(0, abs=1e-9)
        refused = chat(srv, MASTER, model="gpt", max_tokens=5)
        err = refused.json()["error"]
        assert refused.status_code == 429 and "tiny" in err["message"] and "Resets" in err["message"]
        assert wait_for(lambda: "budget tiny" in srv.log())  # the alert was logged
        events = admin(srv, "GET", "/budget-events").json()["data"]
        assert any(e["budget"] == "tiny" and e["kind"] == "alert" for e in events)
    finally:
        srv.stop()


def test_max_cost_and_estimate(acct_server: ServerProcess) -> None:
    srv = acct_server
    resp = chat(srv, MASTER, model="main", max_tokens=100, modelyard={"max_cost_usd": 0.0000001})
    err = resp.json()["error"]
    assert resp.status_code == 402 and "cheapest estimate" in err["message"]
    resp = chat(srv, MASTER, model="main", max_tokens=100, modelyard={"max_cost_usd": 0.01})
    assert resp.status_code == 200 and resp.headers["x-modelyard-model"] == "gpt-mini"  # gpt does not fit
    est = httpx.post(
        f"{srv.url}/v1/estimate",
        json={"model": "main", "messages": MSG, "max_tokens": 100},
        headers={"Authorization": f"Bearer {MASTER}"},
    ).json()
    assert est["input_tokens"] > 0
    by_model = {c["model"]: c for c in est["candidates"]}
    assert by_model["gpt"]["worst_case_cost_usd"] > by_model["gpt-mini"]["worst_case_cost_usd"] > 0
    assert by_model["gpt"]["fits_budgets"] is True


def test_response_cache(acct_server: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    srv = acct_server
    first = chat(srv, MASTER, model="cached")
    assert first.headers["x-modelyard-cache"] == "miss"
    second = chat(srv, MASTER, model="cached")
    assert second.headers["x-modelyard-cache"] == "hit"
    assert second.json()["choices"] == first.json()["choices"]
    assert fakes["openai"].attempts("gpt-4o-mini") == 1
    streamed = httpx.post(
        f"{srv.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER}"},
        json={"model": "cached", "messages": MSG, "stream": True},
        timeout=10,
    )
    assert streamed.headers["x-modelyard-cache"] == "hit" and streamed.text.rstrip().endswith("data: [DONE]")
    pieces = [
        c["delta"].get("content") or ""
        for line in streamed.text.splitlines()
        if line.startswith("data: {")
        for c in orjson.loads(line[6:])["choices"]
    ]
    assert "".join(pieces) == first.json()["choices"][0]["message"]["content"]
    bypass = chat(srv, MASTER, model="cached", modelyard={"cache": False})
    assert bypass.headers["x-modelyard-cache"] == "bypass"
    assert fakes["openai"].attempts("gpt-4o-mini") == 2
    db = srv.workdir / "modelyard.db"
    assert wait_for(lambda: _count(db, "usage_requests") == 4)
    hits = _rows(db, "SELECT cache_hit, cost_usd FROM usage_requests WHERE cache_hit = 1")
    assert len(hits) == 2 and all(h[1] == 0 for h in hits)  # hits cost nothing and are recorded as hits
    other = [{"role": "user", "content": "a streamed question"}]
    streamed = httpx.post(
        f"{srv.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER}"},
        json={"model": "cached", "messages": other, "stream": True},
        timeout=10,
    )
    assert streamed.headers["x-modelyard-cache"] == "miss" and streamed.text.rstrip().endswith("[DONE]")
    again = httpx.post(
        f"{srv.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {MASTER}"},
        json={"model": "cached", "messages": other},
        timeout=10,
    )
    assert again.headers["x-modelyard-cache"] == "hit"  # a finished stream is cached too
    assert again.json()["choices"][0]["message"]["content"] == "gpt-4o-mini says: a streamed question"


def test_metrics(acct_server: ServerProcess) -> None:
    srv = acct_server
    assert chat(srv, MASTER).status_code == 200
    text = httpx.get(f"{srv.url}/metrics", headers={"Authorization": f"Bearer {MASTER}"}).text
    for name in (
        "modelyard_requests_total",
        "modelyard_request_latency_seconds_bucket",
        "modelyard_tokens_total",
        "modelyard_cost_usd_total",
        "modelyard_breaker_state",
        "modelyard_queue_length",
        "modelyard_usage_backlog",
        "modelyard_overhead_seconds_bucket",
    ):
        assert name in text, name


def test_credentials_encrypted_and_never_leaked(acct_server: ServerProcess) -> None:
    srv = acct_server
    resp = admin(srv, "POST", "/credentials", json={"provider": "openai", "name": "prod", "secret": PLANTED})
    assert resp.status_code == 201, resp.text
    assert PLANTED not in resp.text and resp.json()["masked"].endswith("4242")
    listed = admin(srv, "GET", "/credentials")
    assert PLANTED not in listed.text
    assert chat(srv, MASTER).status_code == 200
    srv.stop()
    for path in srv.workdir.iterdir():
        if path.is_file():
            assert PLANTED.encode() not in path.read_bytes(), path  # not in the database file, WAL or logs
    assert MASTER not in srv.log()
    assert "sk-test-openai-secret" not in srv.log()


def test_sigterm_flushes_every_record(fakes: dict[str, FakeServer], tmp_path: Path) -> None:
    cfg = priced_config(fakes)
    cfg["usage"] = {"flush_interval_ms": 60000, "batch_size": 100000}  # nothing would flush on its own
    srv = ServerProcess(cfg, tmp_path)
    n = 40
    for _ in range(n):
        assert chat(srv, MASTER).status_code == 200
    code = srv.stop()  # SIGTERM
    assert code in (0, -signal.SIGTERM)
    assert _count(tmp_path / "modelyard.db", "usage_requests") == n  # zero lost


def test_non_loopback_bind_needs_a_master_key(tmp_path: Path) -> None:
    res = subprocess.run(
        [str(BIN / "modelyard"), "serve", "--host", "0.0.0.0", "--port", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )
    assert res.returncode == 2 and "MODELYARD_MASTER_KEY" in res.stdout + res.stderr


def _count(db: Path, table: str) -> int:
    try:
        return int(_rows(db, f"SELECT count(*) FROM {table}")[0][0])
    except sqlite3.Error:
        return -1


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db, timeout=5)
    try:
        return list(con.execute(sql).fetchall())
    finally:
        con.close()
