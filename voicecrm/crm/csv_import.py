"""Importing contacts from CSV: a million rows, in constant memory, at database speed.

The job reads the file twice. The first pass only decodes and splits it (about
two seconds a million rows): a file that is not text in the given encoding, not
CSV, or has no column naming, reaching or identifying a contact is refused then,
before anything is written, and the row count it yields drives the progress
display. The second pass imports, a batch of rows at a time:

1. `read_rows` turns cells into contact fields and parses the phone numbers, in a
   worker thread or worker processes while the previous batch is being written;
2. two queries find the contacts that already own the batch's phone numbers
   (the `contact_phones (team_id, e164)` index) and email addresses;
3. each row either creates a contact, or is matched to an existing one (by phone
   first, then email) and then updates it or is skipped (`on_match`);
4. multi-row INSERTs and one executemany UPDATE write the batch, with one
   "imported" timeline event per created or updated contact.

Rows repeating a contact that an earlier row of the same file created are
matched to it just like a contact that was there before, so one number never
ends on two contacts and the unique index on phones is never hit by the file
itself. Importing never deletes: empty cells leave fields as they are, and
phones, emails and tags are added to those a contact has.

Transactions: unlike the rest of the CRM, this job owns its units of work and
commits each batch. A million rows must not be one transaction (it would hold
SQLite's only write lock for a minute, stalling every live call, and keep a
PostgreSQL transaction open for as long); and a failure then leaves committed
batches in place with a report saying which rows landed. Re-running the file is
safe for rows with a phone or email, as they match what landed.

A dry run runs the same plan in one read-only transaction and writes nothing to
the CRM; the keys of contacts it would create are kept in a temporary table, so
that it too matches later rows to earlier ones without holding them in memory.

Row numbers in reports count data rows from 1 (the header is not a row, empty
lines are not counted); each error also gives the line the row starts on, which
is the row number a spreadsheet shows when no cell spans lines.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import os
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from itertools import chain, islice
from multiprocessing import get_context
from operator import itemgetter
from typing import IO, Any, TypeVar, cast

from pydantic import BaseModel, Field
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
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from voicecrm.accounts.actor import Actor
from voicecrm.accounts.models import User
from voicecrm.crm import timeline
from voicecrm.crm.csv_columns import (
    ColumnPlan,
    ContactRow,
    Record,
    RowContext,
    RowError,
    init_worker_process,
    plan_columns,
    read_rows,
    read_rows_in_worker_process,
)
from voicecrm.crm.models import (
    Contact,
    ContactEmail,
    ContactPhone,
    ContactSource,
    ContactTag,
    Stage,
    TimelineEvent,
)
from voicecrm.crm.schemas import BUILTIN_SOURCES, CONTACT_FIELDS
from voicecrm.errors import InvalidCSV, InvalidInput
from voicecrm.storage import Database, utcnow

MAX_REPORTED_ERRORS = 1000
DEFAULT_BATCH = 2000
_IN_CHUNK = 5000  # keys per IN (...) list: well under SQLite's and asyncpg's parameter limits
_RETRIES = 3
T = TypeVar("T")

_CONTACTS = cast(Table, Contact.__table__)
_PHONES = cast(Table, ContactPhone.__table__)
_EMAILS = cast(Table, ContactEmail.__table__)
_TAGS = cast(Table, ContactTag.__table__)
_EVENTS = cast(Table, TimelineEvent.__table__)
IMPORT_SOURCE = "import"


class OnMatch(StrEnum):
    UPDATE = "update"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class ImportOptions:
    on_match: OnMatch = OnMatch.UPDATE
    dry_run: bool = False
    mapping: Mapping[str, str] | None = None
    encoding: str = "utf-8-sig"
    # Recorded in each contact's "imported" timeline event.
    file_name: str | None = None
    batch_size: int = DEFAULT_BATCH
    # 0 reads rows (parses phone numbers: most of the CPU time) on the event loop;
    # N > 0 in N worker processes while the database writes, which makes large
    # imports faster on a machine with cores to spare, for a second or so to start.
    workers: int = 0


# Below this size a file imports faster than worker processes start.
WORKERS_FROM_BYTES = 8 * 1_048_576


def suggested_workers(size: int) -> int:
    """Worker processes for a file of `size` bytes: one per spare core (up to 4) if large."""
    cores = os.cpu_count() or 1
    return min(4, cores - 1) if size >= WORKERS_FROM_BYTES and cores > 1 else 0


class ImportRowError(BaseModel):
    row: int = Field(description="Data row number, from 1; the header is not counted.")
    line: int = Field(description="The file line the row starts on.")
    field: str | None = Field(description="The contact field at fault, if one is.")
    column: str | None = Field(description="The CSV column at fault, if one is.")
    message: str


class ImportReport(BaseModel):
    """What an import did (or, for a dry run, would do), row by row in totals."""

    dry_run: bool
    on_match: OnMatch
    total_rows: int = Field(description="Data rows in the file.")
    rows: int = Field(0, description="Rows processed so far.")
    created: int = 0
    updated: int = 0
    unchanged: int = Field(0, description="Matched a contact that already had every value.")
    skipped: int = Field(0, description="Matched a contact, left alone (on_match=skip).")
    failed: int = Field(0, description="Rows left out because of an error.")
    blank_rows: int = 0
    errors: list[ImportRowError] = Field(
        default_factory=list, description=f"The first {MAX_REPORTED_ERRORS} row errors."
    )
    errors_truncated: bool = False
    columns: dict[str, str] = Field(
        default_factory=dict, description="Each column read and the field it feeds."
    )
    ignored_columns: list[str] = Field(default_factory=list)
    seconds: float = 0.0


ProgressCallback = Callable[[ImportReport], None]
ErrorCallback = Callable[[ImportRowError], None]


# ----------------------------------------------------------------- reading the file


def _dialect(first_line: str) -> type[csv.Dialect]:
    """Comma, semicolon (spreadsheets in many European locales) or tab, from the header."""
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    delimiter = max(counts, key=lambda d: (counts[d], d == ","))

    class Sniffed(csv.excel):
        pass

    Sniffed.delimiter = delimiter if counts[delimiter] else ","
    return Sniffed


class _Records:
    """The records of a CSV file after its header, numbered; counts empty lines."""

    def __init__(self, file: IO[bytes], encoding: str) -> None:
        self._file = file
        self._encoding = encoding
        file.seek(0)
        self._text = io.TextIOWrapper(file, encoding=encoding, newline="")
        first = self._decoding(self._text.readline)
        if not first.strip():
            raise InvalidCSV("the file is empty: a contacts CSV starts with a header row")
        self._reader = csv.reader(chain([first], self._text), _dialect(first))
        self.header = self._next_or_none() or []
        self.blank = 0
        self._row = 0
        self._last_line = self._reader.line_num

    def _decoding(self, read: Callable[[], T]) -> T:
        try:
            return read()
        except UnicodeDecodeError as err:
            raise self._undecodable(err) from None
        except csv.Error as err:
            raise self._not_csv(err) from None

    def _undecodable(self, err: UnicodeDecodeError) -> InvalidCSV:
        line = _undecodable_line(self._file, self._encoding)
        return InvalidCSV(
            f"the file is not valid {self._encoding} text near line {line} ({err.reason}); "
            "save it as UTF-8, or give its encoding",
            field="encoding",
        )

    def _not_csv(self, err: csv.Error) -> InvalidCSV:
        return InvalidCSV(f"the file is not valid CSV at line {self._reader.line_num}: {err}")

    def _next_or_none(self) -> list[str] | None:
        return self._decoding(lambda: next(self._reader, None))

    def __iter__(self) -> Iterator[Record]:
        reader = self._reader
        try:
            for cells in reader:
                line = self._last_line + 1
                self._last_line = reader.line_num
                if "".join(cells).isspace() or not any(cells):
                    self.blank += 1
                    continue
                self._row += 1
                yield self._row, line, cells
        except UnicodeDecodeError as err:
            raise self._undecodable(err) from None
        except csv.Error as err:
            raise self._not_csv(err) from None

    def detach(self) -> None:
        """Leave the underlying file open for its owner."""
        self._text.detach()


def _undecodable_line(file: IO[bytes], encoding: str) -> int:
    """The line holding the first byte `encoding` cannot decode (the text reader reads ahead)."""
    file.seek(0)
    decoder = codecs.getincrementaldecoder(encoding)()
    number = 1
    for number, line in enumerate(file, start=1):
        try:
            decoder.decode(line)
        except UnicodeDecodeError:
            return number
    return number  # cut short in its last character


def _scan(file: IO[bytes], encoding: str) -> tuple[list[str], int]:
    """The first pass: the header and the number of data rows, or `InvalidCSV`."""
    records = _Records(file, encoding)
    try:
        return records.header, sum(1 for _ in records)
    finally:
        records.detach()


# ----------------------------------------------------------------- reading rows
# Rows read on the event loop between two yields to it: about 15 ms of phone parsing.
_INLINE_SLICE = 200


def _worker_pool(workers: int, context: RowContext) -> ProcessPoolExecutor:
    # "spawn": forking a process that runs database driver threads is not safe.
    return ProcessPoolExecutor(
        workers,
        mp_context=get_context("spawn"),
        initializer=init_worker_process,
        initargs=(context,),
    )


async def _read_inline(context: RowContext, chunk: list[Record]) -> list[ContactRow | RowError]:
    """Read rows on the loop in short slices, so that calls and requests still get served.

    Not in a thread: a thread parsing phone numbers holds the GIL for 5 ms at a time,
    and every database round trip of the batch being written would wait behind it.
    """
    rows: list[ContactRow | RowError] = []
    for start in range(0, len(chunk), _INLINE_SLICE):
        rows += read_rows(context, chunk[start : start + _INLINE_SLICE])
        await asyncio.sleep(0)
    return rows


async def _read_batches(
    records: Iterator[Record], context: RowContext, workers: int, size: int
) -> AsyncGenerator[list[ContactRow | RowError], None]:
    """Batches of read rows, in file order.

    With worker processes, `workers + 1` batches are read ahead while the database
    writes; inline, each batch is read when it is wanted.
    """
    if workers <= 0:
        while chunk := list(islice(records, size)):
            yield await _read_inline(context, chunk)
        return
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[list[ContactRow | RowError]]] = []
    pool = _worker_pool(workers, context)
    try:
        while chunk := list(islice(records, size)):
            pending.append(loop.run_in_executor(pool, read_rows_in_worker_process, chunk))
            if len(pending) > workers:
                yield await pending.pop(0)
        while pending:
            yield await pending.pop(0)
    finally:
        for future in pending:
            future.cancel()
        await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


async def _row_context(
    database: Database, actor: Actor, plan: ColumnPlan
) -> tuple[RowContext, dict[int, str]]:
    """The team's stages, users and sources, read once; and stage names by id."""
    async with database.transaction(read_only=True) as session:
        stages = list(
            await session.execute(
                select(Stage.name, Stage.id).where(Stage.team_id == actor.team_id)
            )
        )
        users = await session.execute(
            select(User.email, User.id).where(User.team_id == actor.team_id)
        )
        sources = await session.scalars(
            select(ContactSource.name).where(ContactSource.team_id == actor.team_id)
        )
        context = RowContext(
            plan=plan,
            default_region=actor.team.default_region,
            stages={name.casefold(): stage_id for name, stage_id in stages},
            users={email.lower(): user_id for email, user_id in users},
            sources=frozenset(BUILTIN_SOURCES) | frozenset(sources),
        )
    return context, {stage_id: name for name, stage_id in stages}


