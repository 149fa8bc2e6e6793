"""SQLite on the event loop's own thread: the aiosqlite interface without the thread hop.

aiosqlite runs every call on a worker thread and wakes the loop for each
result. Measured here, one hop costs 100 to 160 µs, while an indexed SQLite
lookup costs 2 to 5 µs: a caller-ID lookup (BEGIN, SELECT, COMMIT) spent
almost all of its 1.5 ms travelling between threads. This module gives
SQLAlchemy's aiosqlite dialect (through `create_async_engine(async_creator=)`)
an object with aiosqlite's interface whose coroutines call `sqlite3` directly
and never suspend, so a unit of work costs what SQLite costs.

The price is that a statement blocks the loop while it runs. That is why:
- the connections get a short busy timeout (`BUSY_TIMEOUT_MS`): waiting for
  another process's write lock must not freeze every call, so `Database`
  retries a refused BEGIN IMMEDIATE with asyncio sleeps instead;
- long jobs (a CSV import committing in batches) use `Database.session()`,
  which stays on aiosqlite's worker thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

BUSY_TIMEOUT_MS = 5


class _Cursor:
    """aiosqlite's cursor interface over a `sqlite3.Cursor`."""

    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> _Cursor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cursor.close()

    def __await__(self) -> Any:  # `await connection.cursor()` as aiosqlite allows
        async def itself() -> _Cursor:
            return self

        return itself().__await__()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = None) -> _Cursor:
        if parameters is None:
            self._cursor.execute(sql)
        else:
            self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> _Cursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> Sequence[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class _RunNow:
    """Stands in for aiosqlite's request queue, which SQLAlchemy uses to set the
    isolation level: the request runs at once, on this thread."""

    __slots__ = ()

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as error:
            future.set_exception(error)


class InlineConnection:
    """aiosqlite's connection interface over a `sqlite3.Connection` used on this thread."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn: sqlite3.Connection | None = connection
        self._tx = _RunNow()

    @property
    def _connection(self) -> sqlite3.Connection | None:  # SQLAlchemy checks it is open
        return self._conn

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError("no active connection")
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._open().isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._open().isolation_level = value  # type: ignore[assignment]

    def cursor(self) -> _Cursor:
        return _Cursor(self._open().cursor())

    async def execute(self, sql: str, parameters: Any = None) -> _Cursor:
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        self._open().commit()

    async def rollback(self) -> None:
        self._open().rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._open().create_function(*args, **kwargs)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def creator(path: str) -> Callable[[], Any]:
    """The `async_creator` for `create_async_engine`: opens `path` on this thread.

    `check_same_thread=False` only because the pool may close a connection from the
    garbage collector's thread; statements always run on the loop's thread.
    """

    async def connect() -> InlineConnection:
        connection = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            check_same_thread=False,
            uri=path.startswith("file:"),
        )
        return InlineConnection(connection)

    return connect


def open_reader(path: str) -> sqlite3.Connection:
    """A read-only connection for `Database.point_read`, used on the loop's thread.

    Autocommit, so each SELECT is its own read transaction and never holds a
    snapshot open between calls; `query_only` makes a stray write an error.
    """
    connection = sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT_MS / 1000,
        check_same_thread=False,
        uri=path.startswith("file:"),
        isolation_level=None,
    )
    connection.execute("PRAGMA query_only=ON")
    return connection
