"""Reading an import's rows (CSV records parsed, cells to contact fields, phone numbers
parsed) off the writer's path.

Reading a row is nearly all of an import's Python work that does not touch the
database, most of it parsing phone numbers. For a large file it runs in worker
processes, several batches ahead of the batch being written, so that the writer
only matches and writes; a small file is read on the event loop in short slices,
as starting processes would cost more than it saves. A batch goes to a worker as
its block of the file's text (`csv_records.Blocks`), one string, and is parsed
there.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

from voicecrm.crm.csv_records import Block, Record, parse_block
from voicecrm.crm.csv_rows import ContactRow, RowContext, RowError, read_rows

ReadRow = ContactRow | RowError
# A block's rows read, and how many blank records it had.
ReadBlock = tuple[list[ReadRow], int]

# Below this size a file imports faster than worker processes start.
WORKERS_FROM_BYTES = 8 * 1_048_576
# Rows read on the event loop between two yields to it: a few milliseconds of work.
_INLINE_SLICE = 200


def suggested_workers(size: int) -> int:
    """Worker processes for a file of `size` bytes: one per spare core (up to 4) if large."""
    cores = os.cpu_count() or 1
    return min(4, cores - 1) if size >= WORKERS_FROM_BYTES and cores > 1 else 0


# A worker process reads rows for one import only; it gets what it needs once, at start.
_process_context: tuple[RowContext, str] | None = None


def _init_worker_process(ctx: RowContext, delimiter: str) -> None:
    global _process_context
    _process_context = (ctx, delimiter)


def _read_in_worker_process(block: Block) -> ReadBlock:
    assert _process_context is not None, "_init_worker_process was not run"
    context, delimiter = _process_context
    records, blank = parse_block(block, delimiter)
    return read_rows(context, records), blank


def _worker_pool(workers: int, context: RowContext, delimiter: str) -> ProcessPoolExecutor:
    # "spawn": forking a process that runs database driver threads is not safe.
    return ProcessPoolExecutor(
        workers,
        mp_context=get_context("spawn"),
        initializer=_init_worker_process,
        initargs=(context, delimiter),
    )


async def _read_inline(context: RowContext, records: list[Record]) -> list[ReadRow]:
    """Read rows on the loop in short slices, so that calls and requests still get served.

    Not in a thread: a thread parsing phone numbers holds the GIL for 5 ms at a time,
    and every database round trip of the batch being written would wait behind it.
    """
    rows: list[ReadRow] = []
    for start in range(0, len(records), _INLINE_SLICE):
        rows += read_rows(context, records[start : start + _INLINE_SLICE])
        await asyncio.sleep(0)
    return rows


async def read_batches(
    blocks: Iterator[Block], context: RowContext, delimiter: str, workers: int
) -> AsyncGenerator[ReadBlock, None]:
    """Each block's rows read, and its blank records, in file order.

    With worker processes, `workers + 1` blocks are read ahead while the database
    writes (memory stays bounded by them); inline, each block is read when wanted.
    """
    if workers <= 0:
        for block in blocks:
            records, blank = parse_block(block, delimiter)
            yield await _read_inline(context, records), blank
        return
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[ReadBlock]] = []
    pool = _worker_pool(workers, context, delimiter)
    try:
        for block in blocks:
            pending.append(loop.run_in_executor(pool, _read_in_worker_process, block))
            if len(pending) > workers:
                yield await pending.pop(0)
        while pending:
            yield await pending.pop(0)
    finally:
        for future in pending:
            future.cancel()
        await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