# ----------------------------------------------------------------- planning one batch
_FIELDS = CONTACT_FIELDS


_field_values = itemgetter(*_FIELDS)
# A new contact's fields where the row gives none (what create_contact would choose).
_NEW_CONTACT: dict[str, Any] = {
    "company": None,
    "type": "customer",
    "caller_id_name": None,
    "source": IMPORT_SOURCE,
    "responsible_user_id": None,
    "rating": 0,
    "status": "open",
    "blocked": False,
    "stage_id": None,
}
_PHONE_COLUMNS = ("e164", "unique_e164", "original", "label", "region", "position")
_EMAIL_COLUMNS = ("email", "label", "position")


@dataclass(slots=True)
class _Target:
    """A contact the batch creates or changes. `ref` is its id, or negative until inserted."""

    ref: int
    new: bool
    values: dict[str, Any]
    phones: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    next_phone: int = 0
    next_email: int = 0
    # False for a contact an earlier batch of a dry run would have created: nothing
    # is known of it but its keys, so a row merging into it counts as an update.
    known: bool = True
    dirty: bool = False
    phone_rows: list[tuple[Any, ...]] = field(default_factory=list)  # _PHONE_COLUMNS
    email_rows: list[tuple[Any, ...]] = field(default_factory=list)  # _EMAIL_COLUMNS
    tag_rows: list[str] = field(default_factory=list)


