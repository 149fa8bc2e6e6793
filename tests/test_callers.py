"""Caller-ID resolution: any carrier format finds one contact, created once."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from tests.conftest import TeamWorld, make_team
from voicecrm.crm import timeline
from voicecrm.crm.callers import find_unchanged_caller, resolve_caller
from voicecrm.crm.models import Contact, ContactPhone
from voicecrm.errors import InvalidPhoneNumber
from voicecrm.storage import Database


async def test_an_unknown_number_becomes_an_unknown_caller(
    database: Database, world: TeamWorld
) -> None:
    async with database.transaction() as session:
        resolved = await resolve_caller(session, world.system, "+14155550123")
        assert resolved.created
        assert resolved.contact.name == "Unknown Caller"
        assert resolved.contact.source == "phone"
        page = await timeline.page(session, resolved.contact.id)
        assert [e.kind for e in page.events] == ["contact_created"]


async def test_every_carrier_format_finds_the_same_contact(
    database: Database, world: TeamWorld
) -> None:
    async with database.transaction() as session:
        first = await resolve_caller(session, world.system, "+14155550123", "Jane Roe")
    forms = [
        "14155550123",
        "(415) 555-0123",
        "tel:+1-415-555-0123",
        "sip:+14155550123@pbx.example.com;user=phone",
        "415.555.0123",
    ]
    for form in forms:
        async with database.transaction() as session:
            again = await resolve_caller(session, world.system, form)
            assert not again.created, form
            assert again.contact.id == first.contact.id, form
    async with database.transaction() as session:
        count = await session.scalar(select(func.count()).select_from(Contact))
        assert count == 1


async def test_a_known_caller_gets_caller_id_name_and_carrier_updated(
    database: Database, world: TeamWorld
) -> None:
    async with database.transaction() as session:
        created = await resolve_caller(session, world.system, "+447912345678")
        assert created.contact.name == "Unknown Caller"
        assert created.contact.carrier == "O2"  # from phonenumbers' offline carrier data
    async with database.transaction() as session:
        again = await resolve_caller(session, world.system, "+447912345678", "  Sam   Smith ")
        assert again.contact.caller_id_name == "Sam Smith"
    async with database.transaction() as session:
        contact = await session.get(Contact, created.contact.id)
        assert contact is not None and contact.caller_id_name == "Sam Smith"


async def test_a_caller_id_name_names_a_new_contact_but_placeholders_do_not(
    database: Database, world: TeamWorld
) -> None:
    async with database.transaction() as session:
        named = await resolve_caller(session, world.system, "+14155550100", "Jane Roe")
        anonymous = await resolve_caller(session, world.system, "+14155550101", "WIRELESS CALLER")
    assert named.contact.name == "Jane Roe"
    assert anonymous.contact.name == "Unknown Caller"


async def test_garbage_caller_id_is_refused(database: Database, world: TeamWorld) -> None:
    async with database.transaction() as session:
        for bad in ["", "anonymous", "12", "sip:alice@example.com"]:
            with pytest.raises(InvalidPhoneNumber):
                await resolve_caller(session, world.system, bad)


async def test_fifty_concurrent_first_calls_from_one_number_make_one_contact(
    database: Database, world: TeamWorld
) -> None:
    async def one_call() -> int:
        async with database.transaction() as session:
            return (await resolve_caller(session, world.system, "+14155550199", "Rush")).contact.id

    ids = await asyncio.gather(*(one_call() for _ in range(50)))
    assert len(set(ids)) == 1
    async with database.transaction() as session:
        contacts = await session.scalar(select(func.count()).select_from(Contact))
        phones = await session.scalar(select(func.count()).select_from(ContactPhone))
        created_events = len((await timeline.page(session, ids[0])).events)
    assert (contacts, phones, created_events) == (1, 1, 1)


async def test_the_same_number_in_two_teams_is_two_contacts(
    database: Database, world: TeamWorld
) -> None:
    other = await make_team(database, "Other")
    async with database.transaction() as session:
        a = await resolve_caller(session, world.system, "+14155550123")
        b = await resolve_caller(session, other.system, "+14155550123")
    assert a.contact.id != b.contact.id


async def test_an_unchanged_known_caller_is_found_without_a_transaction(
    database: Database, world: TeamWorld
) -> None:
    assert await find_unchanged_caller(database, world.system, "+447912345678") is None
    async with database.transaction() as session:
        created = await resolve_caller(session, world.system, "+447912345678", "Sam Smith")
    same = await find_unchanged_caller(database, world.system, "+44 7912 345678", "Sam Smith")
    renamed = await find_unchanged_caller(database, world.system, "+447912345678", "Sam S")
    no_name = await find_unchanged_caller(database, world.system, "+447912345678")
    assert same is not None and same.contact_id == created.contact.id
    assert not same.blocked
    assert renamed is None  # the caller-ID name changed: resolve_caller must write it
    assert no_name is not None


async def test_the_lookup_sees_what_was_committed_after_the_previous_one(
    database: Database, world: TeamWorld
) -> None:
    async with database.transaction() as session:
        created = await resolve_caller(session, world.system, "+447912345678", "Sam Smith")
    assert await find_unchanged_caller(database, world.system, "+447912345678", "Sam Smith")
    async with database.transaction() as session:
        contact = await session.get(Contact, created.contact.id)
        assert contact is not None
        contact.blocked = True
        await resolve_caller(session, world.system, "+447912345678", "Samantha Smith")
    before_rename = await find_unchanged_caller(
        database, world.system, "+447912345678", "Sam Smith"
    )
    after_rename = await find_unchanged_caller(
        database, world.system, "+447912345678", "Samantha Smith"
    )
    other = await make_team(database, "Other")
    other_team = await find_unchanged_caller(database, other.system, "+447912345678")
    assert before_rename is None
    assert after_rename is not None and after_rename.blocked
    assert other_team is None
