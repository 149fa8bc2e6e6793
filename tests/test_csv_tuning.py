"""An import batch's database settings hold for its own transaction and no longer.

The import tunes the connection a batch runs on (PostgreSQL: no sequential scans
for its lookups; SQLite: a page cache that holds the pages the batch dirties).
The connection then goes back to the pool and serves calls and requests, which
must find it as it was, whether the batch committed or failed.
"""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from voicecrm.crm.csv_tuning import SQLITE_BATCH_CACHE_KIB, batch_settings
from voicecrm.storage import Database


async def _seqscan(conn: AsyncConnection) -> str:
    return str((await conn.exec_driver_sql("SHOW enable_seqscan")).scalar_one())


async def test_a_batchs_settings_end_with_its_transaction(postgres: Database) -> None:
    async with postgres.transaction() as session:
        conn = await session.connection()
        usual = await _seqscan(conn)
        async with batch_settings(conn):
            during = await _seqscan(conn)
    async with postgres.transaction() as session:
        afterwards = await _seqscan(await session.connection())
    assert (usual, during, afterwards) == ("on", "off", "on")


async def test_a_failed_batch_also_leaves_the_connection_as_before(postgres: Database) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with postgres.transaction() as session:
            conn = await session.connection()
            async with batch_settings(conn):
                raise Boom
    async with postgres.transaction() as session:
        assert await _seqscan(await session.connection()) == "on"


async def _cache_size(conn: AsyncConnection) -> int:
    return int((await conn.exec_driver_sql("PRAGMA cache_size")).scalar_one())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # SQLite's page cache
@pytest.mark.parametrize("fails", [False, True], ids=["committed", "failed"])
async def test_a_sqlite_batch_gets_a_large_page_cache_and_gives_it_back(
    database: Database, fails: bool
) -> None:
    class Boom(Exception):
        pass

    seen: list[int] = []
    try:
        async with database.transaction() as session:
            conn = await session.connection()
            seen.append(await _cache_size(conn))
            async with batch_settings(conn):
                seen.append(await _cache_size(conn))
                if fails:
                    raise Boom
            seen.append(await _cache_size(conn))
    except Boom:
        async with database.transaction() as session:
            seen.append(await _cache_size(await session.connection()))
    usual, during, after = seen
    assert during == -SQLITE_BATCH_CACHE_KIB
    assert after == usual != during
