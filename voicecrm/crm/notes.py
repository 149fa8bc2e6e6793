"""Notes on a contact: the receptionist's and the team's written memory of a person."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.actor import Actor
from voicecrm.crm import timeline
from voicecrm.crm.contacts import get_contact
from voicecrm.crm.models import Note
from voicecrm.crm.schemas import NoteIn, NoteOut, NoteType, NoteUpdate
from voicecrm.errors import NotFound
from voicecrm.storage import utcnow


def note_out(note: Note) -> NoteOut:
    return NoteOut(
        id=note.id,
        contact_id=note.contact_id,
        type=NoteType(note.type),
        content=note.content,
        pinned=note.pinned,
        author_user_id=note.author_user_id,
        created_at=note.created_at,
        updated_at=note.updated_at,
    )


async def add_note(session: AsyncSession, actor: Actor, contact_id: int, data: NoteIn) -> Note:
    # Locked, so that a merge deleting this contact meanwhile makes this a NotFound rather
    # than a foreign-key failure at INSERT (PostgreSQL; SQLite serialises writers anyway).
    contact = await get_contact(session, actor, contact_id, for_update=True)
    now = utcnow()
    note = Note(
        team_id=actor.team_id,
        contact_id=contact.id,
        author_user_id=actor.user_id,
        type=data.type.value,
        content=data.content,
        pinned=data.pinned,
        created_at=now,
        updated_at=now,
    )
    session.add(note)
    await session.flush()
    await timeline.append(
        session,
        actor,
        contact.id,
        "note_added",
        timeline.NoteEvent(note_id=note.id, type=note.type, content=note.content),
    )
    contact.updated_at = now
    return note


async def list_notes(session: AsyncSession, actor: Actor, contact_id: int) -> list[Note]:
    """Pinned notes first, then newest first."""
    await get_contact(session, actor, contact_id)
    return list(
        await session.scalars(
            select(Note)
            .where(Note.contact_id == contact_id)
            .order_by(Note.pinned.desc(), Note.id.desc())
        )
    )


async def get_note(session: AsyncSession, actor: Actor, note_id: int) -> Note:
    note = await session.get(Note, note_id)
    if note is None or note.team_id != actor.team_id:
        raise NotFound(f"note {note_id} does not exist")
    await get_contact(session, actor, note.contact_id)  # the contact's visibility rules apply
    return note


async def _note_to_change(session: AsyncSession, actor: Actor, note_id: int) -> Note:
    """The note, with its contact's row locked, following the note if a merge moves it.

    The contact is locked before the note, in the order a merge takes them, so the two
    cannot deadlock. A merge committed while we waited for the lock has moved the note to
    the survivor: look again where it is now, rather than refuse an edit of a note that
    still exists.
    """
    locked: int | None = None
    while True:
        current = await session.scalar(
            select(Note.contact_id).where(Note.id == note_id, Note.team_id == actor.team_id)
        )
        if current is None or current == locked:
            raise NotFound(f"note {note_id} does not exist")
        locked = current
        try:
            await get_contact(session, actor, current, for_update=True)
        except NotFound:
            continue  # merged away meanwhile (the note moved), or not visible (it did not)
        note = (
            await session.scalars(
                select(Note).where(Note.id == note_id).execution_options(populate_existing=True)
            )
        ).first()
        if note is not None and note.contact_id == current:
            return note


async def edit_note(session: AsyncSession, actor: Actor, note_id: int, data: NoteUpdate) -> Note:
    note = await _note_to_change(session, actor, note_id)
    if data.content is not None:
        note.content = data.content
    if data.type is not None:
        note.type = data.type.value
    if data.pinned is not None:
        note.pinned = data.pinned
    note.updated_at = utcnow()
    await timeline.append(
        session,
        actor,
        note.contact_id,
        "note_edited",
        timeline.NoteEvent(note_id=note.id, type=note.type, content=note.content),
    )
    return note


async def delete_note(session: AsyncSession, actor: Actor, note_id: int) -> None:
    note = await _note_to_change(session, actor, note_id)
    await session.delete(note)
    await timeline.append(
        session, actor, note.contact_id, "note_deleted", timeline.NoteDeleted(note_id=note_id)
    )
