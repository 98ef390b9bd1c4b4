"""Apply the schema migrations at start-up, from code, on SQLite and Postgres.

:func:`migrate` upgrades the database to the newest revision in ``storage/migrations/versions``
inside ONE transaction (DDL is transactional on both backends; SQLAlchemy emits SQLite's
``BEGIN``), holding a lock so that two gateways starting together do not both run it:
``pg_advisory_xact_lock`` on Postgres, ``BEGIN IMMEDIATE`` on SQLite.  Running it again is a no-op.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic.config import Config as AlembicConfig
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from modelyard.storage.db import Database
from modelyard.storage.tables import metadata

__all__ = ["MIGRATIONS_DIR", "current_revision", "head_revision", "migrate", "run_in_context"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: the Postgres advisory lock id held while migrating (any constant; "myrd" in ASCII)
_PG_LOCK_ID = 0x6D797264


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def _load_script() -> ScriptDirectory:
    """Read the revision files (blocking file I/O: called in a worker thread)."""
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
    def upgrade_revs(rev: Any, _context: MigrationContext) -> Any:
        return script._upgrade_revs("head", rev)

    env = EnvironmentContext(_alembic_config(), script, fn=upgrade_revs, destination_rev="head")
    with env:
        run_in_context(env, connection)


async def migrate(database: Database) -> None:
    """Bring the database schema up to date (idempotent; safe with several processes starting at once)."""
    script = await asyncio.to_thread(_load_script)
    async with database.begin_write() as conn:
        if database.is_postgres:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
        await conn.run_sync(_upgrade, script)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(database: Database) -> str | None:
    """The revision the database is at (None before the first migration)."""
    async with database.engine.connect() as conn:
        return await conn.run_sync(_current)


async def head_revision() -> str | None:
    """The newest revision shipped with this version of modelyard."""
    script = await asyncio.to_thread(_load_script)
    return script.get_current_head()
