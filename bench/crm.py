"""The CRM foundation benchmark: caller-ID resolution, timeline appends and pages.

Every timed operation is the real domain function inside its own
`Database.transaction()`, exactly as an incoming call or an API request runs
it, so the figures include the session, BEGIN (IMMEDIATE on SQLite), the
statements, the ORM loading and COMMIT: what a caller waits for, not what the
database alone takes. Each operation is also checked (a known number must find
its own contact and create nothing), so a bench that silently measures the
wrong path fails instead.

After the timings, each hot operation is run once more with a statement log,
and the SELECTs it issued are explained (EXPLAIN QUERY PLAN on SQLite; on
PostgreSQL EXPLAIN ANALYZE of both the custom plan and the generic plan a
reused prepared statement may switch to), so a lost index shows in the output
next to the number it ruins.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select, text
from sqlalchemy.engine import make_url

from bench import stats
from bench.phones import carrier_format, check_sample, e164
from bench.report import Metric, Reporter, Target, progress
from bench.seed import Seeded, contact_name, seed
from voicecrm.accounts.actor import Actor
from voicecrm.crm import timeline
from voicecrm.crm.callers import KNOWN_CALLER, find_unchanged_caller, resolve_caller
from voicecrm.crm.models import TimelineEvent
from voicecrm.crm.phones import normalize_phone
from voicecrm.storage import Database

RESOLVE_P99 = Target("<", 1.0, "ms")
PAGE_P99 = Target("<", 5.0, "ms")
PAGE_SIZE = 50
# A tenth of the hot contact's events are of these kinds.
FILTER_KINDS = ("note_added", "stage_changed")
# Registered kinds that the hot contact has none of: a filter that matches nothing.
RARE_KINDS = ("merged", "imported")


class BenchError(AssertionError):
    """The bench measured something other than what it claims: its figures are void."""


@dataclass(frozen=True, slots=True)
class Sizes:
    contacts: int = 1_000_000
    events: int = 100_000
    lookups: int = 5_000
    warmup: int = 500
    creates: int = 1_000
    renames: int = 500
    pages: int = 1_000
    appends: int = 2_000
    concurrency: int = 8
    csv_rows: int = 1_000_000
    seed: int = 20_261_125
    time_cap_s: float = 60.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            contacts=5_000,
            events=2_000,
            lookups=300,
            warmup=30,
            creates=50,
            renames=30,
            pages=100,
            appends=100,
            csv_rows=1_000,
            time_cap_s=5.0,
        )


@dataclass
class _Profile:
    """The statements one operation issued, for counting and for EXPLAIN."""

    name: str
    statements: list[tuple[str, Any]] = field(default_factory=list)

    def kinds(self) -> list[str]:
        return [_label(sql) for sql, _ in self.statements if not sql.startswith("BEGIN")]


def _label(sql: str) -> str:
    words = sql.replace("(", " ").split()
    verb = words[0].upper()
    if verb == "SELECT" and "FROM" in words:
        return f"SELECT {words[words.index('FROM') + 1]}"
    if verb in ("INSERT", "UPDATE", "DELETE"):
        target = words[2] if verb != "UPDATE" else words[1]
        return f"{verb} {target}"
    return verb


class CrmBench:
    def __init__(
        self,
        engine: str,
        database: Database,
        seeded: Seeded,
        sizes: Sizes,
        reporter: Reporter,
        plans: list[str],
    ) -> None:
        self.engine = engine
        self.plans = plans
        self.database = database
        self.seeded = seeded
        self.sizes = sizes
        self.reporter = reporter
        self.actor = Actor.system(seeded.team)
        self.rng = random.Random(sizes.seed + 1)
        wanted = sizes.warmup + sizes.lookups + sizes.renames + 20 + sizes.lookups // 2
        self.known = self.rng.sample(range(seeded.contacts), min(wanted, seeded.contacts))
        self.profiles: list[_Profile] = []

    # ------------------------------------------------------------------ helpers
    def emit(self, name: str, value: float | int | str, unit: str = "", **kw: Any) -> None:
        self.reporter.emit(Metric(self.engine, name, value, unit, **kw))

    def emit_latency(
        self,
        name: str,
        dist: stats.Distribution,
        *,
        percentiles: Sequence[float] = (50, 99),
        target: Target | None = None,
        with_max: bool = False,
    ) -> None:
        note = f"n={dist.count}"
        for p in percentiles:
            judged = target if p == 99 else None
            self.emit(f"{name}.p{p:g}", dist.percentile_ms(p), "ms", target=judged, note=note)
        if with_max:
            self.emit(f"{name}.max", dist.max_ms, "ms", note=note)

    def _known(self, i: int) -> int:
        return self.known[i % len(self.known)]

    # ------------------------------------------------------------------ operations
    async def resolve_known(self, i: int, index: int, *, rename: bool = False) -> None:
        national = self.seeded.numbers[index]
        contact_id = index + 1
        if rename:
            name: str | None = f"Renamed {contact_id} {i}"
        else:
            # Half the carriers send a caller-ID name (unchanged), half send none.
            name = contact_name(contact_id) if i % 2 else None
        async with self.database.transaction() as session:
            resolved = await resolve_caller(session, self.actor, carrier_format(national, i), name)
        if resolved.created or resolved.contact.id != contact_id:
            raise BenchError(f"{national} resolved to {resolved.contact.id}, not {contact_id}")

    async def resolve_new(self, i: int) -> None:
        national = self.seeded.spare_numbers[i]
        async with self.database.transaction() as session:
            resolved = await resolve_caller(session, self.actor, carrier_format(national, i))
        if not resolved.created or resolved.phone.e164 != e164(national):
            raise BenchError(f"new number {national} was not created")

    async def page(
        self, cursor: str | None = None, kinds: Sequence[str] = (), *, full: bool = True
    ) -> None:
        # As the API's timeline route runs it: a read-only `quick` transaction.
        async with self.database.transaction(read_only=True, quick=True) as session:
            result = await timeline.page(
                session, self.seeded.hot_contact_id, limit=PAGE_SIZE, cursor=cursor, kinds=kinds
            )
        if full and (len(result.events) != PAGE_SIZE or result.next_cursor is None):
            raise BenchError(f"a page of {len(result.events)} events, not {PAGE_SIZE}")

    async def append(self, contact_id: int) -> None:
        data = timeline.CallEvent(
            direction="inbound",
            from_number=e164(self.seeded.numbers[contact_id - 1]),
            to_number="+14155550100",
            status="completed",
            duration_seconds=42,
        )
        async with self.database.transaction() as session:
            await timeline.append(session, self.actor, contact_id, "call", data)

    # ------------------------------------------------------------------ measurements
    async def run(self) -> None:
        await self.floor()
        self.normalization()
        await self.resolution()
        await self.pages()
        await self.appends()
        progress(f"{self.engine}: explaining the hot queries")
        await self.profile()

    async def floor(self) -> None:
        """One `SELECT 1` in a write transaction: what any call pays before doing anything."""

        async def select_one(_: int) -> None:
            async with self.database.transaction() as session:
                await session.execute(text("SELECT 1"))

        dist = await stats.sequential(select_one, min(1000, self.sizes.lookups), warmup=50)
        self.emit_latency("txn.select1", dist)

    def normalization(self) -> None:
        """`normalize_phone` without its cache: the CPU share of a lookup of a new caller."""
        check_sample(self.seeded.numbers, self.rng, size=min(2000, self.seeded.contacts))
        samples: list[int] = []
        parse = normalize_phone.__wrapped__
        for i in range(min(2000, self.sizes.lookups)):
            raw = carrier_format(self.seeded.numbers[self._known(i)], i)
            started = time.perf_counter_ns()
            parse(raw, "US")
            samples.append(time.perf_counter_ns() - started)
        self.emit_latency("phones.normalize_uncached", stats.Distribution.of(samples))

    async def resolution(self) -> None:
        sizes = self.sizes
        progress(f"{self.engine}: caller-ID resolution, known numbers")

        async def known(i: int) -> None:
            await self.resolve_known(i, self._known(i))

        dist = await stats.sequential(
            known, sizes.lookups, warmup=sizes.warmup, time_cap_s=sizes.time_cap_s
        )
        # The write path: what a known caller costs when something must be refreshed,
        # and the way every call ran before `resolve.known_call_path` existed.
        self.emit_latency("resolve.known", dist, percentiles=(50, 90, 99), with_max=True)

        async def known_on_call_path(i: int) -> None:
            index = self._known(i)
            found = await find_unchanged_caller(
                self.database, self.actor, carrier_format(self.seeded.numbers[index], i)
            )
            if found is None or found.contact_id != index + 1:
                raise BenchError(f"call path missed contact {index + 1}")

        dist = await stats.sequential(
            known_on_call_path, sizes.lookups, warmup=sizes.warmup, time_cap_s=sizes.time_cap_s
        )
        # Exactly what a call runs first (ScenarioCRM.ensure_caller): one SELECT outside
        # any session, which answers every known caller whose caller-ID name and carrier
        # are unchanged; only the others go on to `resolve_caller` (`resolve.known`).
        self.emit_latency(
            "resolve.known_call_path",
            dist,
            percentiles=(50, 90, 99),
            target=RESOLVE_P99,
            with_max=True,
        )

        offset = sizes.warmup + sizes.lookups

        async def renamed(i: int) -> None:

            await self.resolve_known(i, self._known(offset + i), rename=True)

        dist = await stats.sequential(renamed, sizes.renames, warmup=10)
        self.emit_latency("resolve.known_renamed", dist)

        progress(f"{self.engine}: caller-ID resolution, new numbers")
        dist = await stats.sequential(
            self.resolve_new, sizes.creates, warmup=20, time_cap_s=sizes.time_cap_s
        )
        self.emit_latency("resolve.new", dist, with_max=True)

        offset += sizes.renames + 10
        concurrent_count = max(sizes.lookups // 2, sizes.concurrency)

        async def known_concurrent(i: int) -> None:
            await self.resolve_known(i, self._known(offset + i))

        run = await stats.concurrent(
            known_concurrent, concurrent_count, concurrency=sizes.concurrency
        )
        name = f"resolve.known_x{sizes.concurrency}"
        self.emit(f"{name}.rate", run.per_second, "calls/s", note=f"{sizes.concurrency} tasks")
        self.emit_latency(name, run.latencies)

    async def pages(self) -> None:
        sizes = self.sizes
        hot = self.seeded.hot_contact_id
        async with self.database.transaction(read_only=True) as session:
            count = await session.scalar(
                select(func.count())
                .select_from(TimelineEvent)
                .where(TimelineEvent.contact_id == hot)
            )
            deep_id = await session.scalar(
                select(TimelineEvent.id)
                .where(TimelineEvent.contact_id == hot)
                .order_by(TimelineEvent.id.desc())
                .offset((count or 0) // 2)
                .limit(1)
            )
        self.emit("timeline.hot_contact.events", count or 0, "events")
        progress(f"{self.engine}: timeline pages of a contact with {count} events")

        async def newest(_: int) -> None:
            await self.page()

        dist = await stats.sequential(newest, sizes.pages, warmup=50)
        self.emit_latency("timeline.page.newest", dist, target=PAGE_P99, with_max=True)

        cursor = str(deep_id)

        async def deep(_: int) -> None:
            await self.page(cursor)

        dist = await stats.sequential(deep, sizes.pages, warmup=10)
        self.emit_latency("timeline.page.deep", dist)

        async def filtered(_: int) -> None:
            await self.page(kinds=FILTER_KINDS)

        dist = await stats.sequential(
            filtered, max(sizes.pages // 5, 10), warmup=3, time_cap_s=min(30, sizes.time_cap_s)
        )
        self.emit_latency("timeline.page.two_kinds", dist)

        async def rare(_: int) -> None:
            await self.page(kinds=RARE_KINDS, full=False)

        dist = await stats.sequential(
            rare, max(sizes.pages // 5, 10), warmup=3, time_cap_s=min(30, sizes.time_cap_s)
        )
        self.emit_latency("timeline.page.rare_kinds", dist)

    async def appends(self) -> None:
        sizes = self.sizes
        progress(f"{self.engine}: timeline appends")
        targets = [self.rng.randrange(self.seeded.contacts) + 1 for _ in range(2 * sizes.appends)]

        async def sequential_append(i: int) -> None:
            await self.append(targets[i % len(targets)])

        dist = await stats.sequential(
            sequential_append, sizes.appends, warmup=20, time_cap_s=sizes.time_cap_s
        )
        self.emit("timeline.append.rate", dist.count / dist.total_s, "/s", note=f"n={dist.count}")
        self.emit_latency("timeline.append", dist)

        async def concurrent_append(i: int) -> None:
            await self.append(targets[(sizes.appends + i) % len(targets)])

        run = await stats.concurrent(
            concurrent_append, sizes.appends, concurrency=sizes.concurrency
        )
        name = f"timeline.append_x{sizes.concurrency}"
        self.emit(f"{name}.rate", run.per_second, "/s", note=f"{sizes.concurrency} tasks")
        self.emit_latency(name, run.latencies)

    # ------------------------------------------------------------------ statements and plans
    @contextmanager
    def _logging(self, name: str) -> Iterator[_Profile]:
        profile = _Profile(name)
        # Both engines: `quick` units of work run on the second one on SQLite.
        engines = {self.database.engine.sync_engine, self.database.quick_engine.sync_engine}

        def record(
            _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, _many: bool
        ) -> None:
            profile.statements.append((statement, parameters))

        for sync_engine in engines:
            event.listen(sync_engine, "before_cursor_execute", record)
        try:
            yield profile
        finally:
            for sync_engine in engines:
                event.remove(sync_engine, "before_cursor_execute", record)
        self.profiles.append(profile)

    async def profile(self) -> None:
        spare = len(self.seeded.spare_numbers) - 1
        operations: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("resolve.known", lambda: self.resolve_known(0, self._known(0))),
            ("resolve.new", lambda: self.resolve_new(spare)),
            ("timeline.append", lambda: self.append(self.seeded.hot_contact_id)),
            ("timeline.page.newest", lambda: self.page()),
            ("timeline.page.two_kinds", lambda: self.page(kinds=FILTER_KINDS)),
            ("timeline.page.rare_kinds", lambda: self.page(kinds=RARE_KINDS, full=False)),
        ]
        for name, operation in operations:
            with self._logging(name) as profile:
                await operation()
            kinds = profile.kinds()
            self.emit(f"{name}.statements", len(kinds), "stmts", note=", ".join(kinds))
        for profile in self.profiles:
            for sql, parameters in profile.statements:
                if sql.lstrip().upper().startswith("SELECT"):
                    await self._explain(profile.name, sql, parameters)
        # The call path's SELECT runs on the driver, outside the engine's events.
        number = e164(self.seeded.numbers[self._known(0)])
        sql, arguments = KNOWN_CALLER.arguments(
            self.database.engine.dialect, {"team_id": self.actor.team_id, "e164": number}
        )
        await self._explain("resolve.known_call_path", sql, arguments)

    async def _explain(self, name: str, sql: str, parameters: Any) -> None:
        self.plans.append(f"plan {self.engine} {name}: {' '.join(sql.split())}")
        self.plans.append(f"  parameters: {parameters}")
        if self.database.dialect != "postgresql":
            rows = await self._plan(["EXPLAIN QUERY PLAN " + sql], parameters)
            self.plans += [f"  | {row[-1]}" for row in rows]
            return
        rows = await self._plan(["EXPLAIN (ANALYZE, BUFFERS) " + sql], parameters)
        self.plans.append("  custom plan (planned for these values):")
        self.plans += [f"  | {row[0]}" for row in rows]
        # asyncpg runs prepared statements, and from the sixth execution PostgreSQL may
        # switch to a generic plan made without the values: show that one too.
        literals = ", ".join(_literal(value) for value in parameters)
        rows = await self._plan(
            [
                "SET LOCAL plan_cache_mode = force_generic_plan",
                f"PREPARE bench_plan AS {sql}",
                f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_plan({literals})",
            ],
            (),
            cleanup="DEALLOCATE bench_plan",  # prepared statements outlive a rollback
        )
        self.plans.append("  generic plan (what a reused prepared statement may run):")
        self.plans += [f"  | {row[0]}" for row in rows]

    async def _plan(
        self, statements: list[str], parameters: Any, cleanup: str | None = None
    ) -> list[Any]:
        """Run `statements` in one rolled-back transaction; the last one's rows."""
        async with self.database.engine.connect() as connection:
            for statement in statements[:-1]:
                await connection.exec_driver_sql(statement)
            rows = list((await connection.exec_driver_sql(statements[-1], parameters)).all())
            await connection.rollback()
            if cleanup:
                await connection.exec_driver_sql(cleanup)
                await connection.commit()
        return rows


