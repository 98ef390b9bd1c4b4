"""``/v1/stats`` breaks failures down (issue #13, part 5): by error class, by the model that failed
(a fallback is credited to the model that failed as well as the one that answered), by key."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx

from modelyard.testing import FakeServer, Fault
from tests.e2e.conftest import gateway_config
from tests.helpers import ServerProcess, wait_for

MASTER = "master-key-stats-0123456789"
AUTH = {"Authorization": f"Bearer {MASTER}"}


def stats(srv: ServerProcess, group_by: str) -> list[dict[str, Any]]:
    resp = httpx.get(srv.url + "/v1/stats", params={"group_by": group_by}, headers=AUTH, timeout=10)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["data"])


def chat(srv: ServerProcess, **opts: Any) -> httpx.Response:
    body = {"model": "main", "messages": [{"role": "user", "content": "hi"}], "modelyard": opts}
    return httpx.post(srv.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30)


def test_failures_by_model_that_failed_and_by_error_class(fakes: dict[str, FakeServer], tmp_path: Path) -> None:
    cfg = gateway_config(fakes, master_key=MASTER)
    cfg["usage"] = {"flush_interval_ms": 50}
    srv = ServerProcess(cfg, tmp_path)
    try:
        fakes["openai"].inject("gpt-4o", Fault(status=500))
        rescued = chat(srv)
        assert rescued.status_code == 200 and rescued.headers["x-modelyard-model"] == "gpt-mini"
        failed = chat(srv, fallback=False, max_attempts=1)
        assert failed.status_code == 502
        assert wait_for(lambda: sum(r["requests"] for r in stats(srv, "model")) == 2)

        by_failed = {r["key"]: r for r in stats(srv, "failed_model")}
        gpt = by_failed["gpt"]
        assert gpt["requests"] == 2 and gpt["rescued"] == 1 and gpt["failed_attempts"] >= 2
        assert set(gpt["error_classes"]) == {"status_500"}
        assert "gpt-mini" not in by_failed

        by_model = {r["key"]: r for r in stats(srv, "model")}
        assert by_model["gpt-mini"]["successes"] == 1  # the answer is credited to the model that gave it

        by_class = {r["key"]: r["requests"] for r in stats(srv, "error_class")}
        assert by_class[None] == 1 and sum(by_class.values()) == 2
        assert any(k is not None for k in by_class)
    finally:
        srv.stop()
    # each failed attempt keeps a short error text (scrubbed like every message; at most 300 characters)
    with sqlite3.connect(tmp_path / "modelyard.db") as conn:
        messages = [m for (m,) in conn.execute("SELECT error_message FROM usage_attempts WHERE success = 0")]
        sources = {s for (s,) in conn.execute("SELECT source FROM usage_requests")}
    assert messages and all(m and "500" in m and len(m) <= 300 for m in messages)
    assert sources == {"production"}
