"""Importing contacts from CSV: a million rows, in constant memory, at database speed.

The job reads the file twice. The first pass (`check_file`) only decodes and
splits it (about two seconds a million rows): a file that is not text in the
given encoding, not CSV, or has no column naming, reaching or identifying a
contact is refused then, before anything is written, and the row count it yields
drives the progress display. A caller that ran it already (the background
import route, to refuse a bad upload before it creates a job) passes its result
on instead of reading the file a third time. The second pass imports, a batch of
rows at a time:

1. rows are read into contact fields, phone numbers parsed (`csv_rows`,
   `csv_phones`), in worker processes while earlier batches are written, or on
   the event loop for a small file (`csv_workers`);
2. two queries find the contacts that already own the batch's phone numbers
   (the `contact_phones (team_id, e164, duplicate_key)` index) and email addresses
   (`csv_lookups`); on PostgreSQL the planner's statistics for them are refreshed
   as the import grows the tables, or it would stop probing those indexes;
3. each row either creates a contact, or is matched to an existing one (by phone
   first, then email) and then updates it or is skipped (`on_match`; `csv_plan`);
4. multi-row INSERTs (COPY on PostgreSQL) and one executemany UPDATE write the
   batch, with one "imported" timeline event per created or updated contact and
   a "note_added" one per note (`csv_writers`).

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from voicecrm.accounts.actor import Actor
from voicecrm.accounts.models import User
from voicecrm.crm import csv_lookups, timeline
from voicecrm.crm.csv_columns import ColumnPlan, plan_columns
from voicecrm.crm.csv_plan import BatchPlan, Outcome, PlanSettings, Target
from voicecrm.crm.csv_records import Records, scan
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
from voicecrm.crm.csv_tuning import batch_settings
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

    async def plan_batch(
        self, conn: AsyncConnection, rows: Sequence[ContactRow | RowError]
    ) -> BatchPlan:
        good = [row for row in rows if not isinstance(row, RowError)]
        phones = sorted({phone[0] for row in good for phone in row[5]})
        emails = sorted({email for row in good for email, _label in row[6]})
        keys = await csv_lookups.owners(conn, self.actor.team_id, phones, emails)
        if self.options.dry_run:
            await csv_lookups.dry_run_owners(conn, keys, phones, emails)
        targets: dict[int, Target] = {}
        if self.options.on_match is OnMatch.UPDATE and keys:
            matched = sorted({ref for ref in keys.values() if ref > 0})
            targets = await csv_lookups.load_targets(conn, matched, with_notes=self.with_notes)
        plan = BatchPlan(self.settings, keys, targets)
        plan.plan(rows)
        return plan

    async def run_batch(self, rows: Sequence[ContactRow | RowError]) -> Outcome:
        """Plan and write one batch in its own transaction; retried if a race lost it.

        On PostgreSQL a call may give a number its contact between our lookup and our
        insert; the unique index refuses our row, and planning again finds the contact.
        """
        for attempt in range(_RETRIES):
            saved = self._next_ref
            try:
                async with self.database.transaction() as session:
                    conn = await session.connection()
                    async with batch_settings(conn):
                        plan = await self.plan_batch(conn, rows)
                        await write_plan(conn, plan, self.actor, utcnow())
                return plan.outcome
            except IntegrityError:
                self._next_ref = saved
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
    """What the first pass found: what the columns mean, and how many data rows there are."""

    columns: ColumnPlan
    rows: int


async def check_file(file: IO[bytes], options: ImportOptions) -> CheckedFile:
    """The first pass over the file.

    Raises `InvalidCSV` for a file that cannot be read (undecodable text, no header,
    columns that name no field) before anything is written.
    """
    header, total = await asyncio.to_thread(scan, file, options.encoding)
    return CheckedFile(plan_columns(header, options.mapping), total)


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
    if not 1 <= options.batch_size <= 20_000:
        raise InvalidInput("batch_size must be between 1 and 20000", field="batch_size")
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
    records = Records(file, options.encoding)
    batches = read_batches(iter(records), context, options.workers, options.batch_size)
    try:
        if options.dry_run:
            # One read-only transaction, never committed: the temporary table goes with it.
            async with database.read_sessionmaker() as session:
                conn = await session.connection()
                await csv_lookups.create_dry_run_keys(conn)
                async for rows in batches:
                    job.account(await job.dry_batch(conn, rows), len(rows), on_error)
                    _progress(report, started, records, on_progress)
        else:
            # Only PostgreSQL plans these lookups on statistics (refresh_lookup_statistics).
            refresh_lookups_at = (
                LOOKUP_STATISTICS_FROM if database.dialect == "postgresql" else math.inf
            )
            async for rows in batches:
                try:
                    outcome = await job.run_batch(rows)
                except Exception as err:
                    err.add_note(
                        f"the import stopped at data row {rows[0][0]}: rows before it were "
                        f"imported ({report.created} created, {report.updated} updated), "
                        "rows from it on were not"
                    )
                    raise
                job.account(outcome, len(rows), on_error)
                if report.created + report.updated >= refresh_lookups_at:
                    refresh_lookups_at *= 2
                    async with database.transaction() as session:
                        await refresh_lookup_statistics(await session.connection())
                _progress(report, started, records, on_progress)
    finally:
        await batches.aclose()
        records.detach()
    if not options.dry_run and report.created + report.updated >= STATISTICS_AFTER:
        async with database.transaction() as session:
            await refresh_statistics(await session.connection())
    report.blank_rows = records.blank
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _progress(
    report: ImportReport, started: float, records: Records, callback: ProgressCallback | None
) -> None:
    report.seconds = round(time.perf_counter() - started, 3)
    report.blank_rows = records.blank
    if callback is not None:
        callback(report)
