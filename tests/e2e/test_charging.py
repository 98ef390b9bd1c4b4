"""Budgets charge what was produced on every path (issue #13, part 1), through the real server.

Before: a client that left a stream after its first token was charged $0 (the reservation was
released as if the call had failed), so a key with a tiny budget could stream without limit. Now a
call that ends without the upstream's usage is charged the estimated input plus the output
received (marked estimated); a call whose upstream was sent the request is never charged $0; a
cache hit costs nothing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.testing import FakeServer, Fault
from tests.e2e.conftest import gateway_config
from tests.helpers import ServerProcess, wait_for

MASTER = "master-key-charging-0123456789"
AUTH = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture(scope="module")
def srv(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cfg = gateway_config(fakes, master_key=MASTER)
    cfg["models"]["gpt"].update(input_cost_per_mtok=1000.0, output_cost_per_mtok=2000.0)
    cfg["routes"]["paid"] = {"models": ["gpt"], "fallbacks": []}
    cfg["routes"]["cached"] = {"models": ["gpt"], "cache_ttl_s": 60}
    cfg["budgets"] = [{"name": "all", "scope": "global", "limit_usd": 1000, "period": "total"}]
    cfg["usage"] = {"flush_interval_ms": 50}
    proc = ServerProcess(cfg, tmp_path_factory.mktemp("charging"))
    try:
        yield proc
    finally:
        proc.stop()


def used(srv: ServerProcess) -> tuple[float, float]:
    """(used, reserved) USD of the global budget."""
    rows = httpx.get(srv.url + "/admin/budgets", headers=AUTH, timeout=10).json()["data"]
    row = next(r for r in rows if r["budget"] == "all")
    return float(row["used_usd"]), float(row["reserved_usd"])


def settled(srv: ServerProcess) -> float:
    """The used figure once nothing is reserved any more."""
    assert wait_for(lambda: used(srv)[1] == 0, timeout=10), f"a reservation is still held: {used(srv)}"
    return used(srv)[0]


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "paid", "messages": [{"role": "user", "content": text}], "max_tokens": 300, **extra}


def records(srv: ServerProcess, since: float) -> list[dict[str, Any]]:
    db = Path(srv.workdir) / "modelyard.db"
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM usage_requests WHERE route = 'paid' ORDER BY ts").fetchall()
    return [dict(r) for r in rows][int(since) :]


def count_records(srv: ServerProcess) -> int:
    db = Path(srv.workdir) / "modelyard.db"
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM usage_requests WHERE route = 'paid'").fetchone()[0])


def test_a_stream_left_after_its_first_token_is_charged(srv: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    before = settled(srv)
    n = count_records(srv)
    fakes["openai"].inject("gpt-4o", Fault(stall_after=2, stall_s=30))  # the rest of the answer never comes
    with httpx.stream(
        "POST",
        srv.url + "/v1/chat/completions",
        json=body("a long story please", stream=True),
        headers=AUTH,
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if '"content"' in line:
                break  # the client hangs up after the first token
    charged = settled(srv) - before
    assert charged > 0, "the disconnected stream was charged nothing"
    assert wait_for(lambda: count_records(srv) == n + 1, timeout=10)
    row = records(srv, n)[-1]
    assert row["cost_usd"] == pytest.approx(charged) and row["cost_estimated"] and row["tokens_in"] > 0


def test_a_request_whose_client_left_is_charged_its_input(srv: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    before = settled(srv)
    fakes["openai"].inject("gpt-4o", Fault(delay_s=3))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(srv.url + "/v1/chat/completions", json=body("x" * 400), headers=AUTH, timeout=0.5)
    charged = settled(srv) - before
    # about 100 input tokens at $1000/Mtok: the input estimate, never $0 once the request was sent
    assert 0 < charged < 0.5, charged


def test_an_upstream_error_is_not_charged(srv: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    before = settled(srv)
    fakes["openai"].inject("gpt-4o", Fault(status=400, message="bad request"))
    resp = httpx.post(srv.url + "/v1/chat/completions", json=body("x"), headers=AUTH, timeout=30)
    assert resp.status_code == 400
    assert settled(srv) == pytest.approx(before)


def test_a_finished_call_is_charged_its_usage_and_a_cache_hit_nothing(srv: ServerProcess) -> None:
    before = settled(srv)
    text = f"cache me {time.time_ns()}"
    first = httpx.post(srv.url + "/v1/chat/completions", json={**body(text), "model": "cached"}, headers=AUTH)
    assert first.status_code == 200 and first.headers["x-modelyard-cache"] == "miss"
    after_first = settled(srv)
    assert after_first > before
    hit = httpx.post(srv.url + "/v1/chat/completions", json={**body(text), "model": "cached"}, headers=AUTH)
    assert hit.headers["x-modelyard-cache"] == "hit"
    assert settled(srv) == pytest.approx(after_first)
