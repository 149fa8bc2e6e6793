"""Notes on a contact: content, a type, pinned or not, an author; added, edited and deleted
with each step on the contact's timeline."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError
from sqlalchemy import func, select

from tests.conftest import TeamWorld, make_team
from voicecrm.accounts.actor import Actor
from voicecrm.crm import contacts, notes, timeline
from voicecrm.crm.models import Note
from voicecrm.crm.schemas import ContactCreate, NoteIn, NoteType, NoteUpdate
from voicecrm.errors import NotFound
from voicecrm.storage import Database


async def new_contact(
    database: Database, actor: Actor, name: str = "Jane Roe", responsible_user_id: int | None = None
) -> int:
    async with database.transaction() as session:
        contact = await contacts.create_contact(
            session, actor, ContactCreate(name=name, responsible_user_id=responsible_user_id)
        )
        return contact.id


async def add(
    database: Database,
    actor: Actor,
    contact_id: int,
    content: str,
    type: NoteType = NoteType.GENERAL,
    pinned: bool = False,
) -> int:
    async with database.transaction() as session:
        note = await notes.add_note(
            session, actor, contact_id, NoteIn(content=content, type=type, pinned=pinned)
        )
        return note.id


async def events(database: Database, contact_id: int) -> list[tuple[str, dict[str, object]]]:
    async with database.transaction(read_only=True) as session:
        page = await timeline.page(
            session, contact_id, kinds=["note_added", "note_edited", "note_deleted"]
        )
        return [(e.kind, e.data) for e in page.events]


def restricted(actor: Actor) -> Actor:
    """The same agent in a team that shows agents only their own contacts."""
    team = dataclasses.replace(actor.team, agents_see_own_contacts_only=True)
    return dataclasses.replace(actor, team=team)


async def test_a_note_keeps_its_content_type_pin_and_author(
    database: Database, world: TeamWorld
) -> None:
    contact_id = await new_contact(database, world.admin)
    note_id = await add(
        database, world.agent, contact_id, "  Prefers email  ", NoteType.INFO, pinned=True
    )
    async with database.transaction(read_only=True) as session:
        note = notes.note_out(await notes.get_note(session, world.admin, note_id))
    assert (note.contact_id, note.content, note.type, note.pinned, note.author_user_id) == (
        contact_id,
        "Prefers email",
        NoteType.INFO,
        True,
        world.agent.user_id,
    )
    assert note.created_at == note.updated_at


async def test_the_note_types_are_general_info_warning_and_danger(
    database: Database, world: TeamWorld
) -> None:
    assert [t.value for t in NoteType] == ["general", "info", "warning", "danger"]
    contact_id = await new_contact(database, world.admin)
    for type in NoteType:
        await add(database, world.admin, contact_id, f"a {type.value} note", type)
    async with database.transaction(read_only=True) as session:
        stored = {n.type for n in await notes.list_notes(session, world.admin, contact_id)}
    assert stored == {"general", "info", "warning", "danger"}


def test_a_note_needs_content_and_a_known_type() -> None:
    for bad in (
        {"content": ""},
        {"content": "   "},
        {"content": "x", "type": "urgent"},
        {"content": "x" * 10_001},
        {"content": "x", "author_user_id": 1},
    ):
        with pytest.raises(ValidationError):
            NoteIn.model_validate(bad)
    assert NoteIn.model_validate({"content": "x"}).type is NoteType.GENERAL


async def test_adding_editing_and_deleting_a_note_is_recorded_on_the_timeline(
    database: Database, world: TeamWorld
) -> None:
    contact_id = await new_contact(database, world.admin)
    note_id = await add(database, world.agent, contact_id, "Called about invoice")
    async with database.transaction() as session:
        await notes.edit_note(
            session,
            world.admin,
            note_id,
            NoteUpdate(content="Called about invoice 42", type=NoteType.WARNING),
        )
    async with database.transaction() as session:
        await notes.delete_note(session, world.admin, note_id)
    assert await events(database, contact_id) == [
        ("note_deleted", {"note_id": note_id}),
        (
            "note_edited",
            {"note_id": note_id, "type": "warning", "content": "Called about invoice 42"},
        ),
        ("note_added", {"note_id": note_id, "type": "general", "content": "Called about invoice"}),
    ]
    async with database.transaction(read_only=True) as session:
        assert await session.get(Note, note_id) is None
        page = await timeline.page(session, contact_id, kinds=["note_added"])
    assert page.events[0].actor_user_id == world.agent.user_id


async def test_editing_changes_only_what_is_given(database: Database, world: TeamWorld) -> None:
    contact_id = await new_contact(database, world.admin)
    note_id = await add(database, world.admin, contact_id, "Keep me", NoteType.DANGER)
    async with database.transaction() as session:
        edited = await notes.edit_note(session, world.admin, note_id, NoteUpdate(pinned=True))
    assert (edited.content, edited.type, edited.pinned) == ("Keep me", "danger", True)
    assert edited.updated_at >= edited.created_at
    assert edited.author_user_id == world.admin.user_id


async def test_notes_are_listed_pinned_first_then_newest_first(
    database: Database, world: TeamWorld
) -> None:
    contact_id = await new_contact(database, world.admin)
    first = await add(database, world.admin, contact_id, "first")
    pinned_old = await add(database, world.admin, contact_id, "pinned old", pinned=True)
    second = await add(database, world.admin, contact_id, "second")
    pinned_new = await add(database, world.admin, contact_id, "pinned new", pinned=True)
    async with database.transaction(read_only=True) as session:
        listed = [n.id for n in await notes.list_notes(session, world.admin, contact_id)]
    assert listed == [pinned_new, pinned_old, second, first]


async def test_a_contacts_notes_are_its_own(database: Database, world: TeamWorld) -> None:
    jane = await new_contact(database, world.admin, "Jane")
    john = await new_contact(database, world.admin, "John")
    await add(database, world.admin, jane, "about Jane")
    async with database.transaction(read_only=True) as session:
        assert await notes.list_notes(session, world.admin, john) == []


async def test_a_note_needs_a_contact_the_author_can_see(
    database: Database, world: TeamWorld
) -> None:
    with pytest.raises(NotFound, match="contact 999999 does not exist"):
        await add(database, world.admin, 999_999, "nobody")
    others = await make_team(database, "Other")
    theirs = await new_contact(database, others.admin, "Theirs")
    with pytest.raises(NotFound):
        await add(database, world.admin, theirs, "sneaky")
    async with database.transaction(read_only=True) as session:
        assert await session.scalar(select(func.count()).select_from(Note)) == 0


async def test_another_teams_notes_cannot_be_read_edited_or_deleted(
    database: Database, world: TeamWorld
) -> None:
    others = await make_team(database, "Other")
    theirs = await new_contact(database, others.admin, "Theirs")
    note_id = await add(database, others.admin, theirs, "private")
    for attempt in (
        lambda s: notes.get_note(s, world.admin, note_id),
        lambda s: notes.edit_note(s, world.admin, note_id, NoteUpdate(content="mine")),
        lambda s: notes.delete_note(s, world.admin, note_id),
        lambda s: notes.list_notes(s, world.admin, theirs),
    ):
        with pytest.raises(NotFound):
            async with database.transaction() as session:
                await attempt(session)
    async with database.transaction(read_only=True) as session:
        note = await session.get(Note, note_id)
    assert note is not None and note.content == "private"


async def test_an_agent_who_sees_only_their_contacts_sees_only_their_contacts_notes(
    database: Database, world: TeamWorld
) -> None:
    agent = restricted(world.agent)
    mine = await new_contact(database, world.admin, "Mine", responsible_user_id=world.agent.user_id)
    not_mine = await new_contact(database, world.admin, "Not mine")
    my_note = await add(database, world.admin, mine, "visible")
    other_note = await add(database, world.admin, not_mine, "hidden")
    async with database.transaction(read_only=True) as session:
        assert [n.id for n in await notes.list_notes(session, agent, mine)] == [my_note]
        with pytest.raises(NotFound):
            await notes.get_note(session, agent, other_note)
        with pytest.raises(NotFound):
            await notes.list_notes(session, agent, not_mine)
    with pytest.raises(NotFound):
        await add(database, agent, not_mine, "no")


async def test_deleting_a_contact_deletes_its_notes(database: Database, world: TeamWorld) -> None:
    contact_id = await new_contact(database, world.admin)
    await add(database, world.admin, contact_id, "bye")
    async with database.transaction() as session:
        assert await contacts.delete_contacts(session, world.admin, [contact_id]) == 1
    async with database.transaction(read_only=True) as session:
        assert await session.scalar(select(func.count()).select_from(Note)) == 0
