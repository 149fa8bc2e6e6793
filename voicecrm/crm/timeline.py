"""A contact's timeline: an append-only log of what happened, newest first.

Kinds are registered, not enumerated here: each kind names a pydantic model for
its `data`, so a later feature (calls, voicemail, tasks, campaigns) adds a kind
with `register_kind` without changing this module, and bad data is refused at
append time rather than discovered when someone reads the timeline.

Pagination is by keyset on the event id (ids only grow), which keeps the newest
page one index range scan however long the history is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import Select, Table, bindparam, insert, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.actor import Actor
from voicecrm.crm.models import TimelineEvent
from voicecrm.errors import InvalidInput
from voicecrm.storage import MAX_ID, utcnow


class EventData(BaseModel):
    model_config = ConfigDict(extra="forbid")


_KINDS: dict[str, type[EventData]] = {}


def register_kind(kind: str, model: type[EventData]) -> None:
    """Declare a timeline kind and the shape of its data. Registering twice is an error."""
    existing = _KINDS.get(kind)
    if existing is not None and existing is not model:
        raise ValueError(f"timeline kind {kind!r} is already registered")
    _KINDS[kind] = model


def registered_kinds() -> list[str]:
    return sorted(_KINDS)


def data_model(kind: str) -> type[EventData]:
    try:
        return _KINDS[kind]
    except KeyError:
        raise InvalidInput(
            f"unknown timeline kind {kind!r}; known kinds: {', '.join(registered_kinds())}",
            field="kind",
        ) from None


# ----------------------------------------------------------------- the CRM's own kinds
class ContactCreated(EventData):
    name: str
    source: str


class CallEvent(EventData):
    call_id: str | None = None
    direction: str
    from_number: str
    to_number: str
    status: str
    duration_seconds: int | None = None
    recording_url: str | None = None


class NoteEvent(EventData):
    note_id: int
    type: str
    content: str


class NoteDeleted(EventData):
    note_id: int


class StageChanged(EventData):
    from_stage_id: int | None
    from_stage: str | None
    to_stage_id: int | None
    to_stage: str | None
    reason: str | None = None


class StatusChanged(EventData):
    from_status: str
    to_status: str


class TagsChanged(EventData):
    added: list[str] = []
    removed: list[str] = []


class ContactUpdated(EventData):
    fields: list[str]


class Merged(EventData):
    merged_contact_ids: list[int]
    merged_names: list[str]
    # The merged contacts' own fields as they were, so no value is lost to the survivor's.
    snapshots: list[dict[str, Any]] = []


class Imported(EventData):
    file: str | None = None
    row: int
    created: bool


_CRM_KINDS: dict[str, type[EventData]] = {
    "contact_created": ContactCreated,
    "contact_updated": ContactUpdated,
    "call": CallEvent,
    "note_added": NoteEvent,
    "note_edited": NoteEvent,
    "note_deleted": NoteDeleted,
    "stage_changed": StageChanged,
    "status_changed": StatusChanged,
    "tags_changed": TagsChanged,
    "merged": Merged,
    "imported": Imported,
}
for _kind, _model in _CRM_KINDS.items():
    register_kind(_kind, _model)


# ----------------------------------------------------------------- writing and reading
def event_row(
    actor: Actor,
    contact_id: int,
    kind: str,
    data: EventData | dict[str, Any],
    *,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """A validated row for `TimelineEvent`, ready for one multi-row INSERT."""
    model = data_model(kind)
    try:
        parsed = (
            data
            if isinstance(data, model)
            else model.model_validate(data.model_dump() if isinstance(data, BaseModel) else data)
        )
    except ValidationError as err:
        raise InvalidInput(f"bad data for timeline kind {kind!r}: {err}", field="data") from err
    return {
        "team_id": actor.team_id,
        "contact_id": contact_id,
        "kind": kind,
        "occurred_at": occurred_at or utcnow(),
        "actor_user_id": actor.user_id,
        "data": parsed.model_dump(mode="json"),
    }


async def append(
    session: AsyncSession,
    actor: Actor,
    contact_id: int,
    kind: str,
    data: EventData | dict[str, Any],
    *,
    occurred_at: datetime | None = None,
) -> None:
    """Append one event: one INSERT, no read."""
    await session.execute(
        insert(TimelineEvent), [event_row(actor, contact_id, kind, data, occurred_at=occurred_at)]
    )


async def append_many(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(TimelineEvent), list(rows))


_EVENTS = cast(Table, TimelineEvent.__table__)


def _newest_ids(
    contact_id: Any, before: Any | None, limit: Any, kind: str | None = None
) -> Select[Any]:
    query = select(_EVENTS.c.id).where(_EVENTS.c.contact_id == contact_id)
    if kind is not None:
        query = query.where(_EVENTS.c.kind == kind)
    if before is not None:
        query = query.where(_EVENTS.c.id < before)
    return query.order_by(_EVENTS.c.id.desc()).limit(limit)


def _rows_of(ids: Select[Any]) -> Select[Any]:
    # Ids first, rows second: PostgreSQL then reads the page from the contact's index
    # instead of walking the primary key backwards past other contacts' newer events.
    return select(*_ENTRY_COLUMNS).where(_EVENTS.c.id.in_(ids)).order_by(_EVENTS.c.id.desc())


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One event as read back. Events are never changed once written, so a page is
    read as plain rows: no ORM identity map, no change tracking, about a third of
    the cost of loading `TimelineEvent` objects."""

    id: int
    contact_id: int
    kind: str
    occurred_at: datetime
    actor_user_id: int | None
    data: dict[str, Any]


