"""A contact's timeline: append-only, newest first, cursor-paginated, filterable by kind, and
open to kinds that later features register without touching `voicecrm.crm.timeline`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from tests.conftest import TeamWorld
from voicecrm.accounts.actor import Actor
from voicecrm.crm import contacts, notes, timeline
from voicecrm.crm.models import Contact, TimelineEvent
from voicecrm.crm.schemas import ContactCreate, ContactStatus, ContactUpdate, NoteIn
from voicecrm.errors import InvalidInput
from voicecrm.storage import Database


class Voicemail(timeline.EventData):
    """A kind from a feature the timeline module knows nothing about."""

    seconds: int
    transcript: str


class OtherVoicemail(timeline.EventData):
    seconds: int


async def new_contact(database: Database, actor: Actor, name: str = "Jane Roe") -> int:
    async with database.transaction() as session:
        return (await contacts.create_contact(session, actor, ContactCreate(name=name))).id


async def append(
    database: Database,
    actor: Actor,
    contact_id: int,
    kind: str,
    data: timeline.EventData | dict[str, object],
) -> None:
    async with database.transaction() as session:
        await timeline.append(session, actor, contact_id, kind, data)


async def kinds_of(database: Database, contact_id: int, **options: object) -> list[str]:
    async with database.transaction(read_only=True) as session:
        page = await timeline.page(session, contact_id, **options)  # type: ignore[arg-type]
        return [e.kind for e in page.events]


def test_every_kind_the_crm_records_is_registered() -> None:
    assert {
        "contact_created",
        "call",
        "note_added",
        "note_edited",
        "note_deleted",
        "stage_changed",
        "status_changed",
        "tags_changed",
        "merged",
        "imported",
    } <= set(timeline.registered_kinds())


async def test_a_new_contact_starts_its_timeline_with_contact_created(
    database: Database, world: TeamWorld
) -> None:
    contact_id = await new_contact(database, world.agent)
    async with database.transaction(read_only=True) as session:
        page = await timeline.page(session, contact_id)
    (event,) = page.events
    assert (event.kind, event.data, event.actor_user_id) == (
        "contact_created",
        {"name": "Jane Roe", "source": "manual"},
        world.agent.user_id,
    )
    assert event.occurred_at.tzinfo is not None and page.next_cursor is None


async def test_events_come_newest_first_a_page_at_a_time_each_exactly_once(
    database: Database, world: TeamWorld
) -> None:
    contact_id = await new_contact(database, world.admin)
    for i in range(10):
        async with database.transaction() as session:
            await notes.add_note(session, world.admin, contact_id, NoteIn(content=f"n{i}"))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        async with database.transaction(read_only=True) as session:
            page = await timeline.page(session, contact_id, limit=3, cursor=cursor)
        pages += 1
        seen += [str(e.data.get("content", e.kind)) for e in page.events]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"n{i}" for i in reversed(range(10))] + ["contact_created"]
    assert pages == 4


async def test_a_full_last_page_says_there_is_nothing_more(
    database: Database, world: TeamWorld
) -> None:
    contact_id = await new_contact(database, world.admin)
    await append(
        database,
        world.admin,
        contact_id,
        "status_changed",
        {"from_status": "open", "to_status": "won"},
    )
    async with database.transaction(read_only=True) as session:
        page = await timeline.page(session, contact_id, limit=2)
    assert len(page.events) == 2 and page.next_cursor is None


async def test_the_timeline_can_be_filtered_by_one_or_several_kinds(
    database: Database, world: TeamWorld
) -> None:
    contact_id = await new_contact(database, world.admin)
    async with database.transaction() as session:
        await notes.add_note(session, world.admin, contact_id, NoteIn(content="hello"))
        await contacts.update_contact(
            session, world.admin, contact_id, ContactUpdate(status=ContactStatus.WON)
        )
        contact = await contacts.get_contact(session, world.admin, contact_id)
        await contacts.add_tags(session, world.admin, contact, ["vip"])
    assert await kinds_of(database, contact_id) == [
        "tags_changed",
        "status_changed",
        "note_added",
        "contact_created",
    ]
    assert await kinds_of(database, contact_id, kinds=["note_added"]) == ["note_added"]
    assert await kinds_of(database, contact_id, kinds=["tags_changed", "contact_created"]) == [
        "tags_changed",
        "contact_created",
    ]
    assert await kinds_of(database, contact_id, kinds=["call"]) == []


async def test_a_filtered_walk_pages_through_only_that_kind(
    database: Database, world: TeamWorld
) -> None:
    contact_id = await new_contact(database, world.admin)
    for i in range(5):
        async with database.transaction() as session:
            await notes.add_note(session, world.admin, contact_id, NoteIn(content=f"n{i}"))
            contact = await contacts.get_contact(session, world.admin, contact_id)
            await contacts.add_tags(session, world.admin, contact, [f"t{i}"])
    async with database.transaction(read_only=True) as session:
        first = await timeline.page(session, contact_id, limit=3, kinds=["tags_changed"])
        second = await timeline.page(
            session, contact_id, limit=3, kinds=["tags_changed"], cursor=first.next_cursor
        )
    added = [e.data["added"] for e in first.events + second.events]
    assert added == [["t4"], ["t3"], ["t2"], ["t1"], ["t0"]]
    assert second.next_cursor is None


async def test_status_changes_are_recorded_including_a_reopen(
    database: Database, world: TeamWorld
) -> None:
    contact_id = await new_contact(database, world.admin)
    for status in (ContactStatus.WON, ContactStatus.WON, ContactStatus.OPEN, ContactStatus.LOST):
        async with database.transaction() as session:
            await contacts.update_contact(
                session, world.admin, contact_id, ContactUpdate(status=status)
            )
    async with database.transaction(read_only=True) as session:
        page = await timeline.page(session, contact_id, kinds=["status_changed"])
        contact = await session.get(Contact, contact_id)
    assert [e.data for e in page.events] == [
        {"from_status": "open", "to_status": "lost"},
        {"from_status": "won", "to_status": "open"},
        {"from_status": "open", "to_status": "won"},
    ]
    assert contact is not None and contact.status == "lost"


async def test_tag_changes_are_recorded_and_no_op_changes_are_not(
    database: Database, world: TeamWorld
) -> None:
    contact_id = await new_contact(database, world.admin)
    async with database.transaction() as session:
        contact = await contacts.get_contact(session, world.admin, contact_id)
        assert await contacts.add_tags(session, world.admin, contact, ["vip", "lead"]) == [
            "lead",
            "vip",
        ]
        assert await contacts.add_tags(session, world.admin, contact, ["vip"]) == []
        assert await contacts.remove_tags(session, world.admin, contact, ["lead", "gone"]) == [
            "lead"
        ]
        assert await contacts.remove_tags(session, world.admin, contact, ["gone"]) == []
    async with database.transaction(read_only=True) as session:
        page = await timeline.page(session, contact_id, kinds=["tags_changed"])
    assert [e.data for e in page.events] == [
        {"added": [], "removed": ["lead"]},
        {"added": ["lead", "vip"], "removed": []},
    ]


async def test_calls_and_imports_are_recorded_with_their_details(
    database: Database, world: TeamWorld
) -> None:
    contact_id = await new_contact(database, world.admin)
    call = timeline.CallEvent(
        call_id="CA1",
        direction="inbound",
        from_number="+14155550123",
        to_number="+14155550100",
        status="completed",
        duration_seconds=42,
    )
    await append(database, world.system, contact_id, "call", call)
    await append(
        database,
        world.system,
        contact_id,
        "imported",
        {"file": "leads.csv", "row": 7, "created": False},
    )
    async with database.transaction(read_only=True) as session:
        page = await timeline.page(session, contact_id, kinds=["call", "imported"])
    assert [(e.kind, e.data, e.actor_user_id) for e in page.events] == [
        ("imported", {"file": "leads.csv", "row": 7, "created": False}, None),
        (
            "call",
            {
                "call_id": "CA1",
                "direction": "inbound",
                "from_number": "+14155550123",
                "to_number": "+14155550100",
                "status": "completed",
                "duration_seconds": 42,
                "recording_url": None,
            },
            None,
        ),
    ]


async def test_an_event_keeps_the_time_it_happened(database: Database, world: TeamWorld) -> None:
    contact_id = await new_contact(database, world.admin)
    when = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC)
    async with database.transaction() as session:
        await timeline.append(
            session,
            world.system,
            contact_id,
            "imported",
            timeline.Imported(row=1, created=True),
            occurred_at=when,
        )
    async with database.transaction(read_only=True) as session:
        (event,) = (await timeline.page(session, contact_id, kinds=["imported"])).events
    assert event.occurred_at == when


async def test_later_code_registers_a_new_kind_without_changing_the_timeline_module(
    database: Database, world: TeamWorld
) -> None:
    timeline.register_kind("test_voicemail", Voicemail)
    timeline.register_kind("test_voicemail", Voicemail)  # the same again is harmless
    assert "test_voicemail" in timeline.registered_kinds()
    contact_id = await new_contact(database, world.admin)
    await append(
        database,
        world.system,
        contact_id,
        "test_voicemail",
        Voicemail(seconds=12, transcript="call me back"),
    )
    async with database.transaction(read_only=True) as session:
        page = await timeline.page(session, contact_id, kinds=["test_voicemail"])
    assert [e.data for e in page.events] == [{"seconds": 12, "transcript": "call me back"}]


def test_a_kind_cannot_be_registered_twice_with_different_data() -> None:
    timeline.register_kind("test_voicemail", Voicemail)
    with pytest.raises(ValueError, match="already registered"):
        timeline.register_kind("test_voicemail", OtherVoicemail)
    with pytest.raises(ValueError, match="already registered"):
        timeline.register_kind("note_added", Voicemail)


async def test_unknown_kinds_and_bad_data_are_refused_before_anything_is_written(
    database: Database, world: TeamWorld
) -> None:
    contact_id = await new_contact(database, world.admin)
    with pytest.raises(InvalidInput, match="unknown timeline kind 'telegram'") as caught:
        await append(database, world.admin, contact_id, "telegram", {})
    assert caught.value.field == "kind"
    bad_data: list[timeline.EventData | dict[str, object]] = [
        {"from_status": "open"},
        {"from_status": "open", "to_status": "won", "x": 1},
        timeline.NoteDeleted(note_id=1),
    ]
    for bad in bad_data:
        with pytest.raises(InvalidInput, match="bad data for timeline kind 'status_changed'"):
            await append(database, world.admin, contact_id, "status_changed", bad)
    with pytest.raises(InvalidInput, match="unknown timeline kind 'telegram'"):
        await kinds_of(database, contact_id, kinds=["telegram"])
    async with database.transaction(read_only=True) as session:
        assert await session.scalar(select(func.count()).select_from(TimelineEvent)) == 1


@pytest.mark.parametrize(
    "cursor",
    ["abc", "-1", "1.5", "", " 7", "\u00b2", "\u0661", "9" * 19, "9" * 20, "9223372036854775808"],
)
async def test_a_cursor_the_timeline_did_not_give_out_is_refused(
    database: Database, world: TeamWorld, cursor: str
) -> None:
    contact_id = await new_contact(database, world.admin)
    with pytest.raises(InvalidInput) as caught:
        await kinds_of(database, contact_id, cursor=cursor)
    assert caught.value.field == "cursor"


@pytest.mark.parametrize("limit", [0, -1, 501])
async def test_a_page_holds_one_to_five_hundred_events(
    database: Database, world: TeamWorld, limit: int
) -> None:
    contact_id = await new_contact(database, world.admin)
    with pytest.raises(InvalidInput, match="limit must be between 1 and 500"):
        await kinds_of(database, contact_id, limit=limit)


async def test_one_contacts_timeline_never_shows_anothers(
    database: Database, world: TeamWorld
) -> None:
    jane = await new_contact(database, world.admin, "Jane")
    john = await new_contact(database, world.admin, "John")
    async with database.transaction() as session:
        await notes.add_note(session, world.admin, john, NoteIn(content="about John"))
    assert await kinds_of(database, jane) == ["contact_created"]


async def test_history_stays_when_what_it_describes_is_gone(
    database: Database, world: TeamWorld
) -> None:
    """Append-only: deleting a note adds an entry and removes none."""
    contact_id = await new_contact(database, world.admin)
    async with database.transaction() as session:
        note = await notes.add_note(session, world.admin, contact_id, NoteIn(content="x"))
    async with database.transaction(read_only=True) as session:
        before = [(e.id, e.kind, e.data) for e in (await timeline.page(session, contact_id)).events]
    async with database.transaction() as session:
        await notes.delete_note(session, world.admin, note.id)
    async with database.transaction(read_only=True) as session:
        after = [(e.id, e.kind, e.data) for e in (await timeline.page(session, contact_id)).events]
    assert after[1:] == before
    assert after[0][1:] == ("note_deleted", {"note_id": note.id})
