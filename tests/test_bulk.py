"""Bulk actions: tag, untag, set responsible, set stage, set status and delete, over explicit
ids or over everything a filter matches however many pages that is, each change recorded as
if made by hand."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import func, insert, select

from tests.conftest import TeamWorld, make_team
from voicecrm.accounts.actor import Actor
from voicecrm.crm import contacts, stages
from voicecrm.crm.bulk import BATCH, BulkRequest, run_bulk
from voicecrm.crm.models import Contact, ContactTag, TimelineEvent
from voicecrm.crm.schemas import ContactCreate
from voicecrm.errors import InvalidInput, PermissionDenied
from voicecrm.storage import Database, utcnow


async def create(database: Database, actor: Actor, name: str, **fields: Any) -> int:
    async with database.transaction() as session:
        data = ContactCreate.model_validate({"name": name, **fields})
        return (await contacts.create_contact(session, actor, data)).id


async def seed(
    database: Database, actor: Actor, count: int, *, tag: str | None = None, status: str = "open"
) -> list[int]:
    """Many contacts in two statements: a bulk test needs more than a few pages of them."""
    now = utcnow()
    rows = [
        {
            "team_id": actor.team_id,
            "name": f"Seed {i:05d}",
            "type": "customer",
            "source": "import",
            "rating": 0,
            "status": status,
            "blocked": False,
            "custom_fields": {},
            "created_at": now,
            "updated_at": now,
        }
        for i in range(count)
    ]
    async with database.transaction() as session:
        ids = list(await session.scalars(insert(Contact).returning(Contact.id), rows))
        if tag:
            await session.execute(
                insert(ContactTag),
                [{"contact_id": i, "tag": tag, "team_id": actor.team_id} for i in ids],
            )
    return sorted(ids)


async def bulk(database: Database, actor: Actor, **request: Any) -> int:
    async with database.transaction() as session:
        return await run_bulk(session, actor, BulkRequest.model_validate(request))


async def column(database: Database, field: str, ids: list[int]) -> dict[int, Any]:
    async with database.transaction(read_only=True) as session:
        rows = await session.execute(
            select(Contact.id, getattr(Contact, field)).where(Contact.id.in_(ids))
        )
        return dict(rows.all())


async def events_by_kind(database: Database, ids: list[int]) -> Counter[str]:
    async with database.transaction(read_only=True) as session:
        kinds = await session.scalars(
            select(TimelineEvent.kind).where(TimelineEvent.contact_id.in_(ids))
        )
        return Counter(kinds)


def restricted(actor: Actor) -> Actor:
    team = dataclasses.replace(actor.team, agents_see_own_contacts_only=True)
    return dataclasses.replace(actor, team=team)


async def test_tagging_explicit_ids_tags_exactly_those_and_records_each(
    database: Database, world: TeamWorld
) -> None:
    a = await create(database, world.admin, "A")
    b = await create(database, world.admin, "B", tags=["vip"])
    c = await create(database, world.admin, "C")
    touched = await bulk(
        database, world.agent, action="tag", tags=["VIP", "lead"], selection={"ids": [a, b, a]}
    )
    assert touched == 2
    async with database.transaction(read_only=True) as session:
        assert await contacts.tags_of(session, a) == {"vip", "lead"}
        assert await contacts.tags_of(session, b) == {"vip", "lead"}
        assert await contacts.tags_of(session, c) == set()
        added = {
            e.contact_id: e.data
            for e in await session.scalars(
                select(TimelineEvent).where(TimelineEvent.kind == "tags_changed")
            )
        }
    assert added == {
        a: {"added": ["lead", "vip"], "removed": []},
        b: {"added": ["lead"], "removed": []},
    }


async def test_an_action_over_a_filter_reaches_every_match_across_many_batches(
    database: Database, world: TeamWorld
) -> None:
    """More matches than a batch, and the action changes what the filter matches:
    the selection is fixed first, so nothing is skipped or done twice."""
    leads = await seed(database, world.admin, 2 * BATCH + 37, tag="lead")
    others = await seed(database, world.admin, 20)
    touched = await bulk(
        database,
        world.admin,
        action="set_status",
        status="won",
        selection={"filter": {"tag": "lead", "status": "open"}},
    )
    assert touched == len(leads)
    assert set((await column(database, "status", leads)).values()) == {"won"}
    assert set((await column(database, "status", others)).values()) == {"open"}
    assert await events_by_kind(database, leads) == Counter({"status_changed": len(leads)})
    assert await events_by_kind(database, others) == Counter()


async def test_untagging_removes_the_tag_from_every_match(
    database: Database, world: TeamWorld
) -> None:
    tagged = await seed(database, world.admin, BATCH + 1, tag="stale")
    kept = await create(database, world.admin, "Kept", tags=["other"])
    touched = await bulk(
        database,
        world.admin,
        action="untag",
        tags=["stale", "other-not"],
        selection={"filter": {"tag": "stale"}},
    )
    assert touched == len(tagged)
    async with database.transaction(read_only=True) as session:
        remaining = set(await session.scalars(select(ContactTag.tag)))
    assert remaining == {"other"}
    assert (await events_by_kind(database, [kept]))["tags_changed"] == 0


async def test_setting_and_clearing_the_responsible_user_is_recorded(
    database: Database, world: TeamWorld
) -> None:
    ids = [await create(database, world.admin, f"C{i}") for i in range(3)]
    assert (
        await bulk(
            database,
            world.admin,
            action="set_responsible",
            user_id=world.agent.user_id,
            selection={"ids": ids},
        )
        == 3
    )
    assert set((await column(database, "responsible_user_id", ids)).values()) == {
        world.agent.user_id
    }
    assert (
        await bulk(
            database,
            world.admin,
            action="set_responsible",
            user_id=world.agent.user_id,
            selection={"ids": ids},
        )
        == 0
    )
    assert (
        await bulk(
            database,
            world.admin,
            action="set_responsible",
            user_id=None,
            selection={"ids": ids[:1]},
        )
        == 1
    )
    assert (await column(database, "responsible_user_id", ids))[ids[0]] is None
    async with database.transaction(read_only=True) as session:
        updates = list(
            await session.scalars(
                select(TimelineEvent)
                .where(TimelineEvent.kind == "contact_updated")
                .order_by(TimelineEvent.id)
            )
        )
    assert [(e.contact_id, e.data) for e in updates] == [
        *((i, {"fields": ["responsible_user_id"]}) for i in ids),
        (ids[0], {"fields": ["responsible_user_id"]}),
    ]


async def test_setting_and_clearing_the_stage_is_recorded_as_stage_changes(
    database: Database, world: TeamWorld
) -> None:
    async with database.transaction() as session:
        stage = await stages.add_stage(session, world.admin, "Qualified")
    ids = [await create(database, world.admin, f"C{i}") for i in range(3)]
    assert (
        await bulk(
            database, world.agent, action="set_stage", stage_id=stage.id, selection={"filter": {}}
        )
        == 3
    )
    assert set((await column(database, "stage_id", ids)).values()) == {stage.id}
    assert (
        await bulk(
            database, world.agent, action="set_stage", stage_id=None, selection={"ids": ids[:2]}
        )
        == 2
    )
    assert await column(database, "stage_id", ids) == {ids[0]: None, ids[1]: None, ids[2]: stage.id}
    assert (await events_by_kind(database, ids))["stage_changed"] == 5


async def test_deleting_a_selection_removes_only_what_it_selects(
    database: Database, world: TeamWorld
) -> None:
    doomed = await seed(database, world.admin, BATCH + 3, status="lost")
    kept = await create(database, world.admin, "Kept")
    assert await bulk(
        database, world.admin, action="delete", selection={"filter": {"status": "lost"}}
    ) == len(doomed)
    async with database.transaction(read_only=True) as session:
        assert list(await session.scalars(select(Contact.id))) == [kept]


async def test_only_admins_delete_in_bulk(database: Database, world: TeamWorld) -> None:
    contact_id = await create(database, world.admin, "Safe")
    with pytest.raises(PermissionDenied):
        await bulk(database, world.agent, action="delete", selection={"ids": [contact_id]})
    assert await column(database, "name", [contact_id]) == {contact_id: "Safe"}


async def test_ids_of_another_team_are_never_touched(database: Database, world: TeamWorld) -> None:
    others = await make_team(database, "Other")
    theirs = await create(database, others.admin, "Theirs")
    mine = await create(database, world.admin, "Mine")
    for request in (
        {"action": "tag", "tags": ["x"]},
        {"action": "set_status", "status": "won"},
        {"action": "delete"},
    ):
        touched = await bulk(
            database, world.admin, **request, selection={"ids": [theirs, mine, 999_999]}
        )
        assert touched == 1, request
        mine = await create(database, world.admin, "Mine again")
    assert await column(database, "status", [theirs]) == {theirs: "open"}
    async with database.transaction(read_only=True) as session:
        assert await contacts.tags_of(session, theirs) == set()
    assert (
        await bulk(
            database, others.admin, action="set_status", status="lost", selection={"filter": {}}
        )
        == 1
    )


async def test_a_stage_or_user_of_another_team_is_refused(
    database: Database, world: TeamWorld
) -> None:
    others = await make_team(database, "Other")
    async with database.transaction() as session:
        their_stage = await stages.add_stage(session, others.admin, "Theirs")
    mine = await create(database, world.admin, "Mine")
    with pytest.raises(InvalidInput) as caught:
        await bulk(
            database,
            world.admin,
            action="set_stage",
            stage_id=their_stage.id,
            selection={"ids": [mine]},
        )
    assert caught.value.field == "stage_id"
    with pytest.raises(InvalidInput) as caught:
        await bulk(
            database,
            world.admin,
            action="set_responsible",
            user_id=others.admin.user_id,
            selection={"ids": [mine]},
        )
    assert caught.value.field == "responsible_user_id"
    assert await column(database, "stage_id", [mine]) == {mine: None}


async def test_a_restricted_agent_acts_only_on_their_own_contacts(
    database: Database, world: TeamWorld
) -> None:
    mine = await create(database, world.admin, "Mine", responsible_user_id=world.agent.user_id)
    not_mine = await create(database, world.admin, "Not mine")
    agent = restricted(world.agent)
    assert await bulk(database, agent, action="tag", tags=["x"], selection={"filter": {}}) == 1
    assert (
        await bulk(
            database, agent, action="set_status", status="won", selection={"ids": [mine, not_mine]}
        )
        == 1
    )
    assert await column(database, "status", [mine, not_mine]) == {mine: "won", not_mine: "open"}


@pytest.mark.parametrize(
    "request_body",
    [
        {"action": "tag", "selection": {"ids": [1]}},
        {"action": "untag", "tags": [], "selection": {"ids": [1]}},
        {"action": "set_status", "selection": {"ids": [1]}},
        {"action": "set_status", "status": "closed", "selection": {"ids": [1]}},
        {"action": "tag", "tags": ["x"], "selection": {}},
        {"action": "tag", "tags": ["x"], "selection": {"ids": [1], "filter": {}}},
        {"action": "tag", "tags": ["x"], "selection": {"filter": {"colour": "red"}}},
        {"action": "archive", "selection": {"ids": [1]}},
        {"action": "delete", "selection": {"ids": [2**63]}},
        {"action": "delete", "selection": {"ids": [0]}},
    ],
)
def test_a_bulk_request_must_say_exactly_what_to_do_to_what(request_body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BulkRequest.model_validate(request_body)


async def test_an_empty_selection_touches_nothing(database: Database, world: TeamWorld) -> None:
    await create(database, world.admin, "Untouched")
    assert await bulk(database, world.admin, action="delete", selection={"ids": []}) == 0
    assert (
        await bulk(database, world.admin, action="delete", selection={"filter": {"name": "nobody"}})
        == 0
    )
    async with database.transaction(read_only=True) as session:
        assert await session.scalar(select(func.count()).select_from(Contact)) == 1