@dataclass
class _Outcome:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    errors: list[ImportRowError] = field(default_factory=list)


def _row_error(error: RowError) -> ImportRowError:
    return ImportRowError(
        row=error.row,
        line=error.line,
        field=error.field,
        column=error.column,
        message=error.message,
    )


class _Batch:
    """Decides, row by row, what a batch does; then writes it, or (dry run) doesn't."""

    def __init__(
        self,
        job: _Job,
        rows: Sequence[ContactRow | RowError],
        keys: dict[str, int],
        targets: dict[int, _Target],
    ) -> None:
        self.job = job
        self.rows = rows
        self.keys = keys  # "p:+1415..." / "e:jane@..." -> ref of the contact holding it
        self.fresh: dict[str, int] = {}  # keys this batch adds
        self.targets = targets
        # (contact ref, kind, data already validated by the kind's model)
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self.outcome = _Outcome()
        self.now = utcnow()

    def plan(self) -> None:
        for row in self.rows:
            if isinstance(row, RowError):
                self.outcome.errors.append(_row_error(row))
                continue
            self._plan_row(row)

    def _match(self, row: ContactRow) -> int | ImportRowError | None:
        owners = {self.keys[k] for p in row.phones if (k := "p:" + p.e164) in self.keys}
        if len(owners) > 1:
            ids = ", ".join(str(ref) for ref in sorted(owners) if ref > 0)
            return ImportRowError(
                row=row.row,
                line=row.line,
                field="phones",
                column=None,
                message="the row's phone numbers belong to different contacts"
                + (f" ({ids})" if ids else " (rows above in this file)")
                + "; merge them first, or split the row",
            )
        if owners:
            return owners.pop()
        for email, _label in row.emails:
            if (ref := self.keys.get("e:" + email)) is not None:
                return ref
        return None

    def _plan_row(self, row: ContactRow) -> None:
        match = self._match(row)
        if isinstance(match, ImportRowError):
            self.outcome.errors.append(match)
            return
        if match is None:
            target = self._create(row)
            self.outcome.created += 1
            self._imported(target, row, created=True)
        elif self.job.options.on_match is OnMatch.SKIP:
            self.outcome.skipped += 1
            return
        else:
            target = self.targets.get(match) or self._unknown(match)
            if self._merge(target, row):
                self.outcome.updated += 1
            else:
                self.outcome.unchanged += 1
        for phone in row.phones:
            self._remember("p:" + phone.e164, target.ref)
        for email, _label in row.emails:
            self._remember("e:" + email, target.ref)

    def _remember(self, key: str, ref: int) -> None:
        if key not in self.keys:
            self.keys[key] = ref
            self.fresh[key] = ref

    def _imported(self, target: _Target, row: ContactRow, *, created: bool) -> None:
        # Built as a dict, not a model, for speed: `_Job` checked this shape once.
        data = {"file": self.job.options.file_name, "row": row.row, "created": created}
        self.events.append((target.ref, "imported", data))

    def _event(self, ref: int, kind: str, data: timeline.EventData) -> None:
        self.events.append((ref, kind, data.model_dump(mode="json")))

    def _unknown(self, ref: int) -> _Target:
        target = _Target(ref=ref, new=False, values={}, known=False)
        self.targets[ref] = target
        return target

    def _create(self, row: ContactRow) -> _Target:
        values = {
            **_NEW_CONTACT,
            "name": row.name or row.display_name,
            "carrier": row.phones[0].carrier if row.phones else None,
            "custom_fields": dict(row.custom),
            **row.values,
        }
        target = _Target(ref=self.job.new_ref(), new=True, values=values)
        self.targets[target.ref] = target
        self._add_values(target, row)
        return target

    def _add_values(self, target: _Target, row: ContactRow) -> tuple[list[str], list[str]]:
        """Add the row's phones, emails and tags the contact lacks.

        Returns the names of the lists that grew and the tags added.
        """
        grew: list[str] = []
        unique = not self.job.actor.team.allow_duplicate_phones
        for phone in row.phones:
            if phone.e164 in target.phones:
                continue
            target.phones.add(phone.e164)
            target.phone_rows.append(
                (
                    phone.e164,
                    phone.e164 if unique else None,
                    phone.original,
                    phone.label,
                    phone.region,
                    target.next_phone,
                )
            )
            target.next_phone += 1
            if "phones" not in grew:
                grew.append("phones")
        for email, label in row.emails:
            if email in target.emails:
                continue
            target.emails.add(email)
            target.email_rows.append((email, label, target.next_email))
            target.next_email += 1
            if "emails" not in grew:
                grew.append("emails")
        added = [tag for tag in row.tags if tag not in target.tags]
        target.tags.update(added)
        target.tag_rows += added
        return grew, added

    def _merge(self, target: _Target, row: ContactRow) -> bool:
        """Apply a matched row to a contact; True if anything changed.

        Empty cells change nothing; lists only grow. A contact created by an earlier
        row of this batch simply absorbs the row; one that existed before gets the
        timeline entries a hand edit would have given it.
        """
        values = target.values
        before = dict(values)
        if target.known:
            if row.name is not None:
                values["name"] = row.name
            values.update(row.values)
            if row.custom:
                values["custom_fields"] = {**(values["custom_fields"] or {}), **row.custom}
            if row.phones and values["carrier"] is None and not target.phones:
                values["carrier"] = row.phones[0].carrier
        changed = [name for name in _FIELDS if values.get(name) != before.get(name)]
        grew, tags = self._add_values(target, row)
        if not (changed or grew or tags) and target.known:
            return False
        target.dirty = target.dirty or bool(changed)
        self._imported(target, row, created=False)
        if not target.new and target.known:
            self._change_events(target, before, changed + grew, tags)
        return True

    def _change_events(
        self, target: _Target, before: dict[str, Any], changed: list[str], tags: list[str]
    ) -> None:
        ref = target.ref
        fields = [name for name in changed if name not in ("stage_id", "status")]
        if fields:
            self._event(ref, "contact_updated", timeline.ContactUpdated(fields=fields))
        if "stage_id" in changed:
            names = self.job.stage_names
            old, new = before["stage_id"], target.values["stage_id"]
            data = timeline.StageChanged(
                from_stage_id=old,
                from_stage=names.get(old) if old is not None else None,
                to_stage_id=new,
                to_stage=names.get(new) if new is not None else None,
                reason="import",
            )
            self._event(ref, "stage_changed", data)
        if "status" in changed:
            status = timeline.StatusChanged(
                from_status=before["status"], to_status=target.values["status"]
            )
            self._event(ref, "status_changed", status)
        if tags:
            self._event(ref, "tags_changed", timeline.TagsChanged(added=sorted(tags)))

    # ------------------------------------------------------------- writing
    async def write(self, conn: AsyncConnection) -> None:
        targets = list(self.targets.values())
        new = [t for t in targets if t.new]
        ids = await _allocate_ids(conn, len(new))
        real = {t.ref: t.ref for t in targets if not t.new}
        real.update({t.ref: contact_id for t, contact_id in zip(new, ids, strict=True)})
        team = {"team_id": self.job.actor.team_id}
        stamps = {**team, "created_at": self.now, "updated_at": self.now}
        await _insert(
            conn,
            _CONTACTS,
            ("id", *_FIELDS),
            stamps,
            [(real[t.ref], *_field_values(t.values)) for t in new],
        )
        await _insert(
            conn,
            _PHONES,
            ("contact_id", *_PHONE_COLUMNS),
            team,
            [(real[t.ref], *row) for t in targets for row in t.phone_rows],
        )
        await _insert(
            conn,
            _EMAILS,
            ("contact_id", *_EMAIL_COLUMNS),
            team,
            [(real[t.ref], *row) for t in targets for row in t.email_rows],
        )
        await _insert(
            conn,
            _TAGS,
            ("contact_id", "tag"),
            team,
            [(real[t.ref], tag) for t in targets for tag in t.tag_rows],
        )
        changed = [t for t in targets if t.dirty and not t.new]
        if changed:
            await conn.execute(
                _UPDATE,
                [
                    {"b_id": t.ref, "b_updated_at": self.now}
                    | {f"b_{name}": t.values[name] for name in _FIELDS}
                    for t in changed
                ],
            )
        # The kinds' data was validated when it was made (see _Batch._imported); one
        # event goes through event_row to take its constant columns from it.
        if self.events:
            ref, kind, data = self.events[0]
            row = timeline.event_row(self.job.actor, real[ref], kind, data, occurred_at=self.now)
            constants = {k: row[k] for k in ("team_id", "occurred_at", "actor_user_id")}
            await _insert(
                conn,
                _EVENTS,
                ("contact_id", "kind", "data"),
                constants,
                [(real[ref], kind, data) for ref, kind, data in self.events],
            )


