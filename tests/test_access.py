"""Teams, users, tokens and who sees what.

Tokens are random, shown once and stored only as a hash; admins see every contact of their
team; a team can make agents see only the contacts they are responsible for; and nothing of
one team is ever visible to another.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

from tests.conftest import TeamWorld, make_team
from voicecrm.accounts import service as accounts
from voicecrm.accounts.actor import Actor, Role
from voicecrm.accounts.models import ApiToken, User
from voicecrm.crm import contacts
from voicecrm.crm.schemas import ContactCreate, ContactUpdate
from voicecrm.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from voicecrm.storage import Database


async def create(database: Database, actor: Actor, name: str, **fields: Any) -> int:
    async with database.transaction() as session:
        data = ContactCreate.model_validate({"name": name, **fields})
        return (await contacts.create_contact(session, actor, data)).id


def restricted(actor: Actor) -> Actor:
    team = dataclasses.replace(actor.team, agents_see_own_contacts_only=True)
    return dataclasses.replace(actor, team=team)


async def authenticate(database: Database, secret: str) -> Actor:
    async with database.transaction(read_only=True) as session:
        return (await accounts.authenticate(session, secret)).actor


# ----------------------------------------------------------------- tokens
async def test_a_token_is_random_and_only_its_hash_is_stored(
    database: Database, world: TeamWorld
) -> None:
    async with database.transaction() as session:
        user = await accounts.get_user(session, world.team_id, world.admin.user_id or 0)
        first = await accounts.create_token(session, user, "laptop")
        second = await accounts.create_token(session, user, "laptop")
    assert first.secret != second.secret
    assert first.secret.startswith("vcrm_") and len(first.secret) >= 40
    async with database.transaction(read_only=True) as session:
        stored = await session.get_one(ApiToken, first.token.id)
        dump = "\n".join(
            str(row) for row in (await session.execute(text("SELECT * FROM api_tokens"))).all()
        )
    assert stored.token_hash == hashlib.sha256(first.secret.encode()).hexdigest()
    assert stored.prefix == first.secret[:12]
    assert first.secret not in dump and second.secret not in dump
    assert (await authenticate(database, first.secret)).user_id == world.admin.user_id


async def test_a_token_stands_for_its_user_team_and_role(
    database: Database, world: TeamWorld
) -> None:
    admin = await authenticate(database, world.admin_token)
    agent = await authenticate(database, world.agent_token)
    assert (admin.team_id, admin.role, admin.user_id) == (
        world.team_id,
        Role.ADMIN,
        world.admin.user_id,
    )
    assert (agent.team_id, agent.role, agent.is_admin) == (world.team_id, Role.AGENT, False)


@pytest.mark.parametrize(
    "secret", ["", "vcrm_", "vcrm_wrong", "Bearer x", "vcrm_" + "a" * 300, "not-even-a-token"]
)
async def test_an_unknown_token_authenticates_no_one(
    database: Database, world: TeamWorld, secret: str
) -> None:
    with pytest.raises(AuthenticationFailed):
        await authenticate(database, secret)


async def test_a_revoked_token_authenticates_no_one(database: Database, world: TeamWorld) -> None:
    async with database.transaction(read_only=True) as session:
        token_id = (await accounts.authenticate(session, world.agent_token)).token_id
    async with database.transaction() as session:
        await accounts.revoke_token(session, world.agent, token_id)
    with pytest.raises(AuthenticationFailed, match="unknown or revoked"):
        await authenticate(database, world.agent_token)
    assert (await authenticate(database, world.admin_token)).user_id == world.admin.user_id


async def test_a_token_is_touched_only_once_in_a_while(
    database: Database, world: TeamWorld
) -> None:
    async with database.transaction(read_only=True) as session:
        first = await accounts.authenticate(session, world.admin_token)
    assert first.needs_touch
    async with database.transaction() as session:
        await accounts.touch_token(session, first.token_id)
    async with database.transaction(read_only=True) as session:
        again = await accounts.authenticate(session, world.admin_token)
        stored = await session.get_one(ApiToken, first.token_id)
    assert not again.needs_touch and stored.last_used_at is not None


async def test_an_agent_revokes_their_own_tokens_only(database: Database, world: TeamWorld) -> None:
    async with database.transaction(read_only=True) as session:
        admin_token = (await accounts.authenticate(session, world.admin_token)).token_id
    with pytest.raises(PermissionDenied):
        async with database.transaction() as session:
            await accounts.revoke_token(session, world.agent, admin_token)
    others = await make_team(database, "Other")
    async with database.transaction(read_only=True) as session:
        their_token = (await accounts.authenticate(session, others.agent_token)).token_id
    with pytest.raises(NotFound):
        async with database.transaction() as session:
            await accounts.revoke_token(session, world.admin, their_token)
    assert (await authenticate(database, world.admin_token)).is_admin
    assert (await authenticate(database, others.agent_token)).team_id == others.team_id


# ----------------------------------------------------------------- users and teams
async def test_users_are_admins_or_agents(database: Database, world: TeamWorld) -> None:
    with pytest.raises(InvalidInput) as caught:
        async with database.transaction() as session:
            await accounts.create_user(
                session, world.team_id, email="s@example.com", name="S", role=Role.SYSTEM
            )
    assert caught.value.field == "role"
    with pytest.raises(InvalidInput, match="is not an email address"):
        async with database.transaction() as session:
            await accounts.create_user(
                session, world.team_id, email="nobody", name="N", role=Role.AGENT
            )
    async with database.transaction() as session:
        user = await accounts.create_user(
            session, world.team_id, email="  New@Example.COM ", name="  ", role=Role.AGENT
        )
    assert (user.email, user.name, user.role) == ("new@example.com", "new@example.com", "agent")


async def test_an_email_address_belongs_to_one_user(database: Database, world: TeamWorld) -> None:
    async with database.transaction() as session:
        await accounts.create_user(
            session, world.team_id, email="one@example.com", name="One", role=Role.AGENT
        )
    with pytest.raises(Conflict, match="already exists"):
        async with database.transaction() as session:
            await accounts.create_user(
                session, world.team_id, email="ONE@example.com", name="Two", role=Role.ADMIN
            )


async def test_the_database_refuses_a_role_that_is_not_admin_or_agent(
    database: Database, world: TeamWorld
) -> None:
    with pytest.raises(IntegrityError, match="ck_users_role"):
        async with database.transaction() as session:
            await session.execute(
                update(User).where(User.id == world.agent.user_id).values(role="owner")
            )


@pytest.mark.parametrize(
    ("field", "value"), [("default_region", "XX"), ("timezone", "Mars/Olympus")]
)
async def test_a_team_needs_a_real_region_and_timezone(
    database: Database, field: str, value: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        async with database.transaction() as session:
            await accounts.create_team(session, "T", **{field: value})
    assert caught.value.field == field


async def test_a_user_of_another_team_does_not_exist_for_this_one(
    database: Database, world: TeamWorld
) -> None:
    others = await make_team(database, "Other")
    async with database.transaction(read_only=True) as session:
        with pytest.raises(NotFound):
            await accounts.get_user(session, world.team_id, others.admin.user_id or 0)
        assert [u.id for u in await accounts.list_users(session, world.team_id)] == [
            world.admin.user_id,
            world.agent.user_id,
        ]


# ----------------------------------------------------------------- who sees which contacts
async def test_admins_and_agents_see_every_contact_of_their_team(
    database: Database, world: TeamWorld
) -> None:
    ids = [
        await create(database, world.admin, "Unassigned"),
        await create(database, world.admin, "Agent's", responsible_user_id=world.agent.user_id),
        await create(database, world.admin, "Admin's", responsible_user_id=world.admin.user_id),
    ]
    async with database.transaction(read_only=True) as session:
        for actor in (world.admin, world.agent, world.system, restricted(world.admin)):
            assert await contacts.visible_ids(session, actor, ids) == ids


async def test_a_restricted_agent_sees_and_changes_only_contacts_they_are_responsible_for(
    database: Database, world: TeamWorld
) -> None:
    agent = restricted(world.agent)
    mine = await create(database, world.admin, "Mine", responsible_user_id=world.agent.user_id)
    not_mine = await create(database, world.admin, "Not mine")
    async with database.transaction(read_only=True) as session:
        assert await contacts.visible_ids(session, agent, [mine, not_mine]) == [mine]
        assert (await contacts.get_contact(session, agent, mine)).name == "Mine"
        with pytest.raises(NotFound):
            await contacts.get_contact(session, agent, not_mine)
    with pytest.raises(NotFound):
        async with database.transaction() as session:
            await contacts.update_contact(session, agent, not_mine, ContactUpdate(name="Taken"))
    async with database.transaction() as session:
        assert await contacts.delete_contacts(session, agent, [mine, not_mine]) == 1
    async with database.transaction(read_only=True) as session:
        assert await contacts.visible_ids(session, world.admin, [mine, not_mine]) == [not_mine]


async def test_a_restricted_agent_is_responsible_for_what_they_create(
    database: Database, world: TeamWorld
) -> None:
    agent = restricted(world.agent)
    created = await create(database, agent, "New lead")
    async with database.transaction(read_only=True) as session:
        contact = await contacts.get_contact(session, agent, created)
    assert contact.responsible_user_id == world.agent.user_id


async def test_one_team_never_sees_or_changes_anothers_contacts(
    database: Database, world: TeamWorld
) -> None:
    others = await make_team(database, "Other")
    theirs = await create(database, others.admin, "Theirs", phones=[{"number": "+14155550123"}])
    for actor in (world.admin, world.agent, world.system):
        async with database.transaction(read_only=True) as session:
            assert await contacts.visible_ids(session, actor, [theirs]) == []
            with pytest.raises(NotFound):
                await contacts.get_contact(session, actor, theirs)
        with pytest.raises(NotFound):
            async with database.transaction() as session:
                await contacts.update_contact(session, actor, theirs, ContactUpdate(name="X"))
        async with database.transaction() as session:
            assert await contacts.delete_contacts(session, actor, [theirs]) == 0
    async with database.transaction(read_only=True) as session:
        still = await contacts.get_contact(session, others.admin, theirs)
        assert still.name == "Theirs"


async def test_a_contact_cannot_be_given_to_a_user_of_another_team(
    database: Database, world: TeamWorld
) -> None:
    others = await make_team(database, "Other")
    with pytest.raises(InvalidInput) as caught:
        await create(database, world.admin, "X", responsible_user_id=others.agent.user_id)
    assert caught.value.field == "responsible_user_id"
    mine = await create(database, world.admin, "Mine")
    with pytest.raises(InvalidInput):
        async with database.transaction() as session:
            await contacts.update_contact(
                session, world.admin, mine, ContactUpdate(responsible_user_id=others.agent.user_id)
            )
    async with database.transaction(read_only=True) as session:
        contact = await contacts.get_contact(session, world.admin, mine)
        assert contact.responsible_user_id is None
        assert list(
            await session.scalars(select(User.team_id).where(User.id == others.agent.user_id))
        ) == [others.team_id]
