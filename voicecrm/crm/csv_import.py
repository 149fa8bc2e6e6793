"""Importing contacts from CSV: a million rows, in constant memory, at database speed.

The job reads the file twice. The first pass (`check_file`) only decodes and
splits it (about two seconds a million rows): a file that is not text in the
given encoding, not CSV, or has no column naming, reaching or identifying a
contact is refused then, before anything is written, and the row count it yields
drives the progress display; it also notes the line each batch ends on. A caller
that ran it already (the background import route, to refuse a bad upload before
it creates a job) passes its result on instead of reading the file a third
time. The second pass cuts the text into batches at those lines and imports
them, a batch at a time:

1. a batch's records are parsed and read into contact fields, phone numbers
   parsed (`csv_records`, `csv_rows`, `csv_phones`), in worker processes while
   earlier batches are written, or on the event loop for a small file
   (`csv_workers`);
2. two queries find the contacts that already own the batch's phone numbers
   (the `contact_phones (team_id, e164, duplicate_key)` index) and email addresses
   (`csv_lookups`); on PostgreSQL the planner's statistics for them are refreshed
   as the import grows the tables, or it would stop probing those indexes;
3. each row either creates a contact, or is matched to an existing one (by phone
   first, then email) and then updates it or is skipped (`on_match`; `csv_plan`);
4. one INSERT per table (multi-row statements on SQLite, COPY on PostgreSQL) and
   one executemany UPDATE write the batch, with one "imported" timeline event per
   created or updated contact and a "note_added" one per note (`csv_writers`).

On PostgreSQL, steps 2 and 3 of a batch run while the batch before it is written
(`_write`): writing is mostly the server's work, planning mostly this process's.
Batches still commit one at a time, in file order. A batch that repeats a key
the batch being written adds, or that would update existing contacts, waits for
that batch to commit and is planned in its own write transaction, as without the
overlap (`_Job.plan_ahead`). At a million rows, three runs alternating with and
without it gave 7,368, 9,750 and 7,925 rows/s against 6,733, 6,827 and 6,857.
SQLite plans each batch in its write transaction: there the overlap was slower
(bench/README.md, session 6), because a second connection reads the index pages
cold that the writing one then reads again, where PostgreSQL's buffers are shared.

The modules, one job each: `csv_records` (the file), `csv_columns` (what the
header's columns mean), `csv_rows` (a row's cells as contact fields),
`csv_phones`, `csv_workers`, `csv_lookups`, `csv_plan`, `csv_writers`,
`csv_tuning` (a batch's database settings), `csv_report` (options and the
report); this one runs the job.

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
import json
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import IO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from voicecrm.accounts.actor import Actor
from voicecrm.accounts.models import User
from voicecrm.crm import csv_lookups, timeline
from voicecrm.crm.csv_columns import ColumnPlan, plan_columns
from voicecrm.crm.csv_plan import BatchPlan, Outcome, PlanSettings, Target
from voicecrm.crm.csv_records import Blocks, Layout, scan
from voicecrm.crm.csv_report import (
    DEFAULT_BATCH,
    MAX_REPORTED_ERRORS,
    ErrorCallback,
    ImportOptions,
    ImportReport,
    ImportRowError,
    OnMatch,
    ProgressCallback,
)
from voicecrm.crm.csv_rows import ContactRow, RowContext, RowError
from voicecrm.crm.csv_tuning import batch_settings, lookup_settings
from voicecrm.crm.csv_workers import WORKERS_FROM_BYTES, read_batches, suggested_workers
from voicecrm.crm.csv_writers import (
    note_added_text,
    refresh_lookup_statistics,
    refresh_statistics,
    write_plan,
)
from voicecrm.crm.models import ContactSource, Stage
from voicecrm.crm.schemas import BUILTIN_SOURCES
from voicecrm.errors import InvalidInput
from voicecrm.storage import Database, utcnow

__all__ = [
    "DEFAULT_BATCH",
    "LOOKUP_STATISTICS_FROM",
    "MAX_REPORTED_ERRORS",
    "STATISTICS_AFTER",
    "WORKERS_FROM_BYTES",
    "CheckedFile",
    "ErrorCallback",
    "ImportOptions",
    "ImportReport",
    "ImportRowError",
    "OnMatch",
    "ProgressCallback",
    "import_contacts",
    "suggested_workers",
]

# An import that changed at least this many contacts refreshes the planner's statistics.
STATISTICS_AFTER = 10_000
# While it runs, the lookup tables' statistics are refreshed each time the contacts
# it created or updated reach this many, then twice as many, and so on.
LOOKUP_STATISTICS_FROM = 10_000
_RETRIES = 3


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


class _Job:
    def __init__(
        self,
        database: Database,
        actor: Actor,
        options: ImportOptions,
        report: ImportReport,
        stage_names: dict[int, str],
        *,
        with_notes: bool,
    ) -> None:
        self.database = database
        # Matched contacts' notes are read only if the file has notes to add to them.
        self.with_notes = with_notes
        self.actor = actor
        self.options = options
        self.report = report
        self._next_ref = 0
        self.settings = PlanSettings(
            on_match=options.on_match,
            unique_phones=not actor.team.allow_duplicate_phones,
            file_name=options.file_name,
            stage_names=stage_names,
            new_ref=self.new_ref,
        )
        # "imported" events are written from a JSON template (`csv_plan`); this checks
        # once that the registered kind takes that shape, as event_row would each time.
        timeline.event_row(
            actor, 0, "imported", {"file": options.file_name, "row": 1, "created": True}
        )
        timeline.event_row(
            actor, 0, "note_added", json.loads(note_added_text(1, "text", "general"))
        )

    def new_ref(self) -> int:
        self._next_ref -= 1
        return self._next_ref

    async def _owners(
        self, conn: AsyncConnection, rows: Sequence[ContactRow | RowError]
    ) -> tuple[list[str], list[str], dict[str, int]]:
        """The batch's phone numbers and emails, and the contacts holding them."""
        good = [row for row in rows if not isinstance(row, RowError)]
        phones = sorted({phone[0] for row in good for phone in row[5]})
        emails = sorted({email for row in good for email, _label in row[6]})
        return phones, emails, await csv_lookups.owners(conn, self.actor.team_id, phones, emails)

    async def plan_batch(
        self, conn: AsyncConnection, rows: Sequence[ContactRow | RowError]
    ) -> BatchPlan:
        phones, emails, keys = await self._owners(conn, rows)
        if self.options.dry_run:
            await csv_lookups.dry_run_owners(conn, keys, phones, emails)
        targets: dict[int, Target] = {}
        if self.options.on_match is OnMatch.UPDATE and keys:
            matched = sorted({ref for ref in keys.values() if ref > 0})
            targets = await csv_lookups.load_targets(conn, matched, with_notes=self.with_notes)
        plan = BatchPlan(self.settings, keys, targets)
        plan.plan(rows)
        return plan

    async def plan_ahead(
        self, rows: Sequence[ContactRow | RowError], writing: _Writing
    ) -> BatchPlan | None:
        """Plan a batch while the one before it is written, or None if it must wait for it.

        The lookups may read the database as it was before that batch, so a row
        holding a key it adds (a repeated person) is planned again once it has
        committed; and rows that would update existing contacts are too, so that
        the values they merge into are read in the same transaction that writes
        them, as without the overlap. What remains (new contacts, rows to skip)
        cannot depend on the batch being written. A contact a call creates
        meanwhile is caught by the phones' unique index, and the batch is then
        planned again (`write_batch`). Emails have no such index: a contact given
        a row's address through the API in that moment may get a twin, as it
        already could between a batch's lookup and its insert.
        """
        async with self.database.transaction(read_only=True) as session:
            conn = await session.connection()
            async with lookup_settings(conn):
                phones, emails, keys = await self._owners(conn, rows)
        if keys and self.options.on_match is OnMatch.UPDATE:
            return None
        await writing.planned.wait()
        before = writing.plan
        if before is None or any(
            key in before.fresh
            for key in chain(("p:" + p for p in phones), ("e:" + e for e in emails))
        ):
            return None
        plan = BatchPlan(self.settings, keys, {})
        plan.plan(rows)
        return plan

    async def write_batch(
        self, rows: Sequence[ContactRow | RowError], plan: BatchPlan | None, writing: _Writing
    ) -> Outcome:
        """Write a batch planned ahead, or plan and write it in one transaction.

        A plan made ahead that meets a contact created since (the unique index on
        phones refuses the batch) is dropped, and the batch planned again.
        """
        try:
            if plan is not None:
                writing.plan = plan
                writing.planned.set()
                try:
                    async with self.database.transaction() as session:
                        conn = await session.connection()
                        async with batch_settings(conn):
                            await write_plan(conn, plan, self.actor, utcnow())
                    return plan.outcome
                except IntegrityError:
                    pass
            return await self.run_batch(rows, writing)
        finally:
            writing.planned.set()

    async def run_batch(
        self, rows: Sequence[ContactRow | RowError], writing: _Writing | None = None
    ) -> Outcome:
        """Plan and write one batch in its own transaction; retried if a race lost it.

        On PostgreSQL a call may give a number its contact between our lookup and our
        insert; the unique index refuses our row, and planning again finds the contact.
        `writing` hears of the first plan, for the batch planned next.
        """
        for attempt in range(_RETRIES):
            try:
                async with self.database.transaction() as session:
                    conn = await session.connection()
                    async with batch_settings(conn):
                        plan = await self.plan_batch(conn, rows)
                        if writing is not None and writing.plan is None:
                            writing.plan = plan
                            writing.planned.set()
                        await write_plan(conn, plan, self.actor, utcnow())
                return plan.outcome
            except IntegrityError:
                if attempt == _RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def dry_batch(
        self, conn: AsyncConnection, rows: Sequence[ContactRow | RowError]
    ) -> Outcome:
        plan = await self.plan_batch(conn, rows)
        await csv_lookups.remember_dry_run_keys(conn, plan.fresh)
        return plan.outcome

    def account(self, outcome: Outcome, rows: int, on_error: ErrorCallback | None) -> None:
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