Processor = Callable[[Any], Any]


@lru_cache(maxsize=64)
def _insert_statement(
    dialect: Dialect, table: Table, columns: tuple[str, ...]
) -> tuple[str, tuple[Processor | None, ...]]:
    """An INSERT for the driver, with each column's value converter (`None`: as is)."""
    if dialect.paramstyle == "qmark":
        marks = ["?"] * len(columns)
    elif dialect.paramstyle == "numeric_dollar":
        marks = [f"${n}" for n in range(1, len(columns) + 1)]
    else:
        marks = ["%s"] * len(columns)
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({', '.join(marks)})"
    converters = tuple(
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in columns
    )
    return sql, converters


async def _insert(
    conn: AsyncConnection,
    table: Table,
    columns: tuple[str, ...],
    constants: Mapping[str, Any],
    rows: Sequence[tuple[Any, ...]],
) -> None:
    """A multi-row INSERT: `rows` give `columns`, every row shares `constants`.

    Sent to the driver as tuples rather than through SQLAlchemy's executemany, which
    runs every value of every row through its type converters (timestamps and JSON
    to text, on SQLite): a third of the import's time at a million rows. Here each
    column's converter is looked up once and the constants are converted once, and
    on PostgreSQL the rows are loaded with COPY.
    """
    if not rows:
        return
    sql, converters = _insert_statement(conn.dialect, table, (*columns, *constants))
    fixed = tuple(
        value if convert is None else convert(value)
        for value, convert in zip(constants.values(), converters[len(columns) :], strict=True)
    )
    varying = [(i, c) for i, c in enumerate(converters[: len(columns)]) if c is not None]
    if varying:
        converted = []
        for row in rows:
            values = list(row)
            for index, convert in varying:
                values[index] = convert(values[index])
            converted.append((*values, *fixed))
    else:
        converted = [(*row, *fixed) for row in rows]
    if conn.dialect.driver == "asyncpg":
        # PostgreSQL runs each row of an executemany as a statement of its own; COPY
        # loads them as one stream, several times faster, in the same transaction.
        import asyncpg  # type: ignore[import-untyped]  # only PostgreSQL needs it

        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        try:
            await driver.copy_records_to_table(
                table.name, records=converted, columns=[*columns, *constants]
            )
        except asyncpg.IntegrityConstraintViolationError as err:
            # COPY bypasses SQLAlchemy; say it in its words, so a lost race is retried.
            raise IntegrityError(f"COPY {table.name}", None, err) from err
    else:
        await conn.exec_driver_sql(sql, converted)


