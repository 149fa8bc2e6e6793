"""A call's quick units of work on SQLite: on the event loop's thread, yet never freezing it.

`Database.transaction(quick=True)` runs SQLite statements on the loop's own
thread. These tests pin down what makes that safe: the quick and the threaded
engines see one database, and a write that has to wait for another process's
write lock waits with the loop still turning, then goes through.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from voicecrm.storage import Database
from voicecrm.storage.migrate import upgrade


@pytest.fixture
async def sqlite_database(tmp_path: Path) -> Database:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'quick.db'}")
    await upgrade(database)
    return database


async def test_quick_and_threaded_units_of_work_share_one_database(
    sqlite_database: Database,
) -> None:
    database = sqlite_database
    try:
        async with database.transaction(quick=True) as session:
            await session.execute(text("CREATE TABLE probe (value TEXT)"))
            await session.execute(text("INSERT INTO probe VALUES ('quick')"))
        async with database.transaction() as session:
            await session.execute(text("INSERT INTO probe VALUES ('threaded')"))
        async with database.transaction(read_only=True, quick=True) as session:
            seen = (await session.scalars(text("SELECT value FROM probe ORDER BY 1"))).all()
        assert seen == ["quick", "threaded"]
        with pytest.raises(ZeroDivisionError):
            async with database.transaction(quick=True) as session:
                await session.execute(text("INSERT INTO probe VALUES ('rolled back')"))
                raise ZeroDivisionError
        async with database.transaction(read_only=True) as session:
            assert await session.scalar(text("SELECT count(*) FROM probe")) == 2
    finally:
        await database.close()


async def test_a_quick_write_waits_for_another_writer_without_freezing_the_loop(
    sqlite_database: Database, tmp_path: Path
) -> None:
    database = sqlite_database
    other = sqlite3.connect(tmp_path / "quick.db", isolation_level=None)
    try:
        other.execute("CREATE TABLE probe (value TEXT)")
        other.execute("BEGIN IMMEDIATE")  # another process's write lock, as SQLite sees it
        other.execute("INSERT INTO probe VALUES ('other')")

        async def write() -> None:
            async with database.transaction(quick=True) as session:
                await session.execute(text("INSERT INTO probe VALUES ('ours')"))

        writing = asyncio.create_task(write())
        ticks = 0
        while ticks < 20:  # the loop keeps turning while our writer waits
            await asyncio.sleep(0.005)
            ticks += 1
            assert not writing.done()
        other.execute("COMMIT")
        await writing
        async with database.transaction(read_only=True, quick=True) as session:
            seen = (await session.scalars(text("SELECT value FROM probe ORDER BY 1"))).all()
        assert seen == ["other", "ours"]
    finally:
        other.close()
        await database.close()
