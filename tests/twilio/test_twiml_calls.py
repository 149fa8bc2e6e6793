"""TwiML-only calls: Twilio says and gathers, the scenario's state waits in the database
between webhooks, and any instance may take the next one."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from tests.twilio.conftest import call_fields, post_signed
from voicecrm.crm.models import CallRecord, Note
from voicecrm.storage import Database

INTAKE = "+14155550102"


def gather_path(twiml: str) -> str:
    match = re.search(r'<Gather action="https://voicecrm\.example\.com([^"]+)"', twiml)
    assert match is not None, twiml
    return match.group(1).replace("&amp;", "&")


async def test_a_call_is_gathered_across_two_instances_sharing_one_database(
    twilio: TestClient[Any, Any], second_instance: TestClient[Any, Any], database: Database
) -> None:
    sid = "CA" + "e" * 32
    status, first = await post_signed(twilio, "/twilio/voice", call_fields(sid, to=INTAKE))
    assert status == 200
    assert '<Say language="en-US">Thanks for calling.</Say>' in first
    assert 'input="dtmf speech"' in first and "What is your name?" in first

    # The caller's name reaches the other instance.
    status, second = await post_signed(
        second_instance, gather_path(first), call_fields(sid, to=INTAKE, SpeechResult="Jane")
    )
    assert status == 200 and "Thanks Jane. Why are you calling?" in second

    status, last = await post_signed(
        twilio,
        gather_path(second),
        call_fields(sid, to=INTAKE, SpeechResult="a leaking pipe", Confidence="0.93"),
    )
    assert status == 200
    assert "Goodbye Jane." in last and last.rstrip().endswith("<Hangup /></Response>")

    async with database.transaction(read_only=True) as session:
        note = (await session.scalars(select(Note))).one()
        record = (await session.scalars(select(CallRecord))).one()
    assert note.content == "Jane called about a leaking pipe"
    assert record.ended_at is not None and record.state["outcome"] == "completed"


async def test_a_retried_gather_webhook_is_answered_again_without_running_twice(
    twilio: TestClient[Any, Any], database: Database
) -> None:
    sid = "CA" + "f" * 32
    _, first = await post_signed(twilio, "/twilio/voice", call_fields(sid, to=INTAKE))
    again = await post_signed(twilio, "/twilio/voice", call_fields(sid, to=INTAKE))
    assert again == (200, first)
    answer = call_fields(sid, to=INTAKE, SpeechResult="Jane")
    _, second = await post_signed(twilio, gather_path(first), answer)
    retried = await post_signed(twilio, gather_path(first), answer)  # the same webhook again
    assert retried == (200, second)
    reason = call_fields(sid, to=INTAKE, SpeechResult="billing")
    await post_signed(twilio, gather_path(second), reason)
    await post_signed(twilio, gather_path(second), reason)
    async with database.transaction(read_only=True) as session:
        notes = (await session.scalars(select(Note))).all()
    assert [n.content for n in notes] == ["Jane called about billing"]


async def test_a_gather_webhook_for_another_call_or_without_numbers_is_refused(
    twilio: TestClient[Any, Any],
) -> None:
    sid = "CA" + "0" * 31 + "1"
    _, first = await post_signed(twilio, "/twilio/voice", call_fields(sid, to=INTAKE))
    status, body = await post_signed(
        twilio, gather_path(first), call_fields("CA" + "2" * 32, to=INTAKE, Digits="1")
    )
    assert status == 400 and "another call" in body
    status, body = await post_signed(
        twilio, "/twilio/voice/gather?call_id=x", call_fields(sid, to=INTAKE)
    )
    assert status == 400 and "call_id" in body
