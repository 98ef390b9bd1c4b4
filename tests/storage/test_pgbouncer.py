"""``database.statement_cache: 0`` (#18): the gateway's storage through PgBouncer in transaction
mode, where consecutive statements of one client may run on different server connections.

PgBouncer (Debian's ``pgbouncer``; ``.ci/run`` installs it) runs here in front of the machine's
PostgreSQL with two server connections for many clients.  With CI=true a missing PgBouncer or
PostgreSQL fails the test instead of skipping it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.config import parse_config
from modelyard.storage import Database, migrate
from modelyard.storage.keys import KeyStore
from modelyard.storage.usage import UsageStore
from tests.helpers import free_port
from tests.storage.conftest import PG_URL, in_ci, pg_admin, run_async
from tests.storage.records import request


def _need(message: str) -> None:
    if in_ci():
        pytest.fail(f"{message}; CI=true, so this test must run", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def bouncer() -> Iterator[str]:
    """A PgBouncer in transaction mode in front of a fresh database; yields its URL."""
    binary = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if binary is None:
        _need("no pgbouncer on this machine (apt-get install pgbouncer)")
    name = f"modelyard_bouncer_{secrets.token_hex(4)}"
    try:
        run_async(lambda: pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        _need(f"PostgreSQL ({PG_URL}) is not usable: {type(exc).__name__}: {exc}")
    workdir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    workdir.chmod(0o777)  # PgBouncer does not run as root: it switches to the postgres user
    port = free_port()
    (workdir / "users.txt").write_text('"postgres" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        f"[databases]\n{name} = host=127.0.0.1 port=5432 dbname={name} user=postgres\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {workdir}/users.txt\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 200\n"
        f"logfile = {workdir}/pgbouncer.log\npidfile = {workdir}/pgbouncer.pid\n"
    )
    for f in workdir.iterdir():
        f.chmod(0o666)
    args = [binary, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        args[1:1] = ["-u", "postgres"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            log = workdir / "pgbouncer.log"
            if proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {log.read_text() if log.exists() else proc.returncode}")
            if log.exists() and "listening on" in log.read_text():
                break
            time.sleep(0.05)
        yield f"postgresql://postgres@127.0.0.1:{port}/{name}"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
        run_async(lambda: pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_the_config_key() -> None:
    cfg = parse_config({"database": {"url": "postgresql://pgbouncer:6432/gw", "statement_cache": 0}})
    assert (cfg.database.url, cfg.database.statement_cache) == ("postgresql://pgbouncer:6432/gw", 0)
    assert parse_config({"database": "sqlite:///x.db"}).database.url == "sqlite:///x.db"  # the short form


async def test_the_storage_works_behind_pgbouncer_in_transaction_mode(bouncer: str) -> None:
    db = Database(bouncer, statement_cache=0, pool_size=8)
    try:
        await migrate(db)
        usage = UsageStore(db)
        keys = KeyStore(db, cache_ttl_s=0.01)
        org = await keys.create_org("bouncer")
        plaintext, _ = await keys.create_key(org.id, "k")

        async def work(i: int) -> None:
            # many clients over two server connections: statements of one client hop between them
            await usage.insert([request(i * 10 + j) for j in range(10)], [])
            assert (await keys.check(plaintext)).reason == "ok"
            await usage.stats(group_by="model")
            await asyncio.sleep(0.02)  # past the key cache: the next check reads again
            assert (await keys.check(plaintext)).reason == "ok"

        for _ in range(3):
            await asyncio.gather(*(work(i) for i in range(20)))
        (total,) = await usage.stats(group_by=None)
        assert total["requests"] == 200
    finally:
        await db.aclose()
