"""Contacts as CSV: streamed exports (a filter or a selection) and imports with a report.

Exports are written to the response a batch at a time inside one read-only
transaction, so their memory does not grow with the number of contacts and, on
SQLite, they never hold the write lock that calls need. `bom=true` starts the
file with a UTF-8 byte-order mark, which Excel needs to read accented names; it
is opt-in because other programs reading the CSV do not expect one.

An import's body is streamed from the socket to a temporary file (never read
into memory; refused with 413 past the size limit), then imported from there:
the importer reads the file twice (a quick check that refuses a bad file before
writing anything, then the import) and commits a batch at a time, which is why
the route owns its transactions. A large file's rows are read (phone numbers
parsed) by worker processes, so the event loop keeps serving calls meanwhile.
The answer is the import report; row errors are in it, not in the status, which
is 200 whenever the file could be read. The request stays open until the import
ends: tens of seconds per 100,000 rows on a small machine.
"""

from __future__ import annotations

import codecs
import json
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import date
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from voicecrm.api.routing import Ctx, Route
from voicecrm.crm.bulk import Selection
from voicecrm.crm.csv_export import export_csv
from voicecrm.crm.csv_import import (
    ImportOptions,
    ImportReport,
    OnMatch,
    import_contacts,
    suggested_workers,
)
from voicecrm.crm.search import ContactFilter
from voicecrm.errors import InvalidInput

# The composition root may set this from `Settings.max_import_bytes`; this is its default.
MAX_IMPORT_BYTES = web.AppKey("csv_max_import_bytes", int)
DEFAULT_MAX_IMPORT_BYTES = 512 * 1_048_576
CSV_TYPES = ("text/csv", "application/csv", "text/plain")
_CHUNK = 256 * 1024
CSV_BODY = {"text/csv": {"schema": {"type": "string"}}}


_BOM = (
    "Start the file with a UTF-8 byte-order mark, so that Excel opens it as UTF-8 and "
    "shows accented names right; importing the file back reads it either way."
)


class ExportFormat(BaseModel):
    """How an export's file is written, whichever contacts it holds."""

    model_config = ConfigDict(extra="forbid")
    bom: bool = Field(False, description=_BOM)


class ExportQuery(ContactFilter):
    """The filter of a `GET` export, with its format beside it in the same query string."""

    bom: bool = Field(False, description=_BOM)

    def contact_filter(self) -> ContactFilter:
        return ContactFilter.model_validate(self.model_dump(exclude={"bom"}, exclude_unset=True))


class ImportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dry_run: bool = Field(False, description="Report what would happen; write nothing.")
    on_match: OnMatch = Field(
        OnMatch.UPDATE,
        description="What to do with a row whose phone or email belongs to a contact: "
        "update it (empty cells change nothing) or skip the row.",
    )
    # aiohttp refuses request lines over 8190 bytes, and a character may take 12 once
    # percent-encoded: these limits keep the longest query they allow under that.
    mapping: str | None = Field(
        None,
        max_length=500,
        description='A JSON object from CSV column to field, e.g. {"Cell": "phone.mobile", '
        '"Notes": "ignore"}; columns not named are recognised by their header.',
    )
    file_name: str | None = Field(
        None, max_length=100, description="Recorded on each contact's timeline."
    )


def _mapping(raw: str | None) -> dict[str, str] | None:
    if raw is None:
        return None
    try:
        mapping: Any = json.loads(raw)
    except json.JSONDecodeError as err:
        raise InvalidInput(f"mapping is not JSON: {err}", field="mapping") from None
    if not isinstance(mapping, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
    ):
        raise InvalidInput(
            "mapping must be a JSON object of column names to field names", field="mapping"
        )
    return mapping


def _encoding(request: web.Request) -> str:
    if request.content_type not in CSV_TYPES:
        raise web.HTTPUnsupportedMediaType(
            text=f"send the CSV as text/csv (got {request.content_type or 'no content type'})"
        )
    charset = request.charset or "utf-8"
    try:
        name = codecs.lookup(charset).name
    except LookupError:
        raise web.HTTPUnsupportedMediaType(text=f"unknown charset {charset!r}") from None
    return "utf-8-sig" if name == "utf-8" else name


