"""Storage fixtures: every test runs against a real SQLite file and the real PostgreSQL.

Postgres: one fresh database ``modelyard_test_<random>`` per test session (created through the
server's maintenance connection, dropped at the end, so parallel runs never meet) and one fresh
schema per test inside it.  The server is ``MODELYARD_TEST_PG_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``).  When it is unreachable the Postgres cases are
skipped, except with ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from modelyard.storage import Database, migrate

PG_URL = os.environ.get("MODELYARD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgres")

T = TypeVar("T")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a private loop in another thread (usable from any context)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(fn())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _pg_params(url: str) -> dict[str, Any]:
    u = make_url(url)
    return {
        "host": u.host or "127.0.0.1",
        "port": u.port or 5432,
        "user": u.username or "postgres",
        "password": u.password,
        "database": u.database or "postgres",
    }


async def pg_admin(sql: str, *, database: str | None = None) -> Any:
    params = _pg_params(PG_URL)
    if database is not None:
        params["database"] = database
    conn = await asyncpg.connect(**params, timeout=5)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The name of a fresh Postgres database for this test session."""
    name = f"modelyard_test_{secrets.token_hex(5)}"
    try:
        run_async(lambda: pg_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        p = _pg_params(PG_URL)
        message = (
            f"PostgreSQL at {p['host']}:{p['port']} (MODELYARD_TEST_PG_URL) is not usable: {type(exc).__name__}: {exc}"
        )
        if in_ci():
            hint = "CI=true, so the Postgres tests must run: start the postgres service."
            pytest.fail(f"{message}. {hint}", pytrace=False)
        pytest.skip(message)
    yield name
    run_async(lambda: pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Target:
    """Where a test's database lives; ``open()`` makes a new :class:`Database` on it (closed at teardown)."""

    backend: str
    url: str
    connect_args: dict[str, Any] = field(default_factory=dict)
    sqlite_path: Path | None = None
    pg_database: str | None = None
    schema: str | None = None
    opened: list[Database] = field(default_factory=list)

    def open(self, **kwargs: Any) -> Database:
        db = Database(self.url, connect_args=dict(self.connect_args), **kwargs)
        self.opened.append(db)
        return db


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        request.getfixturevalue("pg_database")
    return str(request.param)


@pytest.fixture
async def target(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    if backend == "sqlite":
        path = tmp_path / "modelyard.db"
        t = Target("sqlite", f"sqlite:///{path}", sqlite_path=path)
    else:
        database = request.getfixturevalue("pg_database")
        schema = f"t_{secrets.token_hex(5)}"
        await pg_admin(f'CREATE SCHEMA "{schema}"', database=database)
        url = make_url(PG_URL).set(database=database).render_as_string(hide_password=False)
        t = Target(
            "postgres",
            url,
            connect_args={"server_settings": {"search_path": schema}},
            pg_database=database,
            schema=schema,
        )
    try:
        yield t
    finally:
        for db in t.opened:
            await db.aclose()
        if t.schema is not None:
            await pg_admin(f'DROP SCHEMA IF EXISTS "{t.schema}" CASCADE', database=t.pg_database)


@pytest.fixture
async def raw_db(target: Target) -> Database:
    """A database with no schema yet."""
    return target.open()


@pytest.fixture
async def db(target: Target) -> Database:
    """A migrated database."""
    database = target.open()
    await migrate(database)
    return database


class Outage:
    """A real failure of the database, and its end.

    SQLite: another connection holds the write lock (our writes fail with "database is locked"
    after the store's short busy timeout).  Postgres: the database stops accepting connections
    and every open one is terminated.
    """

    def __init__(self, target: Target) -> None:
        self.target = target
        self._lock: sqlite3.Connection | None = None

    async def begin(self) -> None:
        if self.target.backend == "sqlite":
            self._lock = sqlite3.connect(str(self.target.sqlite_path), isolation_level=None, check_same_thread=False)
            self._lock.execute("BEGIN EXCLUSIVE")
        else:
            name = self.target.pg_database
            await pg_admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            await pg_admin(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' "
                "AND pid <> pg_backend_pid()"
            )

    async def end(self) -> None:
        if self.target.backend == "sqlite":
            assert self._lock is not None
            self._lock.execute("COMMIT")
            self._lock.close()
            self._lock = None
        else:
            await pg_admin(f'ALTER DATABASE "{self.target.pg_database}" ALLOW_CONNECTIONS true')


@pytest.fixture
async def outage(target: Target) -> AsyncIterator[Outage]:
    o = Outage(target)
    try:
        yield o
    finally:
        if o._lock is not None or target.backend == "postgres":
            await o.end()


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll until ``predicate`` holds (liveness guard: fail instead of hanging)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        if await predicate():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)
