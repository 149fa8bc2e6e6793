"""Twilio's voice webhooks, signed with twilio's own RequestValidator as Twilio signs them."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp.test_utils import TestClient
from pytest_aiohttp.plugin import AiohttpClient
from sqlalchemy import func, select

from tests.conftest import TeamWorld
from tests.twilio.conftest import PUBLIC, call_fields, post_signed, signed_headers
from voicecrm.app import build_app
from voicecrm.config import Settings
from voicecrm.crm import timeline
from voicecrm.crm.models import CallRecord, Contact
from voicecrm.storage import Database


async def test_an_incoming_call_is_answered_with_a_stream_to_the_service(
    twilio: TestClient[Any, Any], database: Database
) -> None:
    status, body = await post_signed(twilio, "/twilio/voice", call_fields("CA" + "1" * 32))
    assert status == 200
    assert '<Stream statusCallback="https://voicecrm.example.com/twilio/stream-status"' in body
    assert 'url="wss://voicecrm.example.com/twilio/media">' in body
    assert '<Connect action="https://voicecrm.example.com/twilio/voice/after-stream">' in body
    (call_id,) = re.findall(r'<Parameter name="call_id" value="(\d+)"', body)
    async with database.transaction(read_only=True) as session:
        record = await session.get(CallRecord, int(call_id))
        contact = await session.get(Contact, record.contact_id if record else 0)
    assert record is not None and record.channel == "twilio"
    assert (record.from_number, record.to_number, record.scenario) == (
        "+14155550123",
        "+14155550100",
        "receptionist",
    )
    assert contact is not None and contact.name == "Unknown Caller"


async def test_a_bad_or_missing_signature_is_refused_with_403(
    twilio: TestClient[Any, Any], database: Database
) -> None:
    fields = call_fields("CA" + "2" * 32)
    forged = signed_headers(PUBLIC + "/twilio/voice", {**fields, "From": "+19995550000"})
    for headers in ({}, forged, {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}):
        response = await twilio.post("/twilio/voice", data=fields, headers=headers)
        assert response.status == 403
        assert response.content_type == "application/problem+json"
    # Signed for another URL (a proxy rewrote the path): refused too.
    status, _ = await post_signed(twilio, "/twilio/voice", fields, url=PUBLIC + "/other")
    assert status == 403
    async with database.transaction(read_only=True) as session:
        assert await session.scalar(select(func.count()).select_from(CallRecord)) == 0


async def test_a_retried_webhook_opens_one_call(
    twilio: TestClient[Any, Any], database: Database
) -> None:
    fields = call_fields("CA" + "3" * 32)
    first = await post_signed(twilio, "/twilio/voice", fields)
    again = await post_signed(twilio, "/twilio/voice", fields)
    assert first == again
    async with database.transaction(read_only=True) as session:
        assert await session.scalar(select(func.count()).select_from(CallRecord)) == 1


async def test_status_callbacks_out_of_order_leave_the_final_state(
    twilio: TestClient[Any, Any], database: Database
) -> None:
    sid = "CA" + "4" * 32
    await post_signed(twilio, "/twilio/voice", call_fields(sid))
    for status, sequence in (("completed", "2"), ("in-progress", "1"), ("completed", "2")):
        code, _ = await post_signed(
            twilio,
            "/twilio/status",
            call_fields(sid, CallStatus=status, SequenceNumber=sequence, CallDuration="42"),
        )
        assert code == 204
    async with database.transaction(read_only=True) as session:
        record = (await session.scalars(select(CallRecord))).one()
    assert record.status == "completed" and record.ended_at is not None


async def test_fifty_simultaneous_first_calls_from_one_new_number_make_one_contact(
    twilio: TestClient[Any, Any], database: Database
) -> None:
    results = await asyncio.gather(
        *(
            post_signed(twilio, "/twilio/voice", call_fields(f"CA{i:032d}", caller="+14155550999"))
            for i in range(50)
        )
    )
    assert {status for status, _ in results} == {200}
    async with database.transaction(read_only=True) as session:
        contacts = (await session.scalars(select(Contact))).all()
        calls = await session.scalar(select(func.count()).select_from(CallRecord))
    assert len(contacts) == 1 and calls == 50
    assert {c.id for c in contacts} == {contacts[0].id}


async def test_a_webhook_without_a_call_sid_is_a_clear_400(twilio: TestClient[Any, Any]) -> None:
    fields = call_fields("x")
    del fields["CallSid"]
    status, body = await post_signed(twilio, "/twilio/voice", fields)
    assert status == 400 and "CallSid" in body


async def block_the_unknown_caller(database: Database) -> int:
    async with database.transaction() as session:
        contact = (
            await session.scalars(select(Contact).where(Contact.name == "Unknown Caller"))
        ).one()
        contact.blocked = True
        return contact.id


async def test_a_blocked_caller_is_rejected_and_the_call_is_on_the_timeline(
    twilio: TestClient[Any, Any], database: Database
) -> None:
    await post_signed(twilio, "/twilio/voice", call_fields("CA" + "5" * 32, caller="+14155550666"))
    contact_id = await block_the_unknown_caller(database)
    status, body = await post_signed(
        twilio, "/twilio/voice", call_fields("CA" + "6" * 32, caller="+14155550666")
    )
    assert status == 200 and '<Reject reason="rejected" />' in body
    async with database.transaction(read_only=True) as session:
        page = await timeline.page(session, contact_id, limit=10)
    (blocked,) = [e for e in page.events if e.kind == "call" and e.data["status"] == "blocked"]
    assert blocked.data["from_number"] == "+14155550666"


async def test_progress_then_the_final_status_with_twilios_duration(
    twilio: TestClient[Any, Any], database: Database
) -> None:
    sid = "CA" + "7" * 32
    await post_signed(twilio, "/twilio/voice", call_fields(sid))
    await post_signed(twilio, "/twilio/status", call_fields(sid, CallStatus="ringing"))
    async with database.transaction(read_only=True) as session:
        assert (await session.scalars(select(CallRecord))).one().status == "ringing"
    await post_signed(
        twilio, "/twilio/status", call_fields(sid, CallStatus="no-answer", CallDuration="0")
    )
    await post_signed(twilio, "/twilio/status", call_fields(sid, CallStatus="in-progress"))
    async with database.transaction(read_only=True) as session:
        record = (await session.scalars(select(CallRecord))).one()
    assert (record.status, record.duration_seconds) == ("no-answer", 0)


async def test_an_unknown_call_status_is_a_clear_400(twilio: TestClient[Any, Any]) -> None:
    sid = "CA" + "8" * 32
    status, body = await post_signed(twilio, "/twilio/status", call_fields(sid, CallStatus="odd"))
    assert status == 400 and "odd" in body


async def test_without_an_auth_token_the_endpoints_say_what_is_missing(
    aiohttp_client: AiohttpClient, database_url: str, world: TeamWorld
) -> None:
    client = await aiohttp_client(
        build_app(Settings(database_url=database_url, migrate_on_start=False))
    )
    response = await client.post("/twilio/voice", data=call_fields("CA" + "9" * 32))
    assert response.status == 503
    assert "VOICECRM_TWILIO_AUTH_TOKEN" in (await response.json())["detail"]


async def test_a_finished_recording_is_kept_on_the_call_and_the_timeline(
    twilio: TestClient[Any, Any], database: Database
) -> None:
    sid = "CA" + "r" * 32
    await post_signed(twilio, "/twilio/voice", call_fields(sid))
    url = "https://api.twilio.com/2010-04-01/Accounts/AC0/Recordings/RE1"
    fields = call_fields(
        sid,
        RecordingSid="RE1",
        RecordingUrl=url,
        RecordingStatus="completed",
        RecordingDuration="17",
    )
    for _ in range(2):  # Twilio retries: one timeline entry
        status, _ = await post_signed(twilio, "/twilio/recording", fields)
        assert status == 204
    async with database.transaction(read_only=True) as session:
        record = (await session.scalars(select(CallRecord))).one()
        assert record.contact_id is not None
        page = await timeline.page(session, record.contact_id, limit=20)
    assert record.recording_url == url
    (event,) = [e for e in page.events if e.kind == "recording"]
    assert event.data["recording_url"] == url and event.data["duration_seconds"] == 17


async def test_recording_and_stream_callbacks_refuse_what_they_do_not_know(
    twilio: TestClient[Any, Any], database: Database
) -> None:
    sid = "CA" + "s" * 32
    await post_signed(twilio, "/twilio/voice", call_fields(sid))
    bad = [
        ("/twilio/recording", {"RecordingStatus": "odd"}, 400),
        ("/twilio/recording", {"RecordingStatus": "completed", "RecordingUrl": "ftp://x"}, 400),
        ("/twilio/stream-status", {"StreamEvent": "odd"}, 400),
    ]
    for path, extra, expected in bad:
        status, body = await post_signed(twilio, path, call_fields(sid, **extra))
        assert status == expected, body
    status, _ = await post_signed(
        twilio,
        "/twilio/stream-status",
        call_fields(sid, StreamSid="MZ1", StreamEvent="stream-error", StreamError="31920"),
    )
    assert status == 204
    async with database.transaction(read_only=True) as session:
        record = (await session.scalars(select(CallRecord))).one()
    assert record.state["twilio_stream_error"] == "31920"