@dataclass(frozen=True, slots=True)
class CheckedFile:
    """What the first pass found: what the columns mean, how many data rows there are,
    and where the batches end (the options' batch size)."""

    columns: ColumnPlan
    rows: int
    layout: Layout


def _check_batch_size(options: ImportOptions) -> None:
    if not 1 <= options.batch_size <= 20_000:
        raise InvalidInput("batch_size must be between 1 and 20000", field="batch_size")


async def check_file(file: IO[bytes], options: ImportOptions) -> CheckedFile:
    """The first pass over the file.

    Raises `InvalidCSV` for a file that cannot be read (undecodable text, no header,
    columns that name no field) before anything is written.
    """
    _check_batch_size(options)
    header, total, layout = await asyncio.to_thread(
        scan, file, options.encoding, options.batch_size
    )
    return CheckedFile(plan_columns(header, options.mapping), total, layout)


async def import_contacts(
    database: Database,
    actor: Actor,
    file: IO[bytes],
    options: ImportOptions | None = None,
    *,
    on_progress: ProgressCallback | None = None,
    on_error: ErrorCallback | None = None,
    checked: CheckedFile | None = None,
) -> ImportReport:
    """Import a CSV file (seekable, binary) into the actor's team; see the module docstring.

    Refuses with `InvalidCSV` (nothing written) a file it cannot read; reports row
    errors and goes on. `on_progress` is called after each batch, `on_error` once per
    row error as they are found (the report keeps only the first ones). `checked` is
    `check_file`'s answer for this very file and these options, if the caller has it.
    """
    options = options or ImportOptions()
    actor.require_admin()
    _check_batch_size(options)
    started = time.perf_counter()
    checked = checked or await check_file(file, options)
    plan, total = checked.columns, checked.rows
    context, stage_names = await _row_context(database, actor, plan)
    report = ImportReport(
        dry_run=options.dry_run,
        on_match=options.on_match,
        total_rows=total,
        columns=dict(plan.recognised),
        ignored_columns=list(plan.ignored),
    )
    job = _Job(database, actor, options, report, stage_names, with_notes=bool(plan.notes))
    blocks = Blocks(file, options.encoding, checked.layout)
    read = read_batches(iter(blocks), context, checked.layout.delimiter, options.workers)
    batches = _counting_blanks(read, report)
    try:
        if options.dry_run:
            # One read-only transaction, never committed: the temporary table goes with it.
            async with database.read_sessionmaker() as session:
                conn = await session.connection()
                await csv_lookups.create_dry_run_keys(conn)
                async for rows in batches:
                    job.account(await job.dry_batch(conn, rows), len(rows), on_error)
                    _progress(report, started, on_progress)
        else:
            await _write(job, batches, on_error, lambda: _progress(report, started, on_progress))
    finally:
        await batches.aclose()
        await read.aclose()
        blocks.detach()
    if not options.dry_run and report.created + report.updated >= STATISTICS_AFTER:
        async with database.transaction() as session:
            await refresh_statistics(await session.connection())
    report.seconds = round(time.perf_counter() - started, 3)
    return report


