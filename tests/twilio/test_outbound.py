"""Outbound calls: the service asks Twilio's REST API to call, and Twilio's webhooks for
that call come back to the scenario it was placed for.

The REST API is a fake on loopback that the real twilio client talks to
(`tests/fakes/twilio_rest.py`); the webhooks are signed as Twilio signs them and
posted to the URLs the service gave Twilio, so each test follows one call the
way Twilio would.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from tests.conftest import TeamWorld, engine_independent
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.twilio_media import TwilioCarrier
from tests.fakes.twilio_rest import ACCOUNT_SID, AUTH_TOKEN, FakeTwilioRest, twilio_rest
from tests.twilio.conftest import PUBLIC, call_fields, post_signed, signed_headers
from voicecrm.calls.outbound import (
    CalleeBlocked,
    CarrierRejected,
    CarrierUnavailable,
    OutboundCalls,
    OutboundRequest,
    PlacedCall,
)
from voicecrm.config import Settings
from voicecrm.crm import timeline
from voicecrm.crm.models import CallRecord, Contact, Note
from voicecrm.errors import InvalidPhoneNumber, NotFound
from voicecrm.storage import Database
from voicecrm.telephony.simulator.audio_line import Silence
from voicecrm.telephony.twilio.services import TWILIO

__all__ = ["twilio_rest"]

ROOT = Path(__file__).resolve().parents[2]
STREAM_URL = "wss://voicecrm.example.com/twilio/media"
CALLEE = "+14155550177"
OUR_NUMBER = "+14155550103"

OUTBOUND_SCENARIOS = {
    "reminder.yaml": f"""
        name: reminder
        numbers: ["{OUR_NUMBER}"]
        settings: {{twilio_mode: twiml}}
        steps:
          remind:
            gather:
              prompt: "Hello, this is Acme Plumbing about {{{{ outbound.metadata.job }}}}.
                Press 1 to confirm."
              input: [dtmf]
              num_digits: 1
              save_as: confirmed
          bye:
            say: "Thank you. Goodbye."
    """,
    "spoken-reminder.yaml": """
        name: spoken-reminder
        steps:
          note:
            create_crm_note: "Reminder for {{ contact.phones[0] }}, answered by {{ answered_by }}"
          remind:
            say: "Your plumber comes tomorrow."
    """,
    "voicemail-drop.yaml": """
        name: voicemail-drop
        settings: {twilio_mode: twiml, outbound: {on_machine: continue}}
        steps:
          message:
            say: "{% if answered_by == 'human' %}Hi!{% else %}Sorry we missed you.{% endif %}
              Please call Acme Plumbing back."
    """,
}


@pytest.fixture
def settings(settings: Settings, scenarios_dir: Path, twilio_rest: FakeTwilioRest) -> Settings:
    """The suite's Twilio settings, with an account whose REST API is the fake."""
    for name, text in OUTBOUND_SCENARIOS.items():
        (scenarios_dir / name).write_text(textwrap.dedent(text).lstrip("\n"))
    return settings.model_copy(
        update={
            "twilio_account_sid": ACCOUNT_SID,
            "twilio_api_base_url": twilio_rest.base_url,
        }
    )


@pytest.fixture
def outbound(twilio: TestClient[Any, Any]) -> OutboundCalls:
    placing: OutboundCalls | None = twilio.app[TWILIO].outbound
    assert placing is not None
    return placing


def webhook_path(url: str) -> str:
    """The path and query of a URL the service gave Twilio, to post to the test client."""
    assert url.startswith(PUBLIC), url
    return url.removeprefix(PUBLIC)


def answered(sid: str, **extra: str) -> dict[str, str]:
    """Twilio's fields on the voice webhook of a call the service placed."""
    return call_fields(
        sid,
        caller=OUR_NUMBER,
        to=CALLEE,
        **{"Direction": "outbound-api", "CallStatus": "in-progress", **extra},
    )


async def the_call(database: Database, call_id: int) -> CallRecord:
    async with database.transaction(read_only=True) as session:
        record = await session.get(CallRecord, call_id)
    assert record is not None
    return record


async def timeline_of(database: Database, contact_id: int | None) -> list[tuple[str, Any]]:
    """The callee's timeline, newest first, after the contact's creation."""
    assert contact_id is not None
    async with database.transaction(read_only=True) as session:
        page = await timeline.page(session, contact_id, limit=50)
    return [(e.kind, e.data) for e in page.events if e.kind != "contact_created"]


