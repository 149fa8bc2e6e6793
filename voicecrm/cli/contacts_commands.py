"""`voicecrm contacts import|export`: CSV in and out of the CRM from the command line.

Both act for a team as the service itself (the system actor), on the database
the settings name, without the HTTP service running.

`import` shows its progress on stderr (rows done, rows a second) and each row
error as it is found, with its data row number and the line it starts on, then
prints a summary on stdout. Its exit status:

    0  every row was imported, or deliberately skipped (--on-match skip)
    1  the file was imported but some rows were left out because of errors
    2  nothing was imported: the file cannot be read, is not a contacts CSV,
       or an option is wrong (the error is printed on stderr)

A dry run exits the same way, so `--dry-run` checks a file in a script.
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any, TextIO

from voicecrm.accounts import service as accounts
from voicecrm.accounts.actor import Actor
from voicecrm.config import Settings
from voicecrm.crm.bulk import Selection
from voicecrm.crm.csv_export import export_csv
from voicecrm.crm.csv_import import (
    ImportOptions,
    ImportReport,
    ImportRowError,
    OnMatch,
    import_contacts,
    suggested_workers,
)
from voicecrm.crm.schemas import ContactStatus, ContactType
from voicecrm.crm.search import ContactFilter
from voicecrm.errors import InvalidInput, VoiceCRMError
from voicecrm.storage import Database

EXIT_OK, EXIT_ROW_ERRORS, EXIT_REFUSED = 0, 1, 2
# Errors shown on the terminal; --errors-csv keeps every one.
SHOWN_ERRORS = 200


async def _actor(database: Database, team_id: int | None) -> Actor:
    async with database.transaction(read_only=True) as session:
        if team_id is not None:
            team = await accounts.get_team(session, team_id)
        else:
            found = await accounts.first_team(session)
            if found is None:
                raise VoiceCRMError(
                    "no team yet: start the service once (voicecrm serve) to create it"
                )
            team = found
        return Actor.system(accounts.team_settings(team))


def _mapping(pairs: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for pair in pairs:
        column, sep, field = pair.rpartition("=")
        if not sep or not column.strip() or not field.strip():
            raise InvalidInput(f"--map takes CSVCOLUMN=field, got {pair!r}", field="map")
        mapping[column.strip()] = field.strip()
    return mapping


def _workers_option(text: str) -> str:
    if text != "auto" and not text.isdigit():
        raise argparse.ArgumentTypeError("use a number of processes, or auto")
    return text


def _workers(requested: str, size: int) -> int:
    return suggested_workers(size) if requested == "auto" else int(requested)


@contextmanager
def _seekable(path: str) -> Iterator[IO[bytes]]:
    """The file to import; standard input ("-") is first copied to a temporary file."""
    if path != "-":
        with open(path, "rb") as file:
            yield file
        return
    with tempfile.TemporaryFile(prefix="voicecrm-import-") as spool:
        shutil.copyfileobj(sys.stdin.buffer, spool)
        yield spool


class _Progress:
    """Progress on stderr: rewritten in place on a terminal, a line every few seconds otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0
        self.errors = 0

    def __call__(self, report: ImportReport) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last < 5 and report.rows < report.total_rows:
            return
        self.last = now
        rate = report.rows / report.seconds if report.seconds else 0.0
        percent = 100 * report.rows / report.total_rows if report.total_rows else 100.0
        line = (
            f"{report.rows:,} of {report.total_rows:,} rows ({percent:.0f}%), {rate:,.0f} rows/s: "
            f"{report.created:,} created, {report.updated:,} updated, "
            f"{report.failed:,} failed"
        )
        self.stream.write(f"\r{line}\x1b[K" if self.tty else line + "\n")
        self.stream.flush()

    def error(self, error: ImportRowError) -> None:
        self.errors += 1
        if self.errors > SHOWN_ERRORS:
            return
        where = f"row {error.row} (line {error.line})"
        column = f", column {error.column!r}" if error.column else ""
        text = f"{where}{column}: {error.message}"
        self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")


