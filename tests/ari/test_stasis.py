"""Whole Asterisk calls through the real app: Stasis events and REST from a fake ARI, the
caller's audio over real RTP from the fake's ExternalMedia peer, speech and the model from
the fake OpenAI server. The caller's pauses are real time; everything else is awaited."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp.plugin import AiohttpClient
from sqlalchemy import select

from tests.ari.conftest import (
    CALL_TIMEOUT,
    call_heard,
    finished,
    service_settings,
    speech,
    the_call,
    write_scenarios,
)
from tests.conftest import TeamWorld
from tests.fakes.fake_asterisk import (
    FakeAsterisk,
    Quiet,
    WaitForQuiet,
    WaitForSpeech,
    fake_asterisk,
)
from tests.fakes.openai_server import FakeOpenAI, Reply, Upload, openai_server
from tests.speech_audio import needs_espeak, spoken
from voicecrm.app import ARI, build_app
from voicecrm.config import Settings
from voicecrm.crm import contacts, timeline
from voicecrm.crm.models import Contact, Note
from voicecrm.crm.schemas import ContactCreate, PhoneIn
from voicecrm.storage import Database
from voicecrm.telephony.ari.client import Channel
from voicecrm.telephony.ari.stasis import (
    MEDIA_PREFIX,
    AriApplication,
    media_address,
    scenario_argument,
)

__all__ = ["fake_asterisk", "openai_server"]


SCENARIOS = {
    "receptionist.yaml": """
        name: receptionist
        default: true
        numbers: ["+14155550100"]
        business: {name: Acme Plumbing}
        steps:
          brain:
            agent:
              greeting: "Acme Plumbing, how can I help?"
              instructions: "You work for {{ business.name }}."
    """,
    "menu.yaml": """
        name: menu
        numbers: ["+14155550101"]
        steps:
          ask:
            gather:
              prompt: "For support press 2."
              input: [dtmf]
              num_digits: 1
              timeout: 10
              choices: {"2": support}
              no_input: bye
              no_match: bye
          support:
            create_crm_note: {content: "Support from the phone menu.", type: Info}
          transfer:
            transfer: {to: "+14155550122"}
          bye:
            say: "Goodbye."
    """,
    "voicemail.yaml": """
        name: voicemail
        numbers: ["+14155550102"]
        steps:
          leave:
            voicemail: {prompt: "Please leave a message.", max_seconds: 30, silence_seconds: 3}
          bye:
            say: "Thanks, goodbye."
    """,
}


@pytest.fixture
def settings(
    database_url: str, tmp_path: Path, openai_server: FakeOpenAI, fake_asterisk: FakeAsterisk
) -> Settings:
    folder = write_scenarios(tmp_path / "scenarios", SCENARIOS)
    return service_settings(
        database_url,
        folder,
        openai_server,
        fake_asterisk,
        recordings_dir=str(tmp_path / "recordings"),
    )


async def media_channel(fake: FakeAsterisk) -> str:
    (request,) = [r for r in fake.requests if r.path == "/channels/externalMedia"]
    return request.query["channelId"]


@needs_espeak
async def test_an_unknown_caller_talks_to_the_agent_and_the_call_lands_on_the_timeline(
    service: AriApplication,
    fake_asterisk: FakeAsterisk,
    database: Database,
    openai_server: FakeOpenAI,
) -> None:
    openai_server.script += [
        speech(1.0),  # the greeting
        Reply(text="My kitchen pipe is leaking."),
        Reply(
            text="I'm sorry to hear that.",
            tool_calls=[
                ("create_crm_note", json.dumps({"content": "Leaking pipe", "type": "warning"}))
            ],
        ),
        speech(0.6),
        Reply(text="A plumber will call you. Goodbye!", tool_calls=[("end_call", "{}")]),
        speech(0.6),
        speech(0.3),
    ]
    fake_asterisk.caller_script = [WaitForQuiet(), spoken("my kitchen pipe is leaking"), 30.0]
    channel_id = await fake_asterisk.inject_call("+14155550123", "+14155550100")
    peer = await fake_asterisk.wait_peer()
    await finished(service)

    assert peer.voiced_frames >= 40  # the greeting (1 s) and more reached the caller over RTP
    (upload,) = [r["file"] for r in openai_server.requests if isinstance(r.get("file"), Upload)]
    assert len(upload.data) > 8000  # the caller's speech went to the transcription endpoint
    paths = [(r.method, r.path) for r in fake_asterisk.requests]
    media = await media_channel(fake_asterisk)
    assert media.startswith(MEDIA_PREFIX)
    assert paths.index(("POST", f"/channels/{channel_id}/answer")) < paths.index(
        ("POST", "/channels/externalMedia")
    )
    (add,) = [r for r in fake_asterisk.requests if r.path.endswith("/addChannel")]
    assert add.query["channel"] == f"{channel_id},{media}"
    assert ("DELETE", f"/channels/{channel_id}") in paths  # the agent hung up
    assert ("DELETE", f"/channels/{media}") in paths
    assert not fake_asterisk.bridges and not fake_asterisk.media_peers
    record = await the_call(database)
    async with database.transaction(read_only=True) as session:
        note = (await session.scalars(select(Note))).one()
        contact = await session.get(Contact, record.contact_id)
        assert contact is not None
        page = await timeline.page(session, contact.id, limit=50)
    assert (record.channel, record.external_id, record.status) == (
        "asterisk",
        channel_id,
        "completed",
    )
    assert (record.from_number, record.to_number) == ("+14155550123", "+14155550100")
    assert contact.name == "Unknown Caller"
    assert (note.content, note.type) == ("Leaking pipe", "warning")
    (transcript,) = [e for e in page.events if e.kind == "transcript"]
    said = [(line["speaker"], line["text"]) for line in transcript.data["lines"]]
    assert ("caller", "My kitchen pipe is leaking.") in said
    assert ("agent", "Acme Plumbing, how can I help?") in said
    assert service.calls_in_progress == 0


@needs_espeak
async def test_a_known_caller_keeps_talking_while_the_events_socket_is_restored(
    service: AriApplication,
    fake_asterisk: FakeAsterisk,
    database: Database,
    world: TeamWorld,
    openai_server: FakeOpenAI,
) -> None:
    async with database.transaction() as session:
        jane = await contacts.create_contact(
            session,
            world.admin,
            ContactCreate(name="Jane Roe", phones=[PhoneIn(number="+14155550123")]),
        )
        jane_id = jane.id
    openai_server.script += [
        speech(1.0),
        Reply(text="When is the plumber coming?"),
        Reply(text="Tomorrow at nine. Goodbye!", tool_calls=[("end_call", "{}")]),
        speech(0.6),
        speech(0.3),
    ]
    fake_asterisk.caller_script = [WaitForQuiet(), spoken("when is the plumber coming"), 30.0]
    channel_id, _ = await call_heard(fake_asterisk, "+14155550123", "+14155550100")
    await fake_asterisk.drop_event_sockets()
    await fake_asterisk.wait_connected(2)
    await finished(service)

    assert ("GET", f"/channels/{channel_id}") in [
        (r.method, r.path) for r in fake_asterisk.requests
    ]  # reconciled after the reconnect, and the caller was still there
    record = await the_call(database)
    assert record.contact_id == jane_id and record.status == "completed"
    said = [(line["speaker"], line["text"]) for line in record.state["transcript"]]
    assert ("caller", "When is the plumber coming?") in said
    assert record.state["outcome"] != "caller_hung_up"


async def test_a_key_ends_the_menu_and_the_transfer_goes_back_to_the_dialplan(
    service: AriApplication,
    fake_asterisk: FakeAsterisk,
    database: Database,
    openai_server: FakeOpenAI,
) -> None:
    openai_server.script += [speech(3.0)]  # "For support press 2.", pressed over
    fake_asterisk.caller_script = [WaitForSpeech(), 60.0]
    channel_id, _ = await call_heard(fake_asterisk, "+14155550124", "+14155550101")
    await fake_asterisk.press(channel_id, "2")
    await finished(service)

    async with database.transaction(read_only=True) as session:
        note = (await session.scalars(select(Note))).one()
    assert note.content == "Support from the phone menu."
    handoff = await fake_asterisk.wait_request("POST", f"/channels/{channel_id}/continue")
    assert (handoff.query["extension"], handoff.query["priority"]) == ("+14155550122", "1")
    paths = [(r.method, r.path) for r in fake_asterisk.requests]
    assert ("DELETE", f"/channels/{channel_id}") not in paths  # the dialplan has the caller
    record = await the_call(database)
    assert record.ended_at is not None and record.state["outcome"] == "transferred"


async def test_a_silent_caller_hears_the_prompt_before_asterisk_sends_any_audio(
    service: AriApplication,
    fake_asterisk: FakeAsterisk,
    database: Database,
    openai_server: FakeOpenAI,
) -> None:
    # A real Asterisk forwards no RTP while the caller's side makes no frames (seen with a
    # Local channel in Wait() on 22.11): the line must send to the UNICASTRTP_LOCAL_*
    # address at once rather than wait to learn Asterisk's from its first packet.
    openai_server.script += [speech(1.0)]
    fake_asterisk.caller_script = [Quiet()]
    channel_id, heard = await call_heard(fake_asterisk, "+14155550126", "+14155550101")
    assert heard.frames_sent == 0
    await fake_asterisk.press(channel_id, "2")
    await finished(service)

    async with database.transaction(read_only=True) as session:
        note = (await session.scalars(select(Note))).one()
    assert note.content == "Support from the phone menu."


async def test_a_caller_hanging_up_mid_prompt_ends_the_call(
    service: AriApplication,
    fake_asterisk: FakeAsterisk,
    database: Database,
    openai_server: FakeOpenAI,
) -> None:
    openai_server.script += [speech(3.0)]
    fake_asterisk.caller_script = [WaitForSpeech(), 60.0]
    channel_id, _ = await call_heard(fake_asterisk, "+14155550125", "+14155550101")
    await fake_asterisk.hang_up(channel_id)
    await finished(service)

    record = await the_call(database)
    assert record.ended_at is not None and record.state["outcome"] == "caller_hung_up"
    media = await media_channel(fake_asterisk)
    assert media not in fake_asterisk.channels and not fake_asterisk.bridges


async def test_a_caller_gone_while_the_socket_was_down_is_closed_on_reconnect(
    service: AriApplication,
    fake_asterisk: FakeAsterisk,
    database: Database,
    openai_server: FakeOpenAI,
) -> None:
    openai_server.script += [speech(3.0)]
    fake_asterisk.caller_script = [WaitForSpeech(), 60.0]
    channel_id, _ = await call_heard(fake_asterisk, "+14155550126", "+14155550101")
    await fake_asterisk.drop_event_sockets()
    await fake_asterisk.vanish(channel_id)  # its StasisEnd is lost with the socket
    await fake_asterisk.wait_connected(2)
    await finished(service)

    await fake_asterisk.wait_request("GET", f"/channels/{channel_id}")  # answered 404
    record = await the_call(database)
    assert record.ended_at is not None and record.state["outcome"] == "caller_hung_up"


async def test_a_404_from_ari_ends_that_call_and_the_next_one_is_answered(
    service: AriApplication,
    fake_asterisk: FakeAsterisk,
    database: Database,
    openai_server: FakeOpenAI,
) -> None:
    openai_server.script += [speech(3.0)]
    fake_asterisk.caller_script = [WaitForSpeech(), 60.0]
    fake_asterisk.fail_next(404, "Channel not found")  # the answer: the caller left meanwhile
    first = await fake_asterisk.inject_call("+14155550127", "+14155550101")
    await fake_asterisk.wait_request("POST", f"/channels/{first}/answer")
    await finished(service)
    assert service.calls_in_progress == 0 and not fake_asterisk.peers

    second = await fake_asterisk.inject_call("+14155550128", "+14155550101")
    await fake_asterisk.wait_request("POST", f"/channels/{second}/answer")
    peer = await fake_asterisk.wait_peer()
    async with asyncio.timeout(CALL_TIMEOUT):
        await peer.heard_speech.wait()
    await fake_asterisk.hang_up(second)
    await finished(service)
    record = await the_call(database)
    assert record.external_id == second and record.ended_at is not None


async def test_a_blocked_caller_is_hung_up_and_on_the_timeline_as_blocked(
    service: AriApplication, fake_asterisk: FakeAsterisk, database: Database, world: TeamWorld
) -> None:
    async with database.transaction() as session:
        spammer = await contacts.create_contact(
            session,
            world.admin,
            ContactCreate(name="Spam", phones=[PhoneIn(number="+14155550666")]),
        )
        spammer.blocked = True
        spammer_id = spammer.id
    channel_id = await fake_asterisk.inject_call("+14155550666", "+14155550100")
    hangup = await fake_asterisk.wait_request("DELETE", f"/channels/{channel_id}")
    await finished(service)

    assert hangup.query["reason"] == "rejected"
    paths = [r.path for r in fake_asterisk.requests]
    assert f"/channels/{channel_id}/answer" not in paths
    async with database.transaction(read_only=True) as session:
        page = await timeline.page(session, spammer_id, limit=10)
    (call,) = [e for e in page.events if e.kind == "call"]
    assert call.data["status"] == "blocked"


def test_a_stasis_argument_can_name_the_scenario() -> None:
    assert scenario_argument(("inbound", "scenario=menu")) == "menu"
    assert scenario_argument(("inbound", "+14155550100")) is None


async def test_media_binds_to_all_addresses_while_asterisk_is_told_the_loopback(
    aiohttp_client: AiohttpClient,
    settings: Settings,
    world: TeamWorld,
    fake_asterisk: FakeAsterisk,
    openai_server: FakeOpenAI,
) -> None:
    """Behind NAT: the socket listens on 0.0.0.0, ExternalMedia is sent to 127.0.0.1."""
    openai_server.script += [speech(3.0)]
    fake_asterisk.caller_script = [WaitForSpeech(), 60.0]
    nat = settings.model_copy(update={"ari_media_bind": "0.0.0.0"})
    client: TestClient[Any, Any] = await aiohttp_client(build_app(nat))
    try:
        await fake_asterisk.wait_connected()
        # Asterisk's packets reached the line, and ours it:
        channel_id, _ = await call_heard(fake_asterisk, "+14155550129", "+14155550101")
        (media,) = [r for r in fake_asterisk.requests if r.path == "/channels/externalMedia"]
        assert media.query["external_host"].startswith("127.0.0.1:")
        await fake_asterisk.hang_up(channel_id)
        await finished(client.app[ARI])
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        (
            {"UNICASTRTP_LOCAL_ADDRESS": "127.0.0.1", "UNICASTRTP_LOCAL_PORT": "10076"},
            ("127.0.0.1", 10076),
        ),
        ({"UNICASTRTP_LOCAL_ADDRESS": "0.0.0.0", "UNICASTRTP_LOCAL_PORT": "10076"}, None),
        ({"UNICASTRTP_LOCAL_ADDRESS": "127.0.0.1"}, None),
        ({}, None),
    ],
)
def test_the_media_address_is_read_from_the_externalmedia_channelvars(
    variables: dict[str, str], expected: tuple[str, int] | None
) -> None:
    channel = Channel(id="m", name="UnicastRTP/x", state="Down", channelvars=variables)
    assert media_address(channel) == expected
