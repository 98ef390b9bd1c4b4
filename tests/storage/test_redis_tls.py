"""``state: rediss://`` with a private CA, a client certificate and a password (#18), against a
TLS redis-server this test starts with trustme certificates."""

from __future__ import annotations

import asyncio
import gc
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from modelyard.storage.coordinator import RedisCoordinator
from modelyard.storage.redis import StateUnavailableError, check_redis, redis_client
from tests.helpers import free_port
from tests.storage.conftest import in_ci

PASSWORD = "s3cret-redis-pass"


class TlsRedis:
    def __init__(self, tmp: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            message = "no redis-server on this machine (apt-get install redis-server)"
            if in_ci():
                pytest.fail(f"{message}; CI=true, so this test must run", pytrace=False)
            pytest.skip(message)
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1")
        client = self.ca.issue_cert("modelyard-client")
        self.files = {
            "ca": tmp / "ca.pem",
            "server_cert": tmp / "server.pem",
            "server_key": tmp / "server.key",
            "client_cert": tmp / "client.pem",
            "client_key": tmp / "client.key",
        }
        self.ca.cert_pem.write_to_path(str(self.files["ca"]))
        server.cert_chain_pems[0].write_to_path(str(self.files["server_cert"]))
        server.private_key_pem.write_to_path(str(self.files["server_key"]))
        client.cert_chain_pems[0].write_to_path(str(self.files["client_cert"]))
        client.private_key_pem.write_to_path(str(self.files["client_key"]))
        self.port = free_port()
        args = [
            binary,
            "--port", "0",
            "--tls-port", str(self.port),
            "--bind", "127.0.0.1",
            "--tls-cert-file", str(self.files["server_cert"]),
            "--tls-key-file", str(self.files["server_key"]),
            "--tls-ca-cert-file", str(self.files["ca"]),
            "--tls-auth-clients", "yes",
            "--requirepass", PASSWORD,
            "--save", "",
            "--appendonly", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)

    def url(self, *, ca: Path | None = None, client: bool = True, password: str = PASSWORD) -> str:
        query = f"ssl_ca_certs={ca or self.files['ca']}&ssl_cert_reqs=required"
        if client:
            query += f"&ssl_certfile={self.files['client_cert']}&ssl_keyfile={self.files['client_key']}"
        return f"rediss://:{password}@127.0.0.1:{self.port}/0?{query}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    server = TlsRedis(tmp_path)
    try:
        yield server
    finally:
        server.stop()


async def _ping(url: str) -> None:
    client = redis_client(url, connect_timeout_s=2.0, timeout_s=2.0)
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                await check_redis(client, url)
                return
            except StateUnavailableError as exc:
                if "Connection refused" not in str(exc) or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)  # the server is still starting
    finally:
        await client.aclose()


async def test_rediss_with_a_ca_a_client_certificate_and_a_password(tls_redis: TlsRedis) -> None:
    url = tls_redis.url()
    await _ping(url)
    coordinator = RedisCoordinator(redis_client(url), prefix="tls", owns_client=True)
    try:
        granted: list[Any] = [
            await coordinator.admit("m:tls", rpm=2, tpm=None, max_concurrency=None, est_tokens=0) for _ in range(3)
        ]
        assert [g.granted for g in granted] == [True, True, False]
        assert coordinator.status()["ok"] is True
    finally:
        await coordinator.aclose()


# asyncio (CPython 3.11) leaves the socket of a failed TLS handshake to the garbage collector; the
# test collects it here, where the resulting ResourceWarning is expected
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("wrong", ["another CA", "no client certificate", "a wrong password"])
async def test_a_wrong_tls_setting_is_a_clear_error_without_the_password(
    tls_redis: TlsRedis, tmp_path: Path, wrong: str
) -> None:
    await _ping(tls_redis.url())  # the server is up
    if wrong == "another CA":
        other = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(other))
        url = tls_redis.url(ca=other)
    elif wrong == "no client certificate":
        url = tls_redis.url(client=False)
    else:
        url = tls_redis.url(password="not-the-password")
    with pytest.raises(StateUnavailableError) as caught:
        await _ping(url)
    message = str(caught.value)
    assert f"127.0.0.1:{tls_redis.port}" in message and "unavailable" in message
    assert PASSWORD not in message and "not-the-password" not in message
    del caught
    gc.collect()
