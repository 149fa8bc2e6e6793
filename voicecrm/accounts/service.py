"""Teams, users and API tokens.

Tokens are 32 random bytes shown once; only their SHA-256 is stored. A token
carries enough entropy that a slow password hash would add latency to every
request without adding safety, and a unique index on the hash makes lookup one
indexed query.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from zoneinfo import available_timezones

import phonenumbers
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.actor import Actor, Role, TeamSettings
from voicecrm.accounts.models import ApiToken, Team, User
from voicecrm.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from voicecrm.storage import utcnow

TOKEN_PREFIX = "vcrm_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_region(region: str) -> str:
    region = region.upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise InvalidInput(
            f"unknown region {region!r}: use a two-letter ISO country code", field="default_region"
        )
    return region


@cache
def _timezones() -> frozenset[str]:
    """The IANA names this machine knows, read once: `available_timezones` walks the
    whole zone directory each time, about 30 ms, which every team created paid."""
    return frozenset(available_timezones())


def check_timezone(tz: str) -> str:
    if tz not in _timezones():
        raise InvalidInput(
            f"unknown timezone {tz!r}: use an IANA name such as Europe/Paris", field="timezone"
        )
    return tz


def team_settings(team: Team) -> TeamSettings:
    return TeamSettings(
        id=team.id,
        default_region=team.default_region,
        timezone=team.timezone,
        allow_duplicate_phones=team.allow_duplicate_phones,
        agents_see_own_contacts_only=team.agents_see_own_contacts_only,
    )


async def create_team(
    session: AsyncSession, name: str, *, default_region: str = "US", timezone: str = "UTC"
) -> Team:
    team = Team(
        name=name,
        default_region=check_region(default_region),
        timezone=check_timezone(timezone),
        allow_duplicate_phones=False,
        agents_see_own_contacts_only=False,
        stages_version=0,
    )
    session.add(team)
    await session.flush()
    return team


async def get_team(session: AsyncSession, team_id: int) -> Team:
    team = await session.get(Team, team_id)
    if team is None:
        raise NotFound(f"team {team_id} does not exist")
    return team


async def first_team(session: AsyncSession) -> Team | None:
    return (await session.scalars(select(Team).order_by(Team.id).limit(1))).first()


async def create_user(
    session: AsyncSession, team_id: int, *, email: str, name: str, role: Role
) -> User:
    if role is Role.SYSTEM:
        raise InvalidInput("users are admins or agents", field="role")
    email = email.strip().lower()
    if "@" not in email:
        raise InvalidInput(f"{email!r} is not an email address", field="email")
    user = User(team_id=team_id, email=email, name=name.strip() or email, role=role.value)
    session.add(user)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as err:
        raise Conflict(f"a user with email {email!r} already exists") from err
    return user


async def get_user(session: AsyncSession, team_id: int, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None or user.team_id != team_id:
        raise NotFound(f"user {user_id} does not exist")
    return user


async def find_user_by_email(session: AsyncSession, email: str) -> User:
    user = (await session.scalars(select(User).where(User.email == email.strip().lower()))).first()
    if user is None:
        raise NotFound(f"no user has email {email!r}")
    return user


async def list_users(session: AsyncSession, team_id: int) -> list[User]:
    return list(
        await session.scalars(select(User).where(User.team_id == team_id).order_by(User.id))
    )


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly created token; `secret` exists only here and is never stored."""

    token: ApiToken
    secret: str


async def create_token(session: AsyncSession, user: User, name: str = "default") -> IssuedToken:
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user_id=user.id, name=name, prefix=secret[:12], token_hash=hash_token(secret))
    session.add(token)
    await session.flush()
    return IssuedToken(token=token, secret=secret)


async def list_tokens(session: AsyncSession, user_id: int) -> list[ApiToken]:
    rows = await session.scalars(
        select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)
    )
    return list(rows)


async def revoke_token(session: AsyncSession, actor: Actor, token_id: int) -> None:
    token = await session.get(ApiToken, token_id)
    owner = await session.get(User, token.user_id) if token else None
    if token is None or owner is None or owner.team_id != actor.team_id:
        raise NotFound(f"token {token_id} does not exist")
    if owner.id != actor.user_id:
        actor.require_admin()
    token.revoked_at = utcnow()
    await session.flush()


TOUCH_EVERY = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Authenticated:
    actor: Actor
    token_id: int
    needs_touch: bool


async def authenticate(session: AsyncSession, secret: str) -> Authenticated:
    """The actor behind a bearer token, or `AuthenticationFailed`. One indexed join, no write.

    `needs_touch` says the token's last-used time is stale; the edge records it in a
    separate write (`touch_token`), so that read-only requests stay read-only.
    """
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        raise AuthenticationFailed("the bearer token is unknown or revoked")
    row = (
        await session.execute(
            select(ApiToken.id, ApiToken.last_used_at, User, Team)
            .join(User, User.id == ApiToken.user_id)
            .join(Team, Team.id == User.team_id)
            .where(ApiToken.token_hash == hash_token(secret), ApiToken.revoked_at.is_(None))
        )
    ).first()
    if row is None:
        raise AuthenticationFailed("the bearer token is unknown or revoked")
    token_id, last_used_at, user, team = row
    actor = Actor(team=team_settings(team), role=Role(user.role), user_id=user.id)
    stale = last_used_at is None or utcnow() - last_used_at > TOUCH_EVERY
    return Authenticated(actor=actor, token_id=token_id, needs_touch=stale)


async def touch_token(session: AsyncSession, token_id: int) -> None:
    await session.execute(
        update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=utcnow())
    )