# Table columns, not the mapped class's: a Core statement skips the ORM's loading.
_ENTRY_COLUMNS = tuple(
    _EVENTS.c[name] for name in ("id", "contact_id", "kind", "occurred_at", "actor_user_id", "data")
)
# The unfiltered pages, the ones every contact view and call asks for, are built once:
# building a statement costs more than PostgreSQL takes to run it.
_NEWEST = _rows_of(_newest_ids(bindparam("contact_id"), None, bindparam("wanted")))
_OLDER = _rows_of(_newest_ids(bindparam("contact_id"), bindparam("before"), bindparam("wanted")))


@dataclass(frozen=True, slots=True)
class TimelinePage:
    events: list[TimelineEntry]
    next_cursor: str | None


def _decode_cursor(cursor: str | None) -> int | None:
    """The event id a cursor stands for.

    `str.isdigit` alone also accepts '²' (which `int` refuses) and Arabic-Indic digits,
    and 19 digits can exceed a BIGINT, which the drivers refuse to bind: each of those
    would be a server error instead of this clear refusal.
    """
    if cursor is None:
        return None
    if not (cursor.isascii() and cursor.isdigit()) or not 0 < int(cursor) <= MAX_ID:
        raise InvalidInput("the cursor is not one this API gave out", field="cursor")
    return int(cursor)


async def page(
    session: AsyncSession,
    contact_id: int,
    *,
    limit: int = 50,
    cursor: str | None = None,
    kinds: Sequence[str] = (),
) -> TimelinePage:
    """Newest-first events of one contact. The caller checks the contact is visible."""
    if not 1 <= limit <= 500:
        raise InvalidInput("limit must be between 1 and 500", field="limit")
    for kind in kinds:
        data_model(kind)
    before = _decode_cursor(cursor)
    wanted = limit + 1
    if kinds:
        # One index range per kind, merged: `kind IN (...) ORDER BY id` would walk the
        # contact's whole history looking for a rare kind.
        parts = [
            _newest_ids(contact_id, before, wanted, kind).subquery()
            for kind in dict.fromkeys(kinds)
        ]
        merged = union_all(*(select(part.c.id) for part in parts)).subquery()
        ids = select(merged.c.id).order_by(merged.c.id.desc()).limit(wanted)
        result = await session.execute(_rows_of(ids))
    else:
        statement, values = (
            (_NEWEST, {"contact_id": contact_id, "wanted": wanted})
            if before is None
            else (_OLDER, {"contact_id": contact_id, "wanted": wanted, "before": before})
        )
        result = await session.execute(statement, values)
    rows = [TimelineEntry(*row) for row in result]
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return TimelinePage(events=rows[:limit], next_cursor=next_cursor)
