"""Stages: an ordered list of at most eight per team, and every move recorded on the timeline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import TeamWorld, make_team
from voicecrm.accounts.actor import Actor
from voicecrm.crm import contacts, stages, timeline
from voicecrm.crm.models import Contact, Stage, TimelineEvent
from voicecrm.crm.schemas import MAX_STAGES, ContactCreate, ContactUpdate
from voicecrm.errors import (
    DuplicateName,
    InvalidInput,
    NotFound,
    PermissionDenied,
    StageLimitReached,
)
from voicecrm.storage import Database

Attempt = Callable[[AsyncSession], Awaitable[object]]


async def add_stages(database: Database, actor: Actor, *names: str) -> list[int]:
    async with database.transaction() as session:
        return [(await stages.add_stage(session, actor, name)).id for name in names]


async def stage_names(database: Database, team_id: int) -> list[tuple[str, int]]:
    async with database.transaction(read_only=True) as session:
        return [(s.name, s.position) for s in await stages.list_stages(session, team_id)]


async def new_contact(
    database: Database, actor: Actor, name: str, stage_id: int | None = None
) -> int:
    async with database.transaction() as session:
        contact = await contacts.create_contact(
            session, actor, ContactCreate(name=name, stage_id=stage_id)
        )
        return contact.id


async def stage_events(database: Database, contact_id: int) -> list[dict[str, object]]:
    async with database.transaction(read_only=True) as session:
        page = await timeline.page(session, contact_id, kinds=["stage_changed"])
        return [event.data for event in page.events]


async def test_stages_form_an_ordered_list_each_added_at_the_end(
    database: Database, world: TeamWorld
) -> None:
    await add_stages(database, world.admin, "New", "Qualified", "Proposal")
    assert await stage_names(database, world.team_id) == [
        ("New", 0),
        ("Qualified", 1),
        ("Proposal", 2),
    ]


async def test_a_ninth_stage_is_refused_with_a_clear_error(
    database: Database, world: TeamWorld
) -> None:
    await add_stages(database, world.admin, *(f"Stage {i}" for i in range(1, 9)))
    with pytest.raises(StageLimitReached) as caught:
        await add_stages(database, world.admin, "Ninth")
    assert caught.value.detail == "a team has at most 8 stages; remove one before adding 'Ninth'"
    assert caught.value.extra == {"limit": MAX_STAGES}
    assert [name for name, _ in await stage_names(database, world.team_id)] == [
        f"Stage {i}" for i in range(1, 9)
    ]


async def test_nine_concurrent_additions_yield_exactly_eight_stages(
    database: Database, world: TeamWorld
) -> None:
    async def add(name: str) -> str:
        try:
            await add_stages(database, world.admin, name)
        except StageLimitReached:
            return "refused"
        return "added"

    outcomes = await asyncio.gather(*(add(f"Stage {i}") for i in range(9)))
    assert sorted(outcomes) == ["added"] * 8 + ["refused"]
    stored = await stage_names(database, world.team_id)
    assert len(stored) == 8
    assert sorted(position for _, position in stored) == list(range(8))


async def test_the_limit_is_per_team(database: Database, world: TeamWorld) -> None:
    other = await make_team(database, "Other")
    await add_stages(database, world.admin, *(f"Stage {i}" for i in range(8)))
    await add_stages(database, other.admin, *(f"Stage {i}" for i in range(8)))
    assert len(await stage_names(database, other.team_id)) == 8


async def test_a_removed_stage_frees_its_place_for_a_new_one(
    database: Database, world: TeamWorld
) -> None:
    ids = await add_stages(database, world.admin, *(f"Stage {i}" for i in range(8)))
    async with database.transaction() as session:
        await stages.remove_stage(session, world.admin, ids[3])
    await add_stages(database, world.admin, "Late")
    names = await stage_names(database, world.team_id)
    assert names[-1] == ("Late", 7)
    assert [position for _, position in names] == list(range(8))


async def test_two_stages_of_a_team_cannot_share_a_name(
    database: Database, world: TeamWorld
) -> None:
    await add_stages(database, world.admin, "New")
    with pytest.raises(DuplicateName, match="a stage named 'New' already exists"):
        await add_stages(database, world.admin, "New")
    assert await stage_names(database, world.team_id) == [("New", 0)]


async def test_concurrent_additions_of_one_name_make_one_stage(
    database: Database, world: TeamWorld
) -> None:
    async def add() -> str:
        try:
            await add_stages(database, world.admin, "Won")
        except DuplicateName:
            return "duplicate"
        return "added"

    outcomes = await asyncio.gather(*(add() for _ in range(5)))
    assert sorted(outcomes) == ["added"] + ["duplicate"] * 4
    assert await stage_names(database, world.team_id) == [("Won", 0)]


async def test_renaming_a_stage_keeps_its_place(database: Database, world: TeamWorld) -> None:
    ids = await add_stages(database, world.admin, "New", "Qualified")
    async with database.transaction() as session:
        renamed = await stages.rename_stage(session, world.admin, ids[0], "Fresh")
    assert (renamed.name, renamed.position) == ("Fresh", 0)
    assert await stage_names(database, world.team_id) == [("Fresh", 0), ("Qualified", 1)]


async def test_a_stage_cannot_be_renamed_to_a_name_in_use(
    database: Database, world: TeamWorld
) -> None:
    ids = await add_stages(database, world.admin, "New", "Qualified")
    with pytest.raises(DuplicateName):
        async with database.transaction() as session:
            await stages.rename_stage(session, world.admin, ids[0], "Qualified")
    assert await stage_names(database, world.team_id) == [("New", 0), ("Qualified", 1)]


async def test_reordering_sets_every_position(database: Database, world: TeamWorld) -> None:
    a, b, c = await add_stages(database, world.admin, "A", "B", "C")
    async with database.transaction() as session:
        ordered = await stages.reorder_stages(session, world.admin, [c, a, b])
    assert [(s.name, s.position) for s in ordered] == [("C", 0), ("A", 1), ("B", 2)]
    assert await stage_names(database, world.team_id) == [("C", 0), ("A", 1), ("B", 2)]


async def test_a_new_order_must_name_every_stage_exactly_once(
    database: Database, world: TeamWorld
) -> None:
    other = await make_team(database, "Other")
    (foreign,) = await add_stages(database, other.admin, "Theirs")
    a, b, c = await add_stages(database, world.admin, "A", "B", "C")
    for order in ([a, b], [a, b, c, c], [a, b, b], [a, b, c, foreign], [a, b, foreign], []):
        with pytest.raises(InvalidInput) as caught:
            async with database.transaction() as session:
                await stages.reorder_stages(session, world.admin, order)
        assert caught.value.field == "stage_ids", order
    assert await stage_names(database, world.team_id) == [("A", 0), ("B", 1), ("C", 2)]


async def test_removing_a_stage_closes_the_gap(database: Database, world: TeamWorld) -> None:
    _, b, _ = await add_stages(database, world.admin, "A", "B", "C")
    async with database.transaction() as session:
        await stages.remove_stage(session, world.admin, b)
    assert await stage_names(database, world.team_id) == [("A", 0), ("C", 1)]


async def test_a_contacts_stage_change_is_recorded_on_its_timeline(
    database: Database, world: TeamWorld
) -> None:
    new, won = await add_stages(database, world.admin, "New", "Won")
    contact_id = await new_contact(database, world.agent, "Jane", stage_id=new)
    async with database.transaction() as session:
        await contacts.update_contact(session, world.agent, contact_id, ContactUpdate(stage_id=won))
    async with database.transaction() as session:  # the same stage again: nothing happens
        await contacts.update_contact(session, world.agent, contact_id, ContactUpdate(stage_id=won))
    async with database.transaction() as session:
        await contacts.update_contact(
            session, world.agent, contact_id, ContactUpdate(clear_stage=True)
        )
    assert await stage_events(database, contact_id) == [
        {
            "from_stage_id": won,
            "from_stage": "Won",
            "to_stage_id": None,
            "to_stage": None,
            "reason": None,
        },
        {
            "from_stage_id": new,
            "from_stage": "New",
            "to_stage_id": won,
            "to_stage": "Won",
            "reason": None,
        },
    ]
    async with database.transaction(read_only=True) as session:
        event = (await timeline.page(session, contact_id, kinds=["stage_changed"])).events[0]
    assert event.actor_user_id == world.agent.user_id


async def test_a_stage_removed_from_under_contacts_is_recorded_on_their_timelines(
    database: Database, world: TeamWorld
) -> None:
    doomed, kept = await add_stages(database, world.admin, "Doomed", "Kept")
    on_doomed = [
        await new_contact(database, world.admin, f"D{i}", stage_id=doomed) for i in range(3)
    ]
    on_kept = await new_contact(database, world.admin, "K", stage_id=kept)
    async with database.transaction() as session:
        await stages.remove_stage(session, world.admin, doomed)
    removed = {
        "from_stage_id": doomed,
        "from_stage": "Doomed",
        "to_stage_id": None,
        "to_stage": None,
        "reason": "stage removed",
    }
    for contact_id in on_doomed:
        assert await stage_events(database, contact_id) == [removed]
    assert await stage_events(database, on_kept) == []
    async with database.transaction(read_only=True) as session:
        stage_of = dict((await session.execute(select(Contact.id, Contact.stage_id))).all())
    assert stage_of == {**dict.fromkeys(on_doomed), on_kept: kept}


async def test_removing_all_stages_records_every_contact_that_had_one(
    database: Database, world: TeamWorld
) -> None:
    first, second = await add_stages(database, world.admin, "First", "Second")
    a = await new_contact(database, world.admin, "A", stage_id=first)
    b = await new_contact(database, world.admin, "B", stage_id=second)
    c = await new_contact(database, world.admin, "C")
    async with database.transaction() as session:
        assert await stages.remove_all_stages(session, world.admin) == 2
    assert await stage_names(database, world.team_id) == []
    assert [e["from_stage"] for e in await stage_events(database, a)] == ["First"]
    assert [e["from_stage"] for e in await stage_events(database, b)] == ["Second"]
    assert await stage_events(database, c) == []
    async with database.transaction(read_only=True) as session:
        assert set(await session.scalars(select(Contact.stage_id))) == {None}


async def test_only_admins_change_the_stages(database: Database, world: TeamWorld) -> None:
    (stage_id,) = await add_stages(database, world.admin, "New")
    attempts: list[Attempt] = [
        lambda s: stages.add_stage(s, world.agent, "Mine"),
        lambda s: stages.rename_stage(s, world.agent, stage_id, "Mine"),
        lambda s: stages.reorder_stages(s, world.agent, [stage_id]),
        lambda s: stages.remove_stage(s, world.agent, stage_id),
        lambda s: stages.remove_all_stages(s, world.agent),
    ]
    for attempt in attempts:
        with pytest.raises(PermissionDenied):
            async with database.transaction() as session:
                await attempt(session)
    assert await stage_names(database, world.team_id) == [("New", 0)]


async def test_another_teams_stage_cannot_be_seen_changed_or_given_to_a_contact(
    database: Database, world: TeamWorld
) -> None:
    other = await make_team(database, "Other")
    (theirs,) = await add_stages(database, other.admin, "Theirs")
    attempts: list[Attempt] = [
        lambda s: stages.get_stage(s, world.admin, theirs),
        lambda s: stages.rename_stage(s, world.admin, theirs, "Mine"),
        lambda s: stages.remove_stage(s, world.admin, theirs),
    ]
    for attempt in attempts:
        with pytest.raises(NotFound):
            async with database.transaction() as session:
                await attempt(session)
    contact_id = await new_contact(database, world.admin, "Jane")
    with pytest.raises(InvalidInput) as caught:
        async with database.transaction() as session:
            await contacts.update_contact(
                session, world.admin, contact_id, ContactUpdate(stage_id=theirs)
            )
    assert caught.value.field == "stage_id"
    with pytest.raises(InvalidInput):
        await new_contact(database, world.admin, "Jim", stage_id=theirs)
    assert await stage_names(database, other.team_id) == [("Theirs", 0)]
    async with database.transaction(read_only=True) as session:
        assert (
            await session.scalar(
                select(TimelineEvent.id).where(TimelineEvent.kind == "stage_changed")
            )
            is None
        )
        assert (await session.get(Stage, theirs)) is not None


async def test_a_contact_moved_onto_a_stage_being_removed_is_refused_clearly(
    database: Database, world: TeamWorld, until_blocked: Callable[[], Awaitable[None]]
) -> None:
    """The move waits for the removal, then finds the stage gone: a clear InvalidInput, not
    a foreign-key failure from the database."""
    (doomed,) = await add_stages(database, world.admin, "Doomed")
    contact_id = await new_contact(database, world.agent, "Jane")

    async def move() -> str:
        try:
            async with database.transaction() as session:
                await contacts.update_contact(
                    session, world.agent, contact_id, ContactUpdate(stage_id=doomed)
                )
        except InvalidInput as refused:
            return f"refused: {refused.field}"
        return "moved"

    async with database.transaction() as removing:
        await stages.remove_stage(removing, world.admin, doomed)
        racing = asyncio.create_task(move())
        await until_blocked()
    assert await racing == "refused: stage_id"
    assert await stage_events(database, contact_id) == []


async def test_a_stage_removed_while_a_contact_moves_onto_it_records_both_moves(
    database: Database, world: TeamWorld, until_blocked: Callable[[], Awaitable[None]]
) -> None:
    """The removal waits for the move, then sees the contact on the stage and records that
    it lost it: no contact leaves a stage without a timeline entry saying so."""
    (doomed,) = await add_stages(database, world.admin, "Doomed")
    contact_id = await new_contact(database, world.agent, "Jane")

    async def remove() -> None:
        async with database.transaction() as session:
            await stages.remove_stage(session, world.admin, doomed)

    async with database.transaction() as moving:
        await contacts.update_contact(
            moving, world.agent, contact_id, ContactUpdate(stage_id=doomed)
        )
        racing = asyncio.create_task(remove())
        await until_blocked()
    await racing
    assert [
        (e["from_stage"], e["to_stage"], e["reason"])
        for e in await stage_events(database, contact_id)
    ] == [("Doomed", None, "stage removed"), (None, "Doomed", None)]
    async with database.transaction(read_only=True) as session:
        contact = await session.get_one(Contact, contact_id)
    assert contact.stage_id is None