@dataclass(eq=False)
class _Writing:
    """A batch being written, and the plan it is written by once that is made."""

    rows: Sequence[ContactRow | RowError]
    planned: asyncio.Event = field(default_factory=asyncio.Event)
    plan: BatchPlan | None = None
    task: asyncio.Task[Outcome] | None = None


async def _write(
    job: _Job,
    batches: AsyncIterator[Sequence[ContactRow | RowError]],
    on_error: ErrorCallback | None,
    progress: Callable[[], None],
) -> None:
    """Write the batches in order; on PostgreSQL each is planned while the one before
    it is written (see the module docstring).

    A batch that depends on the one being written is planned once that has
    committed (`_Job.plan_ahead`). Batches commit one at a time and in file order.
    """
    # Only PostgreSQL plans batches ahead, and plans their lookups on statistics
    # (refresh_lookup_statistics).
    ahead = job.database.dialect == "postgresql"
    report = job.report
    refresh_lookups_at = LOOKUP_STATISTICS_FROM if ahead else math.inf

    async def written(writing: _Writing) -> None:
        nonlocal refresh_lookups_at
        assert writing.task is not None
        try:
            outcome = await writing.task
        except Exception as err:
            err.add_note(_stopped_at(writing.rows, report))
            raise
        job.account(outcome, len(writing.rows), on_error)
        if report.created + report.updated >= refresh_lookups_at:
            refresh_lookups_at *= 2
            async with job.database.transaction() as session:
                await refresh_lookup_statistics(await session.connection())
        progress()

    writing: _Writing | None = None
    try:
        async for rows in batches:
            plan = None
            if writing is not None:  # only when planning ahead
                try:
                    plan = await job.plan_ahead(rows, writing)
                except Exception as err:
                    await written(writing)
                    err.add_note(_stopped_at(rows, report))
                    raise
                await written(writing)
            writing = _Writing(rows)
            writing.task = asyncio.create_task(job.write_batch(rows, plan, writing))
            if not ahead:
                last, writing = writing, None
                await written(last)
        if writing is not None:
            last, writing = writing, None
            await written(last)
    finally:
        if writing is not None and writing.task is not None and not writing.task.done():
            writing.task.cancel()
            await asyncio.wait([writing.task])


def _stopped_at(rows: Sequence[ContactRow | RowError], report: ImportReport) -> str:
    return (
        f"the import stopped at data row {rows[0][0]}: rows before it were "
        f"imported ({report.created} created, {report.updated} updated), "
        "rows from it on were not"
    )


async def _counting_blanks(
    batches: AsyncIterator[tuple[list[ContactRow | RowError], int]], report: ImportReport
) -> AsyncGenerator[list[ContactRow | RowError], None]:
    """The batches' rows; their blank records counted in the report as they come.

    A block of only blank lines (at the end of a file) gives no batch to write.
    """
    async for rows, blank in batches:
        report.blank_rows += blank
        if rows:
            yield rows


def _progress(report: ImportReport, started: float, callback: ProgressCallback | None) -> None:
    report.seconds = round(time.perf_counter() - started, 3)
    if callback is not None:
        callback(report)
