"""`python -m bench`: seed a million contacts, measure the CRM's hot paths, print one table.

Runs on a fresh SQLite file by default and also on PostgreSQL when a server is
given (--postgres-url or VOICECRM_BENCH_POSTGRES_URL), each in a database made
for the run and removed after it. The exit status says whether the bench ran,
not whether the targets were met: a missed target is a figure to read, and
only a bench that could not measure (a crash, a failed import script) exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import resource
import traceback
from collections.abc import Sequence

from bench.crm import Sizes, run_crm
from bench.databases import (
    DatabaseChoice,
    UsageError,
    fresh_database,
    parse_choice,
    postgres_server,
    server_version,
)
from bench.importer import run_csv_import
from bench.report import Metric, Reporter, machine_lines, progress
from voicecrm.storage import Database

POSTGRES_ENV = "VOICECRM_BENCH_POSTGRES_URL"


def _count(value: str) -> int:
    number = int(value.replace(",", "").replace("_", ""))
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="The CRM foundation benchmark: caller-ID resolution, timeline appends "
        "and pages, CSV import, at a million contacts, on SQLite and PostgreSQL.",
    )
    p.add_argument("--contacts", type=_count, help="contacts to seed (default 1,000,000)")
    p.add_argument("--events", type=_count, help="events of the hot contact (default 100,000)")
    p.add_argument(
        "--database-url",
        action="append",
        metavar="URL",
        help="'sqlite', 'postgresql' or a URL; repeatable (default: sqlite, plus postgresql "
        "when a server is given)",
    )
    p.add_argument(
        "--postgres-url",
        default=os.environ.get(POSTGRES_ENV),
        metavar="URL",
        help=f"a PostgreSQL server whose role may CREATE DATABASE (default ${POSTGRES_ENV})",
    )
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    p.add_argument("--lookups", type=_count, help="timed caller-ID lookups (default 5,000)")
    p.add_argument("--csv-rows", type=_count, help="rows for the CSV import (default 1,000,000)")
    p.add_argument("--concurrency", type=_count, help="tasks for the concurrent runs (default 8)")
    p.add_argument("--skip-csv", action="store_true", help="do not run bench/csv_import.py")
    p.add_argument(
        "--csv-timeout", type=float, default=3600.0, help="seconds before the import is killed"
    )
    return p


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = Sizes.quick() if args.quick else Sizes()
    overrides = {
        name: value
        for name, value in (
            ("contacts", args.contacts),
            ("events", args.events),
            ("lookups", args.lookups),
            ("csv_rows", args.csv_rows),
            ("concurrency", args.concurrency),
        )
        if value is not None
    }
    return dataclasses.replace(sizes, **overrides)


def choices_from(args: argparse.Namespace) -> list[DatabaseChoice]:
    if args.database_url:
        return [parse_choice(value, args.postgres_url) for value in args.database_url]
    choices = [DatabaseChoice("sqlite")]
    if args.postgres_url:
        choices.append(parse_choice("postgresql", args.postgres_url))
    return choices


async def run_engine(choice: DatabaseChoice, sizes: Sizes, reporter: Reporter) -> None:
    engine = choice.engine
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    reporter.text(f"== {engine}: {await server_version(choice)}; load average {load}")
    plans: list[str] = []
    async with fresh_database(choice) as url:
        reporter.text(f"== {engine}: database {Database.describe(url)}")
        reporter.header()
        await run_crm(engine, url, sizes, reporter, plans)
    for line in plans:
        reporter.text(line)


async def run_import(
    choices: list[DatabaseChoice], sizes: Sizes, reporter: Reporter, timeout_s: float
) -> bool:
    """The CSV import script, once: it runs SQLite itself, and PostgreSQL when given a server."""
    servers = [c.url for c in choices if c.engine == "postgresql" and c.url]
    server = postgres_server(servers[0]).render_as_string(hide_password=False) if servers else None
    progress(
        f"CSV import of {sizes.csv_rows} rows ({'sqlite' + (', postgresql' if server else '')})"
    )
    reporter.text("== CSV import (bench/csv_import.py)")
    reporter.header()
    imported = await asyncio.to_thread(
        run_csv_import, sizes.csv_rows, server, timeout_s=timeout_s, on_metric=reporter.emit
    )
    for line in imported.other_lines:
        reporter.text(f"csv_import> {line}")
    return imported.ok


async def run(args: argparse.Namespace) -> int:
    sizes = sizes_from(args)
    choices = choices_from(args)
    reporter = Reporter()
    for line in machine_lines():
        reporter.text(line)
    reporter.text(
        f"sizes: {sizes.contacts} contacts, hot contact with {sizes.events} events, "
        f"{sizes.lookups} lookups, {sizes.appends} appends, {sizes.pages} pages, "
        f"{sizes.csv_rows} CSV rows, concurrency {sizes.concurrency}"
    )
    if args.quick:
        reporter.text("quick: a smoke run; at these sizes the verdicts mean nothing")
    if not any(choice.engine == "postgresql" for choice in choices) and not args.database_url:
        reporter.text(f"postgresql: not run (give --postgres-url or set {POSTGRES_ENV})")
    ok = True
    for choice in choices:
        try:
            await run_engine(choice, sizes, reporter)
        except Exception as err:
            traceback.print_exc()
            reporter.emit(Metric(choice.engine, "status", "error", note=repr(err)[:200]))
            ok = False
    if args.skip_csv:
        reporter.text("csv_import: skipped (--skip-csv)")
    else:
        ok = await run_import(choices, sizes, reporter, args.csv_timeout) and ok
    reporter.text()
    for line in reporter.summary():
        reporter.text(line)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    reporter.text(f"bench process peak RSS: {peak:.0f} MiB")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        choices_from(args)
    except UsageError as err:
        parser().error(str(err))
    return asyncio.run(run(args))