async def place(outbound: OutboundCalls, scenario: str = "reminder", **kw: Any) -> PlacedCall:
    return await outbound.place(OutboundRequest(to=CALLEE, scenario=scenario, **kw))


async def test_placing_a_call_asks_twilio_to_call_back_this_service(
    outbound: OutboundCalls, twilio_rest: FakeTwilioRest, database: Database
) -> None:
    placed = await place(outbound, machine_detection=True)

    (created,) = twilio_rest.calls
    assert placed.carrier_call_id == created.sid and placed.status == "queued"
    form = created.form
    assert (form["To"], form["From"], form["Method"]) == (CALLEE, OUR_NUMBER, "POST")
    assert form["Url"] == f"{PUBLIC}/twilio/voice?call_id={placed.call_id}&scenario=reminder"
    assert form["StatusCallback"] == f"{PUBLIC}/twilio/status?call_id={placed.call_id}"
    assert form.getall("StatusCallbackEvent") == ["initiated", "ringing", "answered", "completed"]
    assert form["MachineDetection"] == "DetectMessageEnd"

    record = await the_call(database, placed.call_id)
    assert (record.channel, record.external_id, record.direction, record.status) == (
        "twilio",
        created.sid,
        "outbound",
        "queued",
    )
    assert (record.from_number, record.to_number, record.scenario) == (
        OUR_NUMBER,
        CALLEE,
        "reminder",
    )
    async with database.transaction(read_only=True) as session:
        callee = await session.get(Contact, record.contact_id or 0)
    assert callee is not None and callee.name == "Unknown Caller"  # resolved like a caller


async def test_without_machine_detection_twilio_is_not_asked_for_it(
    outbound: OutboundCalls, twilio_rest: FakeTwilioRest
) -> None:
    await place(outbound, from_number="+14155550100")
    (created,) = twilio_rest.calls
    assert "MachineDetection" not in created.form
    assert created.form["From"] == "+14155550100"


async def test_a_human_answer_runs_the_scenario_it_was_placed_for_until_twilio_reports_the_end(
    twilio: TestClient[Any, Any],
    outbound: OutboundCalls,
    twilio_rest: FakeTwilioRest,
    database: Database,
) -> None:
    placed = await place(outbound, machine_detection=True, metadata={"job": "the boiler service"})
    sid, url = placed.carrier_call_id, twilio_rest.calls[0].form["Url"]
    status_url = webhook_path(twilio_rest.calls[0].form["StatusCallback"])
    for event in ("initiated", "ringing"):
        code, _ = await post_signed(
            twilio, status_url, answered(sid, CallStatus=event, SequenceNumber="0")
        )
        assert code == 204
    assert (await the_call(database, placed.call_id)).status == "ringing"

    status, body = await post_signed(twilio, webhook_path(url), answered(sid, AnsweredBy="human"))
    assert status == 200
    assert "Hello, this is Acme Plumbing about the boiler service. Press 1 to confirm." in body
    assert 'input="dtmf"' in body and "<Hangup" not in body
    record = await the_call(database, placed.call_id)
    assert record.state["variables"]["answered_by"] == "human"
    assert record.ended_at is None

    # The callee hangs up without pressing anything; Twilio's final callback ends the call.
    await post_signed(twilio, status_url, answered(sid, CallStatus="in-progress"))
    await post_signed(twilio, status_url, answered(sid, CallStatus="completed", CallDuration="42"))
    record = await the_call(database, placed.call_id)
    assert (record.status, record.duration_seconds) == ("completed", 42)
    ((kind, data),) = await timeline_of(database, record.contact_id)
    assert kind == "call" and (data["direction"], data["to_number"]) == ("outbound", CALLEE)
    async with database.transaction(read_only=True) as session:
        contacts = (await session.scalars(select(Contact))).all()
    assert len(contacts) == 1  # the callee; no contact for the business's own number


