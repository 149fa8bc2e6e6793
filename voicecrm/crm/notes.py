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
    contact = await get_contact(session, actor, contact_id)
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


async def edit_note(session: AsyncSession, actor: Actor, note_id: int, data: NoteUpdate) -> Note:
    note = await get_note(session, actor, note_id)
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
    note = await get_note(session, actor, note_id)
    await session.delete(note)
    await timeline.append(
        session, actor, note.contact_id, "note_deleted", timeline.NoteDeleted(note_id=note_id)
    )
