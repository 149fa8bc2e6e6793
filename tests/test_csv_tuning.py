"""An import batch's database settings hold for its own transaction and no longer.

The import tunes the connection a batch runs on (PostgreSQL: no sequential scans
for its lookups). The connection then goes back to the pool and serves calls and
requests, which must find it as it was, whether the batch committed or failed.
"""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from voicecrm.crm.csv_tuning import batch_settings
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