async def test_an_answering_machine_is_hung_up_on_and_the_call_ends_as_machine(
    twilio: TestClient[Any, Any],
    outbound: OutboundCalls,
    twilio_rest: FakeTwilioRest,
    database: Database,
) -> None:
    placed = await place(outbound, machine_detection=True)
    path = webhook_path(twilio_rest.calls[0].form["Url"])
    fields = answered(placed.carrier_call_id, AnsweredBy="machine_end_beep")

    status, body = await post_signed(twilio, path, fields)
    assert status == 200
    assert body.rstrip().endswith("<Response><Hangup /></Response>")
    assert await post_signed(twilio, path, fields) == (200, body)  # a retry: the same answer
    await post_signed(
        twilio,
        webhook_path(twilio_rest.calls[0].form["StatusCallback"]),
        answered(placed.carrier_call_id, CallStatus="completed", CallDuration="31"),
    )

    record = await the_call(database, placed.call_id)
    assert record.status == "machine" and record.ended_at is not None
    assert record.state["outcome"] == "machine"
    assert await timeline_of(database, record.contact_id) == [
        (
            "call",
            {
                "call_id": str(record.id),
                "direction": "outbound",
                "from_number": OUR_NUMBER,
                "to_number": CALLEE,
                "status": "machine",
                "duration_seconds": record.duration_seconds,
                "recording_url": None,
            },
        ),
        (
            "machine_answered",
            {"call_id": record.id, "answered_by": "machine_end_beep", "action": "hangup"},
        ),
    ]


async def test_a_scenario_may_leave_a_message_on_the_machine_instead(
    twilio: TestClient[Any, Any],
    outbound: OutboundCalls,
    twilio_rest: FakeTwilioRest,
    database: Database,
) -> None:
    placed = await place(outbound, "voicemail-drop", machine_detection=True, from_number=OUR_NUMBER)
    path = webhook_path(twilio_rest.calls[0].form["Url"])

    status, body = await post_signed(
        twilio, path, answered(placed.carrier_call_id, AnsweredBy="machine_end_silence")
    )
    assert status == 200
    assert "Sorry we missed you. Please call Acme Plumbing back." in body
    assert body.rstrip().endswith("<Hangup /></Response>")
    record = await the_call(database, placed.call_id)
    kinds = [
        (kind, data.get("action")) for kind, data in await timeline_of(database, record.contact_id)
    ]
    assert ("machine_answered", "continue") in kinds
    assert record.state["outcome"] == "completed"


async def test_a_fax_is_hung_up_on_even_when_the_scenario_would_leave_a_message(
    twilio: TestClient[Any, Any], outbound: OutboundCalls, twilio_rest: FakeTwilioRest
) -> None:
    placed = await place(outbound, "voicemail-drop", machine_detection=True, from_number=OUR_NUMBER)
    status, body = await post_signed(
        twilio,
        webhook_path(twilio_rest.calls[0].form["Url"]),
        answered(placed.carrier_call_id, AnsweredBy="fax"),
    )
    assert status == 200 and "<Say" not in body and "<Hangup />" in body


async def test_a_media_stream_call_runs_with_the_callee_as_its_contact(
    twilio: TestClient[Any, Any],
    outbound: OutboundCalls,
    twilio_rest: FakeTwilioRest,
    openai_server: FakeOpenAI,
    database: Database,
) -> None:
    openai_server.script.append(Reply(audio=b"\x00\x00" * 2400))  # what the callee hears
    placed = await place(
        outbound, "spoken-reminder", machine_detection=True, from_number=OUR_NUMBER
    )
    path = webhook_path(twilio_rest.calls[0].form["Url"])
    fields = answered(placed.carrier_call_id, AnsweredBy="human")
    status, body = await post_signed(twilio, path, fields)
    assert status == 200 and f'<Parameter name="call_id" value="{placed.call_id}" />' in body
    assert await post_signed(twilio, path, fields) == (200, body)  # a retry: the same answer
    ws = await twilio.ws_connect("/twilio/media", headers=signed_headers(STREAM_URL, {}))
    carrier = TwilioCarrier(ws, call_sid=placed.carrier_call_id)
    await carrier.run([Silence(10)], {"call_id": str(placed.call_id)})
    assert carrier.log.closed_by_service_at is not None  # the scenario ended the stream

    record = await the_call(database, placed.call_id)
    async with database.transaction(read_only=True) as session:
        note = (await session.scalars(select(Note))).one()
    assert note.contact_id == record.contact_id
    assert note.content == f"Reminder for {CALLEE}, answered by human"
    assert record.status == "completed" and record.state["outcome"] == "completed"


