"""Caller-ID resolution: the contact behind an incoming number, created if new.

This runs at the start of every call, so its common case (a known caller whose
caller-ID name and carrier have not changed) is one indexed query and no write.
A new number is inserted under a savepoint; if another call from the same number
won the race, the unique index on (team, number) refuses the second insert and
the winner's contact is read back, so 50 simultaneous first calls still make one
contact, on any number of service instances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVarTuple

from sqlalchemy import Select, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.actor import Actor
from voicecrm.crm import timeline
from voicecrm.crm.duplicates import duplicate_key
from voicecrm.crm.models import Contact, ContactPhone
from voicecrm.crm.phones import NormalizedPhone, normalize_phone
from voicecrm.crm.schemas import UNKNOWN_CALLER
from voicecrm.storage import Database, utcnow
from voicecrm.storage.point_read import PointRead

Ts = TypeVarTuple("Ts")

# Caller-ID names that carry no information about the person.
_MEANINGLESS_NAMES = frozenset(
    {
        "",
        "unknown",
        "unavailable",
        "anonymous",
        "private",
        "restricted",
        "wireless caller",
        "out of area",
        "blocked",
        "no caller id",
    }
)


@dataclass(frozen=True, slots=True)
class ResolvedCaller:
    contact: Contact
    phone: NormalizedPhone
    created: bool


def clean_caller_name(name: str | None) -> str | None:
    if name is None:
        return None
    cleaned = " ".join(name.split())[:200]
    return None if cleaned.lower() in _MEANINGLESS_NAMES else cleaned


def _number_owner(query: Select[*Ts], team_id: Any, e164: Any) -> Select[*Ts]:
    """`query` (over contacts) narrowed to the contact that has the number in the team;
    with duplicates allowed, the one that got it first. One indexed lookup."""
    return (
        query.join(ContactPhone, ContactPhone.contact_id == Contact.id)
        .where(ContactPhone.team_id == team_id, ContactPhone.e164 == e164)
        .order_by(ContactPhone.id)
        .limit(1)
    )


async def _find(session: AsyncSession, team_id: int, e164: str) -> Contact | None:
    return (await session.scalars(_number_owner(select(Contact), team_id, e164))).first()


async def resolve_caller(
    session: AsyncSession,
    actor: Actor,
    raw_number: str,
    caller_name: str | None = None,
) -> ResolvedCaller:
    """The contact for `raw_number` (any carrier format), created or refreshed.

    Raises `InvalidPhoneNumber` for input that is not a phone number; callers
    with a withheld number should not be resolved at all.
    """
    phone = normalize_phone(raw_number, actor.team.default_region)
    name = clean_caller_name(caller_name)
    contact = await _find(session, actor.team_id, phone.e164)
    if contact is not None:
        _refresh(contact, name, phone)
        return ResolvedCaller(contact=contact, phone=phone, created=False)
    try:
        async with session.begin_nested():
            contact = await _create(session, actor, raw_number, name, phone)
    except IntegrityError:
        contact = await _find(session, actor.team_id, phone.e164)
        if contact is None:
            raise
        _refresh(contact, name, phone)
        return ResolvedCaller(contact=contact, phone=phone, created=False)
    return ResolvedCaller(contact=contact, phone=phone, created=True)


@dataclass(frozen=True, slots=True)
class KnownCaller:
    """What a call needs of a known caller before it is answered."""

    contact_id: int
    blocked: bool


KNOWN_CALLER = PointRead(
    _number_owner(
        select(Contact.id, Contact.caller_id_name, Contact.carrier, Contact.blocked),
        bindparam("team_id"),
        bindparam("e164"),
    )
)


async def find_unchanged_caller(
    database: Database, actor: Actor, raw_number: str, caller_name: str | None = None
) -> KnownCaller | None:
    """The known caller when resolving would write nothing, else None.

    Most calls come from known numbers whose caller-ID name and carrier have not
    changed. They are answered by one indexed SELECT outside any session
    (`Database.point_read`), so that the lookup every call waits on costs what the
    database costs, and never queues behind SQLite's single writer. None means: run
    `resolve_caller` in a write transaction (a new number, or something to refresh).
    """
    phone = normalize_phone(raw_number, actor.team.default_region)
    row = await database.point_read(KNOWN_CALLER, {"team_id": actor.team_id, "e164": phone.e164})
    if row is None:
        return None
    contact_id, caller_id_name, carrier, blocked = row
    if _needs_refresh(caller_id_name, carrier, clean_caller_name(caller_name), phone):
        return None
    return KnownCaller(contact_id=contact_id, blocked=bool(blocked))


def _needs_refresh(
    caller_id_name: str | None, carrier: str | None, name: str | None, phone: NormalizedPhone
) -> bool:
    return (name is not None and caller_id_name != name) or (
        phone.carrier is not None and carrier != phone.carrier
    )


def _refresh(contact: Contact, name: str | None, phone: NormalizedPhone) -> None:
    """Only assign what changed, so an unchanged caller costs no UPDATE."""
    if name is not None and contact.caller_id_name != name:
        contact.caller_id_name = name
        contact.updated_at = utcnow()
    if phone.carrier is not None and contact.carrier != phone.carrier:
        contact.carrier = phone.carrier
        contact.updated_at = utcnow()


async def _create(
    session: AsyncSession, actor: Actor, raw: str, name: str | None, phone: NormalizedPhone
) -> Contact:
    now = utcnow()
    contact = Contact(
        team_id=actor.team_id,
        name=name or UNKNOWN_CALLER,
        caller_id_name=name,
        carrier=phone.carrier,
        source="phone",
        type="customer",
        rating=0,
        status="open",
        blocked=False,
        custom_fields={},
        created_at=now,
        updated_at=now,
    )
    session.add(contact)
    await session.flush()
    session.add(
        ContactPhone(
            team_id=actor.team_id,
            contact_id=contact.id,
            e164=phone.e164,
            duplicate_key=duplicate_key(actor.team.allow_duplicate_phones, contact.id),
            original=raw.strip()[:100],
            label="mobile",
            region=phone.region,
            position=0,
        )
    )
    await session.flush()
    await timeline.append(
        session,
        actor,
        contact.id,
        "contact_created",
        timeline.ContactCreated(name=contact.name, source="phone"),
    )
    return contact
