"""Fixtures shared by the whole suite: real databases, real teams, real users.

Every test that takes `database` runs twice: on a SQLite file and on a
PostgreSQL server. PostgreSQL comes from VOICECRM_TEST_POSTGRES_URL (which
`tests/run.sh` sets after starting a server); without it the PostgreSQL half is
skipped locally and fails under CI, so CI can never pass on SQLite alone.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from voicecrm.accounts import service as accounts
from voicecrm.accounts.actor import Actor, Role
from voicecrm.models import metadata
from voicecrm.storage import Database
from voicecrm.storage.migrate import upgrade
from voicecrm.storage.postgres_admin import create_database, drop_database

POSTGRES_URL = os.environ.get("VOICECRM_TEST_POSTGRES_URL")


async def _migrate(url: str) -> None:
    database = Database(url)
    try:
        await upgrade(database)
    finally:
        await database.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied for each test: migrating once keeps the suite fast."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    asyncio.run(_migrate(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test session, dropped at the end."""
    if not POSTGRES_URL:
        if os.environ.get("CI"):
            pytest.fail("VOICECRM_TEST_POSTGRES_URL is not set: CI must test on PostgreSQL")
        pytest.skip("VOICECRM_TEST_POSTGRES_URL is not set (tests/run.sh sets it)")
    name = f"voicecrm_test_{uuid.uuid4().hex[:12]}"
    url = asyncio.run(create_database(POSTGRES_URL, name))
    try:
        asyncio.run(_migrate(url))
        yield url
    finally:
        asyncio.run(drop_database(POSTGRES_URL, name))


async def _empty(database: Database) -> None:
    """Every table emptied and every id sequence restarted, as a fresh database has them.

    DELETE rather than TRUNCATE: a test leaves a handful of rows, and TRUNCATE gives
    every table and index a new file, 50 ms against 6 for the deletes, before each of
    the suite's PostgreSQL tests.
    """
    async with database.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(table.delete())
        await conn.execute(text("SELECT setval(oid, 1, false) FROM pg_class WHERE relkind = 'S'"))


# For behaviour the database engine cannot change (a CLI's argument and file errors,
# a refusal before anything is stored): run it once, on SQLite, to keep the suite fast.
engine_independent = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "voicecrm.db"
        shutil.copy(template, path)
        return f"sqlite+aiosqlite:///{path}"
    url: str = request.getfixturevalue("postgres_database")
    return url


@pytest.fixture
async def postgres(postgres_database: str) -> AsyncIterator[Database]:
    """PostgreSQL alone, for behaviour only it has (deadlocks, autocommit reads)."""
    database = Database(postgres_database)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url)
    if db.dialect == "postgresql":
        await _empty(db)
    try:
        yield db
    finally:
        await db.close()


@dataclass
class TeamWorld:
    """A team with an admin and an agent, each with a token, as most tests need."""

    team_id: int
    admin: Actor
    agent: Actor
    admin_token: str
    agent_token: str
    system: Actor


async def make_team(database: Database, name: str = "Acme", region: str = "US") -> TeamWorld:
    async with database.transaction() as session:
        team = await accounts.create_team(session, name, default_region=region)
        suffix = uuid.uuid4().hex[:8]
        admin = await accounts.create_user(
            session, team.id, email=f"admin-{suffix}@example.com", name="Ada Admin", role=Role.ADMIN
        )
        agent = await accounts.create_user(
            session, team.id, email=f"agent-{suffix}@example.com", name="Al Agent", role=Role.AGENT
        )
        admin_token = (await accounts.create_token(session, admin)).secret
        agent_token = (await accounts.create_token(session, agent)).secret
        settings = accounts.team_settings(team)
        return TeamWorld(
            team_id=team.id,
            admin=Actor(team=settings, role=Role.ADMIN, user_id=admin.id),
            agent=Actor(team=settings, role=Role.AGENT, user_id=agent.id),
            admin_token=admin_token,
            agent_token=agent_token,
            system=Actor.system(settings),
        )


@pytest.fixture
async def world(database: Database) -> TeamWorld:
    return await make_team(database)


@pytest.fixture
def until_blocked(database: Database) -> Callable[[], Awaitable[None]]:
    """Returns once another transaction waits for a lock the test's open transaction holds.

    For race tests that hold one transaction open and start another against it: on
    PostgreSQL the second must be seen waiting before the first commits, or the test would
    not be testing the race. On SQLite a second writer cannot begin while the first holds
    the database, so there is nothing to wait for.
    """

    async def wait() -> None:
        if database.dialect != "postgresql":
            return
        for _ in range(5000):
            async with database.engine.connect() as connection:
                waiting = await connection.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
            if waiting:
                return
        raise AssertionError("no transaction ever waited for the lock the test holds")

    return wait
