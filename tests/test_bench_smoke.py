"""The benchmark still runs: `python -m bench --quick` on SQLite prints every metric line.

Benchmarks rot silently when nobody runs them; this runs the smallest one on
every test run. It checks that the figures are printed, never what they are:
a timing assertion on a shared machine would only make the suite flaky. The
CSV import script is skipped here (its own process starts take longer than
the whole CRM run); the lines it prints are checked against the runner's
parser instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from bench.importer import flatness, parse_line

REPO = Path(__file__).resolve().parent.parent

METRICS = [
    "seed.contacts",
    "txn.select1.p50",
    "resolve.known.p50",
    "resolve.known.p99",
    "resolve.new.p99",
    "resolve.known_x8.p99",
    "timeline.append.rate",
    "timeline.page.newest.p99",
    "timeline.page.deep.p99",
    "timeline.page.rare_kinds.p99",
    "resolve.known.statements",
]


def test_the_quick_bench_prints_its_metrics() -> None:
    env = {k: v for k, v in os.environ.items() if k != "VOICECRM_BENCH_POSTGRES_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--database-url", "sqlite", "--skip-csv"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for metric in METRICS:
        line = re.compile(rf"^sqlite\s+{re.escape(metric)}\s+\d+(\.\d+)?\s", re.MULTILINE)
        assert line.search(done.stdout), f"{metric} missing from:\n{done.stdout}"
    assert re.search(r"^plan sqlite resolve\.known: SELECT ", done.stdout, re.MULTILINE)
    assert re.search(r"^targets: \d+ of \d+ met$", done.stdout, re.MULTILINE), done.stdout


def test_the_csv_import_lines_are_read_and_judged() -> None:
    lines = [
        "csv_import.file_size: 7.2 MB",
        "csv_import.load_average: 2.3 (1 min, at start)",
        "csv_import.sqlite.at_10000.rows_per_s: 3393.1 rows/s",
        "csv_import.sqlite.at_10000.peak_rss: 100.0 MB",
        "csv_import.sqlite.rows_per_s: 25000.0 rows/s",
        "csv_import.sqlite.peak_rss: 110.0 MB",
        "not a figure",
    ]
    metrics = [m for m in map(parse_line, lines) if m is not None]
    assert [(m.engine, m.name, m.verdict) for m in metrics] == [
        ("csv", "csv_import.file_size", ""),
        ("csv", "csv_import.load_average", ""),
        ("sqlite", "csv_import.sqlite.at_10000.rows_per_s", ""),
        ("sqlite", "csv_import.sqlite.at_10000.peak_rss", ""),
        ("sqlite", "csv_import.sqlite.rows_per_s", "PASS"),
        ("sqlite", "csv_import.sqlite.peak_rss", ""),
    ]
    assert metrics[1].unit == "(1 min, at start)"
    [ratio] = flatness(metrics)
    assert (ratio.name, ratio.value, ratio.verdict) == (
        "csv_import.sqlite.peak_rss_ratio",
        1.1,
        "PASS",
    )
