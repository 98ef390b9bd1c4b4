"""One plain ``sqlite3`` connection on a thread of its own, for the usage writer's batches.

Every statement on the engine's connections is a trip to aiosqlite's thread and back; under load
each trip waits for the event loop to hand over the GIL (up to the interpreter's switch interval,
5 ms) once to start the statement and once to deliver its result.  A usage batch is about thirty
statements (BEGIN, the multi-row inserts, the rollup marks, COMMIT), and at 3,300 requests/s a
500-record batch took about 1.2 s that way: the writer fell behind the traffic and spilled most
records to the spill file, to replay them later (more CPU, and late figures in ``/v1/stats``).
Here a whole transaction is one trip: the caller's function runs on this thread with the
connection, between ``BEGIN IMMEDIATE`` and ``COMMIT``.

Errors come back as SQLAlchemy's exception classes (``IntegrityError``, ``OperationalError`` ...),
the same the engine raises, so callers tell a refused row from an unreachable database the same way.
After any error that is not about the rows themselves the connection is closed and opened again on
the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

__all__ = ["SqliteDirect"]

_T = TypeVar("_T")


class SqliteDirect:
    """Write transactions on one dedicated connection (opened on first use, on its own thread)."""

    def __init__(self, path: str, configure: Callable[[sqlite3.Connection], None], busy_timeout_ms: int) -> None:
        self.path = path
        self._configure = configure
        self._timeout_s = busy_timeout_ms / 1000
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelyard-sqlite-writer")
        #: touched only on the executor's thread
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._used = False

    async def write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """``fn(connection)`` in one write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``), on the
        connection's thread.  If the caller is cancelled, the transaction still runs to its end."""
        if self._closed:
            raise RuntimeError("the database is closed")
        self._used = True
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._transaction, fn)

    def _transaction(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            conn = self._conn
            if conn is None:
                conn = sqlite3.connect(
                    self.path, timeout=self._timeout_s, isolation_level=None, check_same_thread=False
                )
                try:
                    self._configure(conn)
                except BaseException:
                    conn.close()
                    raise
                self._conn = conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            return result
        except sqlite3.Error as exc:
            if not isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError)):
                self._drop()
            raise DBAPIError.instance(None, None, exc, sqlite3.Error) from exc

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    async def aclose(self) -> None:
        """Close the connection (after any transaction still running) and stop the thread."""
        if self._closed:
            return
        self._closed = True
        if self._used:  # else no thread was ever started
            await asyncio.get_running_loop().run_in_executor(self._executor, self._drop)
        self._executor.shutdown(wait=False)
