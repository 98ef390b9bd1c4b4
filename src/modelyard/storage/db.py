"""The database connection: one SQLAlchemy async engine made from the configured URL.

``sqlite:///./x.db`` runs on aiosqlite, ``postgresql://`` (or ``postgres://``) on asyncpg; a URL
that already names a driver (``postgresql+asyncpg://``) is used as given.  SQLite connections run in
WAL mode with a busy timeout, foreign keys on and real transactions (SQLAlchemy emits ``BEGIN``,
so DDL is transactional too); write transactions take the write lock up front
(``BEGIN IMMEDIATE``) so that concurrent writers wait for each other instead of failing.
``statement_cache`` (``database.statement_cache``) sizes asyncpg's prepared-statement caches on
PostgreSQL; 0 makes the gateway work behind PgBouncer in transaction mode.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import Insert

from modelyard.errors import ConfigError
from modelyard.startup import database_error
from modelyard.storage.aio import AsyncConnection, AsyncEngine, create_async_engine
from modelyard.storage.sketch import install_sqlite_functions
from modelyard.storage.sqlite_direct import SqliteDirect

__all__ = ["Database", "async_url", "placeholders"]

log = logging.getLogger("modelyard.storage")

#: by default, SQLite waits this long for another connection's write lock before failing
SQLITE_BUSY_TIMEOUT_MS = 10_000
_IMMEDIATE = "modelyard_immediate"


def async_url(url: str) -> URL:
    """The configured database URL with an async driver (aiosqlite or asyncpg) filled in."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    parsed = make_url(url)
    if parsed.drivername == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite")
    if parsed.drivername == "postgresql":
        return parsed.set(drivername="postgresql+asyncpg")
    return parsed


def _bind_none_directly() -> None:
    """Make sqlite3 bind ``None`` through its adapter registry's fast path.

    For any value that is not an exact int, float, str or bytearray, sqlite3 looks up an adapter
    for its type, then asks the protocol for ``__adapt__`` and the value for ``__conform__``, and
    only then binds it: 0.71 us per ``None`` on Python 3.11 (0.10 us for an int), about thirteen
    of them in a request's two usage rows.  With an adapter registered for ``NoneType`` the lookup
    finds it at once (0.28 us).  The adapter is ``{}.get``, a C callable that maps ``None`` to
    ``None``, so what is stored does not change (NULL).  sqlite3's registry is process-wide; the
    registration is idempotent and changes no value any other user of sqlite3 binds."""
    sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))


def placeholders(paramstyle: str, count: int) -> str:
    """``count`` bound parameters in a DBAPI driver's own style: ``?, ?`` (qmark), ``$1, $2``
    (numeric_dollar, asyncpg), ``:1, :2`` (numeric) or ``%s, %s`` (format, pyformat)."""
    if paramstyle == "qmark":
        return ", ".join("?" for _ in range(count))
    if paramstyle in ("numeric_dollar", "numeric"):
        sign = "$" if paramstyle == "numeric_dollar" else ":"
        return ", ".join(f"{sign}{i}" for i in range(1, count + 1))
    return ", ".join("%s" for _ in range(count))


def _unique_statement_name() -> str:
    return f"__modelyard_{uuid.uuid4().hex}__"


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:")


