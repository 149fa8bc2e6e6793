"""Stopping the tasks a piece of work started, without swallowing its own cancellation.

The usual idiom, `task.cancel()` then `await task` inside
`suppress(CancelledError)`, has a trap: if the task doing it is itself
cancelled while it waits (the service stopping, a call being torn down), that
CancelledError is suppressed too, and the task goes on as if nothing had
happened, into its next wait, which nobody will end. A service stopped just
after a transfer was bridged hung that way, in the call's tidy-up.
`cancel_and_wait` waits without taking the tasks' outcomes as its own, so a
cancellation of the caller still reaches it.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel `tasks` and return once all have finished.

    A task that ended with an error other than its cancellation raises it here (the
    first such), as awaiting it would; the caller's own cancellation propagates.
    """
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    await asyncio.wait(tasks)
    errors = [task.exception() for task in tasks if not task.cancelled()]
    for error in errors:
        if error is not None:
            raise error
