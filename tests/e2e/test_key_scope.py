"""What a virtual key may reach (issue #11, D4 and D6), through the real server.

- ``allowed_models`` applies to every model that could answer: pool and fallbacks alike, so a
  key limited to one model is never answered by another through the route's failover (D4);
- embeddings take the key's rpm/tpm and reserve their worst-case cost before the upstream is
  called, so one request cannot overspend a budget (D6).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.testing import FakeServer
from tests.e2e.test_accounting import MASTER, chat, new_key, priced_config
from tests.helpers import ServerProcess


@pytest.fixture
def srv(fakes: dict[str, FakeServer], tmp_path: Path) -> Iterator[ServerProcess]:
    cfg = priced_config(fakes)
    cfg["models"]["emb"].update(input_cost_per_mtok=1.0)
    server = ServerProcess(cfg, tmp_path)
    try:
        yield server
    finally:
        server.stop()


def embed(srv: ServerProcess, key: str, text: str = "hello") -> httpx.Response:
    return httpx.post(
        f"{srv.url}/v1/embeddings",
        json={"model": "emb", "input": text},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def upstream_models(fake: FakeServer) -> list[str]:
    return [str(r["model"]) for r in fake.requests]


def test_allowed_models_hold_through_fallbacks(srv: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    openai = fakes["openai"]
    only_gpt = new_key(srv, "acme", allowed_models=["gpt"])["key"]
    openai.inject("gpt-4o", status=503)
    # the master key fails over to gpt-mini: the route's fallback works
    resp = chat(srv, MASTER, model="main")
    assert resp.status_code == 200 and resp.headers["x-modelyard-model"] == "gpt-mini"
    openai.reset()
    openai.inject("gpt-4o", status=503)
    # the key limited to gpt is not answered by gpt-mini or claude: it gets gpt's failure
    resp = chat(srv, only_gpt, model="main")
    assert resp.status_code >= 500 and resp.json()["error"]["code"] == "all_attempts_failed", resp.text
    assert {a["model"] for a in resp.json()["error"]["attempts"]} == {"gpt"}
    assert set(upstream_models(openai)) == {"gpt-4o"}
    assert fakes["anthropic"].requests == type(fakes["anthropic"].requests)()
    # a key allowed only a fallback is served by it, as its first choice, without touching the pool
    openai.reset()
    only_mini = new_key(srv, "acme", allowed_models=["gpt-mini"])["key"]
    resp = chat(srv, only_mini, model="main")
    assert resp.status_code == 200 and resp.headers["x-modelyard-model"] == "gpt-mini"
    assert resp.headers["x-modelyard-fallback"] == "false"
    assert upstream_models(openai) == ["gpt-4o-mini"]
    # a key allowed none of the route's models is refused before anything is sent
    openai.reset()
    resp = chat(srv, new_key(srv, "acme", allowed_models=["claude-x"])["key"], model="main")
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "model_not_allowed"
    assert upstream_models(openai) == []


def test_embeddings_take_the_key_rate_limit(srv: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    key = new_key(srv, "acme", rpm=1)["key"]
    assert embed(srv, key).status_code == 200
    resp = embed(srv, key)
    assert resp.status_code == 429, resp.text
    assert resp.json()["error"]["code"] == "key_rate_limited" and "retry-after" in resp.headers
    assert len(fakes["openai"].requests) == 1


def test_embeddings_reserve_their_cost_before_the_call(srv: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    # emb costs $1 per million input tokens: 60,000 words are about $0.06, far over a $0.0001 budget
    key = new_key(srv, "acme", budget_usd=0.0001)["key"]
    resp = embed(srv, key, " ".join(["word"] * 60_000))
    assert resp.status_code == 429, resp.text
    body: dict[str, Any] = resp.json()
    assert body["error"]["code"] == "budget_exceeded"
    assert fakes["openai"].requests == type(fakes["openai"].requests)()  # refused before the upstream call
    # a small one fits and is charged
    small = embed(srv, key, "a few words")
    assert small.status_code == 200, small.text
