"""The management plane over HTTP: a real ``modelyard serve`` in front of the fake providers.

Switching a route's model, deploys with probes, rollback, optimistic concurrency, in-flight
requests during a switch, secrets kept out of revisions, the file-vs-API rule, the audit log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from modelyard.testing import FakeServer
from tests.e2e.conftest import base_url, gateway_config
from tests.helpers import BIN, ServerProcess

MASTER = "sk-master-management-test"
H = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture
def gateway(fakes: dict[str, FakeServer], tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(gateway_config(fakes), tmp_path, env={"MODELYARD_MASTER_KEY": MASTER})
    try:
        yield proc
    finally:
        proc.stop()


def admin(gw: ServerProcess, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {**H, **kw.pop("headers", {})}
    return httpx.request(method, f"{gw.url}/admin{path}", headers=headers, timeout=30, **kw)


def active(gw: ServerProcess) -> int:
    r = admin(gw, "GET", "/config")
    assert r.status_code == 200, r.text
    return int(r.headers["etag"].strip('"'))


def chat(gw: ServerProcess, model: str = "main", **kw: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=H, timeout=30, **kw)


def served_by(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    return r.headers["x-modelyard-model"]


def test_switch_route_next_request_uses_new_model(gateway: ServerProcess) -> None:
    assert served_by(chat(gateway)) == "gpt"
    base = active(gateway)
    t0 = time.perf_counter()
    r = admin(gateway, "POST", "/routes/main/switch", json={"model": "claude"}, headers={"If-Match": f'"{base}"'})
    assert r.status_code == 200, r.text
    first = chat(gateway)
    elapsed = time.perf_counter() - t0
    assert served_by(first) == "claude"
    print(f"\nswitch to first answer from the new model: {elapsed * 1000:.0f} ms")
    body = r.json()
    assert body["changed"] and body["revision"]["parent_id"] == base and body["revision"]["source"] == "api"
    assert "-  - gpt" in body["diff"] or "- gpt" in body["diff"]
    route = admin(gateway, "GET", "/routes/main").json()
    assert route["primary"] == ["claude"] and route["fallbacks"][0] == "gpt"  # the old model became a fallback
    ready = httpx.get(f"{gateway.url}/ready").json()
    assert ready["config_revision"] == body["revision"]["id"]


def test_write_without_base_is_428_and_stale_base_is_409(gateway: ServerProcess) -> None:
    r = admin(gateway, "POST", "/routes/main/switch", json={"model": "claude"})
    assert r.status_code == 428 and r.json()["error"]["param"] == "If-Match"
    base = active(gateway)
    assert (
        admin(gateway, "POST", "/routes/main/switch", json={"model": "claude", "base_revision": base}).status_code
        == 200
    )
    stale = admin(gateway, "POST", "/routes/main/switch", json={"model": "gem", "base_revision": base})
    assert stale.status_code == 409
    assert stale.json()["error"]["code"] == "revision_conflict"
    assert str(active(gateway)) in stale.json()["error"]["message"]
    assert served_by(chat(gateway)) == "claude"


def test_two_concurrent_edits_one_wins_no_lost_update(gateway: ServerProcess) -> None:
    base = active(gateway)
    results: dict[str, httpx.Response] = {}

    def edit(name: str, model: str) -> None:
        results[name] = admin(
            gateway, "PATCH", f"/routes/{name}", json={"config": {"models": [model]}}, headers={"If-Match": str(base)}
        )

    admin_routes = {"config": {"models": ["gem"]}, "base_revision": base}
    created = admin(gateway, "POST", "/routes", json={"name": "second", **admin_routes})
    assert created.status_code == 201, created.text
    base = active(gateway)
    threads = [threading.Thread(target=edit, args=(n, m)) for n, m in (("main", "claude"), ("second", "llama"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results.values())
    assert codes == [200, 409], {k: v.text for k, v in results.items()}
    doc = admin(gateway, "GET", "/config").json()["document"]
    winner = next(k for k, v in results.items() if v.status_code == 200)
    assert doc["routes"]["main"]["models"] == (["claude"] if winner == "main" else ["gpt"])
    assert doc["routes"]["second"]["models"] == (["llama"] if winner == "second" else ["gem"])


def test_failed_probe_changes_nothing_and_rollback_restores(
    gateway: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    base = active(gateway)
    fakes["openai"].inject("gpt-4.1", status=500, message="model overloaded")
    patch = {"models": {"fresh": {"provider": "openai", "model": "gpt-4.1"}}, "routes": {"main": {"models": ["fresh"]}}}
    r = admin(gateway, "POST", "/config/deploy", json={"patch": patch, "base_revision": base})
    assert r.status_code == 409, r.text
    err = r.json()["error"]
    assert err["code"] == "probe_failed" and "fresh" in err["message"] and err["param"] == "models.fresh"
    assert active(gateway) == base
    assert served_by(chat(gateway)) == "gpt"
    rejected = admin(gateway, "GET", "/audit", params={"action": "config.deploy_rejected"}).json()["data"]
    assert rejected and rejected[0]["after"]["routes"]["main"]["models"] == ["fresh"]

    fakes["openai"].clear_faults()
    ok = admin(gateway, "POST", "/config/deploy", json={"patch": patch, "base_revision": base})
    assert ok.status_code == 200, ok.text
    assert ok.json()["probes"] == [
        {
            "model": "fresh",
            "ok": True,
            "latency_ms": ok.json()["probes"][0]["latency_ms"],
            "method": "chat",
            "error": None,
        }
    ]
    assert served_by(chat(gateway)) == "fresh"
    deployed = ok.json()["revision"]["id"]

    back = admin(gateway, "POST", "/config/rollback", json={}, headers={"If-Match": str(deployed)})
    assert back.status_code == 200, back.text
    assert back.json()["revision"]["source"] == "rollback" and back.json()["revision"]["parent_id"] == deployed
    assert served_by(chat(gateway)) == "gpt"
    entries = admin(gateway, "GET", "/audit").json()["data"]
    actions = [e["action"] for e in entries]
    assert actions[:2] == ["config.rollback", "config.deploy"]
    roll, dep = entries[0], entries[1]
    assert dep["before"]["routes"]["main"]["models"] == ["gpt"] and dep["after"]["routes"]["main"]["models"] == [
        "fresh"
    ]
    assert roll["before"]["routes"]["main"]["models"] == ["fresh"] and roll["after"]["routes"]["main"]["models"] == [
        "gpt"
    ]
    assert dep["actor"] == "master" and dep["client"] == "127.0.0.1" and dep["request_id"]


def test_in_flight_request_finishes_on_the_old_revision(gateway: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    fakes["openai"].inject("gpt-4o", delay_s=1.5, times=1)
    box: dict[str, httpx.Response] = {}
    slow = threading.Thread(target=lambda: box.update(r=chat(gateway)))
    slow.start()
    time.sleep(0.5)  # the slow request is at the upstream now
    r = admin(
        gateway, "POST", "/routes/main/switch", json={"model": "claude"}, headers={"If-Match": str(active(gateway))}
    )
    assert r.status_code == 200
    assert served_by(chat(gateway)) == "claude"
    slow.join()
    assert served_by(box["r"]) == "gpt"


def test_invalid_changes_are_4xx_naming_the_path(gateway: ServerProcess) -> None:
    base = active(gateway)
    r = admin(gateway, "PATCH", "/routes/main", json={"config": {"models": ["nope"]}, "base_revision": base})
    assert r.status_code == 422 and r.json()["error"]["param"] == "routes.main.models[0]", r.text
    r = admin(
        gateway,
        "POST",
        "/providers",
        json={"name": "bad", "config": {"kind": "openai", "base_url": "ftp://example.com"}, "base_revision": base},
    )
    assert r.status_code == 422 and r.json()["error"]["param"] == "providers.bad.base_url", r.text
    r = admin(gateway, "POST", "/routes/main/switch", json={"model": "missing", "base_revision": base})
    assert r.status_code == 404
    r = admin(gateway, "POST", "/config/validate", json={"patch": {"routes": {"main": {"strategy": "best"}}}})
    assert r.status_code == 422 and r.json()["error"]["param"] == "routes.main.strategy"
    r = admin(gateway, "POST", "/config/validate", json={"patch": {"routes": {"main": {"strategy": "priority"}}}})
    assert r.status_code == 200 and r.json()["valid"] and "+    strategy: priority" in r.json()["diff"]
    assert active(gateway) == base
    assert served_by(chat(gateway)) == "gpt"


def test_delete_in_use_is_409_naming_users_force_removes(gateway: ServerProcess) -> None:
    base = active(gateway)
    r = admin(gateway, "DELETE", "/models/gpt-mini", headers={"If-Match": str(base)})
    assert r.status_code == 409 and "routes.main.fallbacks" in r.json()["error"]["message"]
    r = admin(gateway, "DELETE", "/providers/anthropic", headers={"If-Match": str(base)})
    assert r.status_code == 409 and "models.claude" in r.json()["error"]["message"]
    r = admin(gateway, "DELETE", "/providers/anthropic", params={"force": "true"}, headers={"If-Match": str(base)})
    assert r.status_code == 200, r.text
    doc = admin(gateway, "GET", "/config").json()["document"]
    assert "anthropic" not in doc["providers"] and "claude" not in doc["models"]
    assert doc["routes"]["main"]["fallbacks"] == ["gpt-mini"]


def test_models_with_slashes_and_colons_enable_disable(gateway: ServerProcess) -> None:
    base = active(gateway)
    r = admin(
        gateway,
        "POST",
        "/models",
        json={
            "name": "team/llama:3b",
            "config": {"provider": "ollama", "model": "llama3.2:latest"},
            "base_revision": base,
        },
    )
    assert r.status_code == 201, r.text
    got = admin(gateway, "GET", "/models/team%2Fllama%3A3b")
    assert got.status_code == 200 and got.json()["upstream"] == "llama3.2:latest" and got.json()["enabled"]
    assert served_by(chat(gateway, "team/llama:3b")) == "team/llama:3b"
    r = admin(gateway, "POST", "/models/team%2Fllama%3A3b/disable", headers={"If-Match": str(active(gateway))})
    assert r.status_code == 200, r.text
    off = chat(gateway, "team/llama:3b")
    assert off.status_code == 404 and "disabled" in off.json()["error"]["message"]
    r = admin(gateway, "POST", "/models/team%2Fllama%3A3b/enable", headers={"If-Match": str(active(gateway))})
    assert served_by(chat(gateway, "team/llama:3b")) == "team/llama:3b"


def test_api_secrets_become_credentials_and_reach_the_upstream(
    gateway: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    secret = "sk-live-brand-new-key-0123456789"
    url = base_url(fakes["openai"])
    body = {"name": "second-openai", "config": {"kind": "openai", "base_url": url, "api_key": secret}}
    r = admin(gateway, "POST", "/providers", json={**body, "base_revision": active(gateway)})
    assert r.status_code == 201, r.text
    assert secret not in r.text
    r = admin(
        gateway,
        "POST",
        "/models",
        json={
            "name": "gpt-b",
            "config": {"provider": "second-openai", "model": "gpt-4o-mini"},
            "base_revision": active(gateway),
        },
    )
    assert r.status_code == 201, r.text
    doc = admin(gateway, "GET", "/config")
    assert secret not in doc.text
    assert doc.json()["document"]["providers"]["second-openai"]["api_key"] == "credential:second-openai.api_key"
    for path in ("/config/export", "/config/revisions", f"/config/revisions/{active(gateway)}", "/audit", "/providers"):
        assert secret not in admin(gateway, "GET", path).text, path
    assert "sk-test-openai-secret" not in admin(gateway, "GET", "/config/export").text
    fakes["openai"].reset()
    assert served_by(chat(gateway, "gpt-b")) == "gpt-b"
    assert fakes["openai"].requests[-1]["auth"] == f"Bearer {secret}"

    # rotating the credential takes effect on the next request, without a restart
    rotated = "sk-live-rotated-key-9876543210"
    r = admin(
        gateway,
        "POST",
        "/credentials",
        json={"provider": "second-openai", "name": "second-openai.api_key", "secret": rotated},
    )
    assert r.status_code == 201, r.text
    assert served_by(chat(gateway, "gpt-b")) == "gpt-b"
    assert fakes["openai"].requests[-1]["auth"] == f"Bearer {rotated}"
    assert (
        admin(gateway, "GET", "/audit", params={"action": "credential."}).json()["data"][0]["target"]
        == "credential:second-openai.api_key"
    )

    # a credential the active config names cannot be deleted (no revision could be built without it)
    cred = next(c for c in admin(gateway, "GET", "/credentials").json()["data"] if c["name"] == "second-openai.api_key")
    r = admin(gateway, "DELETE", f"/credentials/{cred['id']}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "credential_in_use", r.text
    assert "providers.second-openai.api_key" in r.json()["error"]["message"]
    assert served_by(chat(gateway, "gpt-b")) == "gpt-b"
    # once nothing uses it, it can go
    assert admin(gateway, "DELETE", "/models/gpt-b", params={"base_revision": active(gateway)}).status_code == 200
    r = admin(gateway, "DELETE", "/providers/second-openai", params={"base_revision": active(gateway)})
    assert r.status_code == 200, r.text
    assert admin(gateway, "DELETE", f"/credentials/{cred['id']}").status_code == 200


def test_export_then_import_keeps_the_hash_and_file_vs_api_rule(gateway: ServerProcess) -> None:
    first = admin(gateway, "GET", "/config").json()
    exported = admin(gateway, "GET", "/config/export").text
    gateway.config_path.write_text(exported)
    gateway.signal(signal.SIGHUP)
    time.sleep(1.0)
    again = admin(gateway, "GET", "/config").json()
    assert again["id"] == first["id"] and again["content_hash"] == first["content_hash"]

    # an API change, then a file change: the file is not applied (config.source: both)
    base = active(gateway)
    assert (
        admin(gateway, "POST", "/routes/main/switch", json={"model": "claude", "base_revision": base}).status_code
        == 200
    )
    doc = yaml.safe_load(exported)
    doc["routes"]["main"]["models"] = ["gem"]
    gateway.config_path.write_text(yaml.safe_dump(doc))
    gateway.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = httpx.get(f"{gateway.url}/v1/status", headers=H).json()
        if "config_file_conflict" in status:
            break
        time.sleep(0.1)
    assert status["config_file_conflict"]["active_revision"] == base + 1, status
    assert served_by(chat(gateway)) == "claude"


def test_revisions_list_get_and_diff(gateway: ServerProcess) -> None:
    base = active(gateway)
    admin(gateway, "POST", "/routes/main/switch", json={"model": "claude", "base_revision": base})
    listing = admin(gateway, "GET", "/config/revisions").json()
    assert listing["active"] == base + 1 and listing["data"][0]["active"] and listing["data"][1]["source"] == "file"
    one = admin(gateway, "GET", f"/config/revisions/{base}").json()
    assert one["source"] == "file" and "claude" in one["diff_active"] and one["diff_parent"].startswith("--- rNone")
    assert admin(gateway, "GET", "/config/revisions/999").status_code == 404


def test_out_of_range_revision_ids_are_4xx_not_5xx(gateway: ServerProcess) -> None:
    """A revision id beyond its column (found by the schema fuzzer: the database cannot bind it)
    is a clear 4xx wherever one is accepted: the listing's cursor, the path, If-Match, base_revision."""
    huge = str(2**70)
    for path in (f"/config/revisions?before={huge}", f"/config/revisions/{huge}"):
        r = admin(gateway, "GET", path)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
    r = admin(gateway, "DELETE", f"/routes/main?base_revision={huge}")
    assert r.status_code == 400 and "base_revision" in r.text, r.text
    r = admin(gateway, "DELETE", "/routes/main", headers={"If-Match": huge})
    assert r.status_code == 400 and "If-Match" in r.text, r.text
    # a digit that is not a decimal (latin-1 "²": str.isdigit() says yes, int() says no)
    r = admin(gateway, "DELETE", "/routes/main", headers={"If-Match": b"\xb2"})
    assert r.status_code == 400 and "If-Match" in r.text, r.text
    events = {**H, "Last-Event-ID": b"\xb2"}
    with httpx.stream("GET", f"{gateway.url}/admin/events", headers=events, timeout=10) as r:
        assert r.status_code == 200
    assert admin(gateway, "GET", "/config/revisions?before=1").status_code == 200


