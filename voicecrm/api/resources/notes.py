"""Notes on contacts: General, Info, Warning and Danger."""

from __future__ import annotations

from pydantic import BaseModel

from voicecrm.api.routing import Ctx, Route
from voicecrm.crm import notes as service
from voicecrm.crm.schemas import NoteIn, NoteOut, NoteUpdate


class NoteList(BaseModel):
    items: list[NoteOut]


async def list_notes(ctx: Ctx) -> NoteList:
    notes = await service.list_notes(ctx.session, ctx.actor, ctx.path_id("contact_id"))
    return NoteList(items=[service.note_out(n) for n in notes])


async def add_note(ctx: Ctx) -> NoteOut:
    note = await service.add_note(
        ctx.session, ctx.actor, ctx.path_id("contact_id"), ctx.body(NoteIn)
    )
    return service.note_out(note)


async def get_note(ctx: Ctx) -> NoteOut:
    return service.note_out(await service.get_note(ctx.session, ctx.actor, ctx.path_id("note_id")))


async def edit_note(ctx: Ctx) -> NoteOut:
    note = await service.edit_note(
        ctx.session, ctx.actor, ctx.path_id("note_id"), ctx.body(NoteUpdate)
    )
    return service.note_out(note)


async def delete_note(ctx: Ctx) -> None:
    await service.delete_note(ctx.session, ctx.actor, ctx.path_id("note_id"))


ROUTES = [
    Route(
        "GET",
        "/contacts/{contact_id}/notes",
        list_notes,
        "A contact's notes, pinned first, then newest",
        "notes",
        response=NoteList,
        read_only=True,
    ),
    Route(
        "POST",
        "/contacts/{contact_id}/notes",
        add_note,
        "Add a note to a contact",
        "notes",
        body=NoteIn,
        response=NoteOut,
        status=201,
    ),
    Route(
        "GET", "/notes/{note_id}", get_note, "One note", "notes", response=NoteOut, read_only=True
    ),
    Route(
        "PATCH",
        "/notes/{note_id}",
        edit_note,
        "Edit a note",
        "notes",
        body=NoteUpdate,
        response=NoteOut,
    ),
    Route("DELETE", "/notes/{note_id}", delete_note, "Delete a note", "notes", status=204),
]
