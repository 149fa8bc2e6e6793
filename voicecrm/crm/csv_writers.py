"""Writing a planned import batch: ids, multi-row inserts (COPY on PostgreSQL), one UPDATE.

Rows go to the driver as plain tuples, not ORM objects nor SQLAlchemy's
executemany, which would run every value of every row through its type
converters: each column's converter is looked up once per statement, constants
are converted once per batch, and JSON arrives already serialised.

On SQLite the rows are multi-row INSERTs of up to 1,024 rows, and a value the
whole batch shares (the team, the time, and in most files most contact fields:
type, source, status, rating, no stage) is bound once per statement instead of
once for every row: Python's sqlite3 module spends about 0.4 µs binding each
parameter of each row, more than SQLite takes to store it. Side by side, a
contact row took 8-9 µs with its 16 values bound and 2.3-2.5 µs with the 13
shared ones written once (then as literals, session 5).

Multi-row statements rather than an executemany: an executemany takes the
interpreter's lock back after each row, and beside a thread running Python
(the event loop) waits for it each time: 454-691 µs a row against 9.8-10.9 in one
statement (bench/README.md, session 7). In the import they took the writing
thread from 28-33 to 19-22 µs a row at 200,000 rows (session 8).

On PostgreSQL, whose executemany runs each row as a statement of its own, rows
are loaded with binary COPY in the batch's transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import String, Table, bindparam, func, select, update
from sqlalchemy import cast as cast_
from sqlalchemy.dialects.postgresql import REGCLASS
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from voicecrm.accounts.actor import Actor
from voicecrm.crm.csv_lookups import CONTACTS, EMAILS, NOTES, PHONES, TAGS
from voicecrm.crm.csv_plan import (
    EMAIL_COLUMNS,
    FIELDS,
    PHONE_COLUMNS,
    BatchPlan,
    Target,
    new_contact_fields,
)
from voicecrm.crm.csv_rows import ContactRow
from voicecrm.crm.duplicates import duplicate_key
from voicecrm.crm.models import TimelineEvent

EVENTS = cast(Table, TimelineEvent.__table__)
WRITTEN = (CONTACTS, PHONES, EMAILS, TAGS, NOTES, EVENTS)
Processor = Callable[[Any], Any]
_field_values = itemgetter(*FIELDS)
_CUSTOM = FIELDS.index("custom_fields")


@lru_cache(maxsize=64)
def _converters(
    dialect: Dialect, table: Table, columns: tuple[str, ...], serialized: frozenset[str]
) -> tuple[Processor | None, ...]:
    """Each column's value converter for the driver (`None`: the value goes as is).

    Columns in `serialized` come as the driver takes them (JSON as text): no converter.
    """
    return tuple(
        None
        if name in serialized
        else table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        for name in columns
    )


async def insert_rows(
    conn: AsyncConnection,
    table: Table,
    columns: tuple[str, ...],
    constants: Mapping[str, Any],
    rows: Sequence[tuple[Any, ...]],
    *,
    serialized: frozenset[str] = frozenset(),
) -> None:
    """Insert `rows` (values of `columns`); every row shares `constants`."""
    if not rows:
        return
    all_columns = (*columns, *constants)
    converters = _converters(conn.dialect, table, all_columns, serialized)
    fixed = tuple(
        value if convert is None else convert(value)
        for value, convert in zip(constants.values(), converters[len(columns) :], strict=True)
    )
    if conn.dialect.paramstyle == "qmark":
        shared = dict(zip(constants, fixed, strict=True))
        insert = sqlite_insert(
            table.name, columns, rows, shared, converters=converters[: len(columns)]
        )
        for sql, parameters in insert.statements():
            await conn.exec_driver_sql(sql, parameters)
        return
    if conn.dialect.driver != "asyncpg":
        raise NotImplementedError(f"bulk inserts on {conn.dialect.driver}")
    varying = [(i, c) for i, c in enumerate(converters[: len(columns)]) if c is not None]
    converted: Sequence[tuple[Any, ...]] = rows
    if varying:
        converted = []
        for row in rows:
            values = list(row)
            for index, convert in varying:
                values[index] = convert(values[index])
            converted.append(tuple(values))
    await _copy(conn, table, all_columns, [(*row, *fixed) for row in converted])


# The most rows in one SQLite INSERT statement (a power of two, see `statements`).
# Each statement takes the interpreter's lock back once when SQLite is done with
# it, and beside a busy event loop (calls being served) waits for it each time:
# 100,000 rows beside a thread running Python took 9.8-10.1 µs a row in statements
# of 2,000 and 18.4-19.6 in statements of 500; alone, 2.3-2.8 and 2.1-2.9
# (bench/README.md, session 8). 1,024: the largest power of two in a default batch.
SQLITE_ROWS_PER_STATEMENT = 1_024
# The most parameters one SQLite statement may have: 32,766 since SQLite 3.32, 999 before.
SQLITE_MAX_PARAMETERS = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


@dataclass(frozen=True, slots=True)
class SqliteInsert:
    """Multi-row INSERT statements for SQLite, and the values each binds.

    `shared` values (the batch's constants, and the values all its rows share) are
    bound once per statement, as `?1`, `?2`...; each row binds only its varying
    values, kept column by column in `columns` (see `sqlite_insert`).
    """

    head: str
    row: tuple[int, ...]  # per column: the nth shared value (-n) or the nth varying one (n)
    shared: tuple[Any, ...]
    columns: list[list[Any]]  # the varying columns' values, row by row
    count: int  # rows

    def statements(
        self, most_rows: int = SQLITE_ROWS_PER_STATEMENT
    ) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """Each statement's SQL and its parameters, covering every row in order.

        A statement's text depends on its number of rows, and every text is
        compiled once and kept by the driver (128 of them a connection): batches
        whose row counts differ (a file's errors and matches fall anywhere) would
        each compile statements of their own, and the cache would fill with them,
        hundreds of kilobytes each. So the rows go in statements whose sizes are
        powers of two: as many of the largest as fit, then the rest by its binary
        digits (1,960 rows: 1,024, 512, 256, 128, 32, 8). A table then has at most
        a dozen statement texts, whatever the batches hold.
        """
        shared, width = len(self.shared), len(self.columns)
        room = (SQLITE_MAX_PARAMETERS - shared) // width if width else most_rows
        step = 1 << (max(1, min(most_rows, room)).bit_length() - 1)
        full, rest = divmod(self.count, step)
        sizes = [step] * full + [
            1 << bit for bit in reversed(range(step.bit_length())) if rest >> bit & 1
        ]
        start = 0
        for rows in sizes:
            # The rows' values in statement order, laid out a column at a time.
            parameters: list[Any] = [*self.shared, *[None] * (rows * width)]
            for offset, column in enumerate(self.columns, shared):
                parameters[offset::width] = column[start : start + rows]
            sql = _multi_row_sql(self.head, self.row, shared, width, rows)
            start += rows
            yield sql, tuple(parameters)


@lru_cache(maxsize=128)
def _multi_row_sql(head: str, row: tuple[int, ...], shared: int, width: int, rows: int) -> str:
    """`head` and `rows` value lists; a row's `width` varying values are numbered after
    the `shared` ones and the rows before it."""
    firsts = range(shared + 1, shared + 1 + rows * width, width) if width else [0] * rows
    return head + ", ".join(
        "(" + ", ".join(f"?{-item}" if item < 0 else f"?{first + item}" for item in row) + ")"
        for first in firsts
    )


def sqlite_insert(
    table: str,
    columns: Sequence[str],
    rows: Sequence[tuple[Any, ...]],
    constants: Mapping[str, Any],
    *,
    converters: Sequence[Processor | None] | None = None,
) -> SqliteInsert:
    """Multi-row INSERTs of `rows` for SQLite, every row with `constants`.

    A value every row of the batch shares (in most files most contact fields:
    type, source, status, rating, no stage), and each of `constants`, is bound
    once per statement; only the other columns are bound row by row. `converters`
    (one per column, `None`: as is) turn the rows' values into the driver's; a
    shared value is converted once, not once a row.

    Shared values are bound rather than written into the text as literals (as
    the executemany before them was): a statement's text then depends only on
    which columns vary, not on the values, so batches with other shared values (a
    file sorted by company, a later time) run the same compiled statements. With
    literals, a file whose company changed every 2,000 rows compiled new
    statements for every batch: 8,143 rows/s and 140 MB peak RSS, against 12,828
    and 104 MB bound (200,000 rows, bench/README.md, session 8).

    Most columns of a batch vary (ids, names, numbers), and the first and last
    rows tell so at once: only the others are read whole to see whether every row
    shares the value. The varying columns are then taken out whole (`map` over
    the rows) and laid into each statement's parameters with a strided slice
    assignment: no tuple is built per row (in session 7, building such tuples and
    the garbage collections they brought on were a fifth of the event loop's time
    in an import).
    """
    converters = converters or (None,) * len(columns)
    first, last = rows[0], rows[-1]
    items: list[int] = []
    shared: list[Any] = []
    picked: list[int] = []  # the rows' columns bound row by row
    for index, convert in enumerate(converters):
        value = first[index]
        if _same(value, last[index]) and _shared(rows, index):
            shared.append(value if convert is None else convert(value))
            items.append(-len(shared))
        else:
            items.append(len(picked))
            picked.append(index)
    for value in constants.values():
        shared.append(value)
        items.append(-len(shared))
    head = f"INSERT INTO {table} ({', '.join([*columns, *constants])}) VALUES "
    varying = [_column(rows, index, converters[index]) for index in picked]
    return SqliteInsert(head, tuple(items), tuple(shared), varying, len(rows))


def _column(rows: Sequence[tuple[Any, ...]], index: int, convert: Processor | None) -> list[Any]:
    """Column `index` of `rows`, converted for the driver."""
    values = map(itemgetter(index), rows)
    return list(values if convert is None else map(convert, values))


def _same(value: Any, other: Any) -> bool:
    """Whether two values would be stored alike (1, True and 1.0 are equal, not alike)."""
    return bool(value == other) and type(value) is type(other)


def _shared(rows: Sequence[tuple[Any, ...]], index: int) -> bool:
    """Whether every row has the same value, of the same type, in column `index`."""
    column = list(map(itemgetter(index), rows))
    value = column[0]
    if column.count(value) != len(column):
        return False
    # Only a str equals a str, and only None is None: the types need no second look.
    return type(value) is str or value is None or len(set(map(type, column))) == 1


async def _copy(
    conn: AsyncConnection, table: Table, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """PostgreSQL's COPY into `table`, inside the connection's transaction."""
    import asyncpg  # type: ignore[import-untyped]  # only PostgreSQL needs it

    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    try:
        await driver.copy_records_to_table(table.name, records=rows, columns=list(columns))
    except asyncpg.IntegrityConstraintViolationError as err:
        # COPY bypasses SQLAlchemy; say it in its words, so a lost race is retried.
        raise IntegrityError(f"COPY {table.name}", None, err) from err


_UPDATE = (
    update(CONTACTS)
    .where(CONTACTS.c.id == bindparam("b_id"))
    .values(
        {
            name: bindparam(f"b_{name}", type_=CONTACTS.c[name].type)
            for name in (*FIELDS, "updated_at")
        }
    )
)


async def allocate_ids(conn: AsyncConnection, table: Table, count: int) -> list[int]:
    """Ids for new rows of `table`, known before they are inserted so that phones can
    point at their contact and a note's timeline entry at the note.

    Inserts then need no RETURNING, which COPY does not offer and whose row order
    SQLite does not promise for multi-row inserts.
    """
    if count == 0:
        return []
    if conn.dialect.name == "postgresql":
        # The sequence's name is looked up once: in the SELECT below, PostgreSQL would
        # call pg_get_serial_sequence for every id (7.5 against 1.6 µs an id).
        name = await conn.scalar(select(func.pg_get_serial_sequence(table.name, "id")))
        sequence = cast_(bindparam(None, name, type_=String), REGCLASS)
        rows = await conn.execute(
            select(func.nextval(sequence)).select_from(func.generate_series(1, count))
        )
        return [int(value) for (value,) in rows]
    # SQLite: the batch's transaction began with BEGIN IMMEDIATE and holds the only
    # write lock until it commits, so no other writer can take these ids meanwhile.
    top = int(await conn.scalar(select(func.coalesce(func.max(table.c.id), 0))) or 0)
    return list(range(top + 1, top + 1 + count))


def _contact_values(values: Mapping[str, Any]) -> tuple[Any, ...]:
    row = _field_values(values)
    custom = row[_CUSTOM]
    return (*row[:_CUSTOM], json.dumps(custom) if custom else "{}", *row[_CUSTOM + 1 :])


class _Rows:
    """The table rows of one batch, gathered contact by contact."""

    def __init__(self, unique_phones: bool) -> None:
        self.unique = unique_phones
        self.contacts: list[tuple[Any, ...]] = []
        self.phones: list[tuple[Any, ...]] = []
        self.emails: list[tuple[Any, ...]] = []
        self.tags: list[tuple[int, str]] = []
        self.notes: list[tuple[int, str, str, bool]] = []

    def add_row(self, contact_id: int, row: ContactRow) -> None:
        """A contact created from `row` alone: its rows straight from the row's values."""
        self.contacts.append((contact_id, *new_contact_fields(row)))
        _row, _line, _display, _name, _values, phones, emails, tags, _custom, notes = row
        key = duplicate_key(not self.unique, contact_id)
        self.phones += [
            (contact_id, e164, key, original, label, region, i)
            for i, (e164, original, label, region, _carrier) in enumerate(phones)
        ]
        self.emails += [(contact_id, e, label, i) for i, (e, label) in enumerate(emails)]
        self.tags += [(contact_id, tag) for tag in tags]
        if notes:
            self.notes += [(contact_id, *note) for note in notes]

    def add_target(self, contact_id: int, target: Target) -> None:
        if target.new:
            self.contacts.append((contact_id, *_contact_values(target.values)))
        key = duplicate_key(not self.unique, contact_id)
        self.phones += [(contact_id, e164, key, *rest) for e164, *rest in target.phone_rows]
        self.emails += [(contact_id, *row) for row in target.email_rows]
        self.tags += [(contact_id, tag) for tag in target.tag_rows]
        self.notes += [(contact_id, *note) for note in target.note_rows]


async def write_plan(conn: AsyncConnection, plan: BatchPlan, actor: Actor, now: datetime) -> None:
    """Write what `plan` decided, in the connection's transaction."""
    # New contacts take ids in the order their rows come in the file (refs count down).
    created = sorted([*plan.new_rows, *(t.ref for t in plan.targets.values() if t.new)])
    ids = await allocate_ids(conn, CONTACTS, len(created))
    real = dict(zip(reversed(created), ids, strict=True))
    rows = _Rows(plan.settings.unique_phones)
    for ref in reversed(created):
        if (row := plan.new_rows.get(ref)) is not None:
            rows.add_row(real[ref], row)
        else:
            rows.add_target(real[ref], plan.targets[ref])
    for target in plan.targets.values():
        if not target.new:
            real[target.ref] = target.ref
            rows.add_target(target.ref, target)
    team = {"team_id": actor.team_id}
    stamps = {**team, "created_at": now, "updated_at": now}
    custom = frozenset({"custom_fields"})
    await insert_rows(conn, CONTACTS, ("id", *FIELDS), stamps, rows.contacts, serialized=custom)
    await insert_rows(conn, PHONES, ("contact_id", *PHONE_COLUMNS), team, rows.phones)
    await insert_rows(conn, EMAILS, ("contact_id", *EMAIL_COLUMNS), team, rows.emails)
    await insert_rows(conn, TAGS, ("contact_id", "tag"), team, rows.tags)
    changed = [t for t in plan.targets.values() if t.dirty and not t.new]
    if changed:
        await conn.execute(
            _UPDATE,
            [
                {"b_id": t.ref, "b_updated_at": now}
                | {f"b_{name}": t.values[name] for name in FIELDS}
                for t in changed
            ],
        )
    events = [(real[ref], kind, data) for ref, kind, data in plan.events]
    events += await _insert_notes(conn, rows.notes, actor, now)
    await insert_rows(
        conn,
        EVENTS,
        ("contact_id", "kind", "data"),
        {"team_id": actor.team_id, "occurred_at": now, "actor_user_id": actor.user_id},
        events,
        serialized=frozenset({"data"}),
    )


def note_added_text(note_id: int, content: str, kind: str) -> str:
    """The JSON of an imported note's "note_added" event; the job checks once that the
    kind takes this shape (`timeline.event_row`), as appending it would each time."""
    return json.dumps({"note_id": note_id, "type": kind, "content": content})


async def _insert_notes(
    conn: AsyncConnection,
    notes: Sequence[tuple[int, str, str, bool]],
    actor: Actor,
    now: datetime,
) -> list[tuple[int, str, str]]:
    """Insert the batch's notes (by the importing user, dated now); their events."""
    ids = await allocate_ids(conn, NOTES, len(notes))
    constants = {
        "team_id": actor.team_id,
        "author_user_id": actor.user_id,
        "created_at": now,
        "updated_at": now,
    }
    numbered = [(note_id, *note) for note_id, note in zip(ids, notes, strict=True)]
    columns = ("id", "contact_id", "content", "type", "pinned")
    await insert_rows(conn, NOTES, columns, constants, numbered)
    return [
        (contact_id, "note_added", note_added_text(note_id, text, kind))
        for note_id, contact_id, text, kind, _pinned in numbered
    ]


async def refresh_lookup_statistics(conn: AsyncConnection) -> None:
    """Tell PostgreSQL's planner how big the tables the batches look keys up in now are.

    An import can grow them faster than autovacuum analyses them (it looks once a
    minute). Planned on statistics of a near-empty table, a batch's `= ANY(keys)`
    lookup walks a whole index and filters every row against the keys instead of
    probing the number's index once a key: its cost then grows with the table,
    and the import with the square of the file. ANALYZE samples a fixed number of
    rows, a few tens of milliseconds. PostgreSQL only: SQLite probes the index for
    such a list whatever its statistics say, and the job does not call this there.
    """
    await conn.exec_driver_sql(f"ANALYZE {PHONES.name}, {EMAILS.name}")


async def refresh_statistics(conn: AsyncConnection) -> None:
    """Tell the query planner what the import changed.

    Without statistics SQLite takes `team_id = ?` for a selective condition, and to
    page through a team's contacts in id order (exports, bulk actions) it reads and
    sorts the whole team for every page: at a million contacts, 160 ms a page instead
    of half a millisecond, and an export that is quadratic in the team's size. A full
    ANALYZE of `contacts` (a sample is not enough: it underestimates a team) takes
    about 0.7 s a million contacts, once. PostgreSQL samples every table cheaply.
    """
    if conn.dialect.name == "sqlite":
        await conn.exec_driver_sql(f"ANALYZE {CONTACTS.name}")
    else:
        await conn.exec_driver_sql(f"ANALYZE {', '.join(t.name for t in WRITTEN)}")
