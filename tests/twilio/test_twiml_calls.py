"""TwiML-only calls: Twilio says and gathers, the scenario's state waits in the database
between webhooks, and any instance may take the next one."""

from __future__ import annotations

import asyncio
import re
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, unescape

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp.plugin import AiohttpClient, AiohttpServer
from sqlalchemy import select

from tests.conftest import TeamWorld
from tests.twilio.conftest import PUBLIC, call_fields, post_signed
from voicecrm.app import build_app
from voicecrm.config import Settings
from voicecrm.crm import timeline
from voicecrm.crm.models import CallRecord, Note, TimelineEvent
from voicecrm.scenarios.runner import run_call
from voicecrm.storage import Database
from voicecrm.telephony.twilio import webhooks
from voicecrm.telephony.twilio.webhooks import ANSWERING, CLAIM_SECONDS

INTAKE = "+14155550102"
MESSAGES = "+14155550108"
LOOKUP = "+14155550107"


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


async def test_a_transfer_whispers_to_the_person_who_answers_before_putting_the_caller_through(
    twilio: TestClient[Any, Any],
) -> None:
    """Twilio runs the `<Sip url>` document on the answered leg before bridging it: the
    service's whisper webhook says the scenario's words there, in its language and voice."""
    sid = "CA" + "4" * 32
    status, twiml = await post_signed(twilio, "/twilio/voice", call_fields(sid, to="+14155550109"))
    assert status == 200
    match = re.search(
        r'<Dial timeout="30"><Sip method="POST" url="([^"]+)">sip:desk@pbx\.example\.com</Sip>',
        twiml,
    )
    assert match is not None, twiml
    whisper = unescape(match.group(1))
    assert whisper.startswith(f"{PUBLIC}/twilio/whisper?")
    leg = call_fields("CA" + "5" * 32, to="sip:desk@pbx.example.com")
    status, said = await post_signed(twilio, whisper.removeprefix(PUBLIC), leg)
    assert status == 200
    assert '<Say language="en-GB" voice="Polly.Amy">A caller for the desk</Say>' in said


async def test_a_whisper_webhook_needs_twilios_signature_and_words(
    twilio: TestClient[Any, Any],
) -> None:
    leg = call_fields("CA" + "6" * 32)
    response = await twilio.post("/twilio/whisper?text=Hello", data=leg)
    assert response.status == 403
    assert response.headers["Content-Type"].startswith("application/problem+json")
    status, body = await post_signed(twilio, "/twilio/whisper?language=en-US", leg)
    assert status == 400 and "no text" in body


def record_path(twiml: str) -> str:
    match = re.search(r'<Record action="https://voicecrm\.example\.com([^"]+)"', twiml)
    assert match is not None, twiml
    return match.group(1).replace("&amp;", "&")


async def test_twilio_records_a_voicemail_and_the_call_goes_on_with_it(
    twilio: TestClient[Any, Any], database: Database
) -> None:
    """`<Record>` with the step's silence, length and key; its action resumes the
    scenario after the voicemail, which is on the timeline once, however often Twilio
    retries the webhook."""
    sid = "CA" + "7" * 32
    status, first = await post_signed(twilio, "/twilio/voice", call_fields(sid, to=MESSAGES))
    assert status == 200
    assert '<Say language="en-US">Please leave a message.</Say>' in first
    assert re.search(
        r'<Record action="[^"]+" finishOnKey="#" maxLength="90" method="POST" '
        r'playBeep="true" timeout="4" />',
        first,
    ), first
    recording = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE7"
    message = call_fields(sid, to=MESSAGES, RecordingUrl=recording, RecordingDuration="7")
    status, second = await post_signed(twilio, record_path(first), {**message, "Digits": "#"})
    assert status == 200
    assert "Thanks, goodbye." in second and "Please leave a message." not in second
    retried = await post_signed(twilio, record_path(first), {**message, "Digits": "#"})
    assert retried == (200, second)

    async with database.transaction(read_only=True) as session:
        record = (await session.scalars(select(CallRecord))).one()
        assert record.contact_id is not None
        page = await timeline.page(session, record.contact_id, limit=20)
    (voicemail,) = [e for e in page.events if e.kind == "voicemail"]
    assert voicemail.data["recording_url"] == recording
    assert voicemail.data["duration_seconds"] == 7
    assert record.state["variables"]["voicemail"] == recording
    assert record.state["outcome"] == "completed"


async def test_a_record_that_caught_nothing_saves_no_voicemail(
    twilio: TestClient[Any, Any], database: Database
) -> None:
    sid = "CA" + "8" * 32
    _, first = await post_signed(twilio, "/twilio/voice", call_fields(sid, to=MESSAGES))
    bad = call_fields(sid, to=MESSAGES, RecordingUrl="x", RecordingDuration="long")
    status, body = await post_signed(twilio, record_path(first), bad)
    assert status == 400 and "RecordingDuration" in body
    nothing = call_fields(sid, to=MESSAGES, RecordingUrl="", RecordingDuration="0")
    status, second = await post_signed(twilio, record_path(first), nothing)
    assert status == 200 and "Thanks, goodbye." in second
    async with database.transaction(read_only=True) as session:
        kinds = list(await session.scalars(select(TimelineEvent.kind)))
    assert "voicemail" not in kinds


