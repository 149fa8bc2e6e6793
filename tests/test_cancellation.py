"""Stopping a task's helpers: the task's own cancellation, arriving meanwhile, still
stops it (`cancel_and_wait`)."""

from __future__ import annotations

import asyncio

import pytest

from voicecrm.cancellation import cancel_and_wait


async def test_a_task_cancelled_while_its_helper_stops_is_cancelled_too() -> None:
    """The helper takes a while to stop (it tidies up); the task waiting for it is told to
    stop meanwhile. It must stop, not carry on into waits nobody will end."""
    tidying, tidied = asyncio.Event(), asyncio.Event()

    async def helper() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            tidying.set()
            await tidied.wait()

    carried_on = asyncio.Event()

    async def work(helper_task: asyncio.Task[None]) -> None:
        await cancel_and_wait(helper_task)
        carried_on.set()
        await asyncio.Event().wait()  # what a call does next: waits for the caller

    helping = asyncio.create_task(helper())
    await asyncio.sleep(0)  # the helper starts waiting
    working = asyncio.create_task(work(helping))
    await tidying.wait()  # the work is now waiting for its helper to stop
    working.cancel()
    tidied.set()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):  # a guard: the old idiom would wait forever here
            await working
    assert not carried_on.is_set()
    assert helping.cancelled()


async def test_a_helper_that_failed_raises_its_error_and_a_finished_one_is_left_alone() -> None:
    async def failing() -> None:
        raise LookupError("the helper failed")

    async def done() -> int:
        return 1

    failed = asyncio.create_task(failing())
    finished = asyncio.create_task(done())
    await asyncio.wait([failed, finished])
    with pytest.raises(LookupError, match="the helper failed"):
        await cancel_and_wait(failed, finished)
    assert finished.result() == 1
    await cancel_and_wait()  # nothing to stop
