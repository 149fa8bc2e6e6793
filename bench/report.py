"""The printed table: one line per figure, `engine metric value unit target verdict note`.

Results go to stdout as they are measured (a full run takes minutes and a
half-finished table is still worth reading); progress chatter goes to stderr,
so `python -m bench > results.txt` keeps only the figures.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Literal

COLUMNS = ("engine", "metric", "value", "unit", "target", "verdict", "note")
_LINE = "{:<10} {:<48} {:>10} {:<8} {:<10} {:<7} {}"


@dataclass(frozen=True, slots=True)
class Target:
    """A bound the project has promised, e.g. `< 1 ms`."""

    op: Literal["<", ">"]
    bound: float
    unit: str

    def met_by(self, value: float) -> bool:
        return value < self.bound if self.op == "<" else value > self.bound

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


@dataclass(frozen=True, slots=True)
class Metric:
    engine: str
    name: str
    value: float | int | str
    unit: str = ""
    target: Target | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        if isinstance(self.value, str):
            return "n/a"
        return "PASS" if self.target.met_by(float(self.value)) else "FAIL"

    def formatted_value(self) -> str:
        value = self.value
        if isinstance(value, str):
            return value
        if isinstance(value, int) or self.unit in ("/s", "rows/s", "calls/s", "rows"):
            return f"{value:.0f}"
        if self.unit == "ms":
            return f"{value:.3f}"
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"

    def line(self) -> str:
        return _LINE.format(
            self.engine,
            self.name,
            self.formatted_value(),
            self.unit or "-",
            str(self.target) if self.target else "-",
            self.verdict or "-",
            self.note,
        ).rstrip()


@dataclass
class Reporter:
    """Prints each metric as it arrives and keeps them for the summary."""

    metrics: list[Metric] = field(default_factory=list)

    def header(self) -> None:
        print(_LINE.format(*COLUMNS), flush=True)

    def emit(self, metric: Metric) -> None:
        self.metrics.append(metric)
        print(metric.line(), flush=True)

    def text(self, line: str = "") -> None:
        print(line, flush=True)

    def summary(self) -> list[str]:
        judged = [m for m in self.metrics if m.target is not None]
        lines = [f"targets: {sum(m.verdict == 'PASS' for m in judged)} of {len(judged)} met"]
        lines += [
            f"  {m.engine} {m.name} = {m.formatted_value()} {m.unit} (target {m.target} "
            f"{m.unit}): {m.verdict}"
            for m in judged
        ]
        return lines


def progress(message: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _distribution(name: str) -> str:
    try:
        return version(name)
    except Exception:
        return "?"


def machine_lines() -> list[str]:
    """What the figures were measured on; a benchmark without this is an anecdote."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return [
        f"date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"machine: {platform.platform()}, {os.cpu_count()} cpus, load average {load}",
        f"python: {platform.python_implementation()} {platform.python_version()}",
        f"sqlite: {sqlite3.sqlite_version}; sqlalchemy {_distribution('sqlalchemy')}, "
        f"aiosqlite {_distribution('aiosqlite')}, asyncpg {_distribution('asyncpg')}, "
        f"phonenumbers {_distribution('phonenumbers')}",
    ]


def postgres_cpu_seconds() -> float | None:
    """CPU seconds used so far by the PostgreSQL server on this machine, or None when none
    of its processes can be seen (another machine, not Linux).

    Every `postgres` process, and through the postmaster's children's time the backends
    that have exited: the difference over an import is the server's share of it (and
    that of anyone else using the server meanwhile).
    """
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total, seen = 0, False
    try:
        pids = [pid for pid in os.listdir("/proc") if pid.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as comm:
                if comm.read().strip() != "postgres":
                    continue
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        seen = True
        total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / tick if seen else None


def steal_ticks() -> int | None:
    """Clock ticks the hypervisor has taken from this VM's CPUs (`/proc/stat`), or None.

    On a virtual machine a stalled call may be nobody's fault on the machine at
    all: the host ran something else. PSI does not see that; steal time does.
    """
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    return int(fields[8]) if fields[:1] == ["cpu"] and len(fields) > 8 else None


def steal_share(since: int | None, until: int | None, seconds: float) -> float | None:
    """The share (0 to 1) of all the machine's CPU time over `seconds` that the host
    gave to other guests, from two `steal_ticks` readings; None without them."""
    if since is None or until is None or seconds <= 0:
        return None
    return (until - since) / (os.sysconf("SC_CLK_TCK") * seconds * (os.cpu_count() or 1))
