"""The team setting that allows one phone number on several contacts.

The rule "one number, one contact" lives in a unique index on `contact_phones`
(team, number, `duplicate_key`): the key is 0 for every phone of a team that
forbids duplicates, so a number can be there once; allowing duplicates sets
each phone's key to its contact's id, and forbidding them again sets the keys
back to 0, which the database would refuse (and we explain first) while
duplicates still exist.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.models import Team
from voicecrm.crm.models import ContactPhone
from voicecrm.errors import Conflict

UNIQUE = 0  # the duplicate_key of every phone of a team that forbids duplicate numbers


def duplicate_key(allow_duplicates: bool, contact_id: int) -> int:
    """The `duplicate_key` of a phone of `contact_id` in a team with that setting."""
    return contact_id if allow_duplicates else UNIQUE


async def set_duplicate_phones(session: AsyncSession, team: Team, allow: bool) -> None:
    if allow:
        await session.execute(
            update(ContactPhone)
            .where(ContactPhone.team_id == team.id)
            .values(duplicate_key=ContactPhone.contact_id)
        )
    else:
        shared = await session.scalar(
            select(func.count()).select_from(
                select(ContactPhone.e164)
                .where(ContactPhone.team_id == team.id)
                .group_by(ContactPhone.e164)
                .having(func.count() > 1)
                .subquery()
            )
        )
        if shared:
            raise Conflict(
                f"{shared} phone numbers belong to more than one contact; merge "
                "those contacts before forbidding duplicates",
                numbers=shared,
            )
        await session.execute(
            update(ContactPhone).where(ContactPhone.team_id == team.id).values(duplicate_key=UNIQUE)
        )
    team.allow_duplicate_phones = allow
