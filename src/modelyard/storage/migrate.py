"""Apply the schema migrations at start-up, from code, on SQLite and Postgres.

:func:`migrate` upgrades the database to the newest revision in ``storage/migrations/versions``
inside ONE transaction (DDL is transactional on both backends; SQLAlchemy emits SQLite's
``BEGIN``), holding a lock so that two gateways starting together do not both run it:
``pg_advisory_xact_lock`` on Postgres, ``BEGIN IMMEDIATE`` on SQLite.  Running it again is a no-op.

A new, empty database does not go through alembic at all: :func:`migrate` creates the schema of
``tables.py`` (which the tests hold equal to the migrations' result) and records the newest shipped
revision in ``alembic_version``, exactly as alembic would: the "create_all, then stamp head" recipe.
Importing and running alembic costs about 0.2 s and 15 MB of memory that a gateway keeps for its
whole life; :func:`upgrade` is the alembic path, for every database that already has a schema.
"""

from __future__ import annotations

import asyncio
import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from modelyard.storage.aio import AsyncConnection
from modelyard.storage.db import Database
from modelyard.storage.tables import metadata

if TYPE_CHECKING:  # alembic is imported only when a migration has to run (it costs ~0.3 s at start-up)
    from alembic.config import Config as AlembicConfig
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

__all__ = ["MIGRATIONS_DIR", "current_revision", "head_revision", "migrate", "run_in_context", "upgrade"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: the Postgres advisory lock id held while migrating (any constant; "myrd" in ASCII)
_PG_LOCK_ID = 0x6D797264

#: alembic's version table, as alembic itself creates it (one row: the revision the schema is at)
_VERSION_TABLE = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def _alembic_config() -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _load_script() -> ScriptDirectory:
    """Read the revision files (blocking file I/O: called in a worker thread)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    script.get_heads()  # forces the revision map to load now
    return script


def run_in_context(context: Any, connection: Connection) -> None:
    """Configure an alembic environment on ``connection`` and run the pending migrations.

    Shared by :func:`migrate` and ``migrations/env.py`` (``context`` is the alembic environment).
    """
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _upgrade(connection: Connection, script: ScriptDirectory) -> None:
    from alembic.runtime.environment import EnvironmentContext

    def upgrade_revs(rev: Any, _context: MigrationContext) -> Any:
        return script._upgrade_revs("head", rev)

    env = EnvironmentContext(_alembic_config(), script, fn=upgrade_revs, destination_rev="head")
    with env:
        run_in_context(env, connection)


@functools.cache
def shipped_head() -> str | None:
    """The newest revision among the shipped revision files, read without importing alembic."""
    revisions: dict[str, str | None] = {}
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        text_ = path.read_text(encoding="utf-8")
        rev = re.search(r'^revision\s*=\s*["\']([^"\']+)["\']', text_, re.M)
        down = re.search(r'^down_revision\s*=\s*(?:["\']([^"\']+)["\']|None)', text_, re.M)
        if rev is not None:
            revisions[rev.group(1)] = down.group(1) if down is not None else None
    heads = set(revisions) - {d for d in revisions.values() if d}
    return heads.pop() if len(heads) == 1 else None


async def _is_current(database: Database) -> bool:
    head = await asyncio.to_thread(shipped_head)
    if head is None:
        return False
    try:
        async with database.engine.connect() as conn:
            current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one_or_none()
    except DBAPIError:
        return False  # no alembic_version table yet: a new database
    return current == head


async def migrate(database: Database) -> None:
    """Bring the database schema up to date (idempotent; safe with several processes starting at once).

    When the database is already at the newest shipped revision (every start but the first after
    an upgrade), this is one query and alembic is not even imported.  A new, empty database gets
    the schema of ``tables.py`` and the newest revision directly, without alembic either; any other
    database is upgraded by alembic (:func:`upgrade`).
    """
    if await _is_current(database):
        return
    head = await asyncio.to_thread(shipped_head)
    if head is not None:
        async with database.begin_write() as conn:
            await _lock(database, conn)
            if await conn.run_sync(_create_new, head):
                return
    await upgrade(database)


async def upgrade(database: Database) -> None:
    """Run the pending revision files with alembic, in one transaction, holding the migration lock."""
    script = await asyncio.to_thread(_load_script)
    async with database.begin_write() as conn:
        await _lock(database, conn)
        await conn.run_sync(_upgrade, script)


async def _lock(database: Database, conn: AsyncConnection) -> None:
    """Take the migration lock for the rest of ``conn``'s transaction (on SQLite, BEGIN IMMEDIATE did)."""
    if database.is_postgres:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})


def _create_new(connection: Connection, head: str) -> bool:
    """On a database with none of our tables: create the schema, record ``head``, return True.

    True too when another gateway has just done it (we waited for its lock); False when the database
    has a schema that alembic must upgrade (or that it does not recognise, as before).
    """
    existing = set(inspect(connection).get_table_names())
    if _VERSION_TABLE.name in existing:
        current = connection.execute(select(_VERSION_TABLE.c.version_num)).scalar_one_or_none()
        return current == head
    if existing & set(metadata.tables):
        return False
    metadata.create_all(connection, checkfirst=False)
    _VERSION_TABLE.create(connection)
    connection.execute(_VERSION_TABLE.insert().values(version_num=head))
    return True


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(database: Database) -> str | None:
    """The revision the database is at (None before the first migration)."""
    async with database.engine.connect() as conn:
        return await conn.run_sync(_current)


async def head_revision() -> str | None:
    """The newest revision shipped with this version of modelyard."""
    script = await asyncio.to_thread(_load_script)
    return script.get_current_head()