_UPDATE = (
    update(_CONTACTS)
    .where(_CONTACTS.c.id == bindparam("b_id"))
    .values(
        {
            name: bindparam(f"b_{name}", type_=_CONTACTS.c[name].type)
            for name in (*_FIELDS, "updated_at")
        }
    )
)


async def _allocate_ids(conn: AsyncConnection, count: int) -> list[int]:
    """Ids for new contacts, known before they are inserted so that phones can point at them.

    Inserts then need no RETURNING, which COPY does not offer and whose row order
    SQLite does not promise for multi-row inserts.
    """
    if count == 0:
        return []
    if conn.dialect.name == "postgresql":
        sequence = func.pg_get_serial_sequence(_CONTACTS.name, "id")
        rows = await conn.execute(
            select(func.nextval(sequence)).select_from(func.generate_series(1, count))
        )
        return [int(value) for (value,) in rows]
    # SQLite: the batch's transaction began with BEGIN IMMEDIATE and holds the only
    # write lock until it commits, so no other writer can take these ids meanwhile.
    top = await conn.scalar(select(func.coalesce(func.max(_CONTACTS.c.id), 0)))
    return list(range(int(top or 0) + 1, int(top or 0) + 1 + count))


def _among(
    conn: AsyncConnection, column: ColumnElement[Any], values: Sequence[Any]
) -> ColumnElement[bool]:
    """`column IN (values)`; on PostgreSQL `= ANY(array)`, one parameter however many values.

    PostgreSQL parses and plans an IN list of thousands of parameters afresh each time.
    """
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def _owners(
    conn: AsyncConnection, team_id: int, phones: Sequence[str], emails: Sequence[str]
) -> dict[str, int]:
    """Key -> the oldest contact holding it: two indexed queries per chunk of keys."""
    keys: dict[str, int] = {}
    for prefix, table, column, values in (
        ("p:", _PHONES, _PHONES.c.e164, phones),
        ("e:", _EMAILS, _EMAILS.c.email, emails),
    ):
        for chunk in _chunks(values):
            rows = await conn.execute(
                select(column, table.c.contact_id)
                .where(table.c.team_id == team_id, _among(conn, column, chunk))
                .order_by(table.c.contact_id.desc())
            )
            for value, contact_id in rows:
                keys[prefix + value] = contact_id
    return keys


