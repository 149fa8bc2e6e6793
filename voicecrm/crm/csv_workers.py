"""Reading an import's rows (cells to contact fields, phone numbers parsed) off the writer's path.

Reading a row is nearly all of an import's Python work that does not touch the
database, most of it parsing phone numbers. For a large file it runs in worker
processes, several batches ahead of the batch being written, so that the writer
only matches and writes; a small file is read on the event loop in short slices,
as starting processes would cost more than it saves.
"""

from __future__ import annotations

import asyncio
import os
import pickle
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
from multiprocessing import get_context

from voicecrm.crm.csv_records import Record
from voicecrm.crm.csv_rows import ContactRow, RowContext, RowError, read_rows

ReadRow = ContactRow | RowError

# Below this size a file imports faster than worker processes start.
WORKERS_FROM_BYTES = 8 * 1_048_576
# Rows read on the event loop between two yields to it: a few milliseconds of work.
_INLINE_SLICE = 200


def suggested_workers(size: int) -> int:
    """Worker processes for a file of `size` bytes: one per spare core (up to 4) if large."""
    cores = os.cpu_count() or 1
    return min(4, cores - 1) if size >= WORKERS_FROM_BYTES and cores > 1 else 0


# A worker process reads rows for one import only; it gets the context once, at start.
_process_context: RowContext | None = None


def _init_worker_process(ctx: RowContext) -> None:
    global _process_context
    _process_context = ctx


def _read_in_worker_process(records: bytes) -> list[ReadRow]:
    assert _process_context is not None, "_init_worker_process was not run"
    return read_rows(_process_context, pickle.loads(records))


def _worker_pool(workers: int, context: RowContext) -> ProcessPoolExecutor:
    # "spawn": forking a process that runs database driver threads is not safe.
    return ProcessPoolExecutor(
        workers,
        mp_context=get_context("spawn"),
        initializer=_init_worker_process,
        initargs=(context,),
    )


async def _read_inline(context: RowContext, chunk: list[Record]) -> list[ReadRow]:
    """Read rows on the loop in short slices, so that calls and requests still get served.

    Not in a thread: a thread parsing phone numbers holds the GIL for 5 ms at a time,
    and every database round trip of the batch being written would wait behind it.
    """
    rows: list[ReadRow] = []
    for start in range(0, len(chunk), _INLINE_SLICE):
        rows += read_rows(context, chunk[start : start + _INLINE_SLICE])
        await asyncio.sleep(0)
    return rows


async def read_batches(
    records: Iterator[Record], context: RowContext, workers: int, size: int
) -> AsyncGenerator[list[ReadRow], None]:
    """Batches of read rows, in file order.

    With worker processes, `workers + 1` batches are read ahead while the database
    writes (memory stays bounded by them); inline, each batch is read when wanted.
    """
    if workers <= 0:
        while chunk := list(islice(records, size)):
            yield await _read_inline(context, chunk)
        return
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[list[ReadRow]]] = []
    pool = _worker_pool(workers, context)
    try:
        while chunk := list(islice(records, size)):
            # Pickled here rather than by the pool, so the chunk's lists are freed now,
            # not kept until the batch comes back: lists that outlive a few collections
            # reach the oldest generation and bring on the costly full collections.
            payload = pickle.dumps(chunk, pickle.HIGHEST_PROTOCOL)
            del chunk
            pending.append(loop.run_in_executor(pool, _read_in_worker_process, payload))
            if len(pending) > workers:
                yield await pending.pop(0)
        while pending:
            yield await pending.pop(0)
    finally:
        for future in pending:
            future.cancel()
        await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
