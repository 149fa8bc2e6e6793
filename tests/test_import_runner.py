"""The background import runner: every job ends recorded, whatever stops it."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import TeamWorld
from voicecrm.crm import import_jobs
from voicecrm.crm.csv_import import ImportOptions
from voicecrm.crm.import_runner import ImportRunner
from voicecrm.storage import Database


async def new_job(database: Database, world: TeamWorld) -> int:
    async with database.transaction() as session:
        job = await import_jobs.create_job(session, world.admin, file_name="x.csv", dry_run=False)
    return job.id


async def status_of(database: Database, world: TeamWorld, job_id: int) -> import_jobs.ImportJobOut:
    async with database.transaction(read_only=True) as session:
        return import_jobs.view(await import_jobs.get_job(session, world.admin, job_id))


async def test_a_job_that_breaks_ends_as_failed_with_the_reason(
    database: Database, world: TeamWorld, tmp_path: Path
) -> None:
    runner = ImportRunner(database)
    job_id = await new_job(database, world)
    runner.start(world.admin, job_id, tmp_path / "gone.csv", ImportOptions())
    await runner.wait()
    job = await status_of(database, world, job_id)
    assert job.status == "failed" and job.error and "gone.csv" in job.error
    assert job.finished_at is not None
    await runner.close()


async def test_closing_the_runner_stops_its_jobs_and_says_so(
    database: Database, world: TeamWorld, tmp_path: Path
) -> None:
    spooled = tmp_path / "contacts.csv"
    spooled.write_text("Name,Phone\n" + "".join(f"P{i},+1415555{i:04d}\n" for i in range(50)))
    runner = ImportRunner(database)
    job_id = await new_job(database, world)
    runner.start(world.admin, job_id, spooled, ImportOptions(batch_size=1))
    await runner.close()
    job = await status_of(database, world, job_id)
    assert (job.status, job.error) == ("failed", "the service stopped")
    assert not spooled.exists()
