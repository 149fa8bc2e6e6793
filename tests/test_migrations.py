"""Migrations and models tell the same story, on both engines.

From an empty database, `voicecrm.storage.migrate.upgrade` reaches head and Alembic's
autogenerate comparison finds nothing between the migrated schema and `voicecrm.models`:
a model changed without a migration (or the reverse) fails here, not in production. Down to
base and up again must work too. And the rule "one number, one contact per team" is the
migrated schema's own, not only the code's.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, insert, inspect, text
from sqlalchemy.exc import IntegrityError

from tests.conftest import POSTGRES_URL, TeamWorld, make_team
from voicecrm.crm.models import Contact, ContactPhone
from voicecrm.models import metadata
from voicecrm.storage import Database, utcnow
from voicecrm.storage.migrate import alembic_config, current_revision, head_revision, upgrade
from voicecrm.storage.postgres_admin import create_database, drop_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A database with no tables at all (not the suite's migrated template)."""
    if request.param == "sqlite":
        database = Database(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
        try:
            yield database
        finally:
            await database.close()
        return
    if not POSTGRES_URL:
        if os.environ.get("CI"):
            pytest.fail("VOICECRM_TEST_POSTGRES_URL is not set: CI must test on PostgreSQL")
        pytest.skip("VOICECRM_TEST_POSTGRES_URL is not set (tests/run.sh sets it)")
    name = f"voicecrm_migrate_{uuid.uuid4().hex[:12]}"
    database = Database(await create_database(POSTGRES_URL, name))
    try:
        yield database
    finally:
        await database.close()
        await drop_database(POSTGRES_URL, name)


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


async def differences(database: Database) -> list[Any]:
    async with database.engine.connect() as connection:
        return await connection.run_sync(_differences)


def _downgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


async def downgrade(database: Database, revision: str) -> None:
    async with database.engine.begin() as connection:
        await connection.run_sync(_downgrade, revision)


async def tables(database: Database) -> set[str]:
    async with database.engine.connect() as connection:
        return set(await connection.run_sync(lambda c: inspect(c).get_table_names()))


async def test_an_empty_database_migrates_to_head_and_matches_the_models(
    empty_database: Database,
) -> None:
    assert await tables(empty_database) == set()
    await upgrade(empty_database)
    assert await current_revision(empty_database) == head_revision()
    assert await tables(empty_database) == set(metadata.tables) | {"alembic_version"}
    assert await differences(empty_database) == []


async def test_upgrading_a_database_at_head_changes_nothing(empty_database: Database) -> None:
    await upgrade(empty_database)
    await upgrade(empty_database)
    assert await current_revision(empty_database) == head_revision()
    assert await differences(empty_database) == []


async def test_downgrade_to_base_and_up_again_rebuilds_the_same_schema(
    empty_database: Database,
) -> None:
    await upgrade(empty_database)
    await downgrade(empty_database, "base")
    assert await tables(empty_database) == {"alembic_version"}
    assert await current_revision(empty_database) is None
    await upgrade(empty_database)
    assert await current_revision(empty_database) == head_revision()
    assert await differences(empty_database) == []


async def _contact(database: Database, team_id: int) -> int:
    now = utcnow()
    async with database.transaction() as session:
        contact_id = await session.scalar(
            insert(Contact)
            .returning(Contact.id)
            .values(
                team_id=team_id,
                name="X",
                type="customer",
                source="manual",
                rating=0,
                status="open",
                blocked=False,
                custom_fields={},
                created_at=now,
                updated_at=now,
            )
        )
        assert contact_id is not None
        return contact_id


async def _phone(database: Database, team_id: int, contact_id: int, key: int) -> None:
    async with database.transaction() as session:
        await session.execute(
            insert(ContactPhone).values(
                team_id=team_id,
                contact_id=contact_id,
                e164="+14155550123",
                duplicate_key=key,
                original="+14155550123",
                label="mobile",
                position=0,
            )
        )


_NUMBER_TAKEN = r"uq_contact_phones_team_id_e164_duplicate_key|UNIQUE"


async def test_the_schema_itself_allows_one_contact_per_number_in_a_team(
    database: Database, world: TeamWorld
) -> None:
    """Raw inserts, no domain code: the guarantee holds for any writer, on any instance."""
    first = await _contact(database, world.team_id)
    second = await _contact(database, world.team_id)
    await _phone(database, world.team_id, first, 0)
    with pytest.raises(IntegrityError, match=_NUMBER_TAKEN):
        await _phone(database, world.team_id, second, 0)
    # A team that allows duplicates keys each phone by its contact; another team has its own.
    await _phone(database, world.team_id, second, second)
    with pytest.raises(IntegrityError, match=_NUMBER_TAKEN):
        await _phone(database, world.team_id, second, second)
    other = await make_team(database, "Other")
    await _phone(database, other.team_id, await _contact(database, other.team_id), 0)


async def test_the_schema_itself_refuses_a_row_naming_another_teams_contact(
    database: Database, world: TeamWorld
) -> None:
    """A phone, email, tag, note or timeline event belongs to a contact of its own team."""
    other = await make_team(database, "Other")
    theirs = await _contact(database, other.team_id)
    with pytest.raises(IntegrityError, match=r"FOREIGN KEY|foreign key"):
        await _phone(database, world.team_id, theirs, 0)
    await _phone(database, other.team_id, theirs, 0)


async def test_a_teams_deletion_still_removes_its_contacts_rows(
    database: Database, world: TeamWorld
) -> None:
    contact = await _contact(database, world.team_id)
    await _phone(database, world.team_id, contact, 0)
    async with database.transaction() as session:
        await session.execute(text("DELETE FROM teams WHERE id = :id"), {"id": world.team_id})
    async with database.transaction(read_only=True) as session:
        assert await session.scalar(text("SELECT count(*) FROM contact_phones")) == 0


@pytest.mark.parametrize("empty_database", ["sqlite"], indirect=True)  # PostgreSQL plans by
@pytest.mark.parametrize("column", ["stage_id", "responsible_user_id"])  # statistics
async def test_contacts_by_stage_or_responsible_user_are_found_through_their_partial_index(
    empty_database: Database, column: str
) -> None:
    """The two indexes hold only contacts that have a stage or a responsible user (most
    have neither), and a filter on one id must still be answered from them."""
    await upgrade(empty_database)
    async with empty_database.transaction(read_only=True) as session:
        plan = await session.execute(
            text(f"EXPLAIN QUERY PLAN SELECT id FROM contacts WHERE team_id = 1 AND {column} = 7")
        )
        details = " ".join(str(row[-1]) for row in plan)
        definition = await session.scalar(
            text(f"SELECT sql FROM sqlite_master WHERE name = 'ix_contacts_team_id_{column}'")
        )
    assert str(definition).endswith(f"WHERE {column} IS NOT NULL")
    assert f"ix_contacts_team_id_{column}" in details


async def test_phones_keep_their_teams_duplicate_rule_across_migration_0005_and_back(
    empty_database: Database,
) -> None:
    """0005 replaced `unique_e164` (the number, or NULL where a team allows duplicates)
    with `duplicate_key` (0, or the contact's id): existing phones must keep their rule."""
    database = empty_database
    await upgrade(database)
    await downgrade(database, "0004")
    world = await make_team(database)
    strict, shared_a, shared_b = [await _contact(database, world.team_id) for _ in range(3)]
    shared = "+14155550199"
    rows = [
        (strict, "+14155550100", "+14155550100"),
        (shared_a, shared, None),
        (shared_b, shared, None),
    ]
    async with database.transaction() as session:
        for contact_id, e164, unique in rows:
            await session.execute(
                text(
                    "INSERT INTO contact_phones (team_id, contact_id, e164, unique_e164, "
                    "original, label, position) VALUES (:team, :contact, :e164, :unique, "
                    "'x', 'mobile', 0)"
                ).bindparams(team=world.team_id, contact=contact_id, e164=e164, unique=unique)
            )
    await upgrade(database)
    query = "SELECT contact_id, e164, {} FROM contact_phones ORDER BY contact_id"
    async with database.transaction(read_only=True) as session:
        upgraded = list(await session.execute(text(query.format("duplicate_key"))))
    assert upgraded == [
        (strict, "+14155550100", 0),
        (shared_a, "+14155550199", shared_a),
        (shared_b, "+14155550199", shared_b),
    ]
    await downgrade(database, "0004")
    async with database.transaction(read_only=True) as session:
        restored = list(await session.execute(text(query.format("unique_e164"))))
    assert restored == [
        (strict, "+14155550100", "+14155550100"),
        (shared_a, "+14155550199", None),
        (shared_b, "+14155550199", None),
    ]


_CHILD_ROWS = {
    "contact_phones": "INSERT INTO contact_phones (team_id, contact_id, e164, duplicate_key, "
    "original, label, position) "
    "VALUES (:team, :contact, '+14155550100', :contact, 'x', 'mobile', 0)",
    "contact_emails": "INSERT INTO contact_emails (team_id, contact_id, email, label, position) "
    "VALUES (:team, :contact, 'a@example.com', 'work', 0)",
    "contact_tags": "INSERT INTO contact_tags (team_id, contact_id, tag) "
    "VALUES (:team, :contact, 'vip')",
    "notes": "INSERT INTO notes (team_id, contact_id, type, content, pinned, created_at, "
    "updated_at) VALUES (:team, :contact, 'general', 'hi', false, :now, :now)",
    "timeline_events": "INSERT INTO timeline_events (team_id, contact_id, kind, occurred_at, "
    "data) VALUES (:team, :contact, 'note_added', :now, '{}')",
}


async def _child_counts(database: Database) -> dict[str, int]:
    async with database.transaction(read_only=True) as session:
        return {
            table: int(await session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
            for table in _CHILD_ROWS
        }


async def test_a_contacts_rows_survive_migration_0006_and_back(empty_database: Database) -> None:
    """0006 replaced each child table's two keys (team, contact) by one on both: the
    tables are rebuilt on SQLite, and every row must come through, both ways."""
    database = empty_database
    await upgrade(database)
    await downgrade(database, "0005")
    world = await make_team(database)
    contacts = [await _contact(database, world.team_id) for _ in range(2)]
    async with database.transaction() as session:
        for contact in contacts:
            for statement in _CHILD_ROWS.values():
                await session.execute(
                    text(statement),
                    {"team": world.team_id, "contact": contact, "now": utcnow()},
                )
    await upgrade(database)
    assert await _child_counts(database) == dict.fromkeys(_CHILD_ROWS, 2)
    assert await differences(database) == []
    await downgrade(database, "0005")
    assert await _child_counts(database) == dict.fromkeys(_CHILD_ROWS, 2)


async def test_migration_0006_stops_at_a_row_that_names_another_teams_contact(
    empty_database: Database,
) -> None:
    """Such a row could be written before 0006; it is refused, not carried over."""
    database = empty_database
    await upgrade(database)
    await downgrade(database, "0005")
    ours, theirs = await make_team(database), await make_team(database, "Other")
    contact = await _contact(database, theirs.team_id)
    async with database.transaction() as session:
        await session.execute(
            text(_CHILD_ROWS["contact_emails"]), {"team": ours.team_id, "contact": contact}
        )
    with pytest.raises(IntegrityError):
        await upgrade(database)
    assert await current_revision(database) == "0005"
    assert (await _child_counts(database))["contact_emails"] == 1
