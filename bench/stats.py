"""Latency samples and their percentiles, measured with `time.perf_counter_ns`.

Percentiles use the nearest-rank method on every sample (no interpolation, no
histogram buckets), so a p99 over 5,000 samples is the 4,950th fastest call: a
real observed latency, never one made up between two samples.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

NS_PER_MS = 1_000_000


@dataclass(frozen=True, slots=True)
class Distribution:
    """Sorted latencies of one operation, in nanoseconds."""

    samples_ns: tuple[int, ...]

    @classmethod
    def of(cls, samples_ns: list[int]) -> Distribution:
        if not samples_ns:
            raise ValueError("a distribution needs at least one sample")
        return cls(tuple(sorted(samples_ns)))

    @property
    def count(self) -> int:
        return len(self.samples_ns)

    def percentile_ms(self, p: float) -> float:
        rank = max(1, math.ceil(p / 100 * self.count))
        return self.samples_ns[rank - 1] / NS_PER_MS

    @property
    def max_ms(self) -> float:
        return self.samples_ns[-1] / NS_PER_MS

    @property
    def total_s(self) -> float:
        return sum(self.samples_ns) / 1e9


Operation = Callable[[int], Awaitable[None]]


async def sequential(
    operation: Operation, count: int, *, warmup: int = 0, time_cap_s: float = 60.0
) -> Distribution:
    """Run `operation(i)` one after another and time each call.

    Calls `0..warmup-1` are untimed (compiled statement caches, pool connections,
    the first page reads); timed calls get indices from `warmup` on. Measuring
    stops early after `time_cap_s`, so a pathological case reports what it saw
    instead of running for an hour.
    """
    for i in range(warmup):
        await operation(i)
    samples: list[int] = []
    deadline = time.perf_counter_ns() + int(time_cap_s * 1e9)
    clock = time.perf_counter_ns
    for i in range(warmup, warmup + count):
        started = clock()
        await operation(i)
        ended = clock()
        samples.append(ended - started)
        if ended > deadline:
            break
    return Distribution.of(samples)


@dataclass(frozen=True, slots=True)
class ConcurrentRun:
    latencies: Distribution
    wall_s: float

    @property
    def per_second(self) -> float:
        return self.latencies.count / self.wall_s


async def concurrent(operation: Operation, count: int, *, concurrency: int) -> ConcurrentRun:
    """`count` calls shared by `concurrency` tasks, as simultaneous calls would arrive."""
    next_index = 0
    samples: list[int] = []
    clock = time.perf_counter_ns

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index = next_index
            next_index += 1
            started = clock()
            await operation(index)
            samples.append(clock() - started)

    started = clock()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    wall_ns = clock() - started
    return ConcurrentRun(Distribution.of(samples), wall_ns / 1e9)
