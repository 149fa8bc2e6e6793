"""Bringing a database's schema up to date with Alembic, from code.

The service migrates on start and `voicecrm db upgrade` does it by hand; both
go through here, inside the running event loop, on the engine the caller owns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData
from sqlalchemy.exc import IntegrityError

from voicecrm.errors import MigrationRefused
from voicecrm.storage.engine import Database

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(metadata: MetaData | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["target_metadata"] = metadata
    return config


def _step(connection: Connection, step: Callable[[Config, str], None], revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    step(config, revision)


def _foreign_keys(connection: Connection, on: bool) -> None:
    """SQLite's foreign keys on or off for this connection; outside any transaction,
    where the setting takes effect (inside one, SQLite ignores it)."""
    driver = connection.connection.dbapi_connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    finally:
        cursor.close()


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        table, rowid, parent, _key = broken[0]
        raise MigrationRefused(
            f"the migration would leave {len(broken)} row(s) whose foreign key finds no row, "
            f"the first {table} row {rowid} (its {parent}); nothing was changed"
        )


async def _migrate(database: Database, step: Callable[[Config, str], None], revision: str) -> None:
    """Run `step` to `revision` in one transaction.

    SQLite cannot alter a table's constraints: Alembic rebuilds the table (a copy,
    then DROP TABLE and a rename). With foreign keys on, dropping a table that other
    tables refer to first deletes its rows, and ON DELETE CASCADE would take every
    row referring to them along. So, as SQLite's documentation prescribes for such
    changes, foreign keys are off while the migration runs, and before it commits
    `PRAGMA foreign_key_check` must find every reference whole; if not, it is
    rolled back. Rows that break a constraint (there, or on PostgreSQL, which checks
    as it goes) are `MigrationRefused`, for the CLI and the service to say. The
    connection gets its foreign keys back before it returns to the pool.
    """
    async with database.engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            await connection.run_sync(_foreign_keys, False)
        try:
            async with connection.begin():
                await connection.run_sync(_step, step, revision)
                if sqlite:
                    await connection.run_sync(_check_foreign_keys)
        except IntegrityError as err:
            raise MigrationRefused(
                f"the database refused the migration: {err.orig}; nothing was changed"
            ) from err
        finally:
            if sqlite:
                try:
                    await connection.run_sync(_foreign_keys, True)
                except BaseException:
                    # Never back to the pool without its foreign keys.
                    await connection.invalidate()
                    raise


async def upgrade(database: Database, revision: str = "head") -> None:
    await _migrate(database, command.upgrade, revision)


async def downgrade(database: Database, revision: str) -> None:
    """Back down to `revision` (for tests and by hand; nothing in the service goes down)."""
    await _migrate(database, command.downgrade, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(database: Database) -> str | None:
    async with database.engine.connect() as connection:
        return await connection.run_sync(_current)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()
