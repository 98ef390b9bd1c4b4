"""Budgets survive restarts (issue #13, part 1): with ``state: memory`` every budget counter starts
from the recorded spend of its period, once, never added on top of a counter that exists.

Before: after a restart a ``total`` budget started again at 0 (16 of 25 further requests passed
and spend reached 170 % of the limit).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.e2e.test_shared_state import redis_url  # noqa: F401 - the fixture
from tests.helpers import ServerProcess, wait_for

MASTER = "master-key-rebuild-0123456789"
AUTH = {"Authorization": f"Bearer {MASTER}"}


def config(fakes: dict[str, FakeServer], limit: float) -> dict[str, Any]:
    cfg = gateway_config(fakes, master_key=MASTER)
    cfg["models"]["gpt"].update(input_cost_per_mtok=1000.0, output_cost_per_mtok=2000.0)
    cfg["routes"]["paid"] = {"models": ["gpt"]}
    cfg["budgets"] = [
        {"name": "lifetime", "scope": "route", "target": "paid", "limit_usd": limit, "period": "total"},
        {"name": "daily", "scope": "global", "limit_usd": 1000, "period": "day"},
    ]
    cfg["usage"] = {"flush_interval_ms": 50}
    return cfg


def used(srv: ServerProcess) -> dict[str, float]:
    rows = httpx.get(srv.url + "/admin/budgets", headers=AUTH, timeout=10).json()["data"]
    return {r["budget"]: float(r["used_usd"]) for r in rows}


def chat(srv: ServerProcess) -> httpx.Response:
    body = {"model": "paid", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 20}
    return httpx.post(srv.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30)


def test_spend_survives_restarts_and_is_never_counted_twice(fakes: dict[str, FakeServer], tmp_path: Path) -> None:
    cfg = config(fakes, limit=1.0)
    srv = ServerProcess(cfg, tmp_path)
    try:
        for _ in range(3):
            assert chat(srv).status_code == 200
        assert wait_for(lambda: used(srv).get("lifetime", 0) > 0)
        spent = used(srv)
    finally:
        srv.stop()  # flushes the usage records
    assert spent["lifetime"] > 0 and spent["daily"] == pytest.approx(spent["lifetime"])
    for _ in range(2):  # restart twice: the figures are the recorded ones, not 0 and not doubled
        srv = ServerProcess(cfg, tmp_path)
        try:
            again = used(srv)
        finally:
            srv.stop()
        assert again["lifetime"] == pytest.approx(spent["lifetime"], rel=1e-6)
        assert again["daily"] == pytest.approx(spent["daily"], rel=1e-6)


def test_a_total_budget_spent_before_a_restart_still_refuses(fakes: dict[str, FakeServer], tmp_path: Path) -> None:
    srv = ServerProcess(config(fakes, limit=1.0), tmp_path)
    try:
        for _ in range(12):
            assert chat(srv).status_code == 200
        assert wait_for(lambda: used(srv).get("lifetime", 0) > 0)
        spent = used(srv)["lifetime"]
    finally:
        srv.stop()
    # room for about one more request: refused only if the counter remembers the twelve before the
    # restart (a fresh counter admits it: before, a restart reset the counter to 0)
    srv = ServerProcess(config(fakes, limit=spent * (1 + 1 / 12)), tmp_path)
    try:
        resp = chat(srv)
        assert resp.status_code == 429, (spent, resp.text)
        assert resp.json()["error"]["code"] == "budget_exceeded"
    finally:
        srv.stop()


def test_counters_redis_lost_are_rebuilt_and_live_ones_are_not_doubled(
    fakes: dict[str, FakeServer],
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the imported fixture
) -> None:
    cfg = config(fakes, limit=1.0)
    name = f"lifetime-{secrets.token_hex(4)}"  # this run's own keys in the shared Redis
    cfg["budgets"][0]["name"] = name
    cfg["state"] = redis_url
    srv = ServerProcess(cfg, tmp_path)
    try:
        for _ in range(2):
            assert chat(srv).status_code == 200
        assert wait_for(lambda: used(srv).get(name, 0) > 0)
        spent = used(srv)[name]
    finally:
        srv.stop()
    client = redis.Redis.from_url(redis_url)
    try:
        srv = ServerProcess(cfg, tmp_path)  # Redis still has the counter: it is not added to
        try:
            assert used(srv)[name] == pytest.approx(spent, rel=1e-6)
        finally:
            srv.stop()
        lost = list(client.scan_iter(match=f"*{name}*"))
        assert lost
        client.delete(*lost)  # Redis lost them (a flush, an eviction, a new instance)
        srv = ServerProcess(cfg, tmp_path)
        try:
            assert used(srv)[name] == pytest.approx(spent, rel=1e-6)
        finally:
            srv.stop()
    finally:
        client.close()
