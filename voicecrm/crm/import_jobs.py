"""Background CSV imports as the API sees them: a row per job, readable from any instance.

A million-row import takes about a minute, longer than proxies and clients
like to hold a request open, so the API can hand it to a job: the file is kept,
the job row is created, and the answer (202) names the job. The instance that
accepted it runs it and writes its progress into the row; every instance reads
the row. If that instance dies, nothing else will finish the job: its heartbeat
stops, and the job reads as `interrupted` (the rows committed before the stop
stay imported; running the file again matches them instead of duplicating them).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.actor import Actor
from voicecrm.crm.csv_import import ImportReport
from voicecrm.crm.models import ImportJob
from voicecrm.errors import NotFound
from voicecrm.storage import MAX_ID, utcnow

# The running instance writes at least this often; twice as long without a word, and
# the job is taken for dead.
HEARTBEAT = timedelta(seconds=10)
STALE_AFTER = HEARTBEAT * 6


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class ImportJobOut(BaseModel):
    id: int
    status: JobStatus = Field(
        description="queued, running, done, failed, or interrupted (the instance running "
        "it stopped; the rows it committed stay imported, importing the file again "
        "matches them)."
    )
    file_name: str | None
    dry_run: bool
    rows: int = Field(description="Rows processed so far.")
    total_rows: int | None = Field(description="Data rows in the file, once it was read.")
    report: ImportReport | None = Field(description="The import's report, once it ended.")
    error: str | None = Field(description="Why the import stopped, if it failed.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def view(job: ImportJob, now: datetime | None = None) -> ImportJobOut:
    status = JobStatus(job.status)
    unfinished = status in (JobStatus.QUEUED, JobStatus.RUNNING)
    if unfinished and (now or utcnow()) - job.heartbeat_at > STALE_AFTER:
        status = JobStatus.INTERRUPTED
    return ImportJobOut(
        id=job.id,
        status=status,
        file_name=job.file_name,
        dry_run=job.dry_run,
        rows=job.rows,
        total_rows=job.total_rows,
        report=ImportReport.model_validate(job.report) if job.report is not None else None,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


async def create_job(
    session: AsyncSession, actor: Actor, *, file_name: str | None, dry_run: bool
) -> ImportJob:
    actor.require_admin()
    job = ImportJob(
        team_id=actor.team_id,
        user_id=actor.user_id,
        file_name=file_name,
        dry_run=dry_run,
        status=JobStatus.QUEUED.value,
        rows=0,
        heartbeat_at=utcnow(),
        created_at=utcnow(),
    )
    session.add(job)
    await session.flush()
    return job


async def get_job(session: AsyncSession, actor: Actor, job_id: int) -> ImportJob:
    """Imports are an admin's tool; another team's job is as absent as a missing one."""
    actor.require_admin()
    job = await session.get(ImportJob, job_id) if 0 < job_id <= MAX_ID else None
    if job is None or job.team_id != actor.team_id:
        raise NotFound(f"import {job_id} does not exist")
    return job


async def recent_jobs(session: AsyncSession, actor: Actor, limit: int = 20) -> list[ImportJob]:
    actor.require_admin()
    query = (
        select(ImportJob)
        .where(ImportJob.team_id == actor.team_id)
        .order_by(ImportJob.id.desc())
        .limit(limit)
    )
    return list(await session.scalars(query))


async def _set(session: AsyncSession, job_id: int, **values: Any) -> None:
    await session.execute(
        update(ImportJob).where(ImportJob.id == job_id).values(heartbeat_at=utcnow(), **values)
    )


async def mark_running(session: AsyncSession, job_id: int) -> None:
    await _set(session, job_id, status=JobStatus.RUNNING.value, started_at=utcnow())


async def record_alive(session: AsyncSession, job_id: int) -> None:
    await _set(session, job_id)


async def record_progress(session: AsyncSession, job_id: int, report: ImportReport) -> None:
    await _set(session, job_id, rows=report.rows, total_rows=report.total_rows)


async def finish(session: AsyncSession, job_id: int, report: ImportReport) -> None:
    await _set(
        session,
        job_id,
        status=JobStatus.DONE.value,
        rows=report.rows,
        total_rows=report.total_rows,
        report=report.model_dump(mode="json"),
        finished_at=utcnow(),
    )


async def fail(
    session: AsyncSession, job_id: int, error: str, report: ImportReport | None = None
) -> None:
    """`report`: what the import did before it stopped (its committed batches stay)."""
    await _set(
        session,
        job_id,
        status=JobStatus.FAILED.value,
        error=error[:2000],
        report=report.model_dump(mode="json") if report is not None else None,
        finished_at=utcnow(),
    )