async def test_a_gather_answer_sent_twice_at_once_runs_the_scenario_once(
    aiohttp_client: AiohttpClient,
    aiohttp_server: AiohttpServer,
    settings: Settings,
    world: TeamWorld,
    tmp_path: Path,
    database: Database,
) -> None:
    """Twilio retries a webhook it gave up waiting for, maybe to another instance, while
    the first request still runs the turn (here, held in a slow lookup). The retry is
    told to wait and ask again; it then gets what the first answered, and the turn's
    work (the lookup, the note) happens once."""
    arrived, release = asyncio.Event(), asyncio.Event()
    lookups: list[dict[str, Any]] = []

    async def lookup(request: web.Request) -> web.Response:
        lookups.append(await request.json())
        arrived.set()
        await release.wait()
        return web.json_response({"status": "shipped"})

    orders = web.Application()
    orders.router.add_post("/lookup", lookup)
    server = await aiohttp_server(orders)
    folder = tmp_path / "lookup-scenarios"
    folder.mkdir()
    (folder / "lookup.yaml").write_text(
        textwrap.dedent(
            f"""
            name: lookup
            numbers: ["{LOOKUP}"]
            settings: {{twilio_mode: twiml}}
            steps:
              ask:
                gather: {{prompt: "Your order number?", input: [dtmf], num_digits: 4,
                          save_as: order}}
              look_up:
                http_request: {{method: POST, url: "{server.make_url("/lookup")}",
                                json: {{order: "{{{{ order }}}}"}}, timeout: 30, save_as: found}}
              note:
                create_crm_note: "Order {{{{ order }}}} looked up"
              tell:
                say: "Order {{{{ order }}}} is {{{{ found.status }}}}."
            """
        )
    )
    twilio = await aiohttp_client(
        build_app(settings.model_copy(update={"scenarios_dir": str(folder)}))
    )
    sid = "CA" + "9" * 32
    _, first = await post_signed(twilio, "/twilio/voice", call_fields(sid, to=LOOKUP))
    path = gather_path(first)
    answer = call_fields(sid, to=LOOKUP, Digits="1234")
    answering = asyncio.create_task(post_signed(twilio, path, answer))
    await arrived.wait()  # the first request is in the lookup, the turn claimed

    async with asyncio.timeout(10):  # a guard: run twice, the retry would wait on the lookup
        status, retried = await post_signed(twilio, path, answer)
    assert status == 200
    assert retried.endswith(
        f'<Pause length="1" /><Redirect method="POST">{escape(PUBLIC + path)}</Redirect></Response>'
    )
    release.set()
    status, answered = await answering
    assert status == 200 and "Order 1234 is shipped." in answered
    # Asked again, as the pause and redirect make Twilio do: what the first request said.
    assert await post_signed(twilio, path, call_fields(sid, to=LOOKUP)) == (200, answered)

    assert lookups == [{"order": "1234"}]
    async with database.transaction(read_only=True) as session:
        notes = list(await session.scalars(select(Note.content)))
    assert notes == ["Order 1234 looked up"]


async def test_a_turn_claimed_by_a_request_that_is_gone_is_taken_over(
    twilio: TestClient[Any, Any], database: Database
) -> None:
    """The instance running a turn stopped mid-way: its claim stays in the call's state.
    A fresh claim makes a duplicate wait; one older than Twilio would wait for is taken
    over, and the turn runs."""
    sid = "CA" + "a" * 32
    _, first = await post_signed(twilio, "/twilio/voice", call_fields(sid, to=INTAKE))
    answer = call_fields(sid, to=INTAKE, SpeechResult="Jane")

    async def claimed(seconds_ago: float) -> None:
        at = datetime.now(UTC) - timedelta(seconds=seconds_ago)
        async with database.transaction() as session:
            record = (await session.scalars(select(CallRecord))).one()
            record.state = {**record.state, ANSWERING: {"turn": 1, "at": at.isoformat()}}

    await claimed(seconds_ago=1)
    status, held = await post_signed(twilio, gather_path(first), answer)
    assert status == 200 and "<Redirect" in held and "Jane" not in held
    await claimed(seconds_ago=CLAIM_SECONDS + 1)
    status, answered = await post_signed(twilio, gather_path(first), answer)
    assert status == 200 and "Thanks Jane. Why are you calling?" in answered
    async with database.transaction(read_only=True) as session:
        record = (await session.scalars(select(CallRecord))).one()
    assert ANSWERING not in record.state and record.state["twilio_turn"] == 2


async def test_a_turn_that_failed_is_run_by_the_retry(
    twilio: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that fails gives its claim back: Twilio's retry runs the turn, not waits."""
    sid = "CA" + "b" * 32
    _, first = await post_signed(twilio, "/twilio/voice", call_fields(sid, to=INTAKE))
    runs = 0

    async def failing_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("the database server restarted")
        return await run_call(*args, **kwargs)

    monkeypatch.setattr(webhooks, "run_call", failing_once)  # what the webhooks run
    answer = call_fields(sid, to=INTAKE, SpeechResult="Jane")
    status, _ = await post_signed(twilio, gather_path(first), answer)
    assert status == 500
    status, answered = await post_signed(twilio, gather_path(first), answer)
    assert status == 200 and "Thanks Jane. Why are you calling?" in answered
