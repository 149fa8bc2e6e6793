"""The team's tag cloud: every tag in use with how many visible contacts carry it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.actor import Actor
from voicecrm.crm.contacts import visible_to
from voicecrm.crm.models import Contact, ContactTag


@dataclass(frozen=True, slots=True)
class TagCount:
    tag: str
    count: int


async def tag_cloud(session: AsyncSession, actor: Actor, *, limit: int = 1000) -> list[TagCount]:
    query = select(ContactTag.tag, func.count()).where(ContactTag.team_id == actor.team_id)
    if actor.sees_only_own_contacts:
        query = query.join(Contact, Contact.id == ContactTag.contact_id).where(visible_to(actor))
    query = query.group_by(ContactTag.tag).order_by(func.count().desc(), ContactTag.tag)
    rows = await session.execute(query.limit(limit))
    return [TagCount(tag=tag, count=count) for tag, count in rows]