async def _load_targets(conn: AsyncConnection, ids: Sequence[int]) -> dict[int, _Target]:
    """The current state of matched contacts, so that a row can be merged into them."""
    targets: dict[int, _Target] = {}
    columns = [_CONTACTS.c[name] for name in _FIELDS]
    for chunk in _chunks(sorted(ids)):
        for row in await conn.execute(
            select(_CONTACTS.c.id, *columns).where(_among(conn, _CONTACTS.c.id, chunk))
        ):
            values = dict(zip(_FIELDS, row[1:], strict=True))
            values["custom_fields"] = values["custom_fields"] or {}
            targets[row.id] = _Target(ref=row.id, new=False, values=values)
        for contact_id, e164, position in await conn.execute(
            select(_PHONES.c.contact_id, _PHONES.c.e164, _PHONES.c.position).where(
                _among(conn, _PHONES.c.contact_id, chunk)
            )
        ):
            target = targets[contact_id]
            target.phones.add(e164)
            target.next_phone = max(target.next_phone, position + 1)
        for contact_id, email, position in await conn.execute(
            select(_EMAILS.c.contact_id, _EMAILS.c.email, _EMAILS.c.position).where(
                _among(conn, _EMAILS.c.contact_id, chunk)
            )
        ):
            target = targets[contact_id]
            target.emails.add(email)
            target.next_email = max(target.next_email, position + 1)
        for contact_id, tag in await conn.execute(
            select(_TAGS.c.contact_id, _TAGS.c.tag).where(_among(conn, _TAGS.c.contact_id, chunk))
        ):
            targets[contact_id].tags.add(tag)
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


