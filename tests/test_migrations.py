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
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, insert, inspect, text
from sqlalchemy.exc import IntegrityError

from tests.conftest import POSTGRES_URL, TeamWorld, make_team
from voicecrm.crm.models import Contact, ContactPhone
from voicecrm.errors import MigrationRefused
from voicecrm.models import metadata
from voicecrm.storage import Database, migrate, utcnow
from voicecrm.storage.migrate import current_revision, downgrade, head_revision, upgrade
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
# Rows of other tables that refer to a contact by its id alone (0007 rebuilds contacts).
_REFERRING_ROWS = {
    "calls": "INSERT INTO calls (team_id, contact_id, channel, external_id, direction, "
    "from_number, to_number, status, started_at, state, updated_at) VALUES (:team, :contact, "
    "'twilio', :external, 'inbound', '+14155550100', '+14155550111', 'completed', "
    ":now, '{}', :now)",
    "tasks": "INSERT INTO tasks (team_id, contact_id, title, status, due_at, created_at) "
    "VALUES (:team, :contact, 'Call back', 'open', :now, :now)",
}


async def _child_counts(
    database: Database, tables: Sequence[str] = tuple(_CHILD_ROWS)
) -> dict[str, int]:
    async with database.transaction(read_only=True) as session:
        return {
            table: int(await session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
            for table in tables
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
    with pytest.raises(
        MigrationRefused,
        match=r"contact_emails row 1 .*contacts|fk_contact_emails_team_id_contacts",
    ):
        await upgrade(database)
    assert await current_revision(database) == "0005"
    assert (await _child_counts(database))["contact_emails"] == 1


async def test_every_row_referring_to_a_contact_survives_migration_0007_and_back(
    empty_database: Database,
) -> None:
    """0007 rebuilds `contacts` and `notes` on SQLite. Dropping the old `contacts` with
    foreign keys on would first delete its rows, and every phone, note, event and task
    with them (calls would lose their contact): nothing of that may happen."""
    database = empty_database
    await upgrade(database)
    world = await make_team(database)
    contacts = [await _contact(database, world.team_id) for _ in range(2)]
    rows = {**_CHILD_ROWS, **_REFERRING_ROWS}
    async with database.transaction() as session:
        for contact in contacts:
            for statement in rows.values():
                await session.execute(
                    text(statement),
                    {"team": world.team_id, "contact": contact, "now": utcnow()}
                    | ({"external": f"CA{contact}"} if ":external" in statement else {}),
                )
    linked = "SELECT count(*) FROM calls WHERE contact_id IS NOT NULL"
    for revision in ("0006", "head"):
        if revision == "head":
            await upgrade(database)
        else:
            await downgrade(database, revision)
        assert await _child_counts(database, tuple(rows)) == dict.fromkeys(rows, 2)
        async with database.transaction(read_only=True) as session:
            assert await session.scalar(text("SELECT count(*) FROM contacts")) == 2
            assert await session.scalar(text(linked)) == 2
    assert await differences(database) == []
    async with database.engine.connect() as connection:
        if connection.dialect.name == "sqlite":  # the migration's connection has them back
            assert await connection.scalar(text("PRAGMA foreign_keys")) == 1


@pytest.mark.parametrize(
    ("table", "column"), [("contacts", "status"), ("contacts", "type"), ("notes", "type")]
)
async def test_the_schema_itself_refuses_a_value_outside_a_columns_list(
    database: Database, world: TeamWorld, table: str, column: str
) -> None:
    contact = await _contact(database, world.team_id)
    async with database.transaction() as session:
        await session.execute(
            text(_CHILD_ROWS["notes"]), {"team": world.team_id, "contact": contact, "now": utcnow()}
        )
    with pytest.raises(IntegrityError, match=rf"ck_{table}_{column}|CHECK"):
        async with database.transaction() as session:
            await session.execute(text(f"UPDATE {table} SET {column} = 'bogus'"))
    async with database.transaction(read_only=True) as session:
        assert (
            await session.scalar(text(f"SELECT count(*) FROM {table} WHERE {column} = 'bogus'"))
            == 0
        )


@pytest.mark.parametrize("empty_database", ["sqlite"], indirect=True)
async def test_sqlite_checks_the_busiest_tables_lists_without_a_temporary_index_a_row(
    empty_database: Database,
) -> None:
    """An IN list in a CHECK makes SQLite build a temporary index for every row it
    writes (OpenEphemeral in the program); contacts and notes spell their lists out."""
    await upgrade(empty_database)
    async with empty_database.transaction(read_only=True) as session:
        for table, column, value in (("contacts", "status", "open"), ("notes", "type", "info")):
            program = await session.execute(
                text(f"EXPLAIN UPDATE {table} SET {column} = '{value}' WHERE id = 1")
            )
            assert "OpenEphemeral" not in {str(row[1]) for row in program}


@pytest.mark.parametrize("empty_database", ["sqlite"], indirect=True)
async def test_a_connection_whose_foreign_keys_could_not_be_restored_is_not_reused(
    empty_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    switch = migrate._foreign_keys

    def failing_to_restore(connection: Connection, on: bool) -> None:
        if on:
            raise OSError("disk gone")
        switch(connection, on)

    monkeypatch.setattr(migrate, "_foreign_keys", failing_to_restore)
    with pytest.raises(OSError, match="disk gone"):
        await upgrade(empty_database)
    async with empty_database.engine.connect() as connection:
        assert await connection.scalar(text("PRAGMA foreign_keys")) == 1
