"""Merging duplicate contacts into one survivor without losing anything.

Phones, emails, tags, notes and the whole timeline move to the survivor; empty
fields of the survivor are filled from the others; the others' own field values
are kept in the `merged` timeline event; then the others are deleted. All of it
happens in the caller's transaction, so a failure leaves every contact as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.actor import Actor
from voicecrm.crm import timeline
from voicecrm.crm.contacts import change_stage, visible_to
from voicecrm.crm.duplicates import UNIQUE
from voicecrm.crm.models import (
    Contact,
    ContactEmail,
    ContactPhone,
    ContactTag,
    Note,
    TimelineEvent,
)
from voicecrm.crm.schemas import CONTACT_FIELDS
from voicecrm.errors import InvalidInput, NotFound
from voicecrm.storage import utcnow

_FILLABLE = ("company", "caller_id_name", "carrier", "responsible_user_id")
_SNAPSHOT = CONTACT_FIELDS


async def _move_unless_present(
    session: AsyncSession,
    table: type[ContactPhone] | type[ContactEmail],
    key: str,
    survivor_id: int,
    others_ids: list[int],
) -> None:
    """Move the others' rows to the survivor, after its own, dropping values it already has."""
    have = set(
        await session.scalars(select(getattr(table, key)).where(table.contact_id == survivor_id))
    )
    position = len(have)
    rows: list[ContactPhone | ContactEmail] = list(
        await session.scalars(
            select(table).where(table.contact_id.in_(others_ids)).order_by(table.id)
        )
    )
    for row in rows:
        value = getattr(row, key)
        if value in have:
            await session.delete(row)
            continue
        have.add(value)
        row.contact_id, row.position = survivor_id, position
        if isinstance(row, ContactPhone) and row.duplicate_key != UNIQUE:
            row.duplicate_key = survivor_id  # the survivor's now (teams allowing duplicates)
        position += 1


def _snapshot(contact: Contact) -> dict[str, Any]:
    data = {field: getattr(contact, field) for field in _SNAPSHOT}
    data["id"] = contact.id
    data["created_at"] = contact.created_at.isoformat()
    return data


async def _lock(
    session: AsyncSession, actor: Actor, survivor_id: int, others_ids: list[int]
) -> tuple[Contact, list[Contact]]:
    """Every contact of the merge, row-locked in one statement in id order.

    Locking one by one, survivor first, let two opposite merges (A into B, B into A)
    each hold one row and wait for the other: a deadlock on PostgreSQL. In id order the
    second merge waits for the first, then finds its merged contact gone: `NotFound`.
    """
    wanted = [survivor_id, *others_ids]
    found = {
        contact.id: contact
        for contact in await session.scalars(
            select(Contact)
            .where(Contact.id.in_(wanted), visible_to(actor))
            .order_by(Contact.id)
            .with_for_update()
        )
    }
    for contact_id in wanted:
        if contact_id not in found:
            raise NotFound(f"contact {contact_id} does not exist")
    return found[survivor_id], [found[cid] for cid in others_ids]


async def merge_contacts(
    session: AsyncSession, actor: Actor, survivor_id: int, merged_ids: Sequence[int]
) -> Contact:
    others_ids = sorted(set(merged_ids) - {survivor_id})
    if not others_ids:
        raise InvalidInput(
            "name at least one contact to merge into the survivor", field="merged_ids"
        )
    if len(others_ids) > 100:
        raise InvalidInput("merge at most 100 contacts at once", field="merged_ids")
    survivor, others = await _lock(session, actor, survivor_id, others_ids)

    for other in others:
        for field in _FILLABLE:
            if getattr(survivor, field) is None and getattr(other, field) is not None:
                setattr(survivor, field, getattr(other, field))
        if survivor.stage_id is None and other.stage_id is not None:
            # A stage change, like any other, belongs on the survivor's timeline.
            await change_stage(session, actor, survivor, other.stage_id, reason="merged")
        survivor.custom_fields = {**(other.custom_fields or {}), **(survivor.custom_fields or {})}
        survivor.rating = max(survivor.rating, other.rating)
        survivor.blocked = survivor.blocked or other.blocked
        if other.created_at < survivor.created_at:
            survivor.created_at = other.created_at

    # Phones and emails: the survivor keeps its own; the others' move unless it has them.
    await _move_unless_present(session, ContactPhone, "e164", survivor.id, others_ids)
    await _move_unless_present(session, ContactEmail, "email", survivor.id, others_ids)

    have_tags = set(
        await session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == survivor.id))
    )
    their_tags = set(
        await session.scalars(select(ContactTag.tag).where(ContactTag.contact_id.in_(others_ids)))
    )
    await session.execute(delete(ContactTag).where(ContactTag.contact_id.in_(others_ids)))
    if their_tags - have_tags:
        await session.execute(
            insert(ContactTag),
            [
                {"contact_id": survivor.id, "tag": t, "team_id": actor.team_id}
                for t in sorted(their_tags - have_tags)
            ],
        )
    await session.flush()

    await session.execute(
        update(Note).where(Note.contact_id.in_(others_ids)).values(contact_id=survivor.id)
    )
    await session.execute(
        update(TimelineEvent)
        .where(TimelineEvent.contact_id.in_(others_ids))
        .values(contact_id=survivor.id)
    )
    snapshots = [_snapshot(o) for o in others]
    names = [o.name for o in others]
    await session.flush()
    for other in others:
        session.expunge(other)
    await session.execute(delete(Contact).where(Contact.id.in_(others_ids)))
    survivor.updated_at = utcnow()
    await timeline.append(
        session,
        actor,
        survivor.id,
        "merged",
        timeline.Merged(merged_contact_ids=others_ids, merged_names=names, snapshots=snapshots),
    )
    return survivor