def _error_sink(path: str, stack: ExitStack) -> Callable[[ImportRowError], None]:
    """Every row error, as CSV, to `path`: the terminal shows only the first ones."""
    file = stack.enter_context(open(path, "w", newline="", encoding="utf-8"))  # noqa: SIM115
    writer = csv.writer(file)
    writer.writerow(["row", "line", "column", "field", "message"])

    def write(error: ImportRowError) -> None:
        writer.writerow(
            [error.row, error.line, error.column or "", error.field or "", error.message]
        )

    return write


def _summary(report: ImportReport, errors: int) -> str:
    rate = report.rows / report.seconds if report.seconds else 0.0
    lines = [
        f"{'dry run, nothing written: would have ' if report.dry_run else ''}"
        f"imported {report.rows:,} rows in {report.seconds:.1f} s ({rate:,.0f} rows/s): "
        f"{report.created:,} created, {report.updated:,} updated, "
        f"{report.unchanged:,} unchanged, {report.skipped:,} skipped, {report.failed:,} failed",
        "columns: " + ", ".join(f"{column} -> {field}" for column, field in report.columns.items()),
    ]
    if report.ignored_columns:
        lines.append("columns not imported: " + ", ".join(report.ignored_columns))
    if errors > SHOWN_ERRORS:
        lines.append(
            f"{errors - SHOWN_ERRORS:,} more row errors were not shown (--errors-csv keeps all)"
        )
    return "\n".join(lines)


