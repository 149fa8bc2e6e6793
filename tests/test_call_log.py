"""The call log under a carrier's concurrent reports: a call's progress and its end come
in separate requests and events, which on PostgreSQL (or on several instances) run in
transactions side by side. The row ends as the last word on the call says, and its
end is on the timeline once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from sqlalchemy import func, select

from tests.conftest import TeamWorld
from voicecrm.crm import call_log, callers
from voicecrm.crm.models import CallRecord, TimelineEvent
from voicecrm.storage import Database

CHANNEL = "asterisk"
CALL = "voicecrm-out-1"


async def outbound_call(database: Database, world: TeamWorld) -> tuple[int, int]:
    """A queued outbound call to a contact: the call's id and the contact's."""
    async with database.transaction() as session:
        contact = (await callers.resolve_caller(session, world.system, "+14155550123")).contact
        record = await call_log.start_call(
            session,
            world.system,
            call_log.NewCall(
                channel=CHANNEL,
                external_id=CALL,
                direction="outbound",
                from_number="+14155550100",
                to_number="+14155550123",
                contact_id=contact.id,
                status="queued",
            ),
        )
        return record.id, contact.id


async def call_row(database: Database, call_id: int) -> tuple[str, bool]:
    async with database.transaction(read_only=True) as session:
        record = await session.get(CallRecord, call_id)
        assert record is not None
        return record.status, record.ended_at is not None


async def call_entries(database: Database, contact_id: int) -> int:
    async with database.transaction(read_only=True) as session:
        count = await session.scalar(
            select(func.count())
            .select_from(TimelineEvent)
            .where(TimelineEvent.contact_id == contact_id, TimelineEvent.kind == "call")
        )
        return int(count or 0)


async def test_a_ringing_report_racing_the_calls_end_does_not_reopen_it(
    database: Database, world: TeamWorld, until_blocked: Callable[[], Awaitable[None]]
) -> None:
    """Asterisk's "ringing" and its "no answer" are handled in two tasks: the one that
    reads the row while the other is ending the call waits for it, and then leaves it."""
    call_id, _contact = await outbound_call(database, world)

    async def ringing() -> None:
        async with database.transaction() as session:
            record = await call_log.find_call(session, CHANNEL, CALL)
            assert record is not None
            await call_log.note_progress(session, record, "ringing")

    async with database.transaction() as ending:
        await call_log.finish_call(
            ending, world.system, call_id, status="no-answer", duration_seconds=0
        )
        racing = asyncio.create_task(ringing())
        await until_blocked()
    await racing
    assert await call_row(database, call_id) == ("no-answer", True)


async def test_a_second_finish_racing_the_first_changes_nothing(
    database: Database, world: TeamWorld, until_blocked: Callable[[], Awaitable[None]]
) -> None:
    """Twilio's status callback and the end of its media stream may both close a call:
    the first to commit decides, and the call is on the contact's timeline once."""
    call_id, contact_id = await outbound_call(database, world)

    async def finish(status: str) -> None:
        async with database.transaction() as session:
            await call_log.finish_call(session, world.system, call_id, status=status)

    async with database.transaction() as first:
        await call_log.finish_call(first, world.system, call_id, status="busy")
        racing = asyncio.create_task(finish("completed"))
        await until_blocked()
    await racing
    assert await call_row(database, call_id) == ("busy", True)
    assert await call_entries(database, contact_id) == 1


async def test_a_recording_reported_twice_at_once_is_on_the_timeline_once(
    database: Database, world: TeamWorld, until_blocked: Callable[[], Awaitable[None]]
) -> None:
    call_id, contact_id = await outbound_call(database, world)
    url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1"

    async def attach() -> bool:
        async with database.transaction() as session:
            return await call_log.attach_recording(session, world.system, call_id, url, 3.0)

    async with database.transaction() as first:
        assert await call_log.attach_recording(first, world.system, call_id, url, 3.0)
        racing = asyncio.create_task(attach())
        await until_blocked()
    assert await racing is False
    async with database.transaction(read_only=True) as session:
        kinds = await session.scalars(
            select(TimelineEvent.kind).where(TimelineEvent.contact_id == contact_id)
        )
        assert list(kinds).count("recording") == 1
