"""``POST /admin/comparisons`` and friends on a real gateway (#17 point 1): a run in the background,
its progress as server-sent events, its stored result and HTML report, cancel, organisation
scoping, and clear 400s for bad prompt sets, unknown models, code sent as a grader and a cost cap
under the estimate."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.helpers import ServerProcess, wait_for

MASTER = "master-key-compare-0123456789"
AUTH = {"Authorization": f"Bearer {MASTER}"}
PROMPTS = [
    {"id": "p1", "prompt": "What is two plus two?", "expected": "four"},
    {"id": "p2", "prompt": "Capital of France?", "expected": "Paris"},
]


@pytest.fixture(scope="module")
def srv(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cfg = gateway_config(fakes, master_key=MASTER)
    cfg["compare"] = {"graders": {"digits": "tests.compare.graders_fixture:has_digit"}}
    proc = ServerProcess(
        cfg, tmp_path_factory.mktemp("compare"), env={"PYTHONPATH": str(__import__("tests.helpers").helpers.ROOT)}
    )
    try:
        yield proc
    finally:
        proc.stop()


def start(srv: ServerProcess, auth: dict[str, str] = AUTH, **body: Any) -> httpx.Response:
    payload: dict[str, Any] = {"models": ["gpt-mini", "gpt"], "prompts": PROMPTS, "graders": ["contains"], **body}
    return httpx.post(srv.url + "/admin/comparisons", json=payload, headers=auth, timeout=30)


def finished(srv: ServerProcess, run_id: str, auth: dict[str, str] = AUTH) -> dict[str, Any]:
    state: dict[str, Any] = {}

    def done() -> bool:
        state.update(httpx.get(f"{srv.url}/admin/comparisons/{run_id}", headers=auth, timeout=10).json())
        return state["status"] not in ("queued", "running")

    assert wait_for(done, timeout=60), state
    return state


def test_a_run_starts_streams_its_progress_and_stores_its_result(
    srv: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    fakes["openai"].script("gpt-4o", "four, and Paris")
    resp = start(srv, iterations=2, name="nightly")
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["calls"] == 8 and body["estimate_usd"] > 0 and body["events"].endswith("/events")
    events: list[dict[str, Any]] = []
    with httpx.stream("GET", srv.url + body["events"], headers=AUTH, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(orjson.loads(line[6:]))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and kinds.count("progress") == 8
    state = finished(srv, body["id"])
    result = state["result"]
    assert state["status"] == "done" and state["name"] == "nightly" and state["spent_usd"] > 0
    assert result["figures"]["gpt"]["accuracy"] == 1.0  # scripted "four, and Paris" contains both answers
    assert result["figures"]["gpt-mini"]["accuracy"] == 0.0  # "gpt-4o-mini says: ..." contains neither
    assert result["summary"]["best_for_accuracy"] == "gpt"
    listed = httpx.get(srv.url + "/admin/comparisons", headers=AUTH).json()["data"]
    assert listed[0]["id"] == body["id"] and listed[0]["models"] == ["gpt-mini", "gpt"] and listed[0]["prompts"] == 2
    page = httpx.get(f"{srv.url}/admin/comparisons/{body['id']}/report", headers=AUTH)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "nightly" in page.text and "<script" not in page.text

    # the calls are usage records with source comparison: production figures leave them out
    def requests(source: str) -> int:
        got = httpx.get(srv.url + "/v1/stats", params={"source": source}, headers=AUTH)
        assert got.status_code == 200, got.text
        return int((got.json()["total"] or {}).get("requests") or 0)

    assert wait_for(lambda: requests("comparison") >= 8)
    assert requests("production") == 0
    bad = httpx.get(srv.url + "/v1/stats", params={"source": "marketing"}, headers=AUTH)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "source"


def test_compare_with_a_routes_current_model(srv: ServerProcess) -> None:
    resp = start(srv, models=["gpt-mini"], route="main")
    assert resp.status_code == 202, resp.text
    result = finished(srv, resp.json()["id"])["result"]
    assert result["models"] == ["gpt", "gpt-mini"] and result["current"] == "gpt" and result["route"] == "main"


def test_a_configured_python_grader_by_name(srv: ServerProcess) -> None:
    resp = start(srv, graders=["python:digits"])
    assert resp.status_code == 202, resp.text
    assert finished(srv, resp.json()["id"])["result"]["graded"] is True


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"prompts": '{"prompt": "a"}\n{oops\n'}, 400, "line 2: not valid JSON"),
        ({"prompts": [{"prompt": "a"}, {"text": "b"}]}, 400, "line 2: unknown field(s) text"),
        ({"models": ["gpt", "nope"]}, 400, "unknown model or route 'nope'"),
        ({"graders": ["python:os:system"]}, 400, "never code"),
        ({"graders": ["telepathy"]}, 400, "graders"),
        ({"max_cost_usd": 0.000000001}, 400, "expected to cost"),
        ({"iterations": 0}, 400, "iterations"),
        ({"models": [f"m{i}" for i in range(9)]}, 400, "models"),
        ({"route": "nope"}, 404, "unknown route 'nope'"),
    ],
)
def test_bad_input_is_a_clear_4xx(srv: ServerProcess, body: dict[str, Any], status: int, needle: str) -> None:
    resp = start(srv, **body)
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["error"]["message"]


def test_a_run_can_be_cancelled_and_keeps_what_it_spent(srv: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].profile("gpt-4o", ttft_s=(0.4, 0.5), tokens_per_s=100)
    resp = start(srv, iterations=20, concurrency=1, models=["gpt"])
    run_id = resp.json()["id"]
    time.sleep(1.0)
    cancel = httpx.post(f"{srv.url}/admin/comparisons/{run_id}/cancel", headers=AUTH)
    assert cancel.status_code == 200 and cancel.json()["cancelled"] is True
    state = finished(srv, run_id)
    assert state["status"] == "cancelled" and 0 < state["result"]["calls"]["done"] < 40


def test_an_org_admin_sees_its_own_runs_only(srv: ServerProcess) -> None:
    if httpx.get(srv.url + "/admin/orgs/acme", headers=AUTH).status_code == 404:
        httpx.post(srv.url + "/admin/orgs", json={"name": "Acme", "id": "acme"}, headers=AUTH)
    key = httpx.post(
        srv.url + "/admin/keys", json={"org_id": "acme", "name": "admin", "role": "org_admin"}, headers=AUTH
    ).json()["key"]
    org = {"Authorization": f"Bearer {key}"}
    mine = start(srv, auth=org)
    assert mine.status_code == 202, mine.text
    finished(srv, mine.json()["id"], org)
    ids = [r["id"] for r in httpx.get(srv.url + "/admin/comparisons", headers=org).json()["data"]]
    assert ids == [mine.json()["id"]]
    master_run = httpx.get(srv.url + "/admin/comparisons", headers=AUTH).json()["data"][-1]["id"]
    assert httpx.get(f"{srv.url}/admin/comparisons/{master_run}", headers=org).status_code == 404
    app_key = httpx.post(srv.url + "/admin/keys", json={"org_id": "acme", "name": "app"}, headers=AUTH).json()["key"]
    assert start(srv, auth={"Authorization": f"Bearer {app_key}"}).status_code == 403


def test_recommendations_over_the_api_and_the_cli(srv: ServerProcess) -> None:
    resp = httpx.get(srv.url + "/admin/recommendations", params={"route": "main", "days": 1}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    (main,) = resp.json()["data"]
    assert main["route"] == "main" and main["current"] == "gpt"
    assert main["status"] == "not_enough_data" and "200 needed" in main["reason"]
    assert httpx.get(srv.url + "/admin/recommendations", params={"route": "nope"}, headers=AUTH).status_code == 404
    import subprocess

    from tests.helpers import BIN

    done = subprocess.run(
        [str(BIN / "modelyard"), "recommend", "--url", srv.url, "--route", "main", "--apply"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**__import__("os").environ, "MODELYARD_MASTER_KEY": MASTER},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "not_enough_data" in done.stdout and "nothing to apply" in done.stderr