# ----------------------------------------------------------------- the job
class _Job:
    def __init__(
        self,
        database: Database,
        actor: Actor,
        options: ImportOptions,
        report: ImportReport,
        stage_names: dict[int, str],
    ) -> None:
        self.database = database
        self.actor = actor
        self.options = options
        self.report = report
        self.stage_names = stage_names
        self._next_ref = 0
        # "imported" events are made as plain dicts (`_Batch._imported`); this checks
        # once that the registered kind takes that shape, as event_row would each time.
        timeline.event_row(
            actor, 0, "imported", {"file": options.file_name, "row": 1, "created": True}
        )

    def new_ref(self) -> int:
        self._next_ref -= 1
        return self._next_ref

    async def plan_batch(
        self, conn: AsyncConnection, rows: Sequence[ContactRow | RowError]
    ) -> _Batch:
        good = [row for row in rows if isinstance(row, ContactRow)]
        phones = sorted({p.e164 for row in good for p in row.phones})
        emails = sorted({e for row in good for e, _label in row.emails})
        keys = await _owners(conn, self.actor.team_id, phones, emails)
        if self.options.dry_run:
            missing = [k for k in ("p:" + p for p in phones) if k not in keys]
            missing += [k for k in ("e:" + e for e in emails) if k not in keys]
            for chunk in _chunks(missing):
                rows_ = await conn.execute(
                    select(_DRY_KEYS.c.key, _DRY_KEYS.c.ref).where(
                        _among(conn, _DRY_KEYS.c.key, chunk)
                    )
                )
                keys.update({key: ref for key, ref in rows_})
        targets: dict[int, _Target] = {}
        if self.options.on_match is OnMatch.UPDATE:
            targets = await _load_targets(conn, sorted({r for r in keys.values() if r > 0}))
        batch = _Batch(self, rows, keys, targets)
        batch.plan()
        return batch

    async def run_batch(self, rows: Sequence[ContactRow | RowError]) -> _Outcome:
        """Plan and write one batch in its own transaction; retried if a race lost it.

        On PostgreSQL a call may give a number its contact between our lookup and our
        insert; the unique index refuses our row, and planning again finds the contact.
        """
        for attempt in range(_RETRIES):
            saved = self._next_ref
            try:
                async with self.database.transaction() as session:
                    conn = await session.connection()
                    batch = await self.plan_batch(conn, rows)
                    await batch.write(conn)
                return batch.outcome
            except IntegrityError:
                self._next_ref = saved
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def dry_batch(
        self, conn: AsyncConnection, rows: Sequence[ContactRow | RowError]
    ) -> _Outcome:
        batch = await self.plan_batch(conn, rows)
        if batch.fresh:
            await conn.execute(
                insert(_DRY_KEYS), [{"key": k, "ref": r} for k, r in batch.fresh.items()]
            )
        return batch.outcome

    def account(self, outcome: _Outcome, rows: int, on_error: ErrorCallback | None) -> None:
        report = self.report
        report.rows += rows
        report.created += outcome.created
        report.updated += outcome.updated
        report.unchanged += outcome.unchanged
        report.skipped += outcome.skipped
        report.failed += len(outcome.errors)
        for error in outcome.errors:
            if len(report.errors) < MAX_REPORTED_ERRORS:
                report.errors.append(error)
            else:
                report.errors_truncated = True
            if on_error is not None:
                on_error(error)


