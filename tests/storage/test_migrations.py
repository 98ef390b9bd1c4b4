from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from modelyard.errors import ConfigError
from modelyard.storage import Database, async_url, current_revision, head_revision, migrate
from modelyard.storage.migrate import MIGRATIONS_DIR, upgrade
from modelyard.storage.tables import metadata
from tests.storage.conftest import Target, pg_admin

ROOT = Path(__file__).resolve().parents[2]
TABLES = {
    "settings",
    "organizations",
    "api_keys",
    "usage_requests",
    "usage_attempts",
    "provider_credentials",
    "budget_events",
    "config_revisions",
    "audit_log",
    "stored_responses",
    "usage_rollups",
    "usage_rollup_dirty",
}


async def table_names(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_migrate_creates_the_schema_and_is_idempotent(raw_db: Database) -> None:
    assert await current_revision(raw_db) is None
    assert not await table_names(raw_db) & TABLES
    await migrate(raw_db)
    head = await head_revision()
    assert head == "0010"
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


async def test_migrated_schema_matches_the_table_definitions(raw_db: Database) -> None:
    """The hand-written migration and tables.py describe the same schema (types, indexes, constraints)."""

    def diff(conn: object) -> list[object]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})  # type: ignore[arg-type]
        return list(compare_metadata(ctx, metadata))

    await upgrade(raw_db)  # the revision files, through alembic
    async with raw_db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


def _ddl(name: str, sql: str) -> str:
    """A table's DDL as the same table reads the same: whitespace normalised (a column added by a
    later migration is written on the line of the one before it), ``CREATE TABLE "name"`` as
    ``CREATE TABLE name`` (alembic's batch copy, renamed back, quotes it) and the table constraints
    in sorted order (the batch copy writes them in no fixed order); the columns keep theirs."""
    sql = " ".join(sql.replace(f'CREATE TABLE "{name}"', f"CREATE TABLE {name}", 1).split())
    head, paren, body = sql.partition("(")
    if not head.startswith("CREATE TABLE") or not body.endswith(")"):
        return sql
    items, depth, start = [], 0, 0
    body = body[:-1]
    for i, ch in enumerate(body):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            items.append(body[start:i].strip())
            start = i + 1
    items.append(body[start:].strip())
    columns = [item for item in items if not item.startswith("CONSTRAINT")]
    constraints = sorted(item for item in items if item.startswith("CONSTRAINT"))
    return f"{head}{paren} {', '.join(columns + constraints)} )"


def _schema(conn: Connection) -> dict[str, object]:
    """Everything reflection sees of the schema, per table (and on SQLite the DDL text itself)."""
    insp = inspect(conn)
    out: dict[str, object] = {}
    for table in sorted(insp.get_table_names()):
        columns = [
            (c["name"], repr(c["type"]), c["nullable"], c.get("default"), c.get("autoincrement"))
            for c in insp.get_columns(table)
        ]
        out[table] = (
            columns,
            insp.get_pk_constraint(table),
            sorted(insp.get_foreign_keys(table), key=repr),
            sorted(insp.get_indexes(table), key=repr),
            sorted(insp.get_unique_constraints(table), key=repr),
            sorted(insp.get_check_constraints(table), key=repr),
        )
    if conn.dialect.name == "sqlite":
        # whitespace normalised: a column added by a later migration (ALTER TABLE ADD COLUMN) is
        # written on the line of the one before it; and a table a migration rebuilt (alembic's batch
        # copy, renamed back) is written CREATE TABLE "name": the same table
        rows = conn.execute(text("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")).all()
        out["ddl"] = [(t, n, tbl, _ddl(n, sql) if sql else sql) for t, n, tbl, sql in rows]
    return out


async def test_a_new_database_gets_exactly_the_schema_of_the_migrations(target: Target, tmp_path: Path) -> None:
    """migrate() builds a new database from tables.py and stamps it, without alembic: same result as the files."""
    by_alembic = target.open()
    await upgrade(by_alembic)
    schema = f"n_{secrets.token_hex(5)}"
    if target.backend == "sqlite":
        new = Database(f"sqlite:///{tmp_path}/new.db")
    else:
        await pg_admin(f'CREATE SCHEMA "{schema}"', database=target.pg_database)
        new = Database(target.url, connect_args={"server_settings": {"search_path": schema}})
    try:
        await migrate(new)
        assert await current_revision(new) == await head_revision() == "0010"
        async with by_alembic.engine.connect() as a, new.engine.connect() as b:
            expected, got = await a.run_sync(_schema), await b.run_sync(_schema)
        assert set(got) >= TABLES | {"alembic_version"}
        assert got == expected
    finally:
        await new.aclose()
        if target.backend == "postgres":
            await pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE', database=target.pg_database)


def test_a_new_database_is_created_without_importing_alembic(tmp_path: Path) -> None:
    """alembic costs ~0.2 s and ~15 MB that a gateway would keep: a first start does not import it."""
    code = (
        "import asyncio, sys\n"
        "from modelyard.storage import Database, migrate\n"
        "async def main():\n"
        f"    db = Database('sqlite:///{tmp_path}/x.db')\n"
        "    await migrate(db)\n"
        "    await migrate(db)\n"
        "    await db.aclose()\n"
        "asyncio.run(main())\n"
        "assert 'alembic' not in sys.modules, 'alembic was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


async def test_a_database_with_a_schema_is_left_to_alembic(raw_db: Database) -> None:
    """Tables without a recorded revision are not a new database: migrate() hands them to alembic, as before."""
    async with raw_db.begin() as conn:
        await conn.execute(text("CREATE TABLE settings (key VARCHAR(100) PRIMARY KEY)"))
    with pytest.raises(DBAPIError):  # alembic tries to create `settings` and fails; nothing is half-made
        await migrate(raw_db)
    assert await current_revision(raw_db) is None
    assert await table_names(raw_db) & TABLES == {"settings"}


async def test_concurrent_starts_migrate_once(target: Target) -> None:
    """Several gateways starting together: each waits for the lock; all end at head, no error."""
    dbs = [target.open() for _ in range(4)]
    await asyncio.gather(*(migrate(db) for db in dbs))
    for db in dbs:
        assert await current_revision(db) == "0010"
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
