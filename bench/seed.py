"""Filling a fresh, migrated database with a million contacts, fast.

Schema and team go through the real code (`migrate.upgrade`,
`accounts.service.create_team`); the bulk rows do not, because a million
`create_contact` calls would take an hour and measure nothing the bench
reports. The rows are what the service itself writes for an imported contact:
one `contacts` row, one `contact_phones` row with `duplicate_key = 0` (the
team forbids duplicate numbers) and one `contact_created` timeline event each.

One contact (the first) also gets `events` timeline events (calls, notes,
stage changes) interleaved with everyone else's, as a busy customer's history
would be scattered through the table in real life.

SQLite gets SQLAlchemy core `insert()` executemany in large batches on a
seeding-only engine (its big page cache dies with it, so the measured engine
runs with voicecrm's own settings); PostgreSQL gets binary COPY through the
asyncpg connection, then the VACUUM ANALYZE that autovacuum would have done by
the time a real team had a million contacts.
"""

from __future__ import annotations

import json
import random
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from sqlalchemy import Table, insert, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from bench.phones import e164, national_format, valid_numbers
from bench.report import progress
from voicecrm.accounts import service as accounts
from voicecrm.accounts.actor import Actor, TeamSettings
from voicecrm.crm import timeline
from voicecrm.crm.models import Contact, ContactPhone, TimelineEvent
from voicecrm.storage import Database, utcnow
from voicecrm.storage.migrate import upgrade

BATCH = 20_000
COMMIT_EVERY_BATCHES = 5
HOT_CONTACT_ID = 1
# Kinds in a busy customer's history, by share of events: mostly calls.
_HOT_KINDS = (("call", 90), ("note_added", 8), ("stage_changed", 2))

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Seeded:
    team: TeamSettings
    numbers: array[int]  # contact id i + 1 owns numbers[i]
    spare_numbers: array[int]  # valid numbers no contact has: for the create path
    hot_contact_id: int
    seconds: float
    rows: int

    @property
    def contacts(self) -> int:
        return len(self.numbers)


def contact_name(contact_id: int) -> str:
    return f"Contact {contact_id}"


def _contact_rows(team_id: int, numbers: array[int], now: datetime) -> Iterator[tuple[Row, Row]]:
    for index, national in enumerate(numbers):
        contact_id = index + 1
        name = contact_name(contact_id)
        number = e164(national)
        yield (
            {
                "id": contact_id,
                "team_id": team_id,
                "name": name,
                "type": "customer",
                "caller_id_name": name,
                "source": "import",
                "rating": 0,
                "status": "open",
                "blocked": False,
                "custom_fields": {},
                "created_at": now,
                "updated_at": now,
            },
            {
                "id": contact_id,
                "team_id": team_id,
                "contact_id": contact_id,
                "e164": number,
                "duplicate_key": 0,
                "original": national_format(national),
                "label": "mobile",
                "region": "US",
                "position": 0,
            },
        )


def _hot_templates(actor: Actor, numbers: array[int]) -> list[Row]:
    """One validated row per kind of the hot contact's history, built by `timeline.event_row`."""
    caller = e164(numbers[HOT_CONTACT_ID - 1])
    samples = {
        "call": timeline.CallEvent(
            direction="inbound",
            from_number=caller,
            to_number="+14155550100",
            status="completed",
            duration_seconds=95,
        ),
        "note_added": timeline.NoteEvent(note_id=1, type="general", content="Asked for a quote."),
        "stage_changed": timeline.StageChanged(
            from_stage_id=None, from_stage=None, to_stage_id=None, to_stage=None, reason="bench"
        ),
    }
    templates: list[Row] = []
    for kind, share in _HOT_KINDS:
        templates += [timeline.event_row(actor, HOT_CONTACT_ID, kind, samples[kind])] * share
    return templates


def _event_rows(
    actor: Actor, numbers: array[int], hot_events: int, start: datetime, rng: random.Random
) -> Iterator[Row]:
    """Each contact's `contact_created`, with the hot contact's events spread among them."""
    templates = _hot_templates(actor, numbers)
    contacts = len(numbers)
    created = timeline.event_row(
        actor, HOT_CONTACT_ID, "contact_created", timeline.ContactCreated(name="x", source="import")
    )
    event_id = 0
    emitted = 0
    for index in range(contacts):
        contact_id = index + 1
        event_id += 1
        yield created | {
            "id": event_id,
            "contact_id": contact_id,
            "occurred_at": start + timedelta(seconds=event_id),
            "data": {"name": contact_name(contact_id), "source": "import"},
        }
        due = (index + 1) * hot_events // contacts
        while emitted < due:
            event_id += 1
            emitted += 1
            yield rng.choice(templates) | {
                "id": event_id,
                "occurred_at": start + timedelta(seconds=event_id),
            }


