from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from modelyard.errors import ConfigError
from modelyard.storage import Database, async_url, current_revision, head_revision, migrate
from modelyard.storage.migrate import MIGRATIONS_DIR
from modelyard.storage.tables import metadata
from tests.storage.conftest import Target

ROOT = Path(__file__).resolve().parents[2]
TABLES = {
    "settings",
    "organizations",
    "api_keys",
    "usage_requests",
    "usage_attempts",
    "provider_credentials",
    "budget_events",
}


async def table_names(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_migrate_creates_the_schema_and_is_idempotent(raw_db: Database) -> None:
    assert await current_revision(raw_db) is None
    assert not await table_names(raw_db) & TABLES
    await migrate(raw_db)
    head = await head_revision()
    assert head == "0001"
    assert await current_revision(raw_db) == head
    assert await table_names(raw_db) >= TABLES | {"alembic_version"}
    async with raw_db.begin() as conn:
        await conn.execute(text("INSERT INTO organizations (id, name, created_at) VALUES ('o1', 'One', '2026-01-01')"))
    await migrate(raw_db)  # again: a no-op that keeps the data
    await migrate(raw_db)
    assert await current_revision(raw_db) == head
    async with raw_db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM organizations"))).scalar_one() == 1
        assert (await conn.execute(text("SELECT count(*) FROM alembic_version"))).scalar_one() == 1


async def test_migrated_schema_matches_the_table_definitions(db: Database) -> None:
    """The hand-written migration and tables.py describe the same schema (types, indexes, constraints)."""

    def diff(conn: object) -> list[object]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})  # type: ignore[arg-type]
        return list(compare_metadata(ctx, metadata))

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_concurrent_starts_migrate_once(target: Target) -> None:
    """Several gateways starting together: each waits for the lock; all end at head, no error."""
    dbs = [target.open() for _ in range(4)]
    await asyncio.gather(*(migrate(db) for db in dbs))
    for db in dbs:
        assert await current_revision(db) == "0001"
    assert await table_names(dbs[0]) >= TABLES


async def test_sqlite_runs_in_wal_mode_with_a_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/sub/dir/x.db", sqlite_busy_timeout_ms=1234)
    try:
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one() == 1234
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar_one() == 1
        assert (tmp_path / "sub" / "dir" / "x.db").exists()
    finally:
        await db.aclose()


async def test_sqlite_ddl_is_transactional(tmp_path: Path) -> None:
    """SQLAlchemy emits BEGIN, so a failed migration leaves nothing half-made."""
    db = Database(f"sqlite:///{tmp_path}/x.db")
    try:
        with pytest.raises(RuntimeError):
            async with db.begin() as conn:
                await conn.execute(text("CREATE TABLE half (id INTEGER)"))
                raise RuntimeError("boom")
        assert "half" not in await table_names(db)
    finally:
        await db.aclose()


def test_urls_get_an_async_driver() -> None:
    assert async_url("sqlite:///./x.db").render_as_string() == "sqlite+aiosqlite:///./x.db"
    assert async_url("postgresql://u:p@h:5/d").render_as_string(False) == "postgresql+asyncpg://u:p@h:5/d"
    assert async_url("postgres://h/d").render_as_string() == "postgresql+asyncpg://h/d"
    assert async_url("postgresql+asyncpg://h/d").drivername == "postgresql+asyncpg"
    assert async_url("sqlite+aiosqlite:///y.db").drivername == "sqlite+aiosqlite"


def test_unsupported_databases_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unsupported database 'mysql'"):
        Database("mysql://h/d")
    with pytest.raises(ConfigError, match="not a database URL"):
        Database("not a url")


async def test_ping(db: Database, tmp_path: Path) -> None:
    assert await db.ping() is True
    (tmp_path / "adir.db").mkdir()
    broken = [Database(f"sqlite:///{tmp_path}/adir.db"), Database("postgresql://postgres@127.0.0.1:1/none")]
    try:
        for database in broken:
            assert await database.ping(timeout_s=5) is False
    finally:
        for database in broken:
            await database.aclose()


def test_migration_files_ship_inside_the_package() -> None:
    assert MIGRATIONS_DIR.is_dir()
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "versions" / "0001_initial.py").is_file()
    assert MIGRATIONS_DIR.is_relative_to(ROOT / "src" / "modelyard")


@pytest.mark.parametrize("ci", ["true", ""])
def test_postgres_cases_fail_in_ci_and_skip_otherwise_when_postgres_is_missing(ci: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(MODELYARD_TEST_PG_URL="postgresql://postgres@127.0.0.1:1/test", CI=ci)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "idempotent and postgres", __file__],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    if ci:
        assert proc.returncode == 1, output
        assert "CI=true, so the Postgres tests must run" in output
        assert "1 error" in output
    else:
        assert proc.returncode == 0, output
        assert "1 skipped" in output
