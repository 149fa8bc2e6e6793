"""Merging duplicates: phones, emails, tags, notes and the whole timeline move to the survivor,
the merge itself is recorded, and nothing is lost, not even to a concurrent merge."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import func, select, update

from tests.conftest import TeamWorld, make_team
from voicecrm.accounts.actor import Actor
from voicecrm.accounts.models import Team
from voicecrm.crm import contacts, notes, stages, timeline
from voicecrm.crm.duplicates import set_duplicate_phones
from voicecrm.crm.merge import merge_contacts
from voicecrm.crm.models import Contact, ContactPhone, Note, TimelineEvent
from voicecrm.crm.schemas import ContactCreate, ContactOut, NoteIn, NoteUpdate
from voicecrm.errors import InvalidInput, NotFound
from voicecrm.storage import Database


async def create(database: Database, actor: Actor, name: str, **fields: Any) -> int:
    async with database.transaction() as session:
        data = ContactCreate.model_validate({"name": name, **fields})
        return (await contacts.create_contact(session, actor, data)).id


async def merge(database: Database, actor: Actor, survivor: int, *others: int) -> ContactOut:
    async with database.transaction() as session:
        merged = await merge_contacts(session, actor, survivor, list(others))
        return await contacts.one_out(session, merged)


async def read(database: Database, actor: Actor, contact_id: int) -> ContactOut:
    async with database.transaction(read_only=True) as session:
        return await contacts.one_out(
            session, await contacts.get_contact(session, actor, contact_id)
        )


async def note(database: Database, actor: Actor, contact_id: int, content: str) -> int:
    async with database.transaction() as session:
        return (await notes.add_note(session, actor, contact_id, NoteIn(content=content))).id


async def test_phones_emails_tags_notes_and_timeline_move_to_the_survivor(
    database: Database, world: TeamWorld
) -> None:
    jane = await create(
        database,
        world.admin,
        "Jane Roe",
        phones=[{"number": "+14155550123", "label": "work"}],
        emails=[{"email": "jane@roe.example"}],
        tags=["vip"],
    )
    dup = await create(
        database,
        world.admin,
        "J. Roe",
        phones=[{"number": "(415) 555-0999", "label": "home"}],
        emails=[{"email": "jane@roe.example"}, {"email": "jr@home.example", "label": "home"}],
        tags=["vip", "lead"],
    )
    survivor_note = await note(database, world.admin, jane, "on Jane")
    moved_note = await note(database, world.agent, dup, "on the duplicate")
    async with database.transaction(read_only=True) as session:
        dup_history = [(e.id, e.kind, e.data) for e in (await timeline.page(session, dup)).events]

    merged = await merge(database, world.admin, jane, dup)

    assert merged.id == jane and merged.name == "Jane Roe"
    assert [(p.e164, p.original, p.label) for p in merged.phones] == [
        ("+14155550123", "+14155550123", "work"),
        ("+14155550999", "(415) 555-0999", "home"),
    ]
    assert [(e.email, e.label) for e in merged.emails] == [
        ("jane@roe.example", "work"),
        ("jr@home.example", "home"),
    ]
    assert merged.tags == ["lead", "vip"]
    async with database.transaction(read_only=True) as session:
        listed = await notes.list_notes(session, world.admin, jane)
        history = [(e.id, e.kind, e.data) for e in (await timeline.page(session, jane)).events]
        assert await session.get(Contact, dup) is None
    assert {(n.id, n.content, n.author_user_id) for n in listed} == {
        (survivor_note, "on Jane", world.admin.user_id),
        (moved_note, "on the duplicate", world.agent.user_id),
    }
    assert [e for e in history if e in dup_history] == dup_history  # each one, unchanged
    assert history[0][1] == "merged"


async def test_the_merge_is_recorded_with_what_each_merged_contact_was(
    database: Database, world: TeamWorld
) -> None:
    jane = await create(database, world.admin, "Jane Roe")
    a = await create(
        database,
        world.admin,
        "Jane R.",
        company="Roe & Co",
        rating=3,
        custom_fields={"plan": "gold"},
        status="won",
    )
    b = await create(database, world.admin, "JR", type="other", blocked=True)
    await merge(database, world.agent, jane, b, a, jane)
    async with database.transaction(read_only=True) as session:
        (event,) = (await timeline.page(session, jane, kinds=["merged"])).events
    assert event.actor_user_id == world.agent.user_id
    assert event.data["merged_contact_ids"] == [a, b]
    assert event.data["merged_names"] == ["Jane R.", "JR"]
    first, second = event.data["snapshots"]
    assert {
        k: first[k]
        for k in (
            "id",
            "name",
            "company",
            "rating",
            "custom_fields",
            "status",
            "type",
            "blocked",
            "source",
        )
    } == {
        "id": a,
        "name": "Jane R.",
        "company": "Roe & Co",
        "rating": 3,
        "custom_fields": {"plan": "gold"},
        "status": "won",
        "type": "customer",
        "blocked": False,
        "source": "manual",
    }
    assert (second["id"], second["type"], second["blocked"]) == (b, "other", True)
    assert isinstance(first["created_at"], str)


async def test_the_survivor_keeps_its_values_and_fills_its_blanks_from_the_others(
    database: Database, world: TeamWorld
) -> None:
    jane = await create(
        database, world.admin, "Jane", company="Keep", rating=1, custom_fields={"plan": "silver"}
    )
    other = await create(
        database,
        world.admin,
        "Other",
        company="Lose",
        rating=2,
        caller_id_name="JANE ROE",
        responsible_user_id=world.agent.user_id,
        custom_fields={"plan": "gold", "since": 2019},
        blocked=True,
    )
    async with database.transaction() as session:
        await session.execute(update(Contact).where(Contact.id == other).values(carrier="O2"))
    merged = await merge(database, world.admin, jane, other)
    assert (
        merged.company,
        merged.caller_id_name,
        merged.carrier,
        merged.rating,
        merged.responsible_user_id,
        merged.blocked,
    ) == ("Keep", "JANE ROE", "O2", 2, world.agent.user_id, True)
    assert merged.custom_fields == {"plan": "silver", "since": 2019}


async def test_the_survivor_is_as_old_as_the_oldest_merged_contact(
    database: Database, world: TeamWorld
) -> None:
    older = await create(database, world.admin, "Older")
    jane = await create(database, world.admin, "Jane")
    before = (await read(database, world.admin, older)).created_at
    merged = await merge(database, world.admin, jane, older)
    assert merged.created_at == before
    assert merged.updated_at >= before


async def test_a_stage_taken_from_a_merged_contact_is_recorded_as_a_stage_change(
    database: Database, world: TeamWorld
) -> None:
    async with database.transaction() as session:
        stage = await stages.add_stage(session, world.admin, "Qualified")
    jane = await create(database, world.admin, "Jane")
    other = await create(database, world.admin, "Other", stage_id=stage.id)
    merged = await merge(database, world.admin, jane, other)
    assert merged.stage_id == stage.id
    async with database.transaction(read_only=True) as session:
        page = await timeline.page(session, jane, kinds=["stage_changed"])
    assert [(e.contact_id, e.data["to_stage"], e.data["from_stage"]) for e in page.events] == [
        (jane, "Qualified", None)
    ]
    assert page.events[0].data["reason"] == "merged"


async def test_a_number_both_contacts_share_is_kept_once(
    database: Database, world: TeamWorld
) -> None:
    async with database.transaction() as session:
        await set_duplicate_phones(session, await session.get_one(Team, world.team_id), True)
    team = dataclasses.replace(world.admin.team, allow_duplicate_phones=True)
    admin = dataclasses.replace(world.admin, team=team)
    jane = await create(database, admin, "Jane", phones=[{"number": "+14155550123"}])
    other = await create(
        database, admin, "Other", phones=[{"number": "415-555-0123"}, {"number": "+14155550999"}]
    )
    merged = await merge(database, admin, jane, other)
    assert [p.e164 for p in merged.phones] == ["+14155550123", "+14155550999"]
    async with database.transaction(read_only=True) as session:
        keys = list(
            await session.execute(select(ContactPhone.contact_id, ContactPhone.duplicate_key))
        )
    # Both phones are the survivor's, keyed by it as a team allowing duplicates keys them.
    assert sorted(keys) == [(jane, jane), (jane, jane)]


async def test_a_merge_needs_at_least_one_other_contact_and_at_most_a_hundred(
    database: Database, world: TeamWorld
) -> None:
    jane = await create(database, world.admin, "Jane")
    for others in ([], [jane], [jane, jane]):
        with pytest.raises(InvalidInput, match="at least one contact") as caught:
            await merge(database, world.admin, jane, *others)
        assert caught.value.field == "merged_ids"
    with pytest.raises(InvalidInput, match="at most 100"):
        await merge(database, world.admin, jane, *range(10_000, 10_101))


async def test_a_merge_that_fails_changes_nothing(database: Database, world: TeamWorld) -> None:
    others = await make_team(database, "Other")
    theirs = await create(database, others.admin, "Theirs", phones=[{"number": "+14155550888"}])
    jane = await create(database, world.admin, "Jane")
    dup = await create(
        database, world.admin, "Dup", phones=[{"number": "+14155550123"}], tags=["lead"]
    )
    await note(database, world.admin, dup, "keep me")
    for attempt in ((jane, dup, theirs), (jane, dup, 999_999), (theirs, dup), (999_999, dup)):
        with pytest.raises(NotFound):
            await merge(database, world.admin, *attempt)
    kept = await read(database, world.admin, dup)
    assert ([p.e164 for p in kept.phones], kept.tags) == (["+14155550123"], ["lead"])
    assert (await read(database, others.admin, theirs)).phones[0].e164 == "+14155550888"
    async with database.transaction(read_only=True) as session:
        assert await session.scalar(select(func.count()).select_from(Note)) == 1
        assert await session.scalar(select(func.count()).where(TimelineEvent.kind == "merged")) == 0


async def test_a_restricted_agent_merges_only_contacts_they_can_see(
    database: Database, world: TeamWorld
) -> None:
    team = dataclasses.replace(world.agent.team, agents_see_own_contacts_only=True)
    agent = dataclasses.replace(world.agent, team=team)
    mine = await create(database, world.admin, "Mine", responsible_user_id=world.agent.user_id)
    also_mine = await create(database, world.admin, "Also", responsible_user_id=world.agent.user_id)
    not_mine = await create(database, world.admin, "Not mine")
    with pytest.raises(NotFound):
        await merge(database, agent, mine, not_mine)
    assert (await merge(database, agent, mine, also_mine)).id == mine


async def test_two_opposite_merges_at_once_keep_one_contact_with_everything(
    database: Database, world: TeamWorld
) -> None:
    """Each wants the other gone; the database lets exactly one win and the other finds
    its survivor already merged away, instead of a deadlock or a lost phone. Raced a few
    times over, since one race may happen not to interleave."""

    async def attempt(survivor: int, other: int) -> str:
        try:
            await merge(database, world.admin, survivor, other)
        except NotFound:
            return "not found"
        return "merged"

    for round in range(5):
        a = await create(
            database, world.admin, "A", phones=[{"number": f"+1415555010{round}"}], tags=["a"]
        )
        b = await create(
            database, world.admin, "B", phones=[{"number": f"+1415555020{round}"}], tags=["b"]
        )
        outcomes = await asyncio.gather(attempt(a, b), attempt(b, a))
        assert sorted(outcomes) == ["merged", "not found"]
        async with database.transaction(read_only=True) as session:
            left = set(await session.scalars(select(Contact.id).where(Contact.id.in_([a, b]))))
        assert len(left) == 1
        kept = await read(database, world.admin, left.pop())
        assert sorted(p.e164 for p in kept.phones) == [f"+1415555010{round}", f"+1415555020{round}"]
        assert kept.tags == ["a", "b"]


async def test_a_note_racing_a_merge_is_refused_or_follows_the_survivor(
    database: Database, world: TeamWorld, until_blocked: Callable[[], Awaitable[None]]
) -> None:
    """While a merge holds its contacts, a new note for the merged contact waits and then
    finds it gone (NotFound), and an edit of one of its notes waits and then edits the note
    where it now is, on the survivor: never a foreign-key failure from the database."""
    survivor = await create(database, world.admin, "Survivor")
    doomed = await create(database, world.admin, "Doomed")
    moving = await note(database, world.admin, doomed, "before the merge")
    doomed_too = await create(database, world.admin, "Doomed too")

    async def late_note() -> str:
        try:
            await note(database, world.agent, doomed, "late")
        except NotFound:
            return "refused"
        return "added"

    async def late_edit() -> str:
        async with database.transaction() as session:
            edited = await notes.edit_note(
                session, world.agent, moving, NoteUpdate(content="edited after the merge")
            )
            return f"edited on {edited.contact_id}"

    async with database.transaction() as merging:
        await merge_contacts(merging, world.admin, survivor, [doomed])
        racing = asyncio.create_task(late_note())
        await until_blocked()
    assert await racing == "refused"
    async with database.transaction() as merging:
        await merge_contacts(merging, world.admin, doomed_too, [survivor])
        racing = asyncio.create_task(late_edit())
        await until_blocked()
    assert await racing == f"edited on {doomed_too}"
    async with database.transaction(read_only=True) as session:
        kept = [n.content for n in await notes.list_notes(session, world.admin, doomed_too)]
        page = await timeline.page(session, doomed_too, kinds=["note_edited"])
    assert kept == ["edited after the merge"]
    assert [e.data["content"] for e in page.events] == ["edited after the merge"]
