"""Runs the API's background CSV imports in this process, and owns them while they run.

Each job is one task that imports its spooled file and deletes it at the end,
beside a second task that writes the job's progress (at most once a second, at
least every `HEARTBEAT`, so that other instances can tell it is alive). The
runner is closed with the service: running imports are cancelled, recorded as
failed ("the service stopped"), and awaited, so no task outlives the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from voicecrm.accounts.actor import Actor
from voicecrm.cancellation import cancel_and_wait
from voicecrm.crm import import_jobs
from voicecrm.crm.csv_import import CheckedFile, ImportOptions, ImportReport, import_contacts
from voicecrm.errors import VoiceCRMError
from voicecrm.storage import Database

log = logging.getLogger(__name__)

MIN_PROGRESS_INTERVAL = 1.0  # seconds: progress writes must not crowd out the import's own


class ImportRunner:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def start(
        self,
        actor: Actor,
        job_id: int,
        path: Path,
        options: ImportOptions,
        checked: CheckedFile | None = None,
    ) -> None:
        """Run job `job_id` on `path`, which the runner deletes when the job ends.

        `checked`: `csv_import.check_file`'s answer for the file, if the caller has it.
        """
        if self._closed:
            path.unlink(missing_ok=True)
            raise RuntimeError("the import runner is closed")
        task = asyncio.create_task(
            self._run(actor, job_id, path, options, checked), name=f"import-{job_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Until every job running now has ended (for tests and orderly shutdowns)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        self._closed = True
        # One turn of the loop first: a task cancelled before it ever ran would skip its
        # own cleanup (the job's end, the spooled file).
        await asyncio.sleep(0)
        for task in self._tasks:
            task.cancel()
        await self.wait()

    async def _run(
        self,
        actor: Actor,
        job_id: int,
        path: Path,
        options: ImportOptions,
        checked: CheckedFile | None,
    ) -> None:
        progress = _Progress()
        beating = asyncio.create_task(self._beat(job_id, progress))
        try:
            async with self._database.transaction() as session:
                await import_jobs.mark_running(session, job_id)
            with path.open("rb") as file:
                report = await import_contacts(
                    self._database,
                    actor,
                    file,
                    options,
                    on_progress=progress.update,
                    checked=checked,
                )
        except asyncio.CancelledError:
            await self._fail(job_id, "the service stopped", progress.latest)
            raise
        except VoiceCRMError as error:
            await self._fail(job_id, error.detail, progress.latest)
        except Exception as error:
            log.exception("import %s failed", job_id)
            message = "; ".join(
                [str(error) or type(error).__name__, *getattr(error, "__notes__", [])]
            )
            await self._fail(job_id, message, progress.latest)
        else:
            async with self._database.transaction() as session:
                await import_jobs.finish(session, job_id, report)
        finally:
            await cancel_and_wait(beating)
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def _fail(self, job_id: int, message: str, report: ImportReport | None) -> None:
        try:
            async with self._database.transaction() as session:
                await import_jobs.fail(session, job_id, message, report)
        except Exception:  # the database itself is gone: the heartbeat will tell
            log.exception("import %s: could not record its end", job_id)

    async def _beat(self, job_id: int, progress: _Progress) -> None:
        heartbeat = import_jobs.HEARTBEAT.total_seconds()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(heartbeat):
                    await progress.changed.wait()
            progress.changed.clear()
            written = time.monotonic()
            report = progress.latest
            async with self._database.transaction() as session:
                if report is not None:
                    await import_jobs.record_progress(session, job_id, report)
                else:
                    await import_jobs.record_alive(session, job_id)
            await asyncio.sleep(max(0.0, written + MIN_PROGRESS_INTERVAL - time.monotonic()))


class _Progress:
    """The newest report the importer gave, and a flag that it changed."""

    def __init__(self) -> None:
        self.latest: ImportReport | None = None
        self.changed = asyncio.Event()

    def update(self, report: ImportReport) -> None:
        self.latest = report.model_copy()
        self.changed.set()