async def import_contacts(
    database: Database,
    actor: Actor,
    file: IO[bytes],
    options: ImportOptions | None = None,
    *,
    on_progress: ProgressCallback | None = None,
    on_error: ErrorCallback | None = None,
) -> ImportReport:
    """Import a CSV file (seekable, binary) into the actor's team; see the module docstring.

    Refuses with `InvalidCSV` (nothing written) a file it cannot read; reports row
    errors and goes on. `on_progress` is called after each batch, `on_error` once per
    row error as they are found (the report keeps only the first ones).
    """
    options = options or ImportOptions()
    actor.require_admin()
    if not 1 <= options.batch_size <= 20_000:
        raise InvalidInput("batch_size must be between 1 and 20000", field="batch_size")
    started = time.perf_counter()
    header, total = await asyncio.to_thread(_scan, file, options.encoding)
    plan = plan_columns(header, options.mapping)
    context, stage_names = await _row_context(database, actor, plan)
    report = ImportReport(
        dry_run=options.dry_run,
        on_match=options.on_match,
        total_rows=total,
        columns=dict(plan.recognised),
        ignored_columns=list(plan.ignored),
    )
    job = _Job(database, actor, options, report, stage_names)
    records = _Records(file, options.encoding)
    batches = _read_batches(iter(records), context, options.workers, options.batch_size)
    try:
        if options.dry_run:
            # One read-only transaction, never committed: the temporary table goes with it.
            async with database.read_sessionmaker() as session:
                conn = await session.connection()
                await conn.run_sync(_DRY_KEYS.create)
                async for rows in batches:
                    job.account(await job.dry_batch(conn, rows), len(rows), on_error)
                    _progress(report, started, records, on_progress)
        else:
            async for rows in batches:
                try:
                    outcome = await job.run_batch(rows)
                except Exception as err:
                    err.add_note(
                        f"the import stopped at data row {rows[0].row}: rows before it were "
                        f"imported ({report.created} created, {report.updated} updated), "
                        "rows from it on were not"
                    )
                    raise
                job.account(outcome, len(rows), on_error)
                _progress(report, started, records, on_progress)
    finally:
        await batches.aclose()
        records.detach()
    if not options.dry_run and report.created + report.updated >= STATISTICS_AFTER:
        await _refresh_statistics(database)
    report.blank_rows = records.blank
    report.seconds = round(time.perf_counter() - started, 3)
    return report


# An import that changed at least this many contacts refreshes the planner's statistics.
STATISTICS_AFTER = 10_000
_WRITTEN = (_CONTACTS, _PHONES, _EMAILS, _TAGS, _EVENTS)


async def _refresh_statistics(database: Database) -> None:
    """Tell the query planner what the import changed.

    Without statistics SQLite takes `team_id = ?` for a selective condition, and to
    page through a team's contacts in id order (exports, bulk actions) it reads and
    sorts the whole team for every page: at a million contacts, 160 ms a page instead
    of half a millisecond, and an export that is quadratic in the team's size. A full
    ANALYZE of `contacts` (a sample is not enough: it underestimates a team) takes
    about 0.7 s a million contacts, once. PostgreSQL samples every table cheaply.
    """
    async with database.transaction() as session:
        conn = await session.connection()
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql(f"ANALYZE {_CONTACTS.name}")
        else:
            await conn.exec_driver_sql(f"ANALYZE {', '.join(t.name for t in _WRITTEN)}")


def _progress(
    report: ImportReport, started: float, records: _Records, callback: ProgressCallback | None
) -> None:
    report.seconds = round(time.perf_counter() - started, 3)
    report.blank_rows = records.blank
    if callback is not None:
        callback(report)