async def test_a_refusal_is_a_clear_error_and_the_call_is_closed_as_failed(
    outbound: OutboundCalls, twilio_rest: FakeTwilioRest, database: Database
) -> None:
    twilio_rest.fail_next(400, 21211, f"The 'To' number {CALLEE} is not a valid phone number.")
    with pytest.raises(CarrierRejected) as refused:
        await place(outbound)
    assert refused.value.detail == (
        f"Twilio refused the call to {CALLEE}: The 'To' number {CALLEE} is not a valid phone "
        "number. (https://www.twilio.com/docs/errors/21211)"
    )
    assert (refused.value.carrier_code, refused.value.carrier_status) == (21211, 400)

    async with database.transaction(read_only=True) as session:
        record = (await session.scalars(select(CallRecord))).one()
    assert (record.status, record.direction, record.ended_at is not None) == (
        "failed",
        "outbound",
        True,
    )
    ((kind, data),) = await timeline_of(database, record.contact_id)
    assert (kind, data["status"]) == ("call", "failed")


async def test_twilios_own_trouble_is_worth_retrying_later(
    outbound: OutboundCalls, twilio_rest: FakeTwilioRest
) -> None:
    twilio_rest.fail_next(503, 20503, "Service Unavailable")
    with pytest.raises(CarrierUnavailable, match=r"Service Unavailable.*try again later"):
        await place(outbound)


async def test_wrong_credentials_say_which_settings_to_check_and_never_show_the_token(
    settings: Settings, twilio_rest: FakeTwilioRest, database: Database, world: TeamWorld
) -> None:
    from voicecrm.app import twilio_outbound
    from voicecrm.scenarios.library import ScenarioRegistry

    registry = ScenarioRegistry([Path(settings.scenarios_dir)])
    registry.reload()
    wrong = settings.model_copy(update={"twilio_auth_token": SecretStr("not-the-token")})
    placing = twilio_outbound(wrong, database, world.system, registry)
    try:
        with pytest.raises(CarrierRejected) as refused:
            await place(placing)
    finally:
        await placing.aclose()
    assert "Authenticate" in refused.value.detail
    assert "VOICECRM_TWILIO_AUTH_TOKEN" in refused.value.detail
    assert "not-the-token" not in refused.value.detail
    assert twilio_rest.calls == []


async def test_an_unreachable_api_is_a_carrier_unavailable_error(
    settings: Settings, database: Database, world: TeamWorld
) -> None:
    from voicecrm.app import twilio_outbound
    from voicecrm.scenarios.library import ScenarioRegistry

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry = ScenarioRegistry([Path(settings.scenarios_dir)])
    registry.reload()
    nowhere = settings.model_copy(update={"twilio_api_base_url": f"http://127.0.0.1:{port}"})
    placing = twilio_outbound(nowhere, database, world.system, registry)
    try:
        with pytest.raises(CarrierUnavailable, match="could not be reached"):
            await place(placing)
    finally:
        await placing.aclose()
    async with database.transaction(read_only=True) as session:
        assert (await session.scalars(select(CallRecord))).one().status == "failed"


async def test_bad_requests_are_refused_before_anything_is_written_or_sent(
    outbound: OutboundCalls, twilio_rest: FakeTwilioRest, database: Database
) -> None:
    with pytest.raises(InvalidPhoneNumber, match=r"not an E\.164 number"):
        OutboundRequest(to="415-555-0177", scenario="reminder")
    with pytest.raises(NotFound, match="no scenario named 'nope'"):
        await place(outbound, "nope")
    await place(outbound)  # the callee becomes a contact; then they are blocked
    async with database.transaction() as session:
        callee = (await session.scalars(select(Contact))).one()
        callee.blocked = True
    with pytest.raises(CalleeBlocked, match="is blocked"):
        await place(outbound)
    assert len(twilio_rest.calls) == 1


async def test_webhooks_arriving_before_twilios_answer_still_find_the_call(
    twilio: TestClient[Any, Any],
    outbound: OutboundCalls,
    twilio_rest: FakeTwilioRest,
    database: Database,
) -> None:
    release = twilio_rest.hold()
    placing = asyncio.create_task(place(outbound))
    await twilio_rest.received.wait()
    created = twilio_rest.calls[0]
    code, _ = await post_signed(
        twilio,
        webhook_path(created.form["StatusCallback"]),
        answered(created.sid, CallStatus="ringing"),
    )
    assert code == 204
    release.set()
    placed = await placing
    record = await the_call(database, placed.call_id)
    assert (record.external_id, record.status) == (created.sid, "ringing")


