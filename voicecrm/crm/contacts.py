"""Contacts: create, read, change and delete, with phones, emails and tags.

Every change that matters to a person reading the contact later (stage,
status, tags, fields) lands on the timeline in the same transaction as the
change itself, so the history can never disagree with the record.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.actor import Actor
from voicecrm.accounts.models import User
from voicecrm.crm import timeline
from voicecrm.crm.duplicates import duplicate_key
from voicecrm.crm.models import (
    Contact,
    ContactEmail,
    ContactPhone,
    ContactSource,
    ContactTag,
    Stage,
)
from voicecrm.crm.phones import normalize_phone
from voicecrm.crm.schemas import (
    BUILTIN_SOURCES,
    UNKNOWN_CALLER,
    ContactCreate,
    ContactOut,
    ContactStatus,
    ContactType,
    EmailIn,
    EmailOut,
    PhoneIn,
    PhoneOut,
)
from voicecrm.errors import DuplicatePhone, InvalidInput, NotFound
from voicecrm.storage import MAX_ID, utcnow


def visible_to(actor: Actor) -> ColumnElement[bool]:
    """The WHERE clause of every contact query: the actor's team, and their own if restricted."""
    clause = Contact.team_id == actor.team_id
    if actor.sees_only_own_contacts:
        clause = clause & (Contact.responsible_user_id == actor.user_id)
    return clause


async def get_contact(
    session: AsyncSession, actor: Actor, contact_id: int, *, for_update: bool = False
) -> Contact:
    query = select(Contact).where(Contact.id == contact_id, visible_to(actor))
    if for_update:
        query = query.with_for_update()
    contact = (await session.scalars(query)).first()
    if contact is None:
        raise NotFound(f"contact {contact_id} does not exist")
    return contact


async def visible_ids(session: AsyncSession, actor: Actor, ids: Iterable[int]) -> list[int]:
    wanted = sorted(set(ids))
    found: list[int] = []
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found += list(
            await session.scalars(
                select(Contact.id).where(Contact.id.in_(chunk), visible_to(actor))
            )
        )
    return found


# ----------------------------------------------------------------- checks of linked rows
async def check_stage(session: AsyncSession, actor: Actor, stage_id: int) -> Stage:
    """The team's stage, share-locked until the transaction ends.

    A removal of the stage (which locks it for update) then either waits for this
    transaction, and sees the contact it put on the stage, or has finished, and this
    finds the stage gone: never a contact silently unstaged, nor a foreign-key failure.
    Take it before locking a contact; a removal locks its stage, then its contacts.
    """
    stage = None
    if 0 < stage_id <= MAX_ID:  # beyond a BIGINT the driver itself would fail: a 500
        stage = (
            await session.scalars(
                select(Stage)
                .where(Stage.id == stage_id)
                .with_for_update(read=True)
                .execution_options(populate_existing=True)
            )
        ).first()
    if stage is None or stage.team_id != actor.team_id:
        raise InvalidInput(f"stage {stage_id} does not exist", field="stage_id")
    return stage


async def check_user(session: AsyncSession, actor: Actor, user_id: int) -> None:
    user = await session.get(User, user_id) if 0 < user_id <= MAX_ID else None
    if user is None or user.team_id != actor.team_id:
        raise InvalidInput(f"user {user_id} does not exist", field="responsible_user_id")


async def check_source(session: AsyncSession, actor: Actor, source: str) -> str:
    if source in BUILTIN_SOURCES:
        return source
    found = await session.scalar(
        select(ContactSource.id).where(
            ContactSource.team_id == actor.team_id, ContactSource.name == source
        )
    )
    if found is None:
        raise InvalidInput(
            f"unknown source {source!r}: use one of {', '.join(BUILTIN_SOURCES)} "
            "or a source the team has added",
            field="source",
        )
    return source


