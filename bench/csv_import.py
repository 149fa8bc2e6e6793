"""Benchmark: importing a large contacts CSV, and whether memory stays flat.

    python bench/csv_import.py [--rows N] [--database-url URL] [--workers N]

Writes an N-row CSV (default 1,000,000) of realistic rows: names, companies, US
phone numbers in three spellings, emails, tags on every tenth row, a row repeating
an earlier person every 50th row and an invalid phone every 200th. It imports the
file into a fresh SQLite file and, given --database-url (a PostgreSQL server; a
scratch database is created there and dropped), into PostgreSQL, then exports
what it imported.

Every import and export runs in a child process of its own, first with a tenth of
the rows and then with all of them, so that their peak RSS (`ru_maxrss`) can be
compared: flat memory means the two are about equal. Worker processes that read
rows report their own peak as `worker_peak_rss`. `cpu_per_row` (and
`worker_cpu_per_row`) is the CPU time each row took, which unlike rows per second
does not depend much on what else the machine is running; `import_cpu_per_row`
counts the import process's CPU during the import only (not starting Python and
migrating); `load_average` says how busy it was, and `cpu_steal` how much of the
machine's CPU time its virtual machine's host gave to other guests during the
import (Linux). The database server's own CPU (PostgreSQL) is in none of them:
when the server runs on this machine, `server_cpu_per_row` is its CPU during the
import (all its processes, anyone else's use of it included), which competes
with the import for the same cores.

Prints one `csv_import.<metric>: <value> <unit>` line per figure, per engine as
`csv_import.<engine>[.at_<rows>].<figure>`; bench/importer.py reads these lines,
so keep their names stable.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
AREAS = (212, 213, 310, 312, 404, 415, 617, 646, 702, 713, 206, 303, 305, 512, 602, 718, 773,
         818, 917, 503)  # fmt: skip


def phone(i: int) -> str:
    """A valid US number, different for each i below 16 million, in one of three spellings."""
    area = AREAS[i % len(AREAS)]
    exchange = 200 + (i // len(AREAS)) % 800
    line = i // (len(AREAS) * 800)
    match i % 3:
        case 0:
            return f"({area}) {exchange}-{line:04d}"
        case 1:
            return f"+1 {area}-{exchange}-{line:04d}"
        case _:
            return f"{area}.{exchange}.{line:04d}"


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(
            ["First Name", "Last Name", "Company", "Mobile Phone", "E-mail Address", "Categories"]
        )
        for i in range(rows):
            n = i - 25 if i % 50 == 49 else i  # every 50th row repeats an earlier person
            writer.writerow(
                [
                    f"Person{n}",
                    f"Family{n % 9973}",
                    f"Company {n % 500}",
                    "12345" if i % 200 == 199 else phone(n),
                    f"person{n}@example.com",
                    "lead;vip" if n % 10 == 0 else "",
                ]
            )


# ----------------------------------------------------------------- child processes
async def _team(url: str) -> Any:
    from voicecrm.accounts import service as accounts
    from voicecrm.accounts.actor import Actor
    from voicecrm.storage import Database
    from voicecrm.storage.migrate import upgrade

    database = Database(url)
    await upgrade(database)
    async with database.transaction() as session:
        team = await accounts.first_team(session) or await accounts.create_team(session, "Bench")
        return database, Actor.system(accounts.team_settings(team))


async def child_import(csv_path: Path, url: str, workers: int, batch: int) -> dict[str, Any]:
    # A child has the repository on its path.
    from bench.report import postgres_cpu_seconds, steal_share, steal_ticks
    from voicecrm.crm.csv_import import ImportOptions, import_contacts

    database, actor = await _team(url)
    # What the service (at start) and `voicecrm contacts import` (before importing) do.
    gc.collect()
    gc.freeze()
    try:
        started = time.perf_counter()
        cpu_before = time.process_time()
        stolen = steal_ticks()
        server_before = postgres_cpu_seconds() if url.startswith("postgresql") else None
        with csv_path.open("rb") as file:
            options = ImportOptions(workers=workers, batch_size=batch)
            report = await import_contacts(database, actor, file, options)
        seconds = time.perf_counter() - started
        import_cpu = time.process_time() - cpu_before
        share = steal_share(stolen, steal_ticks(), seconds)
        server_after = postgres_cpu_seconds() if server_before is not None else None
    finally:
        await database.close()
    counts = report.model_dump(include={"rows", "created", "updated", "unchanged", "failed"})
    steal = None if share is None else 100 * share
    server = None if server_before is None or server_after is None else server_after - server_before
    return {
        **counts,
        "seconds": seconds,
        "import_cpu": import_cpu,
        "steal": steal,
        "server_cpu": server,
        **_peaks(),
    }


async def child_export(url: str) -> dict[str, Any]:
    from voicecrm.crm.bulk import Selection
    from voicecrm.crm.csv_export import export_csv
    from voicecrm.crm.search import ContactFilter

    database, actor = await _team(url)
    count = size = 0

    def counted(batch: int) -> None:
        nonlocal count
        count += batch

    try:
        started = time.perf_counter()
        async with database.transaction(read_only=True) as session:
            selection = Selection(filter=ContactFilter())
            async for chunk in export_csv(session, actor, selection, on_batch=counted):
                size += len(chunk.encode())  # what a response or a file would be sent
        seconds = time.perf_counter() - started
    finally:
        await database.close()
    return {"rows": count, "seconds": seconds, **_peaks()}


def _peaks() -> dict[str, float]:
    """Peak memory (MB) and CPU seconds, of this process and of its worker processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "peak_rss": own.ru_maxrss / 1024,
        "worker_peak_rss": workers.ru_maxrss / 1024,
        "cpu": own.ru_utime + own.ru_stime,
        "worker_cpu": workers.ru_utime + workers.ru_stime,
    }


