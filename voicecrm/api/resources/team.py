"""The team, its users, their API tokens and the team's own contact sources."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from voicecrm.accounts import service as accounts
from voicecrm.accounts.actor import Role
from voicecrm.accounts.models import ApiToken, User
from voicecrm.api.routing import Ctx, Route
from voicecrm.crm.duplicates import set_duplicate_phones
from voicecrm.crm.models import ContactSource
from voicecrm.crm.schemas import BUILTIN_SOURCES
from voicecrm.errors import DuplicateName, InvalidInput


class TeamOut(BaseModel):
    id: int
    name: str
    default_region: str
    timezone: str
    allow_duplicate_phones: bool
    agents_see_own_contacts_only: bool


class TeamUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
        | None
    ) = None
    default_region: Annotated[str, StringConstraints(min_length=2, max_length=2)] | None = None
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    allow_duplicate_phones: bool | None = None
    agents_see_own_contacts_only: bool | None = None


class UserOut(BaseModel):
    id: int
    email: str
    name: str
    role: str
    created_at: datetime


class UserList(BaseModel):
    items: list[UserOut]


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$"
        ),
    ]
    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)] = ""
    role: Annotated[str, Field(pattern="^(admin|agent)$")] = "agent"


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] = (
        "api"
    )


class TokenOut(BaseModel):
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class IssuedTokenOut(TokenOut):
    token: str = Field(description="The secret. Shown only in this response; store it now.")


class TokenList(BaseModel):
    items: list[TokenOut]


class SourceList(BaseModel):
    builtin: list[str]
    custom: list[str]


class SourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


def _team_out(team: object) -> TeamOut:
    return TeamOut.model_validate(team, from_attributes=True)


def _user_out(user: User) -> UserOut:
    return UserOut.model_validate(user, from_attributes=True)


def _token_out(token: ApiToken) -> TokenOut:
    return TokenOut.model_validate(token, from_attributes=True)


async def get_team(ctx: Ctx) -> TeamOut:
    return _team_out(await accounts.get_team(ctx.session, ctx.actor.team_id))


async def update_team(ctx: Ctx) -> TeamOut:
    data = ctx.body(TeamUpdate)
    team = await accounts.get_team(ctx.session, ctx.actor.team_id)
    if data.name is not None:
        team.name = data.name
    if data.default_region is not None:
        team.default_region = accounts.check_region(data.default_region)
    if data.timezone is not None:
        team.timezone = accounts.check_timezone(data.timezone)
    if data.agents_see_own_contacts_only is not None:
        team.agents_see_own_contacts_only = data.agents_see_own_contacts_only
    if data.allow_duplicate_phones is not None and (
        data.allow_duplicate_phones != team.allow_duplicate_phones
    ):
        await set_duplicate_phones(ctx.session, team, data.allow_duplicate_phones)
    return _team_out(team)


async def me(ctx: Ctx) -> UserOut:
    return _user_out(
        await accounts.get_user(ctx.session, ctx.actor.team_id, ctx.actor.user_id or 0)
    )


async def list_users(ctx: Ctx) -> UserList:
    return UserList(
        items=[_user_out(u) for u in await accounts.list_users(ctx.session, ctx.actor.team_id)]
    )


async def create_user(ctx: Ctx) -> UserOut:
    data = ctx.body(UserIn)
    user = await accounts.create_user(
        ctx.session, ctx.actor.team_id, email=data.email, name=data.name, role=Role(data.role)
    )
    return _user_out(user)


async def create_token(ctx: Ctx) -> IssuedTokenOut:
    user_id = ctx.path_id("user_id")
    if user_id != ctx.actor.user_id:
        ctx.actor.require_admin()
    user = await accounts.get_user(ctx.session, ctx.actor.team_id, user_id)
    issued = await accounts.create_token(ctx.session, user, ctx.body(TokenIn).name)
    return IssuedTokenOut(**_token_out(issued.token).model_dump(), token=issued.secret)


async def list_tokens(ctx: Ctx) -> TokenList:
    user_id = ctx.path_id("user_id")
    if user_id != ctx.actor.user_id:
        ctx.actor.require_admin()
    await accounts.get_user(ctx.session, ctx.actor.team_id, user_id)
    return TokenList(
        items=[_token_out(t) for t in await accounts.list_tokens(ctx.session, user_id)]
    )


async def revoke_token(ctx: Ctx) -> None:
    await accounts.revoke_token(ctx.session, ctx.actor, ctx.path_id("token_id"))


async def list_sources(ctx: Ctx) -> SourceList:
    custom = await ctx.session.scalars(
        select(ContactSource.name)
        .where(ContactSource.team_id == ctx.actor.team_id)
        .order_by(ContactSource.name)
    )
    return SourceList(builtin=list(BUILTIN_SOURCES), custom=list(custom))


async def add_source(ctx: Ctx) -> SourceList:
    name = ctx.body(SourceIn).name
    if name in BUILTIN_SOURCES:
        raise InvalidInput(f"{name!r} is a built-in source", field="name")
    ctx.session.add(ContactSource(team_id=ctx.actor.team_id, name=name))
    try:
        async with ctx.session.begin_nested():
            await ctx.session.flush()
    except IntegrityError as err:
        raise DuplicateName(f"the source {name!r} already exists", field="name") from err
    return await list_sources(ctx)


ROUTES = [
    Route(
        "GET",
        "/team",
        get_team,
        "The token's team and its settings",
        "team",
        response=TeamOut,
        read_only=True,
    ),
    Route(
        "PATCH",
        "/team",
        update_team,
        "Change the team's settings",
        "team",
        body=TeamUpdate,
        response=TeamOut,
        admin_only=True,
        errors=(409,),
    ),
    Route("GET", "/me", me, "The token's user", "team", response=UserOut, read_only=True),
    Route(
        "GET", "/users", list_users, "The team's users", "team", response=UserList, read_only=True
    ),
    Route(
        "POST",
        "/users",
        create_user,
        "Add a user to the team",
        "team",
        body=UserIn,
        response=UserOut,
        status=201,
        admin_only=True,
        errors=(409,),
    ),
    Route(
        "GET",
        "/users/{user_id}/tokens",
        list_tokens,
        "A user's API tokens",
        "team",
        response=TokenList,
        read_only=True,
        errors=(403,),
    ),
    Route(
        "POST",
        "/users/{user_id}/tokens",
        create_token,
        "Issue an API token (the secret is shown once)",
        "team",
        body=TokenIn,
        response=IssuedTokenOut,
        status=201,
        errors=(403,),
    ),
    Route(
        "DELETE",
        "/tokens/{token_id}",
        revoke_token,
        "Revoke an API token",
        "team",
        status=204,
        errors=(403,),
    ),
    Route(
        "GET",
        "/sources",
        list_sources,
        "Contact sources: built-in and the team's own",
        "team",
        response=SourceList,
        read_only=True,
    ),
    Route(
        "POST",
        "/sources",
        add_source,
        "Add a team contact source",
        "team",
        body=SourceIn,
        response=SourceList,
        status=201,
        admin_only=True,
        errors=(409,),
    ),
]