async def _driver(connection: AsyncConnection) -> Any:
    """The driver's own connection (aiosqlite or asyncpg), for what SQLAlchemy cannot say."""
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    return driver


def _batches(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


class _Writer:
    """Writes batches of row dicts to one table; SQLite and PostgreSQL differ only here."""

    def __init__(self, connection: AsyncConnection, dialect: str) -> None:
        self.connection = connection
        self.dialect = dialect

    async def write(self, table: Table, rows: list[Row]) -> None:
        if self.dialect == "postgresql":
            await self._copy(table, rows)
        else:
            await self.connection.execute(insert(table), rows)

    async def _copy(self, table: Table, rows: list[Row]) -> None:
        columns = list(rows[0])
        json_columns = {"custom_fields", "data"} & set(columns)
        records = [
            tuple(json.dumps(row[c]) if c in json_columns else row[c] for c in columns)
            for row in rows
        ]
        await (await _driver(self.connection)).copy_records_to_table(
            table.name, records=records, columns=columns
        )

    async def commit(self) -> None:
        if self.dialect != "postgresql":
            await self.connection.commit()


async def seed(
    url: str, *, contacts: int, hot_events: int, spare: int, rng: random.Random
) -> Seeded:
    """Migrate the empty database at `url` and fill it; the engine used is closed after."""
    started = time.perf_counter()
    database = Database(url)
    try:
        progress(f"migrating {Database.describe(url)}")
        await upgrade(database)
        async with database.transaction() as session:
            team = accounts.team_settings(await accounts.create_team(session, "Bench"))
        progress(f"drawing {contacts + spare} valid phone numbers")
        numbers = valid_numbers(contacts + spare, rng)
        spare_numbers = numbers[contacts:]
        del numbers[contacts:]
        rows = await _fill(database, team, numbers, hot_events, rng)
    finally:
        await database.close()
    return Seeded(
        team=team,
        numbers=numbers,
        spare_numbers=spare_numbers,
        hot_contact_id=HOT_CONTACT_ID,
        seconds=time.perf_counter() - started,
        rows=rows,
    )


async def _fill(
    database: Database, team: TeamSettings, numbers: array[int], hot_events: int, rng: random.Random
) -> int:
    actor = Actor.system(team)
    contacts_table = Contact.__table__
    phones_table = ContactPhone.__table__
    events_table = TimelineEvent.__table__
    assert isinstance(contacts_table, Table)
    assert isinstance(phones_table, Table)
    assert isinstance(events_table, Table)
    contacts = 0
    async with database.engine.connect() as connection:
        writer = _Writer(connection, database.dialect)
        if database.dialect == "sqlite":
            # Seeding only: this engine is closed before anything is measured.
            await connection.exec_driver_sql("PRAGMA cache_size=-524288")
        pairs = _contact_rows(team.id, numbers, utcnow())
        batches = 0
        while chunk := list(islice(pairs, BATCH)):
            await writer.write(contacts_table, [contact for contact, _ in chunk])
            await writer.write(phones_table, [phone for _, phone in chunk])
            contacts += len(chunk)
            batches += 1
            if batches % COMMIT_EVERY_BATCHES == 0:
                await writer.commit()
                progress(f"  {contacts} contacts with their phones")
        await writer.commit()
        # One event a second, the newest just now.
        start = utcnow() - timedelta(seconds=len(numbers) + hot_events)
        events = 0
        for batches, batch in enumerate(
            _batches(_event_rows(actor, numbers, hot_events, start, rng), BATCH), start=1
        ):
            await writer.write(events_table, batch)
            events += len(batch)
            if batches % COMMIT_EVERY_BATCHES == 0:
                await writer.commit()
                progress(f"  {events} timeline events")
        await writer.commit()
    await _settle(database)
    return 2 * contacts + events


async def _settle(database: Database) -> None:
    """Leave the database as a long-running one would be: WAL folded in, or stats gathered."""
    if database.dialect == "sqlite":
        async with database.engine.connect() as connection:
            # Outside any transaction, which SQLAlchemy would open (BEGIN IMMEDIATE) first.
            await (await _driver(connection)).execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return
    async with database.engine.connect() as connection:
        await connection.execution_options(isolation_level="AUTOCOMMIT")
        for table in ("contacts", "contact_phones", "timeline_events"):
            await connection.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            )
        progress("VACUUM ANALYZE")
        await connection.execute(text("VACUUM ANALYZE"))
        # Gigabytes of WAL were just written: without a checkpoint now, PostgreSQL writes
        # them out while the lookups are timed (seen: round trips twice as slow).
        try:
            await connection.execute(text("CHECKPOINT"))
        except DBAPIError as error:
            progress(
                "no CHECKPOINT (GRANT pg_checkpoint TO the role for steadier figures): "
                f"{error.orig}"
            )
