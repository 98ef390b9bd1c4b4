"""The server's edge (issue #11: D7, D9, D14, D15), through a real ``modelyard serve`` over raw sockets.

- D7: header block and header count limits (431), header and body read timeouts, keep-alive,
  ``max_body_mb`` before authentication on every route, authentication before an admin body is read;
- D9: without a master key, only loopback (or configured) Hosts, no foreign Origin, JSON POSTs only;
- D14: a client that leaves before its answer cancels its work: a queued request never reaches the
  upstream, and the request is recorded as closed by the client;
- D15: a large body is parsed off the event loop (see ``tests/server/test_body.py``).
"""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.testing import FakeServer, Fault
from tests.e2e.conftest import gateway_config
from tests.helpers import ServerProcess, wait_for

MASTER = "sk-master-edge"
SHORT = {"header_timeout_s": 1.0, "body_timeout_s": 1.0, "keep_alive_s": 1.0}


@pytest.fixture(scope="module")
def keyless(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    cfg = gateway_config(fakes, allowed_hosts=["gateway.internal"], **SHORT)
    cfg["models"]["slow"] = {"provider": "openai", "model": "gpt-4o", "max_concurrency": 1}
    proc = ServerProcess(cfg, tmp_path_factory.mktemp("keyless"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def keyed(fakes: dict[str, FakeServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(gateway_config(fakes, master_key=MASTER, **SHORT), tmp_path_factory.mktemp("keyed"))
    try:
        yield proc
    finally:
        proc.stop()


def connect(srv: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    return sock


def read_all(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection (or ``timeout``)."""
    sock.settimeout(timeout)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes the connection within ``within`` seconds (reads return EOF)."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def head(path: str = "/health", method: str = "GET", extra: str = "", host: str = "127.0.0.1") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


# -- D7: header limits -------------------------------------------------------------------------


def test_a_header_block_over_64_kib_gets_431(keyless: ServerProcess) -> None:
    with connect(keyless) as sock:
        sock.sendall(head(extra=f"X-Big: {'a' * 70_000}\r\n"))
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"server.max_header_kb" in answer
    assert httpx.get(keyless.url + "/health").status_code == 200


def test_more_than_128_headers_get_431(keyless: ServerProcess) -> None:
    many = "".join(f"X-H{i}: v\r\n" for i in range(200))
    with connect(keyless) as sock:
        sock.sendall(head(extra=many))
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_headers_within_the_limits_are_served(keyless: ServerProcess) -> None:
    headers = {f"x-h{i}": "v" * 100 for i in range(100)}
    assert httpx.get(keyless.url + "/health", headers=headers).status_code == 200


def test_a_large_body_sent_with_its_head_in_one_write_is_not_a_large_head(keyless: ServerProcess) -> None:
    import orjson

    body = orjson.dumps({"model": "gpt", "messages": [{"role": "user", "content": "y" * 400_000}]})
    extra = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
    with connect(keyless) as sock:
        sock.sendall(head("/v1/chat/completions", "POST", extra) + body)
        answer = read_all(sock, timeout=20)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]


# -- D7: read timeouts and keep-alive ----------------------------------------------------------


def test_a_client_that_trickles_its_headers_is_cut_off(keyless: ServerProcess) -> None:
    with connect(keyless) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never ends its header block
        assert closed_by_server(sock, within=8), "the header timeout (1 s here) did not close the connection"


def test_a_silent_connection_is_cut_off(keyless: ServerProcess) -> None:
    with connect(keyless) as sock:
        assert closed_by_server(sock, within=8)


def test_a_body_that_stops_arriving_is_cut_off(keyless: ServerProcess) -> None:
    with connect(keyless) as sock:
        sock.sendall(
            head(
                "/v1/chat/completions",
                "POST",
                "Content-Type: application/json\r\nContent-Length: 1000\r\n",
            )
            + b'{"model": "gpt", '
        )
        assert closed_by_server(sock, within=8), "the body timeout (1 s here) did not close the connection"
    assert httpx.get(keyless.url + "/health").status_code == 200


def test_an_idle_keep_alive_connection_is_closed(keyless: ServerProcess) -> None:
    with connect(keyless) as sock:
        sock.sendall(head())
        sock.settimeout(5)
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        assert closed_by_server(sock, within=8), "keep_alive_s (1 s here) did not close the idle connection"


# -- D7: body size and authentication before the body -------------------------------------------


def test_max_body_mb_applies_to_admin_routes_before_auth(keyed: ServerProcess) -> None:
    with connect(keyed) as sock:  # 60 MB announced, nothing sent: the answer must not wait for it
        sock.sendall(head("/admin/keys", "POST", "Content-Type: application/json\r\nContent-Length: 60000000\r\n"))
        answer = read_all(sock, timeout=8)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"max_body_mb" in answer


def test_admin_bodies_need_the_key_before_they_are_read(keyed: ServerProcess) -> None:
    with connect(keyed) as sock:  # within the size limit, but the body never comes: 401 at once
        sock.sendall(head("/admin/keys", "POST", "Content-Type: application/json\r\nContent-Length: 500000\r\n"))
        answer = read_all(sock, timeout=8)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:300]


def test_a_chunked_admin_body_over_the_limit_is_refused(keyed: ServerProcess) -> None:
    def gen() -> Iterator[bytes]:
        for _ in range(200):
            yield b"x" * 8192

    resp = httpx.post(
        keyed.url + "/admin/keys",
        content=gen(),
        headers={"Authorization": f"Bearer {MASTER}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 413, resp.text
    assert resp.json()["error"]["type"] == "invalid_request_error"


def test_admin_with_the_key_still_works(keyed: ServerProcess) -> None:
    resp = httpx.post(
        keyed.url + "/admin/orgs", json={"name": "edge"}, headers={"Authorization": f"Bearer {MASTER}"}, timeout=30
    )
    assert resp.status_code == 201, resp.text


# -- D9: no-key mode -----------------------------------------------------------------------------


def chat_body() -> dict[str, Any]:
    return {"model": "gpt", "messages": [{"role": "user", "content": "hi"}]}


def test_no_key_mode_refuses_a_foreign_host(keyless: ServerProcess) -> None:
    resp = httpx.post(keyless.url + "/v1/chat/completions", json=chat_body(), headers={"Host": "evil.example"})
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"]["code"] == "host_not_allowed"


def test_no_key_mode_refuses_a_foreign_origin(keyless: ServerProcess) -> None:
    resp = httpx.post(keyless.url + "/v1/chat/completions", json=chat_body(), headers={"Origin": "http://evil.example"})
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"]["code"] == "origin_not_allowed"


def test_no_key_mode_refuses_a_cross_site_text_plain_post(keyless: ServerProcess) -> None:
    import orjson

    resp = httpx.post(
        keyless.url + "/v1/chat/completions",
        content=orjson.dumps(chat_body()),
        headers={"Content-Type": "text/plain"},
    )
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"]["code"] == "content_type_not_allowed"


def test_no_key_mode_serves_loopback_and_configured_hosts(keyless: ServerProcess) -> None:
    for host in (f"127.0.0.1:{keyless.port}", f"localhost:{keyless.port}", "gateway.internal", "gateway.internal:80"):
        resp = httpx.post(keyless.url + "/v1/chat/completions", json=chat_body(), headers={"Host": host}, timeout=30)
        assert resp.status_code == 200, (host, resp.text)
    resp = httpx.post(
        keyless.url + "/v1/chat/completions",
        json=chat_body(),
        headers={"Origin": f"http://localhost:{keyless.port}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text


def test_no_key_mode_keeps_health_open(keyless: ServerProcess) -> None:
    assert httpx.get(keyless.url + "/health", headers={"Host": "evil.example"}).status_code == 200


def test_with_a_master_key_foreign_hosts_are_served(keyed: ServerProcess) -> None:
    resp = httpx.post(
        keyed.url + "/v1/chat/completions",
        json=chat_body(),
        headers={"Host": "gateway.example.com", "Authorization": f"Bearer {MASTER}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text


# -- D14: a client that leaves cancels its work ---------------------------------------------------


def upstream_calls(fake: FakeServer, content: str) -> int:
    return sum(1 for r in fake.requests if content in str(r.get("body", "")))


def test_a_queued_request_whose_client_left_never_reaches_the_upstream(
    keyless: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    fake = fakes["openai"]
    fake.inject("gpt-4o", Fault(delay_s=2.5))
    marker = f"d14-{time.time_ns()}"
    body = {"model": "slow", "messages": [{"role": "user", "content": marker}]}
    with ThreadPoolExecutor(1) as pool:
        # a patient client holds slow's only slot for 2.5 s ...
        holder = pool.submit(httpx.post, keyless.url + "/v1/chat/completions", json=body, timeout=30)
        assert wait_for(lambda: upstream_calls(fake, marker) >= 1, timeout=5)
        # ... while three impatient ones queue behind it and leave
        for _ in range(3):
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(keyless.url + "/v1/chat/completions", json=body, timeout=0.3)
        assert holder.result().status_code == 200
    time.sleep(1.0)  # had the queued requests not been cancelled, they would start now that the slot is free
    assert upstream_calls(fake, marker) == 1, "a queued request started after its client had left"
    fake.clear_faults()
    ok = httpx.post(keyless.url + "/v1/chat/completions", json=body, timeout=30)
    assert ok.status_code == 200, ok.text  # the slot and the queue were released
    assert upstream_calls(fake, marker) == 2


def test_a_request_whose_client_left_is_recorded_as_closed(
    keyless: ServerProcess, fakes: dict[str, FakeServer]
) -> None:
    fakes["openai"].inject("gpt-4o", Fault(delay_s=3))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(keyless.url + "/v1/chat/completions", json=chat_body(), timeout=0.5)
    db = Path(keyless.workdir) / "modelyard.db"

    def recorded() -> list[tuple[Any, ...]]:
        with sqlite3.connect(db) as conn:
            return conn.execute(
                "SELECT success, error_class, status FROM usage_requests WHERE error_class = 'client_closed'"
            ).fetchall()

    assert wait_for(lambda: len(recorded()) >= 1, timeout=10), "no usage record for the cancelled request"
    success, error_class, status = recorded()[-1]
    assert not success and error_class == "client_closed" and status == 499
    assert httpx.get(keyless.url + "/health").status_code == 200


def test_a_401_says_how_to_get_a_key(keyed: ServerProcess) -> None:
    for headers in ({}, {"Authorization": "Bearer my-not-a-key"}, {"Authorization": "Bearer wrong"}):
        resp = httpx.post(keyed.url + "/v1/chat/completions", json=chat_body(), headers=headers)
        assert resp.status_code == 401
        message = resp.json()["error"]["message"]
        assert "master key" in message and "POST /admin/keys" in message and "ask your admin" not in message
