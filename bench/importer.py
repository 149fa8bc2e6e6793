"""Runs the CSV import benchmark, `bench/csv_import.py`, and folds its figures into the table.

The importer has its own script (its author owns it) so that it can run alone:
`csv_import.py --rows N [--database-url POSTGRES_SERVER]` imports a generated
CSV into a fresh SQLite file, and into a scratch PostgreSQL database when given
a server, once with N/10 rows and once with N, and prints
`csv_import.<metric>: <value> <unit>` lines. This runner calls it once per
bench run, passes every such line into the table (the engine column comes
from the metric's name), and judges two targets:

* rows per second of the full-size import, against 20,000 rows/s;
* flat memory: the peak RSS of the full import over that of the tenth-size
  import (`peak_rss_ratio`); at most 1.25 means memory did not grow with the
  file. A buffering importer would be several times larger at N than at N/10.

When the script does not exist the table says so instead of staying silent.
(The runner cannot measure the script's memory itself: a child's `ru_maxrss` on
Linux starts from the parent's resident size at fork, here the bench's own.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.report import Metric, Target

SCRIPT = Path(__file__).with_name("csv_import.py")
REPO = Path(__file__).resolve().parent.parent
IMPORT_RATE = Target(">", 20_000, "rows/s")
FLAT_MEMORY = Target("<", 1.25, "x")
ENGINE = "csv"
_LINE = re.compile(r"^(csv_import\.[\w.\-]+):\s*(\S+)\s*(.*?)\s*$")
# csv_import.<engine>[.at_<rows>].<figure>
_PER_ENGINE = re.compile(r"^csv_import\.(sqlite|postgresql)(\.at_\d+)?\.(\w+)$")
# Peak-memory figures whose full-size/tenth-size ratio says whether memory stayed flat.
_PEAKS = ("peak_rss", "export_peak_rss")


@dataclass
class ImportResult:
    metrics: list[Metric] = field(default_factory=list)
    other_lines: list[str] = field(default_factory=list)
    ok: bool = True


def _value(text: str) -> float | str:
    try:
        return float(text.replace(",", "").replace("_", ""))
    except ValueError:
        return text


def parse_line(line: str) -> Metric | None:
    """The figure on one line of the script's output, judged where it has a target."""
    match = _LINE.match(line.strip())
    if match is None:
        return None
    name, value, unit = match.groups()
    return _metric(name, _value(value), unit)


def _metric(name: str, value: float | str, unit: str) -> Metric:
    match = _PER_ENGINE.match(name)
    if match is None:
        return Metric(ENGINE, name, value, unit)
    engine, sample, figure = match.groups()
    full_size = sample is None
    target = IMPORT_RATE if full_size and figure == "rows_per_s" else None
    return Metric(engine, name, value, unit, target=target)


def flatness(metrics: list[Metric]) -> list[Metric]:
    """Peak RSS of the last (largest) run of each engine over its first (smallest)."""
    peaks: dict[tuple[str, str], list[float]] = defaultdict(list)
    for metric in metrics:
        match = _PER_ENGINE.match(metric.name)
        if match and match.group(3) in _PEAKS and not isinstance(metric.value, str):
            peaks[match.group(1), match.group(3)].append(float(metric.value))
    return [
        Metric(
            engine,
            f"csv_import.{engine}.{figure}_ratio",
            values[-1] / values[0],
            "x",
            target=FLAT_MEMORY,
            note=f"{values[-1]:.0f} MB at full size / {values[0]:.0f} MB at a tenth",
        )
        for (engine, figure), values in peaks.items()
        if len(values) >= 2 and values[0] > 0
    ]


def run_csv_import(
    rows: int,
    postgres_server: str | None,
    *,
    timeout_s: float,
    on_metric: Callable[[Metric], None],
) -> ImportResult:
    """Run the script to its end, handing each figure to `on_metric` as it is printed."""
    result = ImportResult()

    def add(metric: Metric) -> None:
        result.metrics.append(metric)
        on_metric(metric)

    if not SCRIPT.exists():
        add(Metric(ENGINE, "csv_import.status", "absent", note=f"{SCRIPT.name} is absent: not run"))
        return result
    command = [sys.executable, str(SCRIPT), "--rows", str(rows)]
    if postgres_server:
        command += ["--database-url", postgres_server]
    shown = " ".join(command if not postgres_server else [*command[:-1], "<postgres server>"])
    search_path = [str(REPO), os.environ.get("PYTHONPATH", "")]
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, search_path))}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)
    timer = threading.Timer(timeout_s, process.kill)
    timer.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            metric = parse_line(line)
            if metric is None:
                result.other_lines.append(line.rstrip())
            else:
                add(metric)
        process.wait()
    finally:
        timer.cancel()
    for metric in flatness(result.metrics):
        add(metric)
    if process.returncode != 0:
        result.ok = False
        add(Metric(ENGINE, "csv_import.status", f"exit {process.returncode}", note=shown))
    return result