async def test_a_webhook_must_belong_to_the_call_it_names(
    twilio: TestClient[Any, Any], outbound: OutboundCalls, twilio_rest: FakeTwilioRest
) -> None:
    placed = await place(outbound)
    path = webhook_path(twilio_rest.calls[0].form["Url"])
    status, body = await post_signed(twilio, path, answered("CA" + "9" * 32))
    assert status == 400 and "another call" in body
    status, body = await post_signed(
        twilio, f"/twilio/voice?call_id={placed.call_id + 1000}", answered(placed.carrier_call_id)
    )
    assert status == 404 and "does not exist" in body
    status, body = await post_signed(twilio, "/twilio/voice?call_id=x", answered("CA1"))
    assert status == 400 and "call_id" in body
    # An incoming call's row cannot be taken over by naming it.
    _, _ = await post_signed(twilio, "/twilio/voice", call_fields("CA" + "8" * 32))
    status, body = await post_signed(
        twilio, f"/twilio/voice?call_id={placed.call_id + 1}", answered("CA" + "8" * 32)
    )
    assert status == 400 and "not a call this service placed" in body


async def voicecrm_call(*args: str, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voicecrm",
        "call",
        *args,
        cwd=ROOT,
        env={**os.environ, "VOICECRM_LOG_LEVEL": "WARNING", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


def cli_env(database: Database, settings: Settings) -> dict[str, str]:
    return {
        "VOICECRM_DATABASE_URL": database.url,
        "VOICECRM_SCENARIOS_DIR": settings.scenarios_dir,
        "VOICECRM_PUBLIC_URL": PUBLIC,
        "VOICECRM_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "VOICECRM_TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "VOICECRM_TWILIO_API_BASE_URL": settings.twilio_api_base_url or "",
    }


async def test_the_cli_places_a_call_and_prints_both_ids(
    settings: Settings, twilio_rest: FakeTwilioRest, database: Database, world: TeamWorld
) -> None:
    status, output = await voicecrm_call(
        CALLEE, "--scenario", "reminder", "--amd", env=cli_env(database, settings)
    )
    assert status == 0, output
    (created,) = twilio_rest.calls
    assert created.form["MachineDetection"] == "DetectMessageEnd"
    async with database.transaction(read_only=True) as session:
        record = (await session.scalars(select(CallRecord))).one()
    assert output.splitlines() == [
        f"call placed: CallSid {created.sid} (queued)",
        f"CRM call id: {record.id}",
    ]
    assert record.external_id == created.sid
    assert AUTH_TOKEN not in output


@engine_independent
async def test_the_cli_says_what_to_set_when_twilio_is_not_configured(
    settings: Settings, twilio_rest: FakeTwilioRest, database: Database, world: TeamWorld
) -> None:
    env = {
        **cli_env(database, settings),
        "VOICECRM_TWILIO_ACCOUNT_SID": "",
        "VOICECRM_TWILIO_AUTH_TOKEN": "",
        "VOICECRM_PUBLIC_URL": "",
    }
    status, output = await voicecrm_call(CALLEE, "--scenario", "reminder", env=env)
    assert status == 2
    assert output.strip() == (
        "voicecrm: placing Twilio calls needs VOICECRM_TWILIO_ACCOUNT_SID, "
        "VOICECRM_TWILIO_AUTH_TOKEN, VOICECRM_PUBLIC_URL (the account SID and auth token, "
        "and the https URL Twilio reaches this service at)"
    )
    assert twilio_rest.calls == []


@engine_independent
async def test_the_cli_reports_twilios_refusal_and_bad_numbers(
    settings: Settings, twilio_rest: FakeTwilioRest, database: Database, world: TeamWorld
) -> None:
    twilio_rest.fail_next(
        400,
        21210,
        f"The source phone number provided, {OUR_NUMBER}, is not yet verified for your account.",
    )
    status, output = await voicecrm_call(
        CALLEE, "--scenario", "reminder", env=cli_env(database, settings)
    )
    assert status == 2
    assert "is not yet verified for your account" in output and "21210" in output
    status, output = await voicecrm_call(
        "4155550177", "--scenario", "reminder", env=cli_env(database, settings)
    )
    assert status == 2 and "'4155550177' is not an E.164 number" in output
