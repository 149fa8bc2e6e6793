"""Where a bench run's database lives: always a fresh one, never someone's data.

SQLite: a file in a temporary directory, removed afterwards (or a file the
user names, which must not exist yet and is kept). PostgreSQL: a new database
`voicecrm_bench_<random>` created on the given server and dropped afterwards,
even when the run fails or is interrupted.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from bench.report import progress
from voicecrm.storage import Database
from voicecrm.storage.postgres_admin import create_database, drop_database

Engine = Literal["sqlite", "postgresql"]


class UsageError(ValueError):
    """A database choice the bench refuses, with the reason to show the user."""


@dataclass(frozen=True, slots=True)
class DatabaseChoice:
    engine: Engine
    # SQLite: a file URL, or None for a temporary file. PostgreSQL: the server to create on.
    url: str | None = None


def postgres_server(url: str) -> URL:
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise UsageError(f"{url!r} is not a PostgreSQL URL")
    return parsed.set(drivername="postgresql+asyncpg")


def parse_choice(value: str, postgres_url: str | None) -> DatabaseChoice:
    """'sqlite', 'postgresql' (the server from --postgres-url) or a full URL."""
    if value == "sqlite":
        return DatabaseChoice("sqlite")
    if value in ("postgresql", "postgres"):
        if not postgres_url:
            raise UsageError(
                "--database-url postgresql needs --postgres-url or VOICECRM_BENCH_POSTGRES_URL"
            )
        return DatabaseChoice("postgresql", postgres_url)
    backend = make_url(value).get_backend_name()
    if backend == "sqlite":
        path = make_url(value).database
        if not path or path == ":memory:":
            raise UsageError("a SQLite URL for the bench must name a file")
        if Path(path).exists():
            raise UsageError(f"{path} exists: the bench seeds a new file and never reuses one")
        return DatabaseChoice(
            "sqlite",
            make_url(value)
            .set(drivername="sqlite+aiosqlite")
            .render_as_string(hide_password=False),
        )
    if backend == "postgresql":
        return DatabaseChoice("postgresql", value)
    raise UsageError(f"unsupported database {value!r}: use sqlite or postgresql")


async def _admin(server: URL, statement: str) -> str | None:
    database = Database(server.render_as_string(hide_password=False))
    try:
        async with database.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            result = await connection.execute(text(statement))
            return str(result.scalar()) if result.returns_rows else None
    finally:
        await database.close()


async def server_version(choice: DatabaseChoice) -> str:
    if choice.engine == "sqlite":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    assert choice.url is not None
    return str(await _admin(postgres_server(choice.url), "SELECT version()"))


@asynccontextmanager
async def fresh_database(choice: DatabaseChoice) -> AsyncIterator[str]:
    """The URL of an empty database for one run, cleaned up afterwards."""
    if choice.engine == "sqlite":
        if choice.url is not None:
            yield choice.url
            return
        with tempfile.TemporaryDirectory(prefix="voicecrm-bench-") as directory:
            yield f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}"
        return
    assert choice.url is not None
    server = postgres_server(choice.url)
    name = f"voicecrm_bench_{uuid.uuid4().hex[:10]}"
    server_url = server.render_as_string(hide_password=False)
    url = await create_database(server_url, name)
    progress(f"created database {name} on {server.render_as_string(hide_password=True)}")
    try:
        yield url
    finally:
        try:
            await drop_database(server_url, name)
        except Exception as err:
            progress(f"could not drop database {name}: {err!r}; drop it by hand")
            raise
        progress(f"dropped database {name}")
