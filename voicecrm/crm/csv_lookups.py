"""What an import batch needs to know from the database before it is planned.

Which contacts already hold the batch's phone numbers and emails (two indexed
queries per few thousand keys), and the current values of those contacts when
rows may update them. A dry run, which writes nothing, keeps the keys of the
contacts it would have created in a temporary table, so that later batches
match them without the job holding a million keys in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Column,
    ColumnElement,
    MetaData,
    String,
    Table,
    any_,
    bindparam,
    func,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from voicecrm.crm.csv_plan import FIELDS, Target
from voicecrm.crm.models import Contact, ContactEmail, ContactPhone, ContactTag, Note

CONTACTS = cast(Table, Contact.__table__)
PHONES = cast(Table, ContactPhone.__table__)
EMAILS = cast(Table, ContactEmail.__table__)
TAGS = cast(Table, ContactTag.__table__)
NOTES = cast(Table, Note.__table__)
_IN_CHUNK = 5000  # keys per IN (...) list: well under SQLite's and asyncpg's parameter limits


def among(
    conn: AsyncConnection, column: ColumnElement[Any], values: Sequence[Any]
) -> ColumnElement[bool]:
    """`column IN (values)`, with the values as one parameter however many there are.

    An IN list of thousands of parameters is compiled afresh for every batch (by
    SQLAlchemy, and by PostgreSQL's planner), which cost a fifth of a lookup. On
    PostgreSQL it is `= ANY(array)`; on SQLite `IN (SELECT value FROM json_each(?))`,
    which SQLite runs as a probe of the column's index per value, as for a list.
    """
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    if conn.dialect.name == "sqlite":
        each = func.json_each(bindparam(None, json.dumps(list(values)), type_=String))
        return column.in_(select(each.table_valued("value").c.value))
    return column.in_(values)


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def owners(
    conn: AsyncConnection, team_id: int, phones: Sequence[str], emails: Sequence[str]
) -> dict[str, int]:
    """Key ("p:" + E.164, "e:" + email) -> the oldest contact holding it.

    The oldest is picked here, not with ORDER BY contact_id: given that order to
    produce, PostgreSQL walks the whole `contact_id` index and filters every row of
    the team against the batch's keys (2 ms a batch at 10,000 phones, 20 at
    100,000), where without it each key is one probe of the number's index.
    """
    keys: dict[str, int] = {}
    for prefix, table, column, values in (
        ("p:", PHONES, PHONES.c.e164, phones),
        ("e:", EMAILS, EMAILS.c.email, emails),
    ):
        for chunk in _chunks(values):
            rows = await conn.execute(
                select(column, table.c.contact_id).where(
                    table.c.team_id == team_id, among(conn, column, chunk)
                )
            )
            for value, contact_id in rows:
                key = prefix + value
                keys[key] = min(contact_id, keys.get(key, contact_id))
    return keys


async def load_targets(
    conn: AsyncConnection, ids: Sequence[int], *, with_notes: bool = False
) -> dict[int, Target]:
    """The current state of matched contacts, so that a row can be merged into them.

    `with_notes`: also the text of their notes, so that a note the file repeats is
    not added twice.
    """
    targets: dict[int, Target] = {}
    columns = [CONTACTS.c[name] for name in FIELDS]
    for chunk in _chunks(sorted(ids)):
        for row in await conn.execute(
            select(CONTACTS.c.id, *columns).where(among(conn, CONTACTS.c.id, chunk))
        ):
            values = dict(zip(FIELDS, row[1:], strict=True))
            values["custom_fields"] = values["custom_fields"] or {}
            targets[row.id] = Target(ref=row.id, new=False, values=values)
        for contact_id, e164, position in await conn.execute(
            select(PHONES.c.contact_id, PHONES.c.e164, PHONES.c.position).where(
                among(conn, PHONES.c.contact_id, chunk)
            )
        ):
            target = targets[contact_id]
            target.phones.add(e164)
            target.next_phone = max(target.next_phone, position + 1)
        for contact_id, email, position in await conn.execute(
            select(EMAILS.c.contact_id, EMAILS.c.email, EMAILS.c.position).where(
                among(conn, EMAILS.c.contact_id, chunk)
            )
        ):
            target = targets[contact_id]
            target.emails.add(email)
            target.next_email = max(target.next_email, position + 1)
        for contact_id, tag in await conn.execute(
            select(TAGS.c.contact_id, TAGS.c.tag).where(among(conn, TAGS.c.contact_id, chunk))
        ):
            targets[contact_id].tags.add(tag)
        if with_notes:
            for contact_id, content in await conn.execute(
                select(NOTES.c.contact_id, NOTES.c.content).where(
                    among(conn, NOTES.c.contact_id, chunk)
                )
            ):
                targets[contact_id].notes.add(content)
    return targets


# A dry run's memory of the contacts it would have created, per connection.
_DRY_KEYS = Table(
    "voicecrm_import_dry_run_keys",
    MetaData(),
    Column("key", String(400), primary_key=True),
    Column("ref", BigInteger, nullable=False),
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DROP",
)


async def create_dry_run_keys(conn: AsyncConnection) -> None:
    """The dry run's table; it goes with the transaction, which is never committed."""
    await conn.run_sync(_DRY_KEYS.create)


async def dry_run_owners(
    conn: AsyncConnection, keys: dict[str, int], phones: Sequence[str], emails: Sequence[str]
) -> None:
    """Add to `keys` the dry run's would-be contacts holding keys no real contact holds."""
    missing = [k for k in ("p:" + p for p in phones) if k not in keys]
    missing += [k for k in ("e:" + e for e in emails) if k not in keys]
    for chunk in _chunks(missing):
        rows = await conn.execute(
            select(_DRY_KEYS.c.key, _DRY_KEYS.c.ref).where(among(conn, _DRY_KEYS.c.key, chunk))
        )
        keys.update({key: ref for key, ref in rows})


async def remember_dry_run_keys(conn: AsyncConnection, fresh: Mapping[str, int]) -> None:
    if fresh:
        await conn.execute(insert(_DRY_KEYS), [{"key": k, "ref": r} for k, r in fresh.items()])
