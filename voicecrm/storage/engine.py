"""The database engine and its session factory, owned by one `Database` object.

SQLite is the embedded default: WAL lets readers run beside the one writer,
foreign keys are switched on (SQLite leaves them off), and every transaction
that may write starts with BEGIN IMMEDIATE so that a read-then-write
transaction takes the write lock up front and waits on `busy_timeout`, instead
of failing with SQLITE_BUSY when two writers race (for example two first calls
from one number). Read-only units of work (a page of contacts, a CSV export)
begin DEFERRED and never hold the write lock, so a long export does not stall
the calls that are writing.

PostgreSQL (asyncpg) is for several instances sharing one database; there the
database's own row locks and unique constraints guard the data, never a lock
in this process.

A call's own units of work (`quick=True`: find the caller, open the call's row,
save its state) run on SQLite through a second engine whose connections live on
the event loop's thread (`sqlite_inline`): an indexed statement costs a few
microseconds there, against 100 to 160 µs for each trip to aiosqlite's worker
thread. Everything else keeps the worker threads, so a long search or export
never holds up the calls.

On SQLite, write transactions of one `Database` also queue on an asyncio lock
before they begin. It guards no data (the database still does, across
processes too); it only replaces SQLite's busy handler, which sleeps and polls
with growing pauses, by a first-come queue: with eight concurrent writers the
benchmark measured p99 fall from about 350 ms to about 25 ms.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util.concurrency import await_only

from voicecrm.storage.point_read import PointRead
from voicecrm.storage.sqlite_inline import BUSY_TIMEOUT_MS, creator, open_reader

SQLITE_BUSY_TIMEOUT_MS = 30_000
_READ_ONLY = "voicecrm_read_only"
# PostgreSQL aborts one transaction of a deadlock (40P01) or of a serialization
# conflict (40001) and expects the application to run it again.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})
TRANSACTION_ATTEMPTS = 3

T = TypeVar("T")
log = logging.getLogger(__name__)


def is_transient_conflict(error: BaseException) -> bool:
    """Whether the database aborted the transaction only to break a conflict with another."""
    return isinstance(error, DBAPIError) and (
        getattr(error.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES
    )


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _configure_sqlite(engine: AsyncEngine, *, on_loop_thread: bool = False) -> None:
    sync_engine = engine.sync_engine
    busy_timeout_ms = BUSY_TIMEOUT_MS if on_loop_thread else SQLITE_BUSY_TIMEOUT_MS

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(_READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        elif not on_loop_thread:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            _begin_immediate_without_blocking(connection)


def _begin_immediate_without_blocking(connection: Any) -> None:
    """BEGIN IMMEDIATE on the loop's thread: while another process holds the write lock
    (a CLI import beside the service), wait with asyncio sleeps, never in SQLite's busy
    handler, which would freeze every call; give up after the usual busy timeout."""
    waited = 0.0
    pause = 0.005
    while True:
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            return
        except OperationalError as err:
            text = str(err.orig).lower()
            if ("locked" not in text and "busy" not in text) or (
                waited * 1000 >= SQLITE_BUSY_TIMEOUT_MS
            ):
                raise
        await_only(asyncio.sleep(pause))
        waited += pause
        pause = min(pause * 2, 0.1)


class Database:
    """Owns one engine; `close()` disposes of it. Sessions never outlive it."""

    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10) -> None:
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "postgresql":
            # No pre-ping: it is one more round trip on every transaction of every call.
            # Connections are recycled before servers or proxies drop idle ones instead.
            kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)

        self.engine = create_async_engine(url, **kwargs)
        self.quick_engine = self.engine
        self._sqlite_path: str | None = None
        self._point_reader: sqlite3.Connection | None = None
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
            path = make_url(url).database
            if path and path != ":memory:":
                self._sqlite_path = path
                self.quick_engine = create_async_engine(url, async_creator=creator(path), **kwargs)
                _configure_sqlite(self.quick_engine, on_loop_thread=True)
        self._write_queue = asyncio.Lock() if self.dialect == "sqlite" else None
        self._writer: asyncio.Task[Any] | None = None
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

        self.read_sessionmaker = async_sessionmaker(
            self.engine, expire_on_commit=False, execution_options={_READ_ONLY: True}
        )
        self.quick_sessionmaker = async_sessionmaker(self.quick_engine, expire_on_commit=False)
        # On PostgreSQL a quick read (a call's row, a token, a contact, one timeline page)
        # runs in autocommit: each statement reads its own snapshot, and the unit of work
        # saves the BEGIN and COMMIT round trips, about a third of its time.
        quick_reader = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT")
            if self.dialect == "postgresql"
            else self.quick_engine
        )
        self.quick_read_sessionmaker = async_sessionmaker(
            quick_reader, expire_on_commit=False, execution_options={_READ_ONLY: True}
        )

    @asynccontextmanager
    async def transaction(
        self, *, read_only: bool = False, quick: bool = False
    ) -> AsyncIterator[AsyncSession]:
        """One unit of work: committed when the block ends, rolled back if it raises.

        `read_only` is a promise that nothing will be written; on SQLite it lets the
        transaction run beside writers instead of queueing behind them.

        `quick` is a promise that the work is a few indexed statements (a call's path:
        finding the caller, opening the call's row, saving its state). On SQLite it then
        runs on the event loop's own thread (`sqlite_inline`): each statement costs what
        SQLite costs, not a trip to a worker thread and back. Anything that may scan
        (searches, exports, bulk changes) must not say `quick`: it would hold up every
        call while it runs. On PostgreSQL, `quick` and `read_only` together run in
        autocommit, with no BEGIN and COMMIT: the statements of such a unit must not
        need to see one snapshot.
        """
        if read_only:
            maker = self.quick_read_sessionmaker if quick else self.read_sessionmaker
            async with maker() as session, session.begin():
                yield session
            return
        maker = self.quick_sessionmaker if quick else self.sessionmaker
        if self._write_queue is None:
            async with maker() as session, session.begin():
                yield session
            return
        task = asyncio.current_task()
        if task is not None and task is self._writer:
            # SQLite has one writer: a second write transaction inside the first, in the
            # same task, would wait for it forever. Say so at once instead.
            raise RuntimeError("a write transaction was opened inside another one")
        async with self._write_queue:
            self._writer = task
            try:
                async with maker() as session, session.begin():
                    yield session
            finally:
                self._writer = None

    async def run(
        self,
        work: Callable[[AsyncSession], Awaitable[T]],
        *,
        read_only: bool = False,
        quick: bool = False,
        attempts: int = TRANSACTION_ATTEMPTS,
    ) -> T:
        """`work` in one transaction, run again from the start if the database aborted
        it to break a deadlock or a serialization conflict.

        Row locks taken in different orders by two unrelated operations (a merge that
        locks contacts and then a stage, a stage removal that locks the stage and then
        its contacts) can deadlock on PostgreSQL; it then aborts one of them, and the
        right answer is to run that one again, after the other has committed. `work`
        must therefore do nothing but database work, or nothing it would regret
        repeating.
        """
        for attempt in range(1, attempts + 1):
            try:
                async with self.transaction(read_only=read_only, quick=quick) as session:
                    return await work(session)
            except DBAPIError as error:
                if attempt == attempts or not is_transient_conflict(error):
                    raise
                log.info(
                    "transaction aborted by a conflict (attempt %d), running it again", attempt
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def point_read(
        self, query: PointRead, values: Mapping[str, Any]
    ) -> tuple[Any, ...] | None:
        """The one row `query` finds, or None, read outside any transaction or session.

        For the lookups every call waits on (see `point_read`): on SQLite a read-only
        connection on the loop's thread, on PostgreSQL one round trip on a pooled
        connection. The row is raw driver values, in the statement's column order.
        """
        if self._sqlite_path is not None:
            if self._point_reader is None:
                self._point_reader = open_reader(self._sqlite_path)
            sql, arguments = query.arguments(self.engine.dialect, values)
            row = self._point_reader.execute(sql, arguments).fetchone()
            return None if row is None else tuple(row)
        if self.dialect == "postgresql":
            sql, arguments = query.arguments(self.engine.dialect, values)
            async with self.engine.connect() as connection:
                raw = await connection.get_raw_connection()
                record = await raw.driver_connection.fetchrow(sql, *arguments)  # type: ignore[union-attr]
            return None if record is None else tuple(record)
        # An in-memory SQLite database exists only inside the engine's own connection.
        async with self.engine.connect() as connection:
            result = await connection.execute(query.statement, dict(values))
            found = result.first()
        return None if found is None else tuple(found)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose owner commits explicitly (long jobs that commit in batches)."""
        async with self.sessionmaker() as session:
            yield session

    @staticmethod
    def describe(url: str) -> str:
        """The URL with its password hidden, for logs and banners."""
        return make_url(url).render_as_string(hide_password=True)

    async def close(self) -> None:
        if self._point_reader is not None:
            self._point_reader.close()
            self._point_reader = None
        await self.engine.dispose()
        if self.quick_engine is not self.engine:
            await self.quick_engine.dispose()
