"""The call log: one row per phone call, and the call's entries on the contact's timeline.

A call's row is created when it starts (or found again, when a carrier retries
the same event) and closed when it ends; the timeline gets the finished call
(direction, numbers, status, duration, recording) and its transcript, once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.actor import Actor
from voicecrm.crm import timeline
from voicecrm.crm.models import CallRecord
from voicecrm.errors import Conflict, NotFound
from voicecrm.storage import utcnow


class TranscriptLine(timeline.EventData):
    speaker: str
    text: str
    at: datetime


class TranscriptEvent(timeline.EventData):
    call_id: int
    lines: list[TranscriptLine]


class VoicemailEvent(timeline.EventData):
    call_id: int | None
    recording_url: str
    duration_seconds: float
    transcript: str | None = None


class TaskCreated(timeline.EventData):
    task_id: int
    title: str
    due_at: datetime
    assignee_user_id: int | None


class MachineAnswered(timeline.EventData):
    """Answering machine detection heard a machine (or a fax) on an outbound call."""

    call_id: int
    answered_by: str
    action: str  # "hangup" or "continue" (the scenario ran, to leave a message)


class RecordingEvent(timeline.EventData):
    """A carrier's recording of a call, linked from the timeline."""

    call_id: int
    recording_url: str
    duration_seconds: float | None = None


timeline.register_kind("transcript", TranscriptEvent)
timeline.register_kind("recording", RecordingEvent)
timeline.register_kind("voicemail", VoicemailEvent)
timeline.register_kind("task_created", TaskCreated)
timeline.register_kind("machine_answered", MachineAnswered)

FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
PENDING_PREFIX = "pending-"


def pending_external_id() -> str:
    """A placeholder carrier id for an outbound call's row, opened before the carrier
    names the call: unique, so the `(channel, external_id)` index still holds."""
    return f"{PENDING_PREFIX}{uuid.uuid4().hex}"


def is_pending(external_id: str) -> bool:
    return external_id.startswith(PENDING_PREFIX)


@dataclass(frozen=True, slots=True)
class NewCall:
    channel: str
    external_id: str
    direction: str
    from_number: str
    to_number: str
    contact_id: int | None
    scenario: str | None = None
    status: str = "in-progress"  # an outbound call starts "queued", before anyone answers


async def start_call(session: AsyncSession, actor: Actor, call: NewCall) -> CallRecord:
    """The call's row, created once even when the carrier sends the same start twice.

    One INSERT ... ON CONFLICT DO NOTHING on the (channel, external id) key, on both
    engines: a new call (the common case, on every call's hot path) costs no lookup and
    no savepoint, and a retried or concurrent start finds the row the other one made.
    """
    now = utcnow()
    values: dict[str, Any] = {
        "team_id": actor.team_id,
        "contact_id": call.contact_id,
        "channel": call.channel,
        "external_id": call.external_id,
        "direction": call.direction,
        "from_number": call.from_number,
        "to_number": call.to_number,
        "status": call.status,
        "scenario": call.scenario,
        "started_at": now,
        "updated_at": now,
        "state": {},
    }
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    created = await session.scalar(
        insert(CallRecord)
        .values(values)
        .on_conflict_do_nothing(index_elements=["channel", "external_id"])
        .returning(CallRecord.id)
    )
    record = (
        await session.get(CallRecord, created)
        if created is not None
        else await find_call(session, call.channel, call.external_id)
    )
    if record is None:
        raise RuntimeError(f"call {call.channel}/{call.external_id} vanished while starting")
    return record


async def set_external_id(
    session: AsyncSession, actor: Actor, call_id: int, external_id: str
) -> CallRecord:
    """Give an outbound call's row the carrier's id once the carrier has named the call.

    The REST answer, the first webhook and an early status callback may each be first
    to know the id, so setting the same id again changes nothing; replacing a real id
    with another is refused.
    """
    record = await get_call(session, actor, call_id)
    if record.external_id == external_id:
        return record
    if not is_pending(record.external_id):
        raise Conflict(f"call {call_id} is already carrier call {record.external_id}")
    try:
        # Changed inside the savepoint: a clash rolls back to the pending id and leaves the
        # caller's transaction usable.
        async with session.begin_nested():
            record.external_id = external_id
            record.updated_at = utcnow()
            await session.flush()
    except IntegrityError:
        raise Conflict(
            f"carrier call {external_id} already belongs to another call than {call_id}"
        ) from None
    return record


async def machine_answered(
    session: AsyncSession, actor: Actor, record: CallRecord, answered_by: str, action: str
) -> None:
    """Put on the contact's timeline that a machine answered, and what the call did then."""
    if record.contact_id is not None:
        await timeline.append(
            session,
            actor,
            record.contact_id,
            "machine_answered",
            MachineAnswered(call_id=record.id, answered_by=answered_by, action=action),
        )


