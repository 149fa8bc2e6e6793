"""The team setting that allows one phone number on several contacts.

The rule "one number, one contact" lives in a unique index on
`contact_phones.unique_e164`; allowing duplicates empties that column for the
team, and forbidding them again fills it back, which the database refuses
(and we explain) while duplicates still exist.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.models import Team
from voicecrm.crm.models import ContactPhone
from voicecrm.errors import Conflict


async def set_duplicate_phones(session: AsyncSession, team: Team, allow: bool) -> None:
    if allow:
        await session.execute(
            update(ContactPhone).where(ContactPhone.team_id == team.id).values(unique_e164=None)
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
            update(ContactPhone)
            .where(ContactPhone.team_id == team.id)
            .values(unique_e164=ContactPhone.e164)
        )
    team.allow_duplicate_phones = allow
