"""A small asyncio front for SQLAlchemy's core engine: what the stores use of ``sqlalchemy.ext.asyncio``.

``sqlalchemy.ext.asyncio`` imports SQLAlchemy's ORM (its ``AsyncSession``), about 7 MB and 0.15 s at
start-up, and modelyard uses no ORM.  These classes do what its ``AsyncEngine``/``AsyncConnection``
do for the core API, the same way: every call runs the sync engine's method in a greenlet
(``greenlet_spawn``), in which the async driver (aiosqlite, asyncpg) is awaited.  Results are
buffered, as there: the driver fetched the rows when the statement ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Concatenate, ParamSpec, TypeVar, TypeVarTuple, overload

from sqlalchemy.engine import Connection, CursorResult, Dialect, Engine, create_engine
from sqlalchemy.engine.base import Transaction
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.selectable import TypedReturnsRows
from sqlalchemy.util.concurrency import greenlet_spawn

__all__ = ["AsyncConnection", "AsyncEngine", "AsyncTransaction", "create_async_engine"]

_T = TypeVar("_T")
_P = ParamSpec("_P")
_Ts = TypeVarTuple("_Ts")


def create_async_engine(url: Any, **kw: Any) -> AsyncEngine:
    """An engine on an async driver (``sqlite+aiosqlite``, ``postgresql+asyncpg``)."""
    if kw.get("server_side_cursors", False):
        raise InvalidRequestError("server-side cursors are not supported by modelyard's async engine")
    kw["_is_async"] = True
    return AsyncEngine(create_engine(url, **kw))


async def _run_to_completion(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run ``coro`` (a cleanup) to its end even if the caller is cancelled meanwhile; the
    cancellation is raised once it finished (as SQLAlchemy does when it closes a connection)."""
    task = asyncio.create_task(coro)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError as err:
            if task.done():
                raise
            cancelled = err
        else:
            break
    if cancelled is not None:
        raise cancelled
    return result


async def _buffered(result: CursorResult[*_Ts]) -> CursorResult[*_Ts]:
    """The result with its async cursor released (the rows are already fetched)."""
    cursor = result.cursor
    if cursor is not None:
        await cursor._async_soft_close()
    return result