def run_child(*args: str) -> dict[str, Any]:
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    }
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"csv_import: a child run failed ({' '.join(args[:2])})")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ----------------------------------------------------------------- the parent
def emit(metric: str, value: float | int | str, unit: str = "") -> None:
    shown = f"{value:.1f}" if isinstance(value, float) else str(value)
    print(f"csv_import.{metric}: {shown} {unit}".rstrip(), flush=True)


def bench_engine(
    engine: str, databases: list[str], files: list[tuple[int, Path]], args: argparse.Namespace
) -> None:
    full = files[-1][0]
    for (size, path), url in zip(files, databases, strict=True):
        prefix = engine if size == full else f"{engine}.at_{size}"
        result = run_child("import", str(path), url, str(args.workers), str(args.batch_size))
        emit(f"{prefix}.rows", result["rows"], "rows")
        emit(f"{prefix}.seconds", result["seconds"], "s")
        emit(f"{prefix}.rows_per_s", result["rows"] / result["seconds"], "rows/s")
        emit(f"{prefix}.peak_rss", result["peak_rss"], "MB")
        if args.workers:
            emit(f"{prefix}.worker_peak_rss", result["worker_peak_rss"], "MB")
        # CPU time per row does not depend on what else the machine is running; the
        # busiest process bounds the rate an idle machine with enough cores reaches.
        emit(f"{prefix}.cpu_per_row", result["cpu"] / result["rows"] * 1e6, "us")
        # The same during the import alone: without starting Python and migrating,
        # which weigh on a small file's figure.
        emit(f"{prefix}.import_cpu_per_row", result["import_cpu"] / result["rows"] * 1e6, "us")
        if args.workers:
            emit(f"{prefix}.worker_cpu_per_row", result["worker_cpu"] / result["rows"] * 1e6, "us")
        if result["server_cpu"] is not None:
            # A local server's CPU, which competes with the import for the same cores.
            server = result["server_cpu"] / result["rows"] * 1e6
            emit(f"{prefix}.server_cpu_per_row", server, "us")
        if result["steal"] is not None:
            emit(f"{prefix}.cpu_steal", result["steal"], "% (of the machine's CPU time)")
        for count in ("created", "updated", "unchanged", "failed"):
            emit(f"{prefix}.{count}", result[count], "rows")
        exported = run_child("export", url)
        emit(f"{prefix}.export_rows_per_s", exported["rows"] / exported["seconds"], "rows/s")
        emit(f"{prefix}.export_peak_rss", exported["peak_rss"], "MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url", help="a PostgreSQL server (postgresql+asyncpg://...)")
    parser.add_argument(
        "--workers",
        type=int,
        default=max(0, min(4, (os.cpu_count() or 1) - 1)),
        help="processes reading rows beside the writer (0: on the event loop)",
    )
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, *rest = args.child
        if kind == "import":
            path, url, workers, batch = rest
            result = asyncio.run(child_import(Path(path), url, int(workers), int(batch)))
        else:
            result = asyncio.run(child_export(rest[0]))
        print(json.dumps(result))
        return 0

    emit("cpu_count", os.cpu_count() or 0, "cores")
    emit("load_average", os.getloadavg()[0], "(1 min, at start)")
    emit("workers", args.workers, "processes")
    emit("batch_size", args.batch_size, "rows")
    with tempfile.TemporaryDirectory(prefix="voicecrm-bench-csv-") as tmp:
        folder = Path(tmp)
        sizes = [args.rows // 10, args.rows] if args.rows >= 1000 else [args.rows]
        files = []
        started = time.perf_counter()
        for size in sizes:
            path = folder / f"contacts-{size}.csv"
            write_csv(path, size)
            files.append((size, path))
        emit("generate_seconds", time.perf_counter() - started, "s")
        emit("file_size", files[-1][1].stat().st_size / 1_048_576, "MB")
        sqlite = [f"sqlite+aiosqlite:///{folder}/import-{size}.db" for size in sizes]
        bench_engine("sqlite", sqlite, files, args)
        if args.database_url:
            from voicecrm.storage.postgres_admin import create_database, drop_database

            server = args.database_url
            names = [f"voicecrm_bench_csv_{uuid.uuid4().hex[:10]}" for _ in sizes]
            urls: list[str] = []
            try:
                for name in names:
                    urls.append(asyncio.run(create_database(server, name)))
                bench_engine("postgresql", urls, files, args)
            finally:
                for name in names:
                    asyncio.run(drop_database(server, name))
    emit("load_average_end", os.getloadavg()[0], "(1 min, at end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
