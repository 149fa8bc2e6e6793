"""The audio benchmark still runs: `python -m bench.audio` at toy sizes, its figures sane.

Benchmarks rot silently when nobody runs them. This runs every part of the
audio bench at the smallest sizes, with the emulated lines ticking ten times
faster than real time, so it takes seconds. It checks that figures come out
and make sense (frames were processed, turns were timed, no latency is
negative), never how fast anything was: on a shared machine a speed
assertion would only make the suite flaky.
"""

from __future__ import annotations

import os
import re

import pytest

from bench import audio

needs_espeak = pytest.mark.skipif(
    audio.ESPEAK is None and not os.environ.get("CI"),
    reason="espeak-ng is not installed (tests/run.sh installs it)",
)


@needs_espeak
def test_every_throughput_path_reports_frames_per_second() -> None:
    result = audio.measure_throughput(signal_seconds=2.0, rounds=1, min_round_seconds=0.01)
    names = [path.name for path in result.paths]
    assert "full duplex: listen + speak" in names
    assert "Listener.run, a loop pass a frame" in names
    assert [p.name for p in result.paths if p.judged] == ["full duplex: listen + speak"]
    for path in result.paths:
        assert path.median > 0 and path.calls_per_core > 0, path
    assert 0 < result.voiced_share < 1  # speech and line hiss both
    assert result.resampler_setup_us > 0


@needs_espeak
async def test_concurrent_calls_record_a_latency_for_every_turn() -> None:
    run = await audio.latency_run(3, 2, tick=0.002, stagger_seconds=0.05)
    assert run.errors == [] and run.timeouts == 0
    assert run.turns == 6  # three calls, two answered turns each
    assert all(seconds >= 0 for seconds in run.service_s)
    for stage, distribution in run.stages().items():
        assert distribution is not None and distribution.count == 6, stage
    assert run.lag_s and all(lag >= 0 for lag in run.lag_s)
    assert run.cpu_share > 0 and run.wall_s > 0 and run.peak_rss_mib > 0


@needs_espeak
def test_the_quick_bench_prints_its_tables_and_verdicts(capsys: pytest.CaptureFixture[str]) -> None:
    tiny = ["--calls", "2", "--turns", "1", "--tick", "0.002", "--seconds", "2", "--rounds", "1"]
    status = audio.main(["--quick", *tiny])
    out = capsys.readouterr().out
    assert status == 0, out
    assert re.search(r"^full duplex: listen \+ speak\s+\d+\.\d+\s+[\d,]+\s", out, re.MULTILINE)
    assert re.search(r"^\s+2\s+2\s+\d+\.\d+\s+\d+\.\d+", out, re.MULTILINE), out
    assert re.search(r"^target: >= 200 concurrent calls per core .*: (met|NOT MET) ", out, re.M)
    assert re.search(r"^target: service-added latency p99 < 20 ms: (met|NOT MET) ", out, re.M)
