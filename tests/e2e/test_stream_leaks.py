"""D1 of the December probe: a stream whose model name could not go into a response header.

Before, such a stream started the upstream call, reserved its budget and pinned the runtime, then
failed with a 500 while building the headers, before anything owned the cleanup: two of them
took a provider with a pool of two out for minutes, and five froze an organisation's budget.
Now the name is refused before anything starts, and a started stream's cleanup runs however its
answer fails to begin (``ServedStream.aclose``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modelyard.testing import FakeServer
from tests.e2e.conftest import base_url
from tests.helpers import ServerProcess

MASTER = "master-key-for-tests-0123456789"
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
def tiny(fakes: dict[str, FakeServer], tmp_path: Path) -> Iterator[ServerProcess]:
    cfg = {
        "server": {"master_key": MASTER},
        "providers": {"tiny": {"kind": "openai", "base_url": base_url(fakes["openai"]), "max_connections": 2}},
        "models": {"tinym": {"provider": "tiny", "model": "gpt-4o", "timeout_s": 5}},
        "budgets": [{"name": "daily", "scope": "global", "limit_usd": 5.0, "period": "day"}],
        "usage": {"flush_interval_ms": 50},
    }
    srv = ServerProcess(cfg, tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


def test_unencodable_stream_names_leak_nothing(tiny: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    auth = {"Authorization": f"Bearer {MASTER}"}
    with httpx.Client(base_url=tiny.url, headers=auth, timeout=10) as client:
        for name in ("tiny:slow模型", "tiny:模型/gpt-4o", "tiny:x\r\nX-Injected: 1"):
            for _ in range(3):
                r = client.post(
                    "/v1/chat/completions",
                    json={"model": name, "stream": True, "max_tokens": 100000, "messages": MSG},
                )
                assert r.status_code == 400, r.text
                assert r.json()["error"]["param"] == "model"
        assert fakes["openai"].attempts() == 0
        # the pool of two is free, nothing is reserved, and the runtime is not pinned
        r = client.post("/v1/chat/completions", json={"model": "tinym", "messages": MSG})
        assert r.status_code == 200, r.text
        budgets = client.get("/admin/budgets").json()["data"]
        daily = next(b for b in budgets if b["budget"] == "daily")
        assert daily["reserved_usd"] == 0
        status = client.get("/v1/status").json()
        assert status["models"]["tinym"]["in_flight"] == 0