class Database:
    """An async engine plus the few things the stores need from it.

    ``connect_args`` go to the driver (for example ``{"server_settings": {"search_path": "s"}}``
    for asyncpg).  Call :meth:`aclose` when done: it disposes the engine's connection pool.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int = 20,
        pool_timeout_s: float = 30.0,
        connect_args: dict[str, Any] | None = None,
        sqlite_busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
        statement_cache: int | None = None,
        echo: bool = False,
    ) -> None:
        #: the URL as configured (it may hold a password: shown only through redact_url)
        self.configured_url = url
        try:
            self.url = async_url(url)
        except ArgumentError as exc:
            raise ConfigError(f"not a database URL: {exc}", path="database") from None
        self.dialect = self.url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigError(
                f"unsupported database {self.url.drivername!r}: use sqlite:///path.db or postgresql://...",
                path="database",
            )
        kwargs: dict[str, Any] = {"echo": echo, "connect_args": dict(connect_args or {})}
        if self.dialect == "sqlite":
            if _is_memory(self.url):
                kwargs["poolclass"] = StaticPool
            else:
                try:
                    Path(str(self.url.database)).expanduser().parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise database_error(url, exc) from exc
                kwargs.update(pool_size=pool_size, max_overflow=max_overflow, pool_timeout=pool_timeout_s)
            kwargs["connect_args"].setdefault("timeout", sqlite_busy_timeout_ms / 1000)
        else:
            if statement_cache is not None:
                # asyncpg's own cache and SQLAlchemy's in front of it; with 0, statements get unique
                # names so that PgBouncer (transaction mode) never sees a name twice on one server
                self.url = self.url.update_query_dict({"prepared_statement_cache_size": str(statement_cache)})
                kwargs["connect_args"].setdefault("statement_cache_size", statement_cache)
                if statement_cache == 0:
                    kwargs["connect_args"].setdefault("prepared_statement_name_func", _unique_statement_name)
            kwargs.update(
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout_s,
                pool_pre_ping=True,
                pool_recycle=1800,
            )
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        #: SQLite on a file: a plain connection on its own thread for batched writes (storage.sqlite_direct)
        self.direct: SqliteDirect | None = None
        if self.dialect == "sqlite":
            self._install_sqlite_hooks(memory=_is_memory(self.url), busy_timeout_ms=sqlite_busy_timeout_ms)
        self._closed = False

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def _install_sqlite_hooks(self, *, memory: bool, busy_timeout_ms: int) -> None:
        sync_engine = self.engine.sync_engine
        _bind_none_directly()

        def configure(dbapi_connection: Any) -> None:
            # SQLAlchemy, not the sqlite3 module, decides when a transaction begins (see _on_begin)
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                if not memory:
                    cursor.execute("PRAGMA journal_mode=WAL")
                    # WAL + NORMAL: a committed transaction survives a process crash (not a power cut)
                    cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
                cursor.execute("PRAGMA foreign_keys=ON")
            finally:
                cursor.close()

        @event.listens_for(sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            configure(dbapi_connection)
            install_sqlite_functions(dbapi_connection)  # ln and ceil, for the usage rollups

        if not memory and not self.url.query:  # the usage writer's batches: one trip to a thread each
            path = os.path.abspath(str(self.url.database))  # what SQLAlchemy's sqlite dialect opens
            self.direct = SqliteDirect(path, _writer_configure(configure), busy_timeout_ms)

        @event.listens_for(sync_engine, "begin")
        def _on_begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get(_IMMEDIATE, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    def insert_or_ignore(self, table: Table) -> Insert:
        """``INSERT ... ON CONFLICT DO NOTHING`` into ``table``, in this database's dialect.

        The dialect module is imported here, on first use, not at start-up: a gateway on SQLite never
        loads SQLAlchemy's PostgreSQL dialect (about 0.1 s and 2.5 MB), nor one on Postgres SQLite's.
        """
        if self.is_postgres:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table).on_conflict_do_nothing()
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table).on_conflict_do_nothing()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction, committed on success and rolled back on error."""
        async with self.engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def begin_write(self) -> AsyncIterator[AsyncConnection]:
        """Like :meth:`begin`, for transactions that write (on SQLite: ``BEGIN IMMEDIATE``)."""
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                await conn.execution_options(**{_IMMEDIATE: True})
            async with conn.begin():
                yield conn

    async def check(self) -> None:
        """Connect and run ``SELECT 1``, at start-up: a database that cannot be reached or opened
        (refused, unknown host or database, wrong password, a SQLite file that cannot be opened) is
        a :class:`~modelyard.errors.StartupError` that names it without its password."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (OSError, TimeoutError, DBAPIError) as exc:
            raise database_error(self.configured_url, exc) from exc

    async def ping(self, timeout_s: float = 5.0) -> bool:
        """True when the database answers ``SELECT 1`` within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:  # any failure means "not reachable now"
            log.debug("database ping failed: %s", type(exc).__name__)
            return False
        return True

    async def aclose(self) -> None:
        """Close every pooled connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.direct is not None:
            await self.direct.aclose()
        await self.engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"


def _writer_configure(configure: Callable[[Any], None]) -> Callable[[sqlite3.Connection], None]:
    """The usage writer's connection: the engine's settings, and statement journals in memory.

    A batch's multi-row inserts run in one transaction, so SQLite keeps a statement journal for each
    (to undo that statement alone if it fails midway).  Past 64 KiB it spills to a temporary file:
    with the default ``temp_store`` that is a new file in /var/tmp per statement, opened, written
    page by page and deleted: about two writes per request, two thirds of the writer's ``pwrite``
    calls.  A statement's journal is at most the pages one insert of up to 256 rows touches (a few
    hundred KiB), and it is freed when the statement ends.
    """

    def writer(conn: sqlite3.Connection) -> None:
        configure(conn)
        conn.execute("PRAGMA temp_store=MEMORY")

    return writer
