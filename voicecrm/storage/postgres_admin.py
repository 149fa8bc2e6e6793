"""Creating and dropping whole PostgreSQL databases, for tests and benchmarks.

The drop is a plain `DROP DATABASE`, not `WITH (FORCE)`: for a plain drop
PostgreSQL itself tells autovacuum workers in that database to exit, while
FORCE must terminate every backend there and, for a role that is not
superuser, refuses when one of them is an autovacuum worker (a flaky
"must be a member of the role whose process is being terminated"). The
caller closes its own connections first; the drop is retried a few times in
case a worker is still on its way out.
"""

from __future__ import annotations

import asyncio
import re

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


async def _execute(server_url: str, statement: str) -> None:
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a plain lowercase database name")
    return name


def database_url(server_url: str, name: str) -> str:
    """`server_url` pointed at database `name`, password kept."""
    return make_url(server_url).set(database=_checked(name)).render_as_string(hide_password=False)


async def create_database(server_url: str, name: str) -> str:
    """Create `name` on the server; returns its URL."""
    await _execute(server_url, f'CREATE DATABASE "{_checked(name)}"')
    return database_url(server_url, name)


async def drop_database(server_url: str, name: str, *, attempts: int = 5) -> None:
    for attempt in range(1, attempts + 1):
        try:
            await _execute(server_url, f'DROP DATABASE IF EXISTS "{_checked(name)}"')
            return
        except DBAPIError:
            if attempt == attempts:
                raise
            await asyncio.sleep(0.5 * attempt)  # an exiting worker, not something awaitable
