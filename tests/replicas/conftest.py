"""Three gateway processes sharing one PostgreSQL database and one Redis, on loopback (#18).

The Redis is a ``redis-server`` this suite starts on a free port (never the machine's shared one),
so a test can stop and restart it. With CI=true a missing redis-server or PostgreSQL fails the
run instead of skipping it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.testing import FakeServer
from modelyard.testing.fake_openai import FakeOpenAI
from tests.helpers import ServerProcess, free_port
from tests.storage.conftest import PG_URL, in_ci, pg_admin, run_async

MASTER = "sk-master-replicas"
H = {"Authorization": f"Bearer {MASTER}"}


def need(message: str) -> None:
    if in_ci():
        pytest.fail(f"{message}; CI=true, so the replica tests must run", pytrace=False)
    pytest.skip(message)


class RedisServer:
    """A redis-server of the test's own, on a free loopback port; stop() and start() it at will."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            need("no redis-server on this machine (apt-get install redis-server)")
        self.binary = str(binary)
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(args, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                out = subprocess.run(
                    ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, timeout=2
                )
                if out.stdout.strip() == "PONG":
                    return
            except (OSError, subprocess.TimeoutExpired):
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class Fleet:
    """The replicas, and a round-robin client in front of them (what nginx does)."""

    def __init__(
        self,
        replicas: list[ServerProcess],
        config: dict[str, Any] | None = None,
        workdirs: list[Path] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.replicas = replicas
        self.config = config
        self.workdirs = workdirs or []
        self.env = env
        self._next = 0

    def respawn(self, i: int) -> ServerProcess:
        """Start replica ``i`` again (after it was stopped or killed), with the same config."""
        self.replicas[i].stop()
        self.replicas[i] = ServerProcess(self.config, self.workdirs[i], env=self.env)
        return self.replicas[i]

    def next_url(self) -> str:
        alive = [r for r in self.replicas if r.proc.poll() is None]
        url = alive[self._next % len(alive)].url
        self._next += 1
        return url

    def status(self, i: int) -> dict[str, Any]:
        r = httpx.get(f"{self.replicas[i].url}/v1/status", headers=H, timeout=10)
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def admin(self, i: int, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**H, **kw.pop("headers", {})}
        return httpx.request(method, f"{self.replicas[i].url}/admin{path}", headers=headers, timeout=30, **kw)


def fleet_config(fake: FakeServer, database: str, state: str) -> dict[str, Any]:
    return {
        "database": database,
        "state": state,
        "providers": {
            "fake": {
                "kind": "openai",
                "base_url": f"{fake.url}/v1",
                "api_key": "sk-fake-secret",
                "health": {"interval_s": 1},
            }
        },
        "models": {
            "fast": {"provider": "fake", "model": "gpt-4o-mini"},
            "other": {"provider": "fake", "model": "gpt-4o"},
            "slow": {"provider": "fake", "model": "slow-model", "max_concurrency": 5, "queue_timeout_s": 30},
            "flaky": {
                "provider": "fake",
                "model": "flaky-model",
                "breaker": {"failure_threshold": 2, "cooldown_s": 60},
            },
            "priced": {
                "provider": "fake",
                "model": "gpt-4o-mini",
                "input_cost_per_mtok": 1000.0,
                "output_cost_per_mtok": 2000.0,
            },
        },
        "budgets": [{"name": "fleet", "scope": "model", "target": "priced", "limit_usd": 0.05, "period": "total"}],
        "routes": {"main": {"models": ["fast"]}},
        "default_route": "main",
        "usage": {"flush_interval_ms": 50},
    }


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    name = f"modelyard_replicas_{secrets.token_hex(4)}"
    try:
        run_async(lambda: pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        need(f"PostgreSQL ({PG_URL}) is not usable: {type(exc).__name__}: {exc}")
    base = PG_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    run_async(lambda: pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeServer]:
    fake = FakeOpenAI().start_in_thread()
    try:
        yield fake
    finally:
        fake.stop_thread()


@pytest.fixture(scope="module")
def fleet(
    upstream: FakeServer, pg_url: str, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    config = fleet_config(upstream, pg_url, redis_server.url)
    env = {"MODELYARD_MASTER_KEY": MASTER}
    replicas: list[ServerProcess] = []
    try:
        config["server"] = {"drain_s": 2.0}  # one file for every replica, as in a real deployment
        workdirs = [tmp_path_factory.mktemp(f"replica{i}") for i in range(3)]
        for workdir in workdirs:
            replicas.append(ServerProcess(config, workdir, env=env))
        yield Fleet(replicas, config, workdirs, env)
    finally:
        for r in replicas:  # all at once: each drains for 2 s
            if r.proc.poll() is None:
                r.signal(signal.SIGTERM)
        for r in replicas:
            r.stop()
        if os.environ.get("MODELYARD_KEEP_LOGS"):
            for r in replicas:
                print(r.log())