async def record_blocked_call(session: AsyncSession, actor: Actor, call: NewCall) -> CallRecord:
    """A call refused because the contact is blocked: on the timeline, never answered."""
    record = await start_call(session, actor, call)
    return await finish_call(session, actor, record.id, status="blocked", duration_seconds=0)


async def _as_committed(session: AsyncSession, record: CallRecord) -> CallRecord:
    """The call's row as last committed, locked until this transaction ends.

    A carrier reports a call's progress, its end and its recording in separate
    requests and events, which may be handled at once, on PostgreSQL in two
    transactions (or two instances). Each decides on the row under its lock, as the
    other left it: read without one, a late "ringing" would reopen a call that had
    just ended, and a second finish or a retried recording would be put on the
    timeline twice. The unit's own changes are written first, as refreshing would
    discard them. (SQLite has one writer at a time: there it only reads the row again.)
    """
    await session.flush()
    await session.refresh(record, with_for_update=True)
    return record


async def note_progress(session: AsyncSession, record: CallRecord, status: str) -> None:
    """A carrier's progress (ringing, in-progress) on a call not yet over; late news of a
    finished call changes nothing."""
    await _as_committed(session, record)
    if record.ended_at is None and record.status not in FINAL_STATUSES:
        record.status = status
        record.updated_at = utcnow()


async def find_call(session: AsyncSession, channel: str, external_id: str) -> CallRecord | None:
    return (
        await session.scalars(
            select(CallRecord).where(
                CallRecord.channel == channel, CallRecord.external_id == external_id
            )
        )
    ).first()


async def get_call(session: AsyncSession, actor: Actor, call_id: int) -> CallRecord:
    record = await session.get(CallRecord, call_id)
    if record is None or record.team_id != actor.team_id:
        raise NotFound(f"call {call_id} does not exist")
    return record


async def lock_call(session: AsyncSession, actor: Actor, call_id: int) -> CallRecord:
    """The call's row as last committed, locked until the transaction ends: for a
    decision that two requests about the call, handled at once, must not both take."""
    return await _as_committed(session, await get_call(session, actor, call_id))


async def save_state(
    session: AsyncSession, actor: Actor, call_id: int, state: dict[str, Any]
) -> None:
    """Save the engine's state; what a carrier keeps beside it in the same column (its
    own keys, such as the TwiML last answered) stays."""
    record = await get_call(session, actor, call_id)
    record.state = {**(record.state or {}), **state}
    record.updated_at = utcnow()


async def finish_call(
    session: AsyncSession,
    actor: Actor,
    call_id: int,
    *,
    status: str,
    transcript: list[TranscriptLine] | None = None,
    recording_url: str | None = None,
    duration_seconds: int | None = None,
) -> CallRecord:
    """Close the call and put it on the contact's timeline; a second finish changes nothing.

    `duration_seconds` is the carrier's own count when it has one; else the time since the
    call's row was opened.
    """
    record = await lock_call(session, actor, call_id)
    if record.ended_at is not None:
        return record
    now = utcnow()
    record.status = status
    record.ended_at = now
    record.duration_seconds = (
        max(0, duration_seconds)
        if duration_seconds is not None
        else max(0, int((now - record.started_at).total_seconds()))
    )
    record.recording_url = recording_url or record.recording_url
    record.updated_at = now
    if record.contact_id is not None:
        await timeline.append(
            session,
            actor,
            record.contact_id,
            "call",
            timeline.CallEvent(
                call_id=str(record.id),
                direction=record.direction,
                from_number=record.from_number,
                to_number=record.to_number,
                status=status,
                duration_seconds=record.duration_seconds,
                recording_url=record.recording_url,
            ),
        )
        if transcript:
            await timeline.append(
                session,
                actor,
                record.contact_id,
                "transcript",
                TranscriptEvent(call_id=record.id, lines=transcript),
            )
    return record


async def attach_recording(
    session: AsyncSession,
    actor: Actor,
    call_id: int,
    url: str,
    duration_seconds: float | None,
) -> bool:
    """Store a finished recording on its call and link it from the contact's timeline.

    Returns False when the call already has this recording (the carrier retried).
    """
    record = await lock_call(session, actor, call_id)
    if record.recording_url == url:
        return False
    record.recording_url = url
    record.updated_at = utcnow()
    if record.contact_id is not None:
        await timeline.append(
            session,
            actor,
            record.contact_id,
            "recording",
            RecordingEvent(call_id=record.id, recording_url=url, duration_seconds=duration_seconds),
        )
    return True
