"""Finding contacts: by name, any form of phone, email, tag, stage, status, responsible user
and source; sorted; a page at a time by cursor. And tags: contacts by tag, the tag cloud."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import update

from tests.conftest import TeamWorld, make_team
from voicecrm.accounts.actor import Actor
from voicecrm.crm import contacts, stages, tags
from voicecrm.crm.models import Contact, ContactSource
from voicecrm.crm.schemas import ContactCreate, ContactStatus, ContactType
from voicecrm.crm.search import ContactFilter, SortKey, search
from voicecrm.errors import InvalidInput
from voicecrm.storage import Database


async def create(database: Database, actor: Actor, name: str, **fields: Any) -> int:
    async with database.transaction() as session:
        data = ContactCreate.model_validate({"name": name, **fields})
        return (await contacts.create_contact(session, actor, data)).id


async def names(database: Database, actor: Actor, **filters: Any) -> list[str]:
    async with database.transaction(read_only=True) as session:
        page = await search(session, actor, ContactFilter(**filters), sort="name", limit=500)
        return [c.name for c in page.contacts]


def restricted(actor: Actor) -> Actor:
    team = dataclasses.replace(actor.team, agents_see_own_contacts_only=True)
    return dataclasses.replace(actor, team=team)


def forged(*parts: Any) -> str:
    raw = json.dumps(list(parts)).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_a_name_is_found_by_any_part_in_any_case(
    database: Database, world: TeamWorld
) -> None:
    await create(database, world.admin, "Jane Roe")
    await create(database, world.admin, "John Doe")
    assert await names(database, world.admin, name="jane") == ["Jane Roe"]
    assert await names(database, world.admin, name="OE") == ["Jane Roe", "John Doe"]
    assert await names(database, world.admin, name="nobody") == []


async def test_free_text_finds_a_name_a_company_a_number_or_an_email(
    database: Database, world: TeamWorld
) -> None:
    await create(
        database,
        world.admin,
        "Jane Roe",
        company="Globex",
        phones=[{"number": "+14155550123"}],
        emails=[{"email": "jane@roe.example"}],
    )
    await create(
        database, world.admin, "John Doe", company="Initech", phones=[{"number": "+14155550999"}]
    )
    for q in ("jane", "GLOBEX", "(415) 555-0123", "jane@roe.example", "JANE@ROE.EXAMPLE", "0123"):
        assert await names(database, world.admin, q=q) == ["Jane Roe"], q
    assert await names(database, world.admin, q="doe") == ["John Doe"]
    assert await names(database, world.admin, q="415555") == ["Jane Roe", "John Doe"]


@pytest.mark.parametrize(
    "form",
    [
        "+14155550123",
        "14155550123",
        "(415) 555-0123",
        "415.555.0123",
        "tel:+1-415-555-0123",
        "5550123",
        "0123",
    ],
)
async def test_any_form_of_a_phone_number_finds_its_contact(
    database: Database, world: TeamWorld, form: str
) -> None:
    await create(database, world.admin, "Jane", phones=[{"number": "415 555 0123"}])
    await create(database, world.admin, "John", phones=[{"number": "+14155550999"}])
    assert await names(database, world.admin, phone=form) == ["Jane"]


async def test_a_national_number_is_searched_in_the_teams_region(database: Database) -> None:
    paris = await make_team(database, "Paris", region="FR")
    await create(database, paris.admin, "Marie", phones=[{"number": "06 12 34 56 78"}])
    assert await names(database, paris.admin, phone="06 12 34 56 78") == ["Marie"]
    assert await names(database, paris.admin, phone="+33 6 12 34 56 78") == ["Marie"]


async def test_a_phone_search_needs_three_digits(database: Database, world: TeamWorld) -> None:
    with pytest.raises(InvalidInput, match="at least three digits") as caught:
        await names(database, world.admin, phone="12")
    assert caught.value.field == "phone"


async def test_an_email_is_matched_whole_in_any_case(database: Database, world: TeamWorld) -> None:
    await create(
        database,
        world.admin,
        "Jane",
        emails=[{"email": "jane@example.com"}, {"email": "j.roe@work.example"}],
    )
    assert await names(database, world.admin, email=" J.Roe@Work.Example ") == ["Jane"]
    assert await names(database, world.admin, email="example.com") == []


async def test_wildcards_typed_in_a_search_are_taken_literally(
    database: Database, world: TeamWorld
) -> None:
    await create(database, world.admin, "100% Juice")
    await create(database, world.admin, "100 Juice")
    await create(database, world.admin, "a_b")
    await create(database, world.admin, "axb")
    assert await names(database, world.admin, q="100%") == ["100% Juice"]
    assert await names(database, world.admin, name="a_b") == ["a_b"]
    assert await names(database, world.admin, name="\\") == []


async def test_contacts_are_filtered_by_tag_stage_status_type_user_source_and_blocked(
    database: Database, world: TeamWorld
) -> None:
    async with database.transaction() as session:
        stage = await stages.add_stage(session, world.admin, "Qualified")
        session.add(ContactSource(team_id=world.team_id, name="trade show"))
    await create(database, world.admin, "Tagged", tags=["VIP"])
    await create(database, world.admin, "Staged", stage_id=stage.id)
    await create(database, world.admin, "Won", status="won")
    await create(database, world.admin, "Partner", type="collaborator")
    await create(database, world.admin, "Assigned", responsible_user_id=world.agent.user_id)
    await create(database, world.admin, "Met", source="trade show")
    await create(database, world.admin, "Blocked", blocked=True)
    assert await names(database, world.admin, tag="vip") == ["Tagged"]
    assert await names(database, world.admin, tag=" VIP ") == ["Tagged"]
    assert await names(database, world.admin, stage_id=stage.id) == ["Staged"]
    assert await names(database, world.admin, status=ContactStatus.WON) == ["Won"]
    assert await names(database, world.admin, type=ContactType.COLLABORATOR) == ["Partner"]
    assert await names(database, world.admin, responsible_user_id=world.agent.user_id) == [
        "Assigned"
    ]
    assert await names(database, world.admin, source="trade show") == ["Met"]
    assert await names(database, world.admin, source="manual") == [
        "Assigned",
        "Blocked",
        "Partner",
        "Staged",
        "Tagged",
        "Won",
    ]
    assert await names(database, world.admin, blocked=True) == ["Blocked"]
    assert len(await names(database, world.admin, blocked=False)) == 6
    assert len(await names(database, world.admin)) == 7


async def test_filters_narrow_each_other(database: Database, world: TeamWorld) -> None:
    await create(database, world.admin, "Jane Won", status="won", tags=["vip"])
    await create(database, world.admin, "Jane Open", tags=["vip"])
    await create(database, world.admin, "John Won", status="won", tags=["vip"])
    assert await names(database, world.admin, name="jane", status="won", tag="vip") == ["Jane Won"]


async def test_a_restricted_agent_finds_only_their_own_contacts(
    database: Database, world: TeamWorld
) -> None:
    await create(database, world.admin, "Mine", responsible_user_id=world.agent.user_id)
    await create(database, world.admin, "Not mine")
    assert await names(database, world.agent) == ["Mine", "Not mine"]
    assert await names(database, restricted(world.agent)) == ["Mine"]
    assert await names(database, restricted(world.agent), name="not") == []


async def _set_times(database: Database, contact_id: int, when: datetime) -> None:
    async with database.transaction() as session:
        await session.execute(
            update(Contact).where(Contact.id == contact_id).values(created_at=when, updated_at=when)
        )


SORTS: list[SortKey] = ["name", "-name", "created_at", "-created_at", "updated_at", "-updated_at"]


@pytest.mark.parametrize("sort", SORTS)
async def test_pages_walk_every_contact_exactly_once_in_every_sort_order(
    database: Database, world: TeamWorld, sort: SortKey
) -> None:
    """Ties on the sort value (same name, same time) are broken by id, so none is skipped."""
    same_time = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    ids: dict[int, tuple[str, datetime]] = {}
    for i, name in enumerate(["Cid", "Ann", "Eve", "Ann", "Bob", "Cid", "Dee"]):
        contact_id = await create(database, world.admin, name)
        when = same_time if i % 2 else datetime(2024, 1, 1 + i, tzinfo=UTC)
        await _set_times(database, contact_id, when)
        ids[contact_id] = (name, when)
    field = sort.lstrip("-")
    expected = sorted(
        ids,
        key=lambda cid: (ids[cid][0] if field == "name" else ids[cid][1], cid),
        reverse=sort.startswith("-"),
    )
    seen: list[int] = []
    cursor = None
    while True:
        async with database.transaction(read_only=True) as session:
            page = await search(
                session, world.admin, ContactFilter(), sort=sort, limit=2, cursor=cursor
            )
        seen += [c.id for c in page.contacts]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected


async def test_a_filtered_walk_pages_through_only_the_matches(
    database: Database, world: TeamWorld
) -> None:
    for i in range(6):
        await create(database, world.admin, f"P{i}", tags=["even"] if i % 2 == 0 else [])
    seen: list[str] = []
    cursor = None
    while True:
        async with database.transaction(read_only=True) as session:
            page = await search(
                session, world.admin, ContactFilter(tag="even"), sort="name", limit=1, cursor=cursor
            )
        seen += [c.name for c in page.contacts]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["P0", "P2", "P4"]


@pytest.mark.parametrize(
    ("sort", "cursor"),
    [
        pytest.param("name", "not a cursor", id="not-base64"),
        pytest.param("name", "bm9wZQ", id="not-json"),
        pytest.param("name", "\u00e9\u00e9\u00e9\u00e9", id="not-ascii"),
        pytest.param("name", forged("-name", "Ann", 1), id="another-sort"),
        pytest.param("name", forged("name", 5, 1), id="name-not-text"),
        pytest.param("name", forged("name", "Ann", "1"), id="id-not-a-number"),
        pytest.param("name", forged("name", "Ann", True), id="id-a-boolean"),
        pytest.param("name", forged("name", "Ann"), id="no-id"),
        pytest.param("name", forged("name", "Ann", 0), id="id-zero"),
        pytest.param("name", forged("name", "Ann", 2**63), id="id-beyond-bigint"),
        pytest.param("name", forged("name", "Ann", -(2**63) - 1), id="id-below-bigint"),
        pytest.param("name", forged("name", "Ann\u0000", 1), id="nul-in-name"),
        pytest.param("name", forged("name", "\ud800", 1), id="lone-surrogate-in-name"),
        pytest.param("-created_at", forged("-created_at", "yesterday", 1), id="not-a-time"),
        pytest.param("-created_at", forged("-created_at", 12, 1), id="time-a-number"),
        pytest.param(
            "-created_at", forged("-created_at", "2024-01-01T00:00:00", 1), id="time-without-zone"
        ),
        pytest.param(
            "updated_at",
            forged("updated_at", "2024-01-01T00:00:00+00:00", 2**64),
            id="time-with-huge-id",
        ),
    ],
)
async def test_a_cursor_this_search_did_not_give_out_is_refused_clearly(
    database: Database, world: TeamWorld, sort: SortKey, cursor: str
) -> None:
    await create(database, world.admin, "Ann")
    with pytest.raises(InvalidInput) as caught:
        async with database.transaction(read_only=True) as session:
            await search(session, world.admin, ContactFilter(), sort=sort, cursor=cursor)
    assert caught.value.field == "cursor"


@pytest.mark.parametrize("limit", [0, 501])
async def test_a_page_holds_one_to_five_hundred_contacts(
    database: Database, world: TeamWorld, limit: int
) -> None:
    with pytest.raises(InvalidInput, match="limit must be between 1 and 500"):
        async with database.transaction(read_only=True) as session:
            await search(session, world.admin, ContactFilter(), limit=limit)


@pytest.mark.parametrize("field", ["stage_id", "responsible_user_id"])
@pytest.mark.parametrize("wrong", [0, -1, 2**63, 2**70])
def test_an_id_in_a_filter_must_be_one_a_database_can_hold(field: str, wrong: int) -> None:
    """Otherwise the driver, not the filter, would refuse it: a server error, not a 422."""
    with pytest.raises(ValidationError) as caught:
        ContactFilter.model_validate({field: wrong})
    assert caught.value.errors()[0]["loc"] == (field,)
    assert ContactFilter.model_validate({field: 2**63 - 1})


async def test_tags_are_added_and_removed_and_find_their_contacts(
    database: Database, world: TeamWorld
) -> None:
    jane = await create(database, world.admin, "Jane", tags=["lead"])
    await create(database, world.admin, "John", tags=["lead", "vip"])
    async with database.transaction() as session:
        contact = await contacts.get_contact(session, world.admin, jane)
        await contacts.add_tags(session, world.admin, contact, ["vip"])
        await contacts.remove_tags(session, world.admin, contact, ["lead"])
        assert await contacts.tags_of(session, jane) == {"vip"}
    assert await names(database, world.admin, tag="vip") == ["Jane", "John"]
    assert await names(database, world.admin, tag="lead") == ["John"]


async def test_the_tag_cloud_counts_each_tag_most_used_first(
    database: Database, world: TeamWorld
) -> None:
    await create(database, world.admin, "A", tags=["vip", "lead", "zebra"])
    await create(database, world.admin, "B", tags=["lead", "vip"])
    await create(database, world.admin, "C", tags=["lead"])
    others = await make_team(database, "Other")
    await create(database, others.admin, "Theirs", tags=["lead", "secret"])
    async with database.transaction(read_only=True) as session:
        cloud = await tags.tag_cloud(session, world.admin)
    assert [(t.tag, t.count) for t in cloud] == [("lead", 3), ("vip", 2), ("zebra", 1)]


async def test_a_restricted_agents_tag_cloud_counts_only_their_contacts(
    database: Database, world: TeamWorld
) -> None:
    await create(
        database, world.admin, "Mine", tags=["vip"], responsible_user_id=world.agent.user_id
    )
    await create(database, world.admin, "Not mine", tags=["vip", "secret"])
    async with database.transaction(read_only=True) as session:
        cloud = await tags.tag_cloud(session, restricted(world.agent))
        everything = await tags.tag_cloud(session, world.agent)
    assert [(t.tag, t.count) for t in cloud] == [("vip", 1)]
    assert [(t.tag, t.count) for t in everything] == [("vip", 2), ("secret", 1)]
