"""Channels the service dials itself, through the real app and a fake Asterisk: transfers
that originate the target and bridge it with the caller (answered, unanswered, busy), and
outbound calls placed by `AriOutbound` whose scenario runs once the callee answers. The
fake's `dial_outcome` decides what the dialled phone does; everything is awaited."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.ari.conftest import (
    CALL_TIMEOUT,
    finished,
    service_settings,
    speech,
    the_call,
    write_scenarios,
)
from tests.conftest import TeamWorld
from tests.fakes.fake_asterisk import (
    APP,
    PASSWORD,
    USERNAME,
    FakeAsterisk,
    WaitForSpeech,
    fake_asterisk,
)
from tests.fakes.openai_server import FakeOpenAI, openai_server
from voicecrm.calls.interface import TransferStatus
from voicecrm.calls.outbound import (
    CarrierRejected,
    CarrierUnavailable,
    OutboundNotConfigured,
    OutboundRequest,
)
from voicecrm.config import Settings
from voicecrm.crm import timeline
from voicecrm.crm.models import CallRecord
from voicecrm.errors import ConfigurationError, InvalidInput
from voicecrm.scenarios.library import ScenarioRegistry
from voicecrm.storage import Database
from voicecrm.telephony.ari import AriClient
from voicecrm.telephony.ari.call_control import CallControl
from voicecrm.telephony.ari.dialling import (
    ORIGINATED_PREFIX,
    TRANSFER_ARG,
    TRANSFER_PREFIX,
    check_dial_template,
    check_sip_dial_template,
    sip_endpoint,
    unanswered_status,
)
from voicecrm.telephony.ari.outbound import AriOutbound, check_configured
from voicecrm.telephony.ari.played_media import PLAYED_MEDIA, PlayedMedia
from voicecrm.telephony.ari.stasis import AriApplication
from voicecrm.voice.line import Whisper
from voicecrm.voice.ports import PcmAudio

__all__ = ["fake_asterisk", "openai_server"]

ROOT = Path(__file__).resolve().parents[2]
DIAL = "PJSIP/{number}@trunk"
DESK, OFFICE, CALLEE = "+14155550102", "+14155550122", "+14155550177"
WHISPERED = "+14155550103"

SCENARIOS = {
    "desk.yaml": f"""
        name: desk
        numbers: ["{DESK}"]
        steps:
          hello:
            say: "Connecting you."
          put_through:
            transfer: {{to: "{OFFICE}", timeout: 1, no_answer: sorry}}
          sorry:
            say: "Nobody answered."
    """,
    "whispered.yaml": f"""
        name: whispered
        numbers: ["{WHISPERED}"]
        steps:
          hello:
            say: "Connecting you."
          put_through:
            transfer: {{to: "{OFFICE}", whisper: "Call from {{{{ call.from }}}}"}}
    """,
    "reminder.yaml": """
        name: reminder
        numbers: ["+14155550100"]
        steps:
          remind:
            say: "Your appointment is tomorrow at nine."
    """,
}


@pytest.fixture
def scenarios_dir(tmp_path: Path) -> Path:
    return write_scenarios(tmp_path / "scenarios", SCENARIOS)


@pytest.fixture
def settings(
    database_url: str,
    scenarios_dir: Path,
    openai_server: FakeOpenAI,
    fake_asterisk: FakeAsterisk,
    service_url: str,
) -> Settings:
    return service_settings(
        database_url,
        scenarios_dir,
        openai_server,
        fake_asterisk,
        ari_dial_template=DIAL,
        ari_http_url=service_url,
    )


@pytest.fixture
async def outbound(
    database: Database, world: TeamWorld, scenarios_dir: Path, fake_asterisk: FakeAsterisk
) -> AsyncIterator[AriOutbound]:
    registry = ScenarioRegistry([scenarios_dir])
    registry.reload()
    async with AriClient(fake_asterisk.base_url, USERNAME, PASSWORD, APP) as client:
        yield AriOutbound(database, world.system, registry, client, DIAL)


def originated(fake: FakeAsterisk) -> list[str]:
    return [
        r.query["channelId"] for r in fake.requests if (r.method, r.path) == ("POST", "/channels")
    ]


async def bridged_transfer(fake: FakeAsterisk, dialled: str) -> tuple[str, str]:
    """A call to `dialled` comes in and its scenario transfers it: once the target has
    answered and the caller is bridged with it, the caller's and the target's channels."""
    caller = await fake.inject_call("+14155550123", dialled)
    await fake.wait_request("POST", "/channels")
    (target,) = originated(fake)
    await fake.wait_until(
        lambda: any(set(b["channels"]) == {caller, target} for b in fake.bridges.values())
    )
    return caller, target


def said(record: CallRecord) -> list[tuple[str, str]]:
    return [(line["speaker"], line["text"]) for line in record.state["transcript"]]


async def test_the_target_hears_the_whisper_before_the_caller_is_put_through(
    service: AriApplication,
    running: TestClient[Any, Any],
    fake_asterisk: FakeAsterisk,
    openai_server: FakeOpenAI,
    service_url: str,
) -> None:
    """Synthesised by the service while the target rings, offered to Asterisk as a WAV
    file at the service's address, played on the target's channel once it answers, and
    offered no longer once it has played."""
    openai_server.script += [speech(0.3), speech(0.8)]  # "Connecting you.", the whisper
    fake_asterisk.caller_script = [WaitForSpeech(), 60.0]
    caller, target = await bridged_transfer(fake_asterisk, WHISPERED)

    assert openai_server.requests[-1]["input"] == "Call from +14155550123"
    ((channel, url, status, body),) = fake_asterisk.fetched_media
    assert (channel, status) == (target, 200)
    assert url.startswith(f"{service_url}/ari/media/") and url.endswith(".wav")
    with wave.open(io.BytesIO(body)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        assert wav.getnframes() == 8000 * 0.8
    requests = [(r.method, r.path, r.query.get("channel")) for r in fake_asterisk.requests]
    played = next(i for i, r in enumerate(requests) if r[1].startswith(f"/channels/{target}/play"))
    joined = next(
        i for i, r in enumerate(requests) if r[1].endswith("/addChannel") and r[2] == caller
    )
    assert played < joined  # the whisper ended before the caller was put through
    gone = await running.get(url.removeprefix(service_url))
    assert gone.status == 404
    assert gone.headers["Content-Type"].startswith("application/problem+json")

    await fake_asterisk.hang_up(caller)
    await finished(service)


async def test_a_whisper_asterisk_cannot_fetch_is_left_out_and_the_log_says_where(
    service: AriApplication,
    running: TestClient[Any, Any],
    fake_asterisk: FakeAsterisk,
    openai_server: FakeOpenAI,
    unused_tcp_port_factory: Callable[[], int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """VOICECRM_ARI_HTTP_URL names an address that does not reach the service: the
    playback fails, the caller is put through all the same, and the log says why."""
    wrong = f"http://127.0.0.1:{unused_tcp_port_factory()}"  # nobody listens there
    running.app[PLAYED_MEDIA].base_url = wrong
    openai_server.script += [speech(0.3), speech(0.8)]  # "Connecting you.", the whisper
    fake_asterisk.caller_script = [WaitForSpeech(), 60.0]
    with caplog.at_level(logging.WARNING, logger="voicecrm.telephony.ari.call_control"):
        caller, target = await bridged_transfer(fake_asterisk, WHISPERED)
    ((channel, url, status, _body),) = fake_asterisk.fetched_media
    assert (channel, status) == (target, 0) and url.startswith(wrong)
    assert f"can it fetch {wrong}" in caplog.text
    await fake_asterisk.hang_up(caller)
    await finished(service)


async def test_a_whisper_is_left_out_without_an_address_asterisk_can_fetch_it_from(
    fake_asterisk: FakeAsterisk, caplog: pytest.LogCaptureFixture
) -> None:
    """VOICECRM_ARI_HTTP_URL unset: the target is dialled all the same, nothing is
    synthesised for nothing, and the log says why no whisper will be heard."""
    caller = await fake_asterisk.inject_call()

    async def never() -> PcmAudio:
        raise AssertionError("nothing to synthesise: it could not be played")

    async with AriClient(fake_asterisk.base_url, USERNAME, PASSWORD, APP) as client:
        control = CallControl(
            client, caller, close_line=lambda _: None, dial_template=DIAL, media=PlayedMedia(None)
        )
        with caplog.at_level(logging.INFO, logger="voicecrm.telephony.ari.call_control"):
            outcome = await control.transfer(
                OFFICE, whisper=Whisper("Hello", never), ring_timeout=0.2, caller_id=None
            )
    assert outcome.status is not TransferStatus.ANSWERED  # nobody feeds it the Dial events
    assert len(originated(fake_asterisk)) == 1
    assert "the whisper is not played: set VOICECRM_ARI_HTTP_URL" in caplog.text


async def test_the_service_stops_at_once_with_a_transfer_just_bridged(
    service: AriApplication,
    running: TestClient[Any, Any],
    fake_asterisk: FakeAsterisk,
    openai_server: FakeOpenAI,
) -> None:
    """Stopping cancels the call while it tidies the receptionist's media away after the
    bridge; that cancellation must stop it, not leave it waiting for a hang-up."""
    openai_server.script += [speech(0.3)]  # "Connecting you."
    fake_asterisk.caller_script = [WaitForSpeech(), 60.0]
    await bridged_transfer(fake_asterisk, DESK)
    async with asyncio.timeout(CALL_TIMEOUT):
        await running.close()
    assert service.calls_in_progress == 0


@pytest.mark.parametrize("leaving", ["target", "caller"])
async def test_an_answered_transfer_bridges_caller_and_target_until_one_hangs_up(
    service: AriApplication,
    fake_asterisk: FakeAsterisk,
    database: Database,
    openai_server: FakeOpenAI,
    leaving: str,
) -> None:
    openai_server.script += [speech(0.3)]  # "Connecting you."
    fake_asterisk.caller_script = [WaitForSpeech(), 60.0]
    caller, target = await bridged_transfer(fake_asterisk, DESK)
    media = next(r for r in fake_asterisk.requests if r.path == "/channels/externalMedia")
    await fake_asterisk.wait_until(  # the receptionist's media channel and bridge are gone
        lambda: (
            media.query["channelId"] not in fake_asterisk.channels
            and len(fake_asterisk.bridges) == 1
        )
    )

    (dial,) = [r for r in fake_asterisk.requests if (r.method, r.path) == ("POST", "/channels")]
    assert target.startswith(TRANSFER_PREFIX)
    assert dial.query["endpoint"] == f"PJSIP/{OFFICE}@trunk"
    assert dial.query["appArgs"] == f"{TRANSFER_ARG},{caller}"
    assert dial.query["callerId"] == "+14155550123"  # the office sees who is calling
    record = await the_call(database)
    assert record.ended_at is not None and record.state["outcome"] == "transferred"
    assert ("agent", f"[transfers to {OFFICE}]") in said(record)

    first, other = (target, caller) if leaving == "target" else (caller, target)
    await fake_asterisk.hang_up(first)  # one hangs up: the other is hung up too
    await finished(service)
    assert not fake_asterisk.bridges and not fake_asterisk.channels
    assert ("DELETE", f"/channels/{other}") in [(r.method, r.path) for r in fake_asterisk.requests]
    async with database.transaction(read_only=True) as session:
        assert record.contact_id is not None
        page = await timeline.page(session, record.contact_id, limit=10)
    (call,) = [e for e in page.events if e.kind == "call"]
    assert call.data["status"] == "completed"
    assert service.calls_in_progress == 0


@pytest.mark.parametrize(("outcome", "status"), [("ring", "no_answer"), ("busy", "busy")])
async def test_an_unanswered_transfer_takes_the_no_answer_path_with_the_receptionist(
    service: AriApplication,
    fake_asterisk: FakeAsterisk,
    database: Database,
    openai_server: FakeOpenAI,
    outcome: str,
    status: str,
) -> None:
    openai_server.script += [speech(0.3), speech(0.3)]  # "Connecting you.", "Nobody answered."
    fake_asterisk.dial_outcome = outcome
    fake_asterisk.caller_script = [WaitForSpeech(), 60.0]
    caller = await fake_asterisk.inject_call("+14155550123", DESK)
    await fake_asterisk.wait_peer()
    await finished(service)

    (target,) = originated(fake_asterisk)
    assert target not in fake_asterisk.channels and not fake_asterisk.bridges
    if outcome == "ring":  # nobody answered within the step's timeout: the service hung up
        assert ("DELETE", f"/channels/{target}") in [
            (r.method, r.path) for r in fake_asterisk.requests
        ]
    record = await the_call(database)
    assert record.state["variables"]["transfer_status"] == status
    assert record.state["outcome"] == "completed"
    assert ("agent", "Nobody answered.") in said(record)
    assert caller not in fake_asterisk.channels  # the scenario ended and hung up


async def test_an_outbound_call_runs_its_scenario_once_the_callee_answers(
    service: AriApplication,
    outbound: AriOutbound,
    fake_asterisk: FakeAsterisk,
    database: Database,
    openai_server: FakeOpenAI,
) -> None:
    openai_server.script += [speech(0.5)]
    fake_asterisk.caller_script = [WaitForSpeech(), 60.0]
    placed = await outbound.place(
        OutboundRequest(to=CALLEE, scenario="reminder", campaign="checkups")
    )
    peer = await fake_asterisk.wait_peer()
    await finished(service)

    assert placed.carrier_call_id.startswith(ORIGINATED_PREFIX)
    (dial,) = [r for r in fake_asterisk.requests if (r.method, r.path) == ("POST", "/channels")]
    assert dial.query["endpoint"] == f"PJSIP/{CALLEE}@trunk"
    assert dial.query["appArgs"] == f"voicecrm-outbound,call_id={placed.call_id}"
    assert dial.query["callerId"] == "+14155550100"  # the scenario's own number
    assert peer.voiced_frames > 10  # the callee heard the reminder over RTP
    record = await the_call(database)
    assert (record.id, record.external_id) == (placed.call_id, placed.carrier_call_id)
    assert (record.direction, record.status, record.channel) == (
        "outbound",
        "completed",
        "asterisk",
    )
    assert record.to_number == CALLEE
    assert record.state["variables"]["outbound"]["campaign"] == "checkups"
    assert ("agent", "Your appointment is tomorrow at nine.") in said(record)
    assert placed.carrier_call_id not in fake_asterisk.channels  # hung up at the end


async def test_a_ringing_callee_shows_on_the_call_and_no_answer_closes_it(
    service: AriApplication, outbound: AriOutbound, fake_asterisk: FakeAsterisk, database: Database
) -> None:
    fake_asterisk.dial_outcome = "ring"
    placed = await outbound.place(OutboundRequest(to=CALLEE, scenario="reminder"))
    await service.caught_up(fake_asterisk.events_sent)  # Dial RINGING, ChannelStateChange
    await finished(service)
    assert (await the_call(database)).status == "ringing"

    await fake_asterisk.hang_up(placed.carrier_call_id, cause=19)  # Asterisk gives up
    await service.caught_up(fake_asterisk.events_sent)
    await finished(service)
    record = await the_call(database)
    assert (record.status, record.ended_at is not None) == ("no-answer", True)


async def test_a_busy_callee_closes_the_outbound_call_as_busy(
    service: AriApplication, outbound: AriOutbound, fake_asterisk: FakeAsterisk, database: Database
) -> None:
    fake_asterisk.dial_outcome = "busy"
    placed = await outbound.place(OutboundRequest(to=CALLEE, scenario="reminder"))
    await service.caught_up(fake_asterisk.events_sent)  # Dial BUSY, ChannelDestroyed
    await finished(service)
    record = await the_call(database)
    assert record.external_id == placed.carrier_call_id
    assert (record.status, record.duration_seconds) == ("busy", 0)
    assert not fake_asterisk.peers  # nothing was answered, nothing was said


@pytest.mark.parametrize(
    ("outcome", "status"),
    [("busy", "busy"), ("noanswer", "no-answer"), ("congestion", "failed")],
)
async def test_the_dial_status_says_why_an_outbound_call_was_not_answered(
    service: AriApplication,
    outbound: AriOutbound,
    fake_asterisk: FakeAsterisk,
    database: Database,
    outcome: str,
    status: str,
) -> None:
    """Through a Local channel the cause is 0, which alone would read as no answer."""
    fake_asterisk.dial_outcome = outcome
    fake_asterisk.unanswered_cause = 0
    await outbound.place(OutboundRequest(to=CALLEE, scenario="reminder"))
    await service.caught_up(fake_asterisk.events_sent)
    await finished(service)
    assert (await the_call(database)).status == status


async def test_an_outbound_refusal_is_typed_and_closes_the_call_as_failed(
    outbound: AriOutbound, fake_asterisk: FakeAsterisk, database: Database
) -> None:
    fake_asterisk.fail_next(400, "Endpoint not found")
    with pytest.raises(CarrierRejected, match="Endpoint not found") as rejected:
        await outbound.place(OutboundRequest(to=CALLEE, scenario="reminder"))
    assert rejected.value.carrier_status == 400
    record = await the_call(database)
    assert (record.status, record.direction) == ("failed", "outbound")
    assert record.ended_at is not None

    fake_asterisk.fail_next(503, "Service Unavailable")
    with pytest.raises(CarrierUnavailable, match="try again later"):
        await outbound.place(OutboundRequest(to=CALLEE, scenario="reminder"))
    with pytest.raises(InvalidInput, match="Twilio"):
        await outbound.place(
            OutboundRequest(to=CALLEE, scenario="reminder", machine_detection=True)
        )


def test_outbound_needs_ari_and_a_dial_template() -> None:
    with pytest.raises(OutboundNotConfigured) as missing:
        check_configured("http://127.0.0.1:8088", None, None)
    assert "VOICECRM_ARI_PASSWORD, VOICECRM_ARI_DIAL_TEMPLATE" in missing.value.detail
    with pytest.raises(ConfigurationError, match="needs a technology"):
        check_dial_template("{number}@trunk")
    assert check_configured("http://a", "secret", DIAL) == DIAL


async def test_the_cli_places_a_call_through_asterisk(
    fake_asterisk: FakeAsterisk, database: Database, world: TeamWorld, scenarios_dir: Path
) -> None:
    fake_asterisk.dial_outcome = "ring"  # nobody runs the Stasis application here
    env = {
        **os.environ,
        "VOICECRM_LOG_LEVEL": "WARNING",
        "VOICECRM_DATABASE_URL": database.url,
        "VOICECRM_SCENARIOS_DIR": str(scenarios_dir),
        "VOICECRM_TWILIO_ACCOUNT_SID": "",
        "VOICECRM_ARI_URL": fake_asterisk.base_url,
        "VOICECRM_ARI_PASSWORD": PASSWORD,
        "VOICECRM_ARI_DIAL_TEMPLATE": DIAL,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voicecrm",
        "call",
        CALLEE,
        "--scenario",
        "reminder",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    (channel_id,) = originated(fake_asterisk)
    record = await the_call(database)
    assert output.decode().splitlines() == [
        f"call placed: Asterisk channel {channel_id} (queued)",
        f"CRM call id: {record.id}",
    ]
    assert PASSWORD not in output.decode()


async def test_a_dialplan_target_still_goes_back_to_the_dialplan(
    fake_asterisk: FakeAsterisk,
) -> None:
    caller = await fake_asterisk.inject_call()
    async with AriClient(fake_asterisk.base_url, USERNAME, PASSWORD, APP) as client:
        control = CallControl(client, caller, close_line=lambda _: None, dial_template=DIAL)
        outcome = await control.transfer(
            "dialplan:sales", whisper=None, ring_timeout=1, caller_id=None
        )
    assert outcome.status is TransferStatus.ANSWERED and control.handed_off
    handoff = await fake_asterisk.wait_request("POST", f"/channels/{caller}/continue")
    assert (handoff.query["extension"], handoff.query["priority"]) == ("sales", "1")
    assert originated(fake_asterisk) == []


def test_why_a_dialled_channel_was_not_answered() -> None:
    assert unanswered_status(17) is TransferStatus.BUSY
    assert unanswered_status(19) is TransferStatus.NO_ANSWER
    assert unanswered_status(34) is TransferStatus.FAILED
    assert unanswered_status(0, "BUSY") is TransferStatus.BUSY  # a Local channel's way
    assert unanswered_status(0, "CHANUNAVAIL") is TransferStatus.FAILED


async def test_a_sip_target_is_dialled_through_its_own_template(
    fake_asterisk: FakeAsterisk,
) -> None:
    caller = await fake_asterisk.inject_call()
    fake_asterisk.dial_outcome = "busy"
    async with AriClient(fake_asterisk.base_url, USERNAME, PASSWORD, APP) as client:
        control = CallControl(
            client,
            caller,
            close_line=lambda _: None,
            dial_template=DIAL,
            sip_dial_template="PJSIP/{address}",
        )
        outcome = await control.transfer(
            "sip:alice@example.com", whisper=None, ring_timeout=0.2, caller_id=None
        )
    assert outcome.status is not TransferStatus.ANSWERED  # nobody feeds it the Dial events
    (dial,) = [r for r in fake_asterisk.requests if r.method == "POST" and r.path == "/channels"]
    assert dial.query["endpoint"] == "PJSIP/alice@example.com"


async def test_a_sip_target_without_a_sip_template_fails_and_says_why(
    fake_asterisk: FakeAsterisk,
) -> None:
    caller = await fake_asterisk.inject_call()
    async with AriClient(fake_asterisk.base_url, USERNAME, PASSWORD, APP) as client:
        control = CallControl(client, caller, close_line=lambda _: None, dial_template=DIAL)
        outcome = await control.transfer(
            "sip:alice@example.com", whisper=None, ring_timeout=1, caller_id=None
        )
    assert outcome.status is TransferStatus.FAILED
    assert outcome.detail is not None and "VOICECRM_ARI_SIP_DIAL_TEMPLATE" in outcome.detail
    assert originated(fake_asterisk) == []


def test_sip_templates_are_checked_and_filled() -> None:
    assert sip_endpoint("PJSIP/trunk/sip:{address}", "sip:bob@pbx.example") == (
        "PJSIP/trunk/sip:bob@pbx.example"
    )
    assert check_sip_dial_template("PJSIP/{address}") == "PJSIP/{address}"
    for bad in ("PJSIP/alice", "{address}"):
        with pytest.raises(ConfigurationError, match="VOICECRM_ARI_SIP_DIAL_TEMPLATE"):
            check_sip_dial_template(bad)
