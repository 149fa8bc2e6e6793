"""Finding contacts: filters, sorting and keyset pagination.

A filter is a plain object so that the API, bulk actions ("everything this
filter matches") and CSV export share one definition of "which contacts".
Pages are keyed on (sort value, id) rather than offsets, so a page deep in a
million contacts costs the same as the first and rows never repeat or vanish
while someone pages through a list that others are editing.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.actor import Actor
from voicecrm.crm.contacts import visible_to
from voicecrm.crm.models import Contact, ContactEmail, ContactPhone, ContactTag
from voicecrm.crm.phones import phone_search_key
from voicecrm.crm.schemas import ContactStatus, ContactType
from voicecrm.errors import InvalidInput
from voicecrm.storage import MAX_ID

SortKey = Literal["name", "-name", "created_at", "-created_at", "updated_at", "-updated_at"]


class ContactFilter(BaseModel):
    """Which contacts: every field set narrows the selection (AND)."""

    model_config = ConfigDict(extra="forbid")

    q: str | None = Field(
        None,
        max_length=200,
        description="Free text: part of a name or company, a phone number "
        "in any format, or an email address.",
    )
    name: str | None = Field(None, max_length=200, description="Part of the name.")
    phone: str | None = Field(None, max_length=64, description="A phone number in any format.")
    email: str | None = Field(None, max_length=320)
    tag: str | None = Field(None, max_length=100)
    stage_id: int | None = Field(None, ge=1, le=MAX_ID)
    status: ContactStatus | None = None
    type: ContactType | None = None
    responsible_user_id: int | None = Field(None, ge=1, le=MAX_ID)
    source: str | None = Field(None, max_length=100)
    blocked: bool | None = None


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _phone_clause(actor: Actor, raw: str) -> ColumnElement[bool]:
    e164 = phone_search_key(raw, actor.team.default_region)
    digits = "".join(ch for ch in raw if ch.isdigit())
    if e164 is not None:
        condition = ContactPhone.e164 == e164
    elif len(digits) >= 3:
        condition = ContactPhone.e164.like(_like(digits), escape="\\")
    else:
        raise InvalidInput("a phone search needs at least three digits", field="phone")
    return exists().where(
        ContactPhone.contact_id == Contact.id, ContactPhone.team_id == actor.team_id, condition
    )


def _email_clause(actor: Actor, email: str) -> ColumnElement[bool]:
    return exists().where(
        ContactEmail.contact_id == Contact.id,
        ContactEmail.team_id == actor.team_id,
        ContactEmail.email == email.strip().lower(),
    )


def filter_clauses(actor: Actor, flt: ContactFilter) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = [visible_to(actor)]
    if flt.q:
        q = flt.q.strip()
        options: list[ColumnElement[bool]] = [
            func.lower(Contact.name).like(_like(q.lower()), escape="\\"),
            func.lower(Contact.company).like(_like(q.lower()), escape="\\"),
        ]
        if "@" in q:
            options.append(_email_clause(actor, q))
        if sum(ch.isdigit() for ch in q) >= 3:
            options.append(_phone_clause(actor, q))
        clauses.append(or_(*options))
    if flt.name:
        clauses.append(func.lower(Contact.name).like(_like(flt.name.lower()), escape="\\"))
    if flt.phone:
        clauses.append(_phone_clause(actor, flt.phone))
    if flt.email:
        clauses.append(_email_clause(actor, flt.email))
    if flt.tag:
        clauses.append(
            exists().where(
                ContactTag.contact_id == Contact.id, ContactTag.tag == flt.tag.strip().lower()
            )
        )
    if flt.stage_id is not None:
        clauses.append(Contact.stage_id == flt.stage_id)
    if flt.status is not None:
        clauses.append(Contact.status == flt.status.value)
    if flt.type is not None:
        clauses.append(Contact.type == flt.type.value)
    if flt.responsible_user_id is not None:
        clauses.append(Contact.responsible_user_id == flt.responsible_user_id)
    if flt.source:
        clauses.append(Contact.source == flt.source)
    if flt.blocked is not None:
        clauses.append(Contact.blocked == flt.blocked)
    return clauses


def matching(actor: Actor, flt: ContactFilter) -> Select[Contact]:
    return select(Contact).where(and_(*filter_clauses(actor, flt)))


def matching_ids(actor: Actor, flt: ContactFilter) -> Select[int]:
    return select(Contact.id).where(and_(*filter_clauses(actor, flt)))


# ----------------------------------------------------------------- cursors
# The longest cursor: a 200-character name of 4-byte characters in UTF-8 JSON, in base64.
MAX_CURSOR_LENGTH = 1500


def _encode_cursor(sort: str, value: Any, contact_id: int) -> str:
    """UTF-8 JSON in URL-safe base64. Not ASCII-escaped JSON: `\\uXXXX` escapes made the
    cursor of a long non-Latin name three times longer than the list would take back."""
    if isinstance(value, datetime):
        value = value.isoformat()
    text = json.dumps([sort, value, contact_id], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, int]:
    """The (sort value, id) a cursor stands for, checked as closely as a query parameter.

    A cursor is client input like any other: an id beyond a BIGINT, a NUL or a lone
    surrogate in a name, or a timestamp without a zone would otherwise reach the driver
    and fail there as a server error rather than as this refusal.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        cursor_sort, value, contact_id = json.loads(raw)
        if cursor_sort != sort or type(contact_id) is not int or not 0 < contact_id <= MAX_ID:
            raise ValueError
        if sort.lstrip("-") != "name":
            value = datetime.fromisoformat(value)
            if value.tzinfo is None:
                raise ValueError
        elif not isinstance(value, str) or "\x00" in value:
            raise ValueError
        else:
            value.encode()  # a lone surrogate raises UnicodeEncodeError, a ValueError
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError):
        raise InvalidInput(
            "the cursor is not one this API gave out for this sort order", field="cursor"
        ) from None
    return value, contact_id


@dataclass(frozen=True, slots=True)
class ContactPage:
    contacts: list[Contact]
    next_cursor: str | None


async def search(
    session: AsyncSession,
    actor: Actor,
    flt: ContactFilter,
    *,
    sort: SortKey = "-updated_at",
    limit: int = 50,
    cursor: str | None = None,
) -> ContactPage:
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500", field="limit")
    column = getattr(Contact, sort.lstrip("-"))
    descending = sort.startswith("-")
    query = matching(actor, flt)
    if cursor:
        value, last_id = _decode_cursor(cursor, sort)
        key = tuple_(column, Contact.id)
        query = query.where(
            key < tuple_(value, last_id) if descending else key > tuple_(value, last_id)
        )
    order = (column.desc(), Contact.id.desc()) if descending else (column.asc(), Contact.id.asc())
    rows = list(await session.scalars(query.order_by(*order).limit(limit + 1)))
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = _encode_cursor(sort, getattr(last, sort.lstrip("-")), last.id)
    return ContactPage(contacts=rows[:limit], next_cursor=next_cursor)


async def iterate(
    session: AsyncSession, actor: Actor, flt: ContactFilter, *, batch: int = 500
) -> AsyncIterator[list[Contact]]:
    """Every matching contact in id order, a batch at a time (constant memory).

    The session is emptied between batches: give it a session of its own.
    """
    last_id = 0
    base = matching(actor, flt)
    while True:
        rows = list(
            await session.scalars(
                base.where(Contact.id > last_id).order_by(Contact.id).limit(batch)
            )
        )
        if not rows:
            return
        yield rows
        last_id = rows[-1].id
        session.expunge_all()
