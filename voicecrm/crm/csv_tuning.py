"""Database settings for one import batch's transaction, and only for it.

Each batch runs in a transaction of its own on a pooled connection, which then
goes back to serving calls and requests: whatever is tuned here must end with
the transaction. Nothing here touches durability: a batch's commit is written
as every other commit is.

Evaluated and left out: a larger SQLite page cache for the batch (so that a
batch's few thousand dirty index pages are not spilled to the WAL mid-way)
halved the time of bare inserts in a standalone test, but made no measurable
difference to the import (66 against 78 and 100 against 98 µs of CPU a row, at
300,000 rows), and would have cost memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncConnection


@asynccontextmanager
async def batch_settings(conn: AsyncConnection) -> AsyncIterator[None]:
    """Settings for the batch's transaction on `conn`, which end with it.

    PostgreSQL: no sequential scans. A batch's lookups ask for a few thousand keys
    with `= ANY(array)`; while the tables grow faster than autovacuum analyses
    them, the planner takes them for small and scans them whole, testing every row
    against every key: at 100,000 rows the lookups cost 220 µs a row, against about
    10 with their indexes. `SET LOCAL` lasts until the transaction ends, however
    it ends.
    """
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    yield
