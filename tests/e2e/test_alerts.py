"""Live status and alerts (#12 point 5) on a real ``modelyard serve``: provider health and breaker
changes as admin events within 5 s, alerts in ``/admin/alerts``, signed webhooks with retries,
each delivery audited.

Intervals used: health checks every 0.3 s (a provider is unhealthy after 2 failed checks), the
watcher samples breakers every 1 s; the bound checked is 5 s from the change.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.testing import FakeServer
from tests.e2e.conftest import gateway_config
from tests.helpers import ServerProcess, free_port

MASTER = "sk-master-alerts-test"
H = {"Authorization": f"Bearer {MASTER}"}
SECRET = "whsec-test-0123456789"


class Receiver:
    """A webhook receiver on loopback: answers 500 to the first ``fail_first`` deliveries."""

    def __init__(self, fail_first: int = 0) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes, int]] = []
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if len(outer.deliveries) < outer.fail_first else 200
                outer.deliveries.append(({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def verify(headers: dict[str, str], body: bytes) -> bool:
    parts = dict(p.split("=", 1) for p in headers["x-modelyard-signature"].split(","))
    expected = hmac.new(SECRET.encode(), parts["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=1)
    yield r
    r.close()


@pytest.fixture
def gateway(fakes: dict[str, FakeServer], tmp_path: Path, receiver: Receiver) -> Iterator[ServerProcess]:
    config = gateway_config(fakes)
    config["providers"]["dead"] = {
        "kind": "openai",
        "base_url": f"http://127.0.0.1:{free_port()}/v1",
        "api_key": "sk-dead",
        "health": {"interval_s": 0.3},
    }
    config["models"]["gpt"]["breaker"] = {"failure_threshold": 2, "cooldown_s": 60}
    config["routes"]["solo"] = {"models": ["gpt"], "retries": 0, "fallback": False}
    config["alerts"] = [
        {"name": "down", "kind": "provider_down", "scope": "provider", "target": "dead"},
        {
            "name": "gpt-breaker",
            "kind": "breaker_open",
            "scope": "model",
            "target": "gpt",
            "webhook": receiver.url,
            "secret": SECRET,
        },
        {
            "name": "solo-errors",
            "kind": "error_rate",
            "scope": "route",
            "target": "solo",
            "threshold": 0.5,
            "min_requests": 2,
            "window_s": 60,
        },
    ]
    proc = ServerProcess(config, tmp_path, env={"MODELYARD_MASTER_KEY": MASTER})
    try:
        yield proc
    finally:
        proc.stop()


def _listen(gw: ServerProcess, seen: list[dict[str, Any]], stop: threading.Event) -> None:
    with httpx.stream("GET", f"{gw.url}/admin/events", headers=H, timeout=30) as r:
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind:
                seen.append({"kind": kind, **json.loads(line[6:])})
            if stop.is_set():
                return


def _wait(pred: Any, timeout: float = 5.0) -> float:
    t0 = time.monotonic()
    while not pred():
        assert time.monotonic() - t0 < timeout, "not within the bound"
        time.sleep(0.05)
    return time.monotonic() - t0


def test_health_breaker_and_error_rate_alerts(
    gateway: ServerProcess, fakes: dict[str, FakeServer], receiver: Receiver
) -> None:
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    threading.Thread(target=_listen, args=(gateway, seen, stop), daemon=True).start()

    # a provider that does not answer: unhealthy after two failed checks, as an event and an alert
    _wait(lambda: any(e["kind"] == "provider.health" and e["data"]["provider"] == "dead" for e in seen))
    health = next(e for e in seen if e["kind"] == "provider.health")
    assert health["data"]["to"] in ("degraded", "unhealthy")
    _wait(lambda: any(e["kind"] == "alert.firing" and e["data"]["alert"] == "down" for e in seen))

    # two failures open gpt's breaker: an event within 5 s, the alert fires, the webhook is signed
    fakes["openai"].inject("gpt-4o", status=500, times=2)
    body = {"model": "solo", "messages": [{"role": "user", "content": "hi"}]}
    t0 = time.monotonic()
    for _ in range(2):
        r = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=H, timeout=30)
        assert r.status_code >= 500
    _wait(lambda: any(e["kind"] == "breaker.open" and e["data"]["model"] == "gpt" for e in seen))
    print(f"\nbreaker opened -> event: {(time.monotonic() - t0) * 1000:.0f} ms")
    _wait(lambda: any(e["kind"] == "alert.firing" and e["data"]["alert"] == "gpt-breaker" for e in seen))
    _wait(lambda: any(e["kind"] == "alert.firing" and e["data"]["alert"] == "solo-errors" for e in seen))

    # the receiver failed the first delivery: retried, then delivered, signed, and audited
    _wait(lambda: any(status == 200 for _, _, status in receiver.deliveries), timeout=10)
    assert [s for _, _, s in receiver.deliveries][:2] == [500, 200]
    headers, raw, _ = receiver.deliveries[-1]
    assert verify(headers, raw) and json.loads(raw)["alert"] == "gpt-breaker"
    assert not verify({**headers, "x-modelyard-signature": headers["x-modelyard-signature"][:-2] + "00"}, raw)
    audit = httpx.get(f"{gateway.url}/admin/audit", params={"action": "alert.webhook"}, headers=H).json()["data"]
    assert audit and audit[0]["after"]["delivered"] and audit[0]["after"]["attempts"] == 2

    listed = httpx.get(f"{gateway.url}/admin/alerts", headers=H).json()
    by_name = {a["name"]: a for a in listed["data"]}
    assert by_name["gpt-breaker"]["firing"] == ["gpt"] and by_name["down"]["firing"] == ["dead"]
    assert by_name["solo-errors"]["states"]["solo"]["value"] == 1.0
    assert SECRET not in json.dumps(listed)
    stop.set()