class AsyncEngine:
    """The sync engine (``sync_engine``, also the target for ``event.listens_for``) behind an async API."""

    def __init__(self, sync_engine: Engine) -> None:
        if not sync_engine.dialect.is_async:
            raise InvalidRequestError(f"the driver {sync_engine.dialect.driver!r} is not async")
        self.sync_engine = sync_engine

    @property
    def dialect(self) -> Dialect:
        return self.sync_engine.dialect

    @property
    def url(self) -> Any:
        return self.sync_engine.url

    def connect(self) -> AsyncConnection:
        """A connection, checked out of the pool when awaited or entered (``async with``)."""
        return AsyncConnection(self)

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction: committed on success, rolled back on error."""
        async with self.connect() as conn, conn.begin():
            yield conn

    async def dispose(self, close: bool = True) -> None:
        await greenlet_spawn(self.sync_engine.dispose, close=close)


class AsyncConnection:
    """One pooled connection; awaitable and an async context manager (closed on exit)."""

    def __init__(self, engine: AsyncEngine, sync_connection: Connection | None = None) -> None:
        self.engine = engine
        self.sync_engine = engine.sync_engine
        self.sync_connection = sync_connection

    async def start(self) -> AsyncConnection:
        if self.sync_connection is not None:
            raise InvalidRequestError("connection is already started")
        self.sync_connection = await greenlet_spawn(self.sync_engine.connect)
        return self

    def __await__(self) -> Generator[Any, None, AsyncConnection]:
        return self.start().__await__()

    async def __aenter__(self) -> AsyncConnection:
        return await self.start()

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        await _run_to_completion(self.close())

    @property
    def _proxied(self) -> Connection:
        if self.sync_connection is None:
            raise InvalidRequestError("the connection was not started (await it or use `async with`)")
        return self.sync_connection

    @property
    def dialect(self) -> Dialect:
        return self.sync_engine.dialect

    @property
    def closed(self) -> bool:
        return self.sync_connection is None or self.sync_connection.closed

    def begin(self) -> AsyncTransaction:
        return AsyncTransaction(self)

    async def execution_options(self, **opt: Any) -> AsyncConnection:
        conn = self._proxied
        await greenlet_spawn(conn.execution_options, **opt)
        return self

    def get_execution_options(self) -> Mapping[str, Any]:
        return self._proxied.get_execution_options()

    @overload
    async def execute(
        self,
        statement: TypedReturnsRows[*_Ts],
        parameters: Any = None,
        *,
        execution_options: Mapping[str, Any] | None = None,
    ) -> CursorResult[*_Ts]: ...

    @overload
    async def execute(
        self,
        statement: Executable,
        parameters: Any = None,
        *,
        execution_options: Mapping[str, Any] | None = None,
    ) -> CursorResult[*tuple[Any, ...]]: ...

    async def execute(
        self,
        statement: Executable,
        parameters: Any = None,
        *,
        execution_options: Mapping[str, Any] | None = None,
    ) -> CursorResult[*tuple[Any, ...]]:
        """Run a statement; a buffered result."""
        result: CursorResult[*tuple[Any, ...]] = await greenlet_spawn(
            self._proxied.execute, statement, parameters, execution_options=execution_options, _require_await=True
        )
        return await _buffered(result)

    async def exec_driver_sql(
        self, statement: str, parameters: Any = None, execution_options: Mapping[str, Any] | None = None
    ) -> CursorResult[*tuple[Any, ...]]:
        """Run a SQL string as the driver takes it; a buffered result."""
        result: CursorResult[*tuple[Any, ...]] = await greenlet_spawn(
            self._proxied.exec_driver_sql, statement, parameters, execution_options, _require_await=True
        )
        return await _buffered(result)

    async def run_sync(self, fn: Callable[Concatenate[Connection, _P], _T], *arg: _P.args, **kw: _P.kwargs) -> _T:
        """``fn(sync_connection, *arg, **kw)`` in a greenlet: sync SQLAlchemy code (``metadata.create_all``)."""
        return await greenlet_spawn(fn, self._proxied, *arg, _require_await=False, **kw)

    async def commit(self) -> None:
        await greenlet_spawn(self._proxied.commit)

    async def rollback(self) -> None:
        await greenlet_spawn(self._proxied.rollback)

    async def close(self) -> None:
        """Return the connection to the pool (rolling back an open transaction)."""
        if self.sync_connection is not None:
            await greenlet_spawn(self.sync_connection.close)


class AsyncTransaction:
    """``async with conn.begin():`` commits on success and rolls back on error."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection
        self.sync_transaction: Transaction | None = None

    @property
    def _proxied(self) -> Transaction:
        if self.sync_transaction is None:
            raise InvalidRequestError("the transaction was not started (await it or use `async with`)")
        return self.sync_transaction

    async def start(self, is_ctxmanager: bool = False) -> AsyncTransaction:
        self.sync_transaction = await greenlet_spawn(self.connection._proxied.begin)
        if is_ctxmanager:
            self.sync_transaction.__enter__()
        return self

    def __await__(self) -> Generator[Any, None, AsyncTransaction]:
        return self.start().__await__()

    async def __aenter__(self) -> AsyncTransaction:
        return await self.start(is_ctxmanager=True)

    async def __aexit__(self, type_: Any, value: Any, traceback: Any) -> None:
        await greenlet_spawn(self._proxied.__exit__, type_, value, traceback)

    async def commit(self) -> None:
        await greenlet_spawn(self._proxied.commit)

    async def rollback(self) -> None:
        await greenlet_spawn(self._proxied.rollback)
