"""Whole Twilio calls over a real Media Streams WebSocket, Twilio's side played by a fake
that speaks the wire format: greeting heard, speech transcribed, a note written by the
agent, barge-in answered with `clear`, keys, a transfer ending in `<Dial>`."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.twilio_media import TwilioCarrier
from tests.speech_audio import needs_espeak, spoken, tone
from tests.twilio.conftest import PUBLIC, call_fields, post_signed, signed_headers
from voicecrm.crm import timeline
from voicecrm.crm.models import CallRecord, Note
from voicecrm.storage import Database
from voicecrm.telephony.simulator.audio_line import (
    CallerAction,
    HangUp,
    Press,
    Silence,
    Speak,
    WaitForSpeech,
    WaitForTurn,
)

STREAM_URL = "wss://voicecrm.example.com/twilio/media"


def speech(seconds: float) -> Reply:
    return Reply(audio=tone(seconds, rate=24000), audio_chunks=(4800,) * 100)


async def hold_call(
    twilio: TestClient[Any, Any],
    sid: str,
    script: list[CallerAction],
    *,
    to: str = "+14155550100",
    tick: float = 0.002,
) -> TwilioCarrier:
    status, twiml = await post_signed(twilio, "/twilio/voice", call_fields(sid, to=to))
    assert status == 200, twiml
    (call_id,) = re.findall(r'<Parameter name="call_id" value="(\d+)"', twiml)
    ws = await twilio.ws_connect("/twilio/media", headers=signed_headers(STREAM_URL, {}))
    carrier = TwilioCarrier(ws, call_sid=sid, tick=tick)
    await carrier.run(script, {"call_id": call_id})
    return carrier


@needs_espeak
async def test_a_whole_call_ends_with_a_note_and_the_transcript_on_the_timeline(
    twilio: TestClient[Any, Any], database: Database, openai_server: FakeOpenAI
) -> None:
    sid = "CA" + "a" * 32
    openai_server.script += [
        speech(1.0),  # greeting
        Reply(text="My kitchen pipe is leaking."),
        Reply(
            text="I'm sorry to hear that.",
            tool_calls=[
                ("create_crm_note", json.dumps({"content": "Leaking pipe", "type": "warning"}))
            ],
        ),
        speech(0.8),
        Reply(text="A plumber will call you. Goodbye!", tool_calls=[("end_call", "{}")]),
        speech(0.8),
        speech(0.4),
    ]
    carrier = await hold_call(
        twilio, sid, [WaitForTurn(), Speak(spoken("my kitchen pipe is leaking")), Silence(30)]
    )
    # The service ended the stream after its goodbye; Twilio then asks what comes next.
    assert carrier.log.closed_by_service_at is not None and not carrier.log.sent_stop
    assert len(carrier.log.voiced_ticks) >= 140  # about 3 s of the receptionist was played
    assert carrier.log.marks, "marks told the service what had been heard"
    status, twiml = await post_signed(twilio, "/twilio/voice/after-stream", call_fields(sid))
    assert status == 200 and "<Hangup />" in twiml
    await post_signed(twilio, "/twilio/status", call_fields(sid, CallStatus="completed"))

    async with database.transaction(read_only=True) as session:
        record = (await session.scalars(select(CallRecord))).one()
        note = (await session.scalars(select(Note))).one()
        assert record.contact_id is not None
        page = await timeline.page(session, record.contact_id, limit=50)
    assert (note.content, note.type) == ("Leaking pipe", "warning")
    kinds = [event.kind for event in page.events]
    assert {"note_added", "call", "transcript"} <= set(kinds)
    (transcript,) = [e for e in page.events if e.kind == "transcript"]
    said = [(line["speaker"], line["text"]) for line in transcript.data["lines"]]
    assert ("caller", "My kitchen pipe is leaking.") in said
    assert ("agent", "Acme Plumbing, how can I help?") in said
    assert record.status == "completed" and record.state["latency"]


@needs_espeak
async def test_talking_over_the_greeting_is_answered_with_clear(
    twilio: TestClient[Any, Any], database: Database, openai_server: FakeOpenAI
) -> None:
    sid = "CA" + "b" * 32
    openai_server.script += [
        speech(4.0),  # a long greeting: the caller talks over it
        Reply(text="Is anyone there?"),
        Reply(text="Yes, I'm here. Goodbye!", tool_calls=[("end_call", "{}")]),
        speech(0.6),
        speech(0.3),
    ]
    carrier = await hold_call(
        twilio,
        sid,
        [WaitForSpeech(), Silence(0.5), Speak(spoken("is anyone there")), Silence(30)],
        tick=0.02,  # real time: the clear must come back within the frames Twilio plays
    )
    onset = carrier.log.caller_speech[0][0]
    assert carrier.log.clears, "the service cleared Twilio's queue"
    assert onset <= carrier.log.clears[0] <= onset + 3
    played_after = [t for t in carrier.log.voiced_ticks if onset + 3 < t < onset + 40]
    assert played_after == []  # nothing of the greeting after the cut


async def test_keys_and_a_transfer_end_in_dial(
    twilio: TestClient[Any, Any], database: Database, openai_server: FakeOpenAI
) -> None:
    sid = "CA" + "c" * 32
    openai_server.script += [speech(1.0)]  # "For support press 2."
    carrier = await hold_call(
        twilio, sid, [WaitForSpeech(), Silence(0.2), Press("2"), Silence(30)], to="+14155550101"
    )
    assert carrier.log.closed_by_service_at is not None
    assert carrier.log.clears  # the key cut the prompt short
    status, twiml = await post_signed(twilio, "/twilio/voice/after-stream", call_fields(sid))
    assert status == 200
    # The person who answers hears the scenario's whisper (said by Twilio) first.
    whisper = f"{PUBLIC}/twilio/whisper?" + urlencode(
        {"text": "Support call from +14155550123", "language": "en-US"}
    )
    assert (
        f'<Dial timeout="30"><Number method="POST" url="{escape(whisper)}">'
        "+14155550122</Number></Dial>"
    ) in twiml
    status, said = await post_signed(
        twilio, whisper.removeprefix(PUBLIC), call_fields("CA" + "d" * 32, to="+14155550122")
    )
    assert status == 200
    assert '<Say language="en-US">Support call from +14155550123</Say>' in said
    async with database.transaction(read_only=True) as session:
        note = (await session.scalars(select(Note))).one()
    assert note.content == "Support from the phone menu."


async def test_a_caller_hanging_up_ends_the_call(
    twilio: TestClient[Any, Any], database: Database, openai_server: FakeOpenAI
) -> None:
    sid = "CA" + "d" * 32
    openai_server.script += [speech(1.0)]
    carrier = await hold_call(twilio, sid, [WaitForSpeech(), HangUp()], to="+14155550101")
    assert carrier.log.sent_stop
    async with database.transaction(read_only=True) as session:
        record = (await session.scalars(select(CallRecord))).one()
    assert record.ended_at is not None
    assert record.state["outcome"] == "caller_hung_up"


async def test_a_stream_without_a_valid_signature_is_refused(
    twilio: TestClient[Any, Any],
) -> None:
    response = await twilio.get("/twilio/media", headers={"X-Twilio-Signature": "bad"})
    assert response.status == 403
