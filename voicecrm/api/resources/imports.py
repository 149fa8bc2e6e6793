"""CSV imports run in the background: `POST /imports` answers 202 at once, with the job.

For files too big to import inside one request (a million rows take about a
minute; proxies give up sooner). The body is spooled to a file as it arrives,
exactly as for `POST /contacts/import`, then the job is created and this
instance runs it (`ImportRunner`); `GET /imports/{id}`, on any instance, says
how far it is and, at the end, gives the same report the synchronous route
answers with.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from aiohttp import web
from pydantic import BaseModel, Field

from voicecrm.api.resources.csv_io import (
    CSV_BODY,
    DEFAULT_MAX_IMPORT_BYTES,
    MAX_IMPORT_BYTES,
    ImportQuery,
    import_options,
    spool_body,
)
from voicecrm.api.routing import Ctx, Route
from voicecrm.crm import import_jobs
from voicecrm.crm.csv_import import check_file, suggested_workers
from voicecrm.crm.import_runner import ImportRunner

IMPORTS = web.AppKey("imports", ImportRunner)


class RecentImports(BaseModel):
    limit: int = Field(20, ge=1, le=100)


class ImportList(BaseModel):
    items: list[import_jobs.ImportJobOut]


async def start_import(ctx: Ctx) -> web.StreamResponse:
    options = import_options(ctx.request, ctx.query(ImportQuery))
    assert ctx.database is not None
    runner = ctx.request.config_dict[IMPORTS]
    limit = ctx.request.config_dict.get(MAX_IMPORT_BYTES, DEFAULT_MAX_IMPORT_BYTES)
    handle, name = tempfile.mkstemp(prefix="voicecrm-import-", suffix=".csv")
    path = Path(name)
    try:
        with os.fdopen(handle, "w+b") as spool:
            await spool_body(ctx.request, spool, limit)
            size = spool.tell()
            checked = await check_file(spool, options)  # an unreadable file: 422, no job
        async with ctx.database.transaction() as session:
            job = await import_jobs.create_job(
                session, ctx.actor, file_name=options.file_name, dry_run=options.dry_run
            )
            view = import_jobs.view(job)
        options = replace(options, workers=suggested_workers(size))
        runner.start(ctx.actor, job.id, path, options, checked)
    except BaseException:
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise
    return web.Response(
        status=202,
        text=view.model_dump_json(),
        content_type="application/json",
        headers={"Location": f"{ctx.request.path.rstrip('/')}/{job.id}"},
    )


async def get_import(ctx: Ctx) -> import_jobs.ImportJobOut:
    job = await import_jobs.get_job(ctx.session, ctx.actor, ctx.path_id("import_id"))
    return import_jobs.view(job)


async def list_imports(ctx: Ctx) -> ImportList:
    jobs = await import_jobs.recent_jobs(ctx.session, ctx.actor, ctx.query(RecentImports).limit)
    return ImportList(items=[import_jobs.view(job) for job in jobs])


ROUTES = [
    Route(
        "POST",
        "/imports",
        start_import,
        "Start a CSV import in the background (202, the job; follow its Location)",
        "csv",
        query=ImportQuery,
        request_content=CSV_BODY,
        response=import_jobs.ImportJobOut,
        status=202,
        admin_only=True,
        own_transaction=True,
        errors=(403, 413, 415),
        description="The same file, options and rules as `POST /contacts/import`. A file "
        "that cannot be read is refused (422) before the job is created; row errors are in "
        "the job's report at the end.",
    ),
    Route(
        "GET",
        "/imports",
        list_imports,
        "The team's recent background imports, newest first",
        "csv",
        query=RecentImports,
        response=ImportList,
        admin_only=True,
        read_only=True,
    ),
    Route(
        "GET",
        "/imports/{import_id}",
        get_import,
        "A background import: its progress, then its report",
        "csv",
        response=import_jobs.ImportJobOut,
        admin_only=True,
        read_only=True,
        quick=True,
        errors=(404,),
    ),
]