# ----------------------------------------------------------------- phones, emails, tags
def phone_rows(actor: Actor, contact_id: int, phones: Sequence[PhoneIn]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for position, phone in enumerate(phones):
        normalized = normalize_phone(phone.number, actor.team.default_region)
        if normalized.e164 in seen:
            continue
        seen.add(normalized.e164)
        rows.append(
            {
                "team_id": actor.team_id,
                "contact_id": contact_id,
                "e164": normalized.e164,
                "duplicate_key": duplicate_key(actor.team.allow_duplicate_phones, contact_id),
                "original": phone.number.strip(),
                "label": phone.label,
                "region": normalized.region,
                "position": position,
            }
        )
    return rows


async def owner_of_phone(session: AsyncSession, team_id: int, e164: str) -> int | None:
    return await session.scalar(
        select(ContactPhone.contact_id)
        .where(ContactPhone.team_id == team_id, ContactPhone.e164 == e164)
        .limit(1)
    )


async def insert_phones(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert phone rows, turning the uniqueness guarantee into a `DuplicatePhone` error."""
    if not rows:
        return
    try:
        async with session.begin_nested():
            await session.execute(insert(ContactPhone), rows)
    except IntegrityError as err:
        for row in rows:
            other = await owner_of_phone(session, row["team_id"], row["e164"])
            if other is not None and other != row["contact_id"]:
                raise DuplicatePhone(
                    f"{row['e164']} already belongs to contact {other}",
                    field="phones",
                    contact_id=other,
                    phone=row["e164"],
                ) from err
        raise


async def replace_phones(
    session: AsyncSession, actor: Actor, contact: Contact, phones: Sequence[PhoneIn]
) -> None:
    rows = phone_rows(actor, contact.id, phones)
    await session.execute(delete(ContactPhone).where(ContactPhone.contact_id == contact.id))
    await insert_phones(session, rows)
    if rows and contact.carrier is None:
        contact.carrier = normalize_phone(phones[0].number, actor.team.default_region).carrier


async def replace_emails(
    session: AsyncSession, actor: Actor, contact_id: int, emails: Sequence[EmailIn]
) -> None:
    await session.execute(delete(ContactEmail).where(ContactEmail.contact_id == contact_id))
    rows = []
    seen: set[str] = set()
    for position, item in enumerate(emails):
        if item.email in seen:
            continue
        seen.add(item.email)
        rows.append(
            {
                "team_id": actor.team_id,
                "contact_id": contact_id,
                "email": item.email,
                "label": item.label,
                "position": position,
            }
        )
    if rows:
        await session.execute(insert(ContactEmail), rows)


async def tags_of(session: AsyncSession, contact_id: int) -> set[str]:
    return set(
        await session.scalars(select(ContactTag.tag).where(ContactTag.contact_id == contact_id))
    )


async def add_tags(
    session: AsyncSession, actor: Actor, contact: Contact, tags: Iterable[str]
) -> list[str]:
    """Add tags the contact does not have yet; returns those added (recorded on the timeline)."""
    current = await tags_of(session, contact.id)
    added = sorted({t for t in tags} - current)
    if added:
        await session.execute(
            insert(ContactTag),
            [{"contact_id": contact.id, "tag": t, "team_id": actor.team_id} for t in added],
        )
        await timeline.append(
            session, actor, contact.id, "tags_changed", timeline.TagsChanged(added=added)
        )
        contact.updated_at = utcnow()
    return added


async def remove_tags(
    session: AsyncSession, actor: Actor, contact: Contact, tags: Iterable[str]
) -> list[str]:
    current = await tags_of(session, contact.id)
    removed = sorted(current & set(tags))
    if removed:
        await session.execute(
            delete(ContactTag).where(
                ContactTag.contact_id == contact.id, ContactTag.tag.in_(removed)
            )
        )
        await timeline.append(
            session, actor, contact.id, "tags_changed", timeline.TagsChanged(removed=removed)
        )
        contact.updated_at = utcnow()
    return removed


# ----------------------------------------------------------------- stage and status
async def change_stage(
    session: AsyncSession,
    actor: Actor,
    contact: Contact,
    stage_id: int | None,
    *,
    reason: str | None = None,
) -> bool:
    if contact.stage_id == stage_id:
        return False
    new = await check_stage(session, actor, stage_id) if stage_id is not None else None
    old = await session.get(Stage, contact.stage_id) if contact.stage_id is not None else None
    contact.stage_id = stage_id
    contact.updated_at = utcnow()
    await timeline.append(
        session,
        actor,
        contact.id,
        "stage_changed",
        timeline.StageChanged(
            from_stage_id=old.id if old else None,
            from_stage=old.name if old else None,
            to_stage_id=new.id if new else None,
            to_stage=new.name if new else None,
            reason=reason,
        ),
    )
    return True


async def change_status(
    session: AsyncSession, actor: Actor, contact: Contact, status: ContactStatus
) -> bool:
    """Open, won or lost; moving back to open is a reopen, recorded like any other change."""
    if contact.status == status.value:
        return False
    await timeline.append(
        session,
        actor,
        contact.id,
        "status_changed",
        timeline.StatusChanged(from_status=contact.status, to_status=status.value),
    )
    contact.status = status.value
    contact.updated_at = utcnow()
    return True


# ----------------------------------------------------------------- create, update, delete
_PLAIN_FIELDS = ("company", "caller_id_name", "rating", "blocked", "custom_fields")


async def create_contact(
    session: AsyncSession, actor: Actor, data: ContactCreate, *, default_source: str = "manual"
) -> Contact:
    phone_rows(actor, 0, data.phones)  # refuse bad numbers before writing anything
    source = await check_source(session, actor, data.source or default_source)
    if data.stage_id is not None:
        await check_stage(session, actor, data.stage_id)
    responsible = data.responsible_user_id
    if responsible is not None:
        await check_user(session, actor, responsible)
    elif actor.sees_only_own_contacts:
        responsible = actor.user_id  # an agent who sees only their own keeps what they create
    name = data.name or data.caller_id_name or UNKNOWN_CALLER
    now = utcnow()
    contact = Contact(
        team_id=actor.team_id,
        name=name,
        company=data.company,
        type=(data.type or ContactType.CUSTOMER).value,
        caller_id_name=data.caller_id_name,
        source=source,
        responsible_user_id=responsible,
        rating=data.rating or 0,
        status=(data.status or ContactStatus.OPEN).value,
        blocked=bool(data.blocked),
        stage_id=data.stage_id,
        custom_fields=data.custom_fields or {},
        created_at=now,
        updated_at=now,
        carrier=None,
    )
    session.add(contact)
    await session.flush()
    await replace_phones(session, actor, contact, data.phones)
    await replace_emails(session, actor, contact.id, data.emails)
    await timeline.append(
        session,
        actor,
        contact.id,
        "contact_created",
        timeline.ContactCreated(name=name, source=source),
    )
    if data.tags:
        await session.execute(
            insert(ContactTag),
            [
                {"contact_id": contact.id, "tag": t, "team_id": actor.team_id}
                for t in sorted(set(data.tags))
            ],
        )
    return contact


async def update_contact(
    session: AsyncSession, actor: Actor, contact_id: int, data: Any
) -> Contact:
    """Apply a `ContactUpdate`: only the fields it sets change."""
    if data.stage_id is not None and not data.clear_stage:
        await check_stage(session, actor, data.stage_id)  # the stage's lock before the contact's
    contact = await get_contact(session, actor, contact_id, for_update=True)
    changed: list[str] = []
    given = data.model_fields_set
    if data.name is not None and data.name != contact.name:
        contact.name = data.name
        changed.append("name")
    for field in _PLAIN_FIELDS:
        value = getattr(data, field)
        if field in given and value is not None and getattr(contact, field) != value:
            setattr(contact, field, value)
            changed.append(field)
    if data.type is not None and data.type.value != contact.type:
        contact.type = data.type.value
        changed.append("type")
    if data.source is not None and data.source != contact.source:
        contact.source = await check_source(session, actor, data.source)
        changed.append("source")
    if data.clear_responsible_user or (
        data.responsible_user_id is not None
        and data.responsible_user_id != contact.responsible_user_id
    ):
        if data.responsible_user_id is not None and not data.clear_responsible_user:
            await check_user(session, actor, data.responsible_user_id)
            contact.responsible_user_id = data.responsible_user_id
        else:
            contact.responsible_user_id = None
        changed.append("responsible_user_id")
    if data.phones is not None:
        await replace_phones(session, actor, contact, data.phones)
        changed.append("phones")
    if data.emails is not None:
        await replace_emails(session, actor, contact.id, data.emails)
        changed.append("emails")
    if changed:
        contact.updated_at = utcnow()
        await timeline.append(
            session, actor, contact.id, "contact_updated", timeline.ContactUpdated(fields=changed)
        )
    if data.clear_stage:
        await change_stage(session, actor, contact, None)
    elif data.stage_id is not None:
        await change_stage(session, actor, contact, data.stage_id)
    if data.status is not None:
        await change_status(session, actor, contact, data.status)
    return contact


async def delete_contacts(session: AsyncSession, actor: Actor, ids: Sequence[int]) -> int:
    """Delete contacts the actor can see; their phones, notes and timeline go with them."""
    visible = await visible_ids(session, actor, ids)
    for start in range(0, len(visible), 500):
        await session.execute(delete(Contact).where(Contact.id.in_(visible[start : start + 500])))
    return len(visible)


# ----------------------------------------------------------------- reading out
async def to_out(session: AsyncSession, contacts: Sequence[Contact]) -> list[ContactOut]:
    """Contacts with their phones, emails and tags: three queries for any number of contacts."""
    ids = [c.id for c in contacts]
    phones: dict[int, list[PhoneOut]] = defaultdict(list)
    emails: dict[int, list[EmailOut]] = defaultdict(list)
    tags: dict[int, list[str]] = defaultdict(list)
    if ids:
        for p in await session.scalars(
            select(ContactPhone)
            .where(ContactPhone.contact_id.in_(ids))
            .order_by(ContactPhone.position)
        ):
            phones[p.contact_id].append(
                PhoneOut(e164=p.e164, original=p.original, label=p.label, region=p.region)
            )
        for e in await session.scalars(
            select(ContactEmail)
            .where(ContactEmail.contact_id.in_(ids))
            .order_by(ContactEmail.position)
        ):
            emails[e.contact_id].append(EmailOut(email=e.email, label=e.label))
        for t in await session.scalars(
            select(ContactTag).where(ContactTag.contact_id.in_(ids)).order_by(ContactTag.tag)
        ):
            tags[t.contact_id].append(t.tag)
    return [
        ContactOut(
            id=c.id,
            name=c.name,
            company=c.company,
            type=ContactType(c.type),
            phones=phones[c.id],
            emails=emails[c.id],
            tags=tags[c.id],
            caller_id_name=c.caller_id_name,
            carrier=c.carrier,
            source=c.source,
            responsible_user_id=c.responsible_user_id,
            rating=c.rating,
            status=ContactStatus(c.status),
            blocked=c.blocked,
            stage_id=c.stage_id,
            custom_fields=c.custom_fields or {},
            created_at=c.created_at,
            updated_at=c.updated_at,
        )
        for c in contacts
    ]


async def one_out(session: AsyncSession, contact: Contact) -> ContactOut:
    return (await to_out(session, [contact]))[0]