def test_provider_test_models_and_discovery(gateway: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    r = admin(gateway, "POST", "/providers/openai/test")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["reachable"] and body["auth_ok"] and "gpt-4o" in body["models"] and body["probe"]["ok"]
    assert "sk-test" not in r.text
    listing = admin(gateway, "GET", "/providers/ollama/models").json()["data"]
    assert any(m["id"].startswith("llama3.2") for m in listing)
    fakes["openai"].models.append("o9-preview")  # type: ignore[attr-defined]
    try:
        found = admin(gateway, "GET", "/discovery").json()
        new_ids = [n["id"] for n in found["new"]]
        assert "openai:o9-preview" in new_ids and "openai:gpt-4o" not in new_ids, found
        r = admin(
            gateway, "POST", "/discovery/apply", json={"add": ["openai:o9-preview"], "base_revision": active(gateway)}
        )
        assert r.status_code == 200 and r.json()["revision"]["source"] == "discovery", r.text
        assert served_by(chat(gateway, "o9-preview")) == "o9-preview"
        bad = admin(
            gateway, "POST", "/discovery/apply", json={"add": ["openai:nope"], "base_revision": active(gateway)}
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "add"
    finally:
        fakes["openai"].models.remove("o9-preview")  # type: ignore[attr-defined]
    gone = admin(gateway, "GET", "/discovery").json()
    assert {"model": "o9-preview", "provider": "openai", "upstream": "o9-preview"} in gone["deprecated"]
    r = admin(gateway, "POST", "/discovery/apply", json={"remove": ["o9-preview"], "base_revision": active(gateway)})
    assert r.status_code == 200 and "o9-preview" not in admin(gateway, "GET", "/config").json()["document"]["models"]
    for _ in range(12):
        last = admin(gateway, "POST", "/providers/openai/test")
    assert last.status_code == 429 and "retry-after" in last.headers


def test_admin_events_stream_config_changes(gateway: ServerProcess) -> None:
    seen: list[str] = []

    def listen() -> None:
        with httpx.stream("GET", f"{gateway.url}/admin/events", headers=H, timeout=10) as r:
            for line in r.iter_lines():
                if line.startswith("event: "):
                    seen.append(line[7:])
                if "config.changed" in seen:
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    time.sleep(0.5)
    admin(gateway, "POST", "/routes/main/switch", json={"model": "claude", "base_revision": active(gateway)})
    t.join(10)
    assert "config.changed" in seen


def test_management_needs_the_master_key(gateway: ServerProcess) -> None:
    r = httpx.get(f"{gateway.url}/admin/config", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401


def _cli(gw: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MODELYARD_MASTER_KEY": MASTER, "MODELYARD_URL": gw.url}
    return subprocess.run([str(BIN / "modelyard"), *args], capture_output=True, text=True, env=env, timeout=60)


def test_cli_against_a_running_gateway(gateway: ServerProcess, tmp_path: Path) -> None:
    out = _cli(gateway, "routes", "switch", "main", "claude")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "is active" in out.stdout
    assert served_by(chat(gateway)) == "claude"
    listing = _cli(gateway, "routes", "list")
    assert "claude" in listing.stdout and "main" in listing.stdout
    revs = _cli(gateway, "config", "revisions")
    assert revs.returncode == 0 and "route main -> claude" in revs.stdout and "file" in revs.stdout
    rid = active(gateway)
    diff = _cli(gateway, "config", "diff", str(rid))
    assert diff.stdout.startswith(f"--- r{rid - 1}") and "-    - gpt" in diff.stdout, diff.stdout
    models = _cli(gateway, "models", "--url", gateway.url)
    assert models.returncode == 0 and "claude" in models.stdout and "anthropic" in models.stdout
    providers = _cli(gateway, "providers", "list")
    assert "openai" in providers.stdout and "sk-test" not in providers.stdout
    tested = _cli(gateway, "providers", "test", "openai")
    assert tested.returncode == 0 and "reachable=True" in tested.stdout, tested.stdout
    exported = tmp_path / "exported.yaml"
    assert _cli(gateway, "config", "export", "-o", str(exported)).returncode == 0
    doc = yaml.safe_load(exported.read_text())
    doc["routes"]["main"]["models"] = ["gem"]
    exported.write_text(yaml.safe_dump(doc))
    deployed = _cli(gateway, "config", "deploy", str(exported), "-m", "to gemini")
    assert deployed.returncode == 0 and "is active" in deployed.stdout, deployed.stdout
    assert served_by(chat(gateway)) == "gem"
    back = _cli(gateway, "config", "rollback")
    assert back.returncode == 0 and "rollback" in back.stdout
    assert served_by(chat(gateway)) == "claude"
    assert _cli(gateway, "models", "disable", "gpt-mini").returncode == 0
    refused = _cli(gateway, "routes", "switch", "main", "nope")
    assert refused.returncode == 1 and "404" in refused.stdout
    env = {k: v for k, v in os.environ.items() if k != "MODELYARD_MASTER_KEY"}
    nokey = subprocess.run(
        [str(BIN / "modelyard"), "routes", "list", "--url", gateway.url], capture_output=True, text=True, env=env
    )
    assert nokey.returncode == 1 and "MODELYARD_MASTER_KEY" in nokey.stdout


def test_replicas_sharing_the_database_converge(fakes: dict[str, FakeServer], tmp_path: Path) -> None:
    config = gateway_config(fakes)
    config["database"] = f"sqlite:///{tmp_path / 'shared.db'}"
    config["config"] = {"poll_interval_s": 0.2}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    env = {"MODELYARD_MASTER_KEY": MASTER}
    a = ServerProcess(config, tmp_path / "a", env=env)
    b = ServerProcess(config, tmp_path / "b", env=env)
    try:
        assert active(a) == active(b)  # the second replica's identical file import is not a new revision
        r = admin(a, "POST", "/routes/main/switch", json={"model": "claude"}, headers={"If-Match": str(active(a))})
        assert r.status_code == 200
        t0 = time.monotonic()
        while served_by(chat(b)) != "claude":
            assert time.monotonic() - t0 < 5, "replica b did not converge within 5 s"
            time.sleep(0.05)
        assert active(b) == r.json()["revision"]["id"]
    finally:
        a.stop()
        b.stop()


def test_restart_keeps_the_api_revision_and_source_file_refuses_writes(
    fakes: dict[str, FakeServer], tmp_path: Path
) -> None:
    env = {"MODELYARD_MASTER_KEY": MASTER}
    gw = ServerProcess(gateway_config(fakes), tmp_path, env=env)
    try:
        admin(gw, "POST", "/routes/main/switch", json={"model": "claude", "base_revision": active(gw)})
    finally:
        gw.stop()
    gw = ServerProcess(None, tmp_path, args=["--config", str(tmp_path / "modelyard.yaml")], env=env)
    try:
        assert served_by(chat(gw)) == "claude"  # the file did not change: the API's revision stays
    finally:
        gw.stop()
    config = gateway_config(fakes)
    config["config"] = {"source": "file"}
    gw = ServerProcess(config, tmp_path, env=env)
    try:
        assert served_by(chat(gw)) == "gpt"  # a changed file, under source: file, wins
        r = admin(gw, "POST", "/routes/main/switch", json={"model": "claude", "base_revision": active(gw)})
        assert r.status_code == 405 and "config.source" in r.json()["error"]["message"]
    finally:
        gw.stop()


def test_an_organisation_brings_its_own_key(gateway: ServerProcess, fakes: dict[str, FakeServer]) -> None:
    keys = {}
    for org in ("org_a", "org_b"):
        assert admin(gateway, "POST", "/orgs", json={"name": org, "id": org}).status_code == 201
        keys[org] = admin(gateway, "POST", "/keys", json={"org_id": org, "name": "app"}).json()["key"]
    # the file's literal openai key became credential:openai.api_key; org_a stores its own under that name
    doc = admin(gateway, "GET", "/config").json()["document"]
    assert doc["providers"]["openai"]["api_key"] == "credential:openai.api_key"
    own = {"provider": "openai", "name": "openai.api_key", "secret": "sk-org-a-own-key-42", "org_id": "org_a"}
    assert admin(gateway, "POST", "/credentials", json=own).status_code == 201

    def upstream_auth(org: str) -> str:
        fakes["openai"].reset()
        body = {"model": "main", "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {keys[org]}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        return str(fakes["openai"].requests[-1]["auth"])

    assert upstream_auth("org_a") == "Bearer sk-org-a-own-key-42"
    assert upstream_auth("org_b") == "Bearer sk-test-openai-secret"
    # org_a's key never appears in an error another organisation sees, nor in the admin API
    assert "sk-org-a-own-key-42" not in admin(gateway, "GET", "/credentials").text


def test_scheduled_discovery_announces_new_models(fakes: dict[str, FakeServer], tmp_path: Path) -> None:
    config = gateway_config(fakes)
    config["config"] = {"discovery_interval_s": 1}
    gw = ServerProcess(config, tmp_path, env={"MODELYARD_MASTER_KEY": MASTER})
    try:
        time.sleep(1.6)  # the first run notes what exists: no event for that
        fakes["openai"].models.append("o8-nano")  # type: ignore[attr-defined]
        found: dict[str, Any] = {}
        with httpx.stream("GET", f"{gw.url}/admin/events?after=0", headers=H, timeout=10) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and '"discovery.new"' in line:
                    found = json.loads(line[6:])
                    break
        assert [m["id"] for m in found["data"]["models"]] == ["openai:o8-nano"]
    finally:
        fakes["openai"].models.remove("o8-nano")  # type: ignore[attr-defined]
        gw.stop()


def test_a_hanging_probe_is_cut_and_a_rollback_needs_its_credentials(
    fakes: dict[str, FakeServer], tmp_path: Path
) -> None:
    config = gateway_config(fakes)
    config["config"] = {"probe_timeout_s": 1}
    gw = ServerProcess(config, tmp_path, env={"MODELYARD_MASTER_KEY": MASTER})
    try:
        fakes["openai"].inject("gpt-4.1-nano", hang=True)
        t0 = time.monotonic()
        r = admin(
            gw,
            "POST",
            "/models",
            json={
                "name": "nano",
                "config": {"provider": "openai", "model": "gpt-4.1-nano"},
                "base_revision": active(gw),
            },
        )
        assert r.status_code == 409 and "timed out" in r.json()["error"]["message"], r.text
        assert time.monotonic() - t0 < 10  # cut at probe_timeout_s (1 s), not the model's 60 s timeout
        fakes["openai"].clear_faults()

        cred = {"provider": "extra", "name": "extra-key", "secret": "sk-extra-0123456789"}
        assert admin(gw, "POST", "/credentials", json=cred).status_code == 201
        url = base_url(fakes["openai"])
        body = {"name": "extra", "config": {"kind": "openai", "base_url": url, "api_key": "credential:extra-key"}}
        r = admin(gw, "POST", "/providers", json={**body, "base_revision": active(gw)})
        assert r.status_code == 201, r.text
        with_extra = r.json()["revision"]["id"]
        assert admin(gw, "DELETE", "/providers/extra", headers={"If-Match": str(with_extra)}).status_code == 200
        cred_id = next(c["id"] for c in admin(gw, "GET", "/credentials").json()["data"] if c["name"] == "extra-key")
        assert admin(gw, "DELETE", f"/credentials/{cred_id}").status_code == 200
        r = admin(gw, "POST", "/config/rollback", json={"revision": with_extra}, headers={"If-Match": str(active(gw))})
        assert r.status_code == 409 and "extra-key" in r.json()["error"]["message"], r.text
        assert r.json()["error"]["param"] == "providers.extra.api_key"
    finally:
        gw.stop()