def _literal(value: Any) -> str:
    """A SQL literal for a parameter the bench itself produced (ints and short strings)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "NULL"}[value]
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no literal for {value!r}")


def _database_size(url: str, database: Database) -> Callable[[], Awaitable[int]]:
    async def size() -> int:
        if database.dialect == "sqlite":
            path = Path(make_url(url).database or "")
            return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
        async with database.engine.connect() as connection:
            value = await connection.scalar(text("SELECT pg_database_size(current_database())"))
            return int(value or 0)

    return size


async def run_crm(
    engine: str, url: str, sizes: Sizes, reporter: Reporter, plans: list[str]
) -> None:
    """Seed a fresh database at `url` and print every CRM figure for it; plans go to `plans`."""
    rng = random.Random(sizes.seed)
    progress(f"{engine}: seeding {sizes.contacts} contacts, hot contact with {sizes.events} events")
    seeded = await seed(
        url, contacts=sizes.contacts, hot_events=sizes.events, spare=sizes.creates + 100, rng=rng
    )
    reporter.emit(Metric(engine, "seed.contacts", seeded.contacts, "rows"))
    reporter.emit(Metric(engine, "seed.seconds", seeded.seconds, "s", note=f"{seeded.rows} rows"))
    reporter.emit(Metric(engine, "seed.rate", seeded.rows / seeded.seconds, "rows/s"))
    database = Database(url)
    try:
        size = await _database_size(url, database)()
        reporter.emit(Metric(engine, "db.size", size / 2**20, "MiB"))
        await CrmBench(engine, database, seeded, sizes, reporter, plans).run()
    finally:
        await database.close()
