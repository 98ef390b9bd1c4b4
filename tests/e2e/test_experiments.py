"""A/B and shadow traffic (#17 point 3) on a real gateway in front of the fakes: a canary share,
sticky per user or session, never to a model the request could not use; a shadow mirror whose
answer the client never sees, checked by the route's validators and judge, recorded with
``source: shadow`` and counted against shadow budgets only."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.e2e.front_ends import usage_rows
from tests.helpers import ServerProcess, wait_for

MASTER = "master-key-experiments-0123456789"
AUTH = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture(scope="module")
def srv(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cfg = gateway_config(fakes, master_key=MASTER)
    cfg["models"]["judge"] = {
        "provider": "openai",
        "model": "judge-model",
        "input_cost_per_mtok": 1,
        "output_cost_per_mtok": 1,
    }
    cfg["routes"]["ab"] = {"models": ["gpt-mini"], "canary": {"model": "gpt", "percent": 30}}
    cfg["routes"]["ab-local"] = {"models": ["llama"], "canary": {"model": "gpt", "percent": 100}}
    cfg["routes"]["sh"] = {
        "models": ["gpt-mini"],
        "validators": ["regex:^gpt-4o-mini says"],
        "shadow": {"model": "gpt", "percent": 100, "judge": {"model": "judge", "rubric": "Good?"}},
    }
    cfg["routes"]["sh2"] = {
        "models": ["gpt-mini"],
        "shadow": {"model": "claude", "percent": 100, "judge": {"model": "judge", "rubric": "Good?"}},
    }
    cfg["budgets"] = [
        {"name": "everything", "scope": "global", "limit_usd": 1000},
        {"name": "mirrors", "scope": "shadow", "limit_usd": 1000},
    ]
    proc = ServerProcess(cfg, tmp_path_factory.mktemp("experiments"))
    try:
        yield proc
    finally:
        proc.stop()


def chat(
    srv: ServerProcess, route: str, user: str | None = None, headers: dict[str, str] | None = None, **extra: Any
) -> httpx.Response:
    body: dict[str, Any] = {"model": route, "messages": [{"role": "user", "content": "hello"}], **extra}
    if user is not None:
        body["user"] = user
    return httpx.post(srv.url + "/v1/chat/completions", json=body, headers={**AUTH, **(headers or {})}, timeout=30)


def test_a_canary_gets_its_share_sticky_per_user(srv: ServerProcess) -> None:
    served = {u: chat(srv, "ab", user=f"user-{u}").headers["x-modelyard-model"] for u in range(200)}
    canary = sum(1 for m in served.values() if m == "gpt")
    assert 40 <= canary <= 80, canary  # 30 % of 200, give or take the hash
    for u in list(served)[:20]:  # the same user stays on the same side
        assert chat(srv, "ab", user=f"user-{u}").headers["x-modelyard-model"] == served[u]
    session = {"X-Modelyard-Session": "s-1"}
    first = chat(srv, "ab", headers=session).headers["x-modelyard-model"]
    assert all(chat(srv, "ab", headers=session).headers["x-modelyard-model"] == first for _ in range(5))
    rows = usage_rows(srv.workdir / "modelyard.db", "ab")
    assert wait_for(lambda: len(usage_rows(srv.workdir / "modelyard.db", "ab")) >= 226)
    rows = usage_rows(srv.workdir / "modelyard.db", "ab")
    assert {r["model"] for r in rows if r["source"] == "canary"} == {"gpt"}
    assert {r["model"] for r in rows if r["source"] == "production"} == {"gpt-mini"}


def test_a_canary_never_uses_a_model_the_request_could_not(srv: ServerProcess) -> None:
    local = chat(srv, "ab-local", modelyard={"local_only": True})
    assert local.status_code == 200 and local.headers["x-modelyard-model"] == "llama"
    assert chat(srv, "ab-local").headers["x-modelyard-model"] == "gpt"  # 100 %, when it may
    if httpx.get(srv.url + "/admin/orgs/acme", headers=AUTH).status_code == 404:
        httpx.post(srv.url + "/admin/orgs", json={"name": "Acme", "id": "acme"}, headers=AUTH)
    key = httpx.post(
        srv.url + "/admin/keys", json={"org_id": "acme", "name": "k", "allowed_models": ["llama"]}, headers=AUTH
    ).json()["key"]
    limited = httpx.post(
        srv.url + "/v1/chat/completions",
        json={"model": "ab-local", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    assert limited.status_code == 200 and limited.headers["x-modelyard-model"] == "llama"


def test_a_shadow_is_mirrored_checked_and_recorded_apart(srv: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].script("judge-model", "0.7")
    resp = chat(srv, "sh")
    assert resp.status_code == 200 and resp.headers["x-modelyard-model"] == "gpt-mini"
    assert resp.json()["choices"][0]["message"]["content"].startswith("gpt-4o-mini says")  # the primary's answer
    db = srv.workdir / "modelyard.db"
    assert wait_for(lambda: any(r["source"] == "shadow" for r in usage_rows(db, "sh")), timeout=15)
    shadow = next(r for r in usage_rows(db, "sh") if r["source"] == "shadow")
    # the shadow answered "gpt-4o says ...": the route's validator rejects it, so the record says so
    assert shadow["model"] == "gpt" and shadow["success"] == 0
    with sqlite3.connect(db) as conn:
        (kind,) = conn.execute(
            "SELECT error_class FROM usage_attempts WHERE request_id = ?", (shadow["request_id"],)
        ).fetchone()
    assert kind == "validation"
    assert fakes["openai"].attempts("gpt-4o") == 1
    status = httpx.get(srv.url + "/v1/status", headers=AUTH).json()
    assert status["shadow"]["sh"]["mirrored"] >= 1


def test_a_shadows_judge_scores_and_its_spend_counts_only_against_shadow_budgets(
    srv: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    fakes["openai"].script("judge-model", "0.7")
    db = srv.workdir / "modelyard.db"
    before = len([r for r in usage_rows(db, "sh2") if r["source"] == "shadow"])
    assert chat(srv, "sh2").status_code == 200
    assert wait_for(lambda: len([r for r in usage_rows(db, "sh2") if r["source"] == "shadow"]) > before, timeout=15)
    budgets = {b["budget"]: b for b in httpx.get(srv.url + "/v1/budgets", headers=AUTH).json()["data"]}
    rows = [r for route in ("ab", "ab-local", "sh", "sh2") for r in usage_rows(db, route)]
    shadow_usd = sum(r["cost_usd"] for r in rows if r["source"] == "shadow")
    other_usd = sum(r["cost_usd"] for r in rows if r["source"] != "shadow")
    assert shadow_usd > 0
    assert budgets["mirrors"]["used_usd"] == pytest.approx(shadow_usd, rel=1e-6)
    assert budgets["everything"]["used_usd"] == pytest.approx(other_usd, rel=1e-6)


def test_a_judged_shadow_records_its_score(srv: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].script("judge-model", "0.7")
    db = srv.workdir / "modelyard.db"
    n = len([r for r in usage_rows(db, "sh2") if r["judge_score"] is not None])
    assert chat(srv, "sh2").status_code == 200
    assert wait_for(lambda: len([r for r in usage_rows(db, "sh2") if r["judge_score"] is not None]) > n, timeout=15)
    scored = [r for r in usage_rows(db, "sh2") if r["judge_score"] is not None]
    assert all(r["source"] == "shadow" and r["model"] == "claude" for r in scored)
    assert scored[-1]["judge_score"] == pytest.approx(0.7) and scored[-1]["judge_cost_usd"] > 0
    assert scored[-1]["cost_usd"] > scored[-1]["judge_cost_usd"]