@contextmanager
def _heap_frozen() -> Iterator[None]:
    """What is loaded by now kept out of the collector's full passes while the block runs.

    The service does so for good once it has started (`app._freeze_startup_objects`).
    An import makes the collector run full passes over and over, and each walked every
    module and object loaded before it: 12,000 instructions a row of this process
    (callgrind, 20,000 rows; bench/README.md). Unfrozen afterwards, as tests call
    commands in their own process.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    database = Database(settings.database_url)
    progress = _Progress(sys.stderr)
    try:
        with ExitStack() as stack:
            sink = _error_sink(args.errors_csv, stack) if args.errors_csv else None

            def on_error(error: ImportRowError) -> None:
                progress.error(error)
                if sink is not None:
                    sink(error)

            actor = await _actor(database, args.team)
            file = stack.enter_context(_seekable(args.file))
            options = ImportOptions(
                on_match=OnMatch(args.on_match),
                dry_run=args.dry_run,
                mapping=_mapping(args.map),
                encoding=args.encoding,
                file_name=Path(args.file).name if args.file != "-" else None,
                batch_size=args.batch_size,
                workers=_workers(args.workers, os.fstat(file.fileno()).st_size),
            )
            with _heap_frozen():
                report = await import_contacts(
                    database, actor, file, options, on_progress=progress, on_error=on_error
                )
    except OSError as err:
        print(f"voicecrm: {err.filename or args.file}: {err.strerror or err}", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        await database.close()
    if progress.tty:
        sys.stderr.write("\n")
    print(_summary(report, progress.errors))
    return EXIT_ROW_ERRORS if report.failed else EXIT_OK


def _selection(args: argparse.Namespace) -> Selection:
    if args.ids:
        try:
            ids = [int(part) for part in args.ids.split(",") if part.strip()]
        except ValueError:
            raise InvalidInput("--ids takes contact ids separated by commas", field="ids") from None
        return Selection(ids=ids)
    fields = (
        "q",
        "name",
        "phone",
        "email",
        "tag",
        "stage_id",
        "status",
        "type",
        "responsible_user_id",
        "source",
        "blocked",
    )
    values = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    return Selection(filter=ContactFilter.model_validate(values))


async def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    database = Database(settings.database_url)
    count = 0

    def counted(batch: int) -> None:
        nonlocal count
        count += batch

    try:
        actor = await _actor(database, args.team)
        selection = _selection(args)
        async with database.transaction(read_only=True) as session:
            with _output(args.file) as out:
                chunks = export_csv(session, actor, selection, on_batch=counted, bom=args.bom)
                async for chunk in chunks:
                    out.write(chunk)
    except OSError as err:
        print(f"voicecrm: cannot write {args.file}: {err.strerror or err}", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        await database.close()
    where = "standard output" if args.file == "-" else args.file
    print(f"exported {count:,} contacts to {where}", file=sys.stderr)
    return EXIT_OK


@contextmanager
def _output(path: str) -> Iterator[TextIO]:
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    with open(path, "w", newline="", encoding="utf-8") as file:
        yield file


def register(sub: Any) -> None:
    """Adds the `contacts` command group: `import` and `export`."""
    contacts: argparse.ArgumentParser = sub.add_parser(
        "contacts", help="contacts: CSV import and export"
    )
    commands = contacts.add_subparsers(dest="contacts", required=True)

    imp = commands.add_parser(
        "import",
        help="import contacts from a CSV file (Google Contacts, Outlook, voicecrm or mapped)",
        description="Import contacts from CSV. Exit status: 0 all rows imported or skipped, "
        "1 some rows had errors (they are listed; the rest was imported), 2 nothing imported.",
    )
    imp.add_argument("file", help="the CSV file, or - for standard input")
    imp.add_argument(
        "--dry-run", action="store_true", help="report what would happen; write nothing"
    )
    imp.add_argument(
        "--on-match",
        choices=[m.value for m in OnMatch],
        default="update",
        help="a row whose phone or email belongs to a contact updates it (default) or is skipped",
    )
    imp.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="CSVCOL=field",
        help="read a column as a field: name, first_name, last_name, company, "
        "phone, phone.<label>, email, tags, notes, stage, status, custom.<key>, ignore ... "
        "(repeatable)",
    )
    imp.add_argument("--team", type=int, help="team id (default: the first team)")
    imp.add_argument(
        "--encoding",
        default="utf-8-sig",
        help="the file's text encoding (default UTF-8; Excel on Windows may write cp1252)",
    )
    imp.add_argument(
        "--workers",
        default="auto",
        type=_workers_option,
        help="processes reading rows beside the database writer (default: auto, "
        "by file size and cores)",
    )
    imp.add_argument("--batch-size", type=int, default=2000, help=argparse.SUPPRESS)
    imp.add_argument("--errors-csv", metavar="FILE", help="also write every row error to FILE")
    imp.set_defaults(func=cmd_import)

    exp = commands.add_parser("export", help="export contacts as CSV")
    exp.add_argument("file", nargs="?", default="-", help="where to write (default: stdout)")
    exp.add_argument("--team", type=int, help="team id (default: the first team)")
    exp.add_argument("--ids", help="only these contact ids, separated by commas")
    exp.add_argument("--q", help="free text: name, company, phone or email")
    exp.add_argument("--name")
    exp.add_argument("--phone")
    exp.add_argument("--email")
    exp.add_argument("--tag")
    exp.add_argument("--stage-id", type=int)
    exp.add_argument("--status", choices=[s.value for s in ContactStatus])
    exp.add_argument("--type", choices=[t.value for t in ContactType])
    exp.add_argument("--responsible-user-id", type=int)
    exp.add_argument("--source")
    blocked = exp.add_mutually_exclusive_group()
    blocked.add_argument("--blocked", dest="blocked", action="store_const", const=True)
    blocked.add_argument("--not-blocked", dest="blocked", action="store_const", const=False)
    exp.add_argument(
        "--bom",
        action="store_true",
        help="start the file with a UTF-8 byte-order mark, so that Excel shows accented "
        "names right (off by default: other programs reading the CSV may not expect it)",
    )
    exp.set_defaults(func=cmd_export)


__all__ = ["EXIT_OK", "EXIT_REFUSED", "EXIT_ROW_ERRORS", "register"]