async def spool_body(request: web.Request, into: Any, limit: int) -> None:
    """Copy the body to `into` as it arrives, refusing it once it passes `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    size = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        into.write(chunk)
    if size == 0:
        raise InvalidInput("the body is empty: send the CSV file as the body", field="body")


def import_options(request: web.Request, query: ImportQuery) -> ImportOptions:
    """The options an import request asks for: query, content type and charset."""
    return ImportOptions(
        on_match=query.on_match,
        dry_run=query.dry_run,
        mapping=_mapping(query.mapping),
        encoding=_encoding(request),
        file_name=query.file_name,
    )


async def import_csv(ctx: Ctx) -> ImportReport:
    options = import_options(ctx.request, ctx.query(ImportQuery))
    assert ctx.database is not None
    limit = ctx.request.config_dict.get(MAX_IMPORT_BYTES, DEFAULT_MAX_IMPORT_BYTES)
    with tempfile.TemporaryFile(prefix="voicecrm-import-") as spool:
        await spool_body(ctx.request, spool, limit)
        options = replace(options, workers=suggested_workers(spool.tell()))
        return await import_contacts(ctx.database, ctx.actor, spool, options)


async def _stream(ctx: Ctx, selection: Selection, *, bom: bool) -> web.StreamResponse:
    chunks: AsyncIterator[str] = export_csv(ctx.session, ctx.actor, selection, bom=bom)
    # The first batch is read before the response starts, so that a bad filter is
    # still answered with a problem document rather than a cut-off CSV.
    head = await anext(chunks)
    first = await anext(chunks, "")
    response = web.StreamResponse(
        headers={
            "Content-Disposition": f'attachment; filename="contacts-{date.today()}.csv"',
            "Cache-Control": "no-store",
        }
    )
    response.content_type = "text/csv"
    response.charset = "utf-8"
    await response.prepare(ctx.request)
    await response.write((head + first).encode())
    async for chunk in chunks:
        await response.write(chunk.encode())
    await response.write_eof()
    return response


async def export_filtered(ctx: Ctx) -> web.StreamResponse:
    query = ctx.query(ExportQuery)
    return await _stream(ctx, Selection(filter=query.contact_filter()), bom=query.bom)


async def export_selection(ctx: Ctx) -> web.StreamResponse:
    return await _stream(ctx, ctx.body(Selection), bom=ctx.query(ExportFormat).bom)


ROUTES = [
    Route(
        "GET",
        "/contacts/export.csv",
        export_filtered,
        "Export the contacts a filter matches as CSV (streamed)",
        "csv",
        query=ExportQuery,
        response_content=CSV_BODY,
        read_only=True,
        description="Columns: id, name, company, type, phones, emails, tags, stage, status, "
        "rating, source, responsible, caller_id_name, carrier, blocked, custom_fields, notes, "
        "created_at, updated_at. Phones and emails are `label: value; label: value`; "
        "custom fields one JSON object; notes one JSON array, oldest first, of "
        '`{"type", "pinned", "content", "created_at"}`. Importing the file gives the same '
        "contacts back, with their notes (dated by the import). "
        "UTF-8 without a byte-order mark unless `bom=true` (for Excel).",
    ),
    Route(
        "POST",
        "/contacts/export",
        export_selection,
        "Export a selection (ids or a filter) as CSV (streamed)",
        "csv",
        body=Selection,
        query=ExportFormat,
        response_content=CSV_BODY,
        read_only=True,
        description="The columns of `GET /contacts/export.csv`. UTF-8 without a byte-order "
        "mark unless `bom=true` (for Excel).",
    ),
    Route(
        "POST",
        "/contacts/import",
        import_csv,
        "Import contacts from a CSV body (Google Contacts, Outlook, voicecrm or mapped)",
        "csv",
        query=ImportQuery,
        request_content=CSV_BODY,
        response=ImportReport,
        admin_only=True,
        own_transaction=True,
        errors=(403, 413, 415),
        description="Rows are matched to existing contacts by phone, then email. A file "
        "that cannot be read is refused (422) before anything is written; row errors are "
        "listed in the report with their row and line numbers, and the other rows imported. "
        "Batches are committed as they go. A notes column (Google's and Outlook's "
        '"Notes") adds a General note to the contact, unless it has one with the same text; '
        "a notes cell holding a JSON array of notes, as the export writes them, adds those "
        "notes with their types.",
    ),
]
