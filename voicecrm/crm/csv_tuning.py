"""Database settings for one import batch's transaction, and only for it.

Each batch runs in a transaction of its own on a pooled connection, which then
goes back to serving calls and requests: whatever is tuned here must end with
the batch. Nothing here touches durability: a batch's commit is written as
every other commit is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection

# SQLite's page cache for a batch, in KiB (a negative cache_size is KiB).
SQLITE_BATCH_CACHE_KIB = 131_072


@asynccontextmanager
async def batch_settings(conn: AsyncConnection) -> AsyncIterator[None]:
    """Settings for the batch's transaction on `conn`, which end with it.

    SQLite: a page cache large enough for the pages the batch dirties. A batch's
    rows land all over the name, phone and email indexes: at a million contacts a
    batch of 2,000 dirties thousands of pages, and with the usual 2 MiB cache
    SQLite spills them to the WAL mid-batch and reads them back for the next row,
    writing many pages several times. A standalone test inserting a million
    phones in batches of 2,000 took 15.6-18.9 µs a row with 128 MiB for each
    batch, against 20.4-24.2 with 2 MiB. The cache is given back when the batch
    ends (shrinking the cache frees its pages), so memory goes up by at most this
    much while an import runs, whatever the file's size.

    PostgreSQL: no sequential scans. A batch's lookups ask for a few thousand keys
    with `= ANY(array)`; while the tables grow faster than autovacuum analyses
    them, the planner takes them for small and scans them whole, testing every row
    against every key: at 100,000 rows the lookups cost 220 µs a row, against about
    10 with their indexes. `SET LOCAL` lasts until the transaction ends, however
    it ends.
    """
    if conn.dialect.name != "sqlite":
        async with lookup_settings(conn):
            yield
        return
    usual = (await conn.exec_driver_sql("PRAGMA cache_size")).scalar_one()
    await conn.exec_driver_sql(f"PRAGMA cache_size = -{SQLITE_BATCH_CACHE_KIB}")
    try:
        yield
    finally:
        await conn.exec_driver_sql(f"PRAGMA cache_size = {int(usual)}")


@asynccontextmanager
async def lookup_settings(conn: AsyncConnection) -> AsyncIterator[None]:
    """Settings for a transaction that only looks a batch's keys up (`batch_settings`).

    On PostgreSQL a batch planned while the one before it is being written looks its
    keys up in a read-only transaction of its own, which needs the setting that
    keeps its lookups on their indexes.
    """
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    yield
