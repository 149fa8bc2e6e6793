"""Background imports: 202 at once, then the job's progress and report from any instance."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.api.conftest import Api
from tests.conftest import TeamWorld, make_team
from voicecrm.api.resources.imports import IMPORTS
from voicecrm.crm import import_jobs
from voicecrm.storage import Database

GOOGLE = (Path(__file__).parent.parent / "fixtures" / "csv" / "google.csv").read_bytes()


async def start(api: Api, body: bytes, **params: str) -> tuple[int, Any, str | None]:
    response = await api.client.post(
        "/api/v1/imports",
        data=body,
        params=params,
        headers={**api.headers(), "Content-Type": "text/csv"},
    )
    return response.status, await response.json(content_type=None), response.headers.get("Location")


async def finished(api: Api) -> None:
    """The runner's jobs have ended: awaited, never polled."""
    await api.client.app[IMPORTS].wait()


async def test_a_background_import_ends_with_the_same_report_as_a_direct_one(api: Api) -> None:
    status, job, location = await start(api, GOOGLE, file_name="google.csv")
    assert status == 202, job
    assert job["status"] in ("queued", "running") and job["report"] is None
    assert location == f"/api/v1/imports/{job['id']}"

    await finished(api)
    status, done = await api.get(f"/imports/{job['id']}")
    assert status == 200
    assert done["status"] == "done" and done["error"] is None
    assert (done["rows"], done["total_rows"], done["file_name"]) == (4, 4, "google.csv")
    report = done["report"]
    assert (report["created"], report["failed"], report["errors"][0]["row"]) == (3, 1, 3)
    _, page = await api.get("/contacts", sort="name")
    assert [c["name"] for c in page["items"]] == ["Jane Roe", "Kim Lee", "Only Email"]
    _, recent = await api.get("/imports")
    assert [j["id"] for j in recent["items"]] == [job["id"]]


async def test_a_file_that_cannot_be_read_is_refused_before_a_job_exists(api: Api) -> None:
    for body in (b"[{}, []]", "Name,Phone\nJos\u00e9,+14155550123\n".encode("utf-16")):
        status, problem, location = await start(api, body)
        assert status == 422, problem
        assert problem["detail"] and location is None
    assert (await api.get("/imports"))[1] == {"items": []}


async def test_a_dry_run_job_writes_nothing(api: Api) -> None:
    _, job, _ = await start(api, GOOGLE, dry_run="true")
    await finished(api)
    _, done = await api.get(f"/imports/{job['id']}")
    assert done["status"] == "done" and done["dry_run"] and done["report"]["created"] == 3
    _, page = await api.get("/contacts")
    assert page["items"] == []


async def test_only_the_teams_admins_see_its_imports(
    api: Api, agent_api: Api, database: Database
) -> None:
    _, job, _ = await start(api, GOOGLE)
    await finished(api)
    other = api.as_((await make_team(database, "Other")).admin_token)
    assert (await agent_api.get(f"/imports/{job['id']}"))[0] == 403
    assert (await start(agent_api, GOOGLE))[0] == 403
    assert (await other.get(f"/imports/{job['id']}"))[0] == 404
    assert (await other.get("/imports"))[1] == {"items": []}
    assert (await api.get("/imports/99999999"))[0] == 404


async def test_a_job_whose_instance_went_silent_reads_as_interrupted(
    api: Api, database: Database, world: TeamWorld
) -> None:
    _, job, _ = await start(api, GOOGLE)
    await finished(api)
    async with database.transaction() as session:
        row = await import_jobs.get_job(session, world.admin, job["id"])
        row.status = "running"
    beat = row.heartbeat_at
    assert import_jobs.view(row, now=beat + import_jobs.STALE_AFTER).status == "running"
    late = beat + import_jobs.STALE_AFTER + timedelta(seconds=1)
    assert import_jobs.view(row, now=late).status == "interrupted"
