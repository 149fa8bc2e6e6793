"""Voicemail on an Asterisk call, recorded by Asterisk (ARI channel recording) and kept by
the service where its own recordings go: the whole call through the real app against the
fake Asterisk, which stores a small WAV for each message."""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient
from sqlalchemy import select

from tests.ari.conftest import CALL_TIMEOUT, finished, speech
from tests.ari.test_stasis import settings
from tests.conftest import TeamWorld
from tests.fakes.fake_asterisk import FakeAsterisk, fake_asterisk
from tests.fakes.openai_server import FakeOpenAI, Reply, openai_server
from tests.speech_audio import InstantSpeech, ScriptedTranscriber, tone
from voicecrm.audio.codec import rms, ulaw_to_pcm16
from voicecrm.calls.interface import CallInfo, Direction, InputKind
from voicecrm.crm import timeline
from voicecrm.crm.models import CallRecord
from voicecrm.crm.timeline import TimelineEntry
from voicecrm.storage import Database
from voicecrm.telephony.ari.stasis import AriApplication
from voicecrm.telephony.ari.voicemail import STORED_URL_PREFIX
from voicecrm.telephony.simulator.audio_line import EmulatedLine, Press, Silence, Speak
from voicecrm.voice.call import VoiceCall
from voicecrm.voice.line import Dtmf, LineEvent
from voicecrm.voice.ports import CarrierRecording, PcmAudio

__all__ = ["fake_asterisk", "openai_server", "settings"]

VOICEMAIL_NUMBER = "+14155550102"


async def recording_started(fake: FakeAsterisk, channel_id: str) -> str:
    await fake.wait_until(lambda: fake.live_recording(channel_id) is not None)
    name = fake.live_recording(channel_id)
    assert name is not None
    return name


async def the_voicemail(database: Database) -> TimelineEntry:
    """The voicemail on the timeline of the one call's contact."""
    async with database.transaction(read_only=True) as session:
        contact_id = (await session.scalars(select(CallRecord.contact_id))).one()
        assert contact_id is not None
        page = await timeline.page(session, contact_id, limit=20)
    (voicemail,) = [e for e in page.events if e.kind == "voicemail"]
    return voicemail


async def test_a_voicemail_is_recorded_by_asterisk_and_served_by_the_api(
    running: TestClient[Any, Any],
    service: AriApplication,
    fake_asterisk: FakeAsterisk,
    database: Database,
    openai_server: FakeOpenAI,
    world: TeamWorld,
) -> None:
    openai_server.script += [
        speech(0.3),  # "Please leave a message."
        Reply(text="Please call me back about the boiler.", path="/v1/audio/transcriptions"),
        speech(0.3),  # "Thanks, goodbye."
    ]
    channel_id = await fake_asterisk.inject_call("+14155550130", VOICEMAIL_NUMBER)
    name = await recording_started(fake_asterisk, channel_id)
    (record,) = [r for r in fake_asterisk.requests if r.path == f"/channels/{channel_id}/record"]
    assert {k: record.query[k] for k in ("format", "beep", "terminateOn")} == {
        "format": "wav",
        "beep": "true",
        "terminateOn": "#",
    }
    assert (record.query["maxDurationSeconds"], record.query["maxSilenceSeconds"]) == ("30", "3")
    assert not any(channel_id in b["channels"] for b in fake_asterisk.bridges.values())
    await fake_asterisk.press(channel_id, "#")  # ends the message; not a key for the scenario
    await finished(service)

    voicemail = await the_voicemail(database)
    assert voicemail.data["transcript"] == "Please call me back about the boiler."
    assert voicemail.data["duration_seconds"] == 1.0
    url = voicemail.data["recording_url"]
    assert url.startswith("/api/v1/recordings/asterisk-")
    response = await running.get(url, headers={"Authorization": f"Bearer {world.admin_token}"})
    assert response.status == 200
    with wave.open(io.BytesIO(await response.read())) as wav:
        assert (wav.getframerate(), wav.getnframes()) == (8000, 8000)
    assert name not in fake_asterisk.stored  # deleted on Asterisk once kept
    adds = [r for r in fake_asterisk.requests if r.path.endswith("/addChannel")]
    assert [a.query["channel"] for a in adds][-1] == channel_id  # back with the receptionist
    assert not openai_server.script  # the goodbye was said after the message


async def test_the_goodbye_is_not_held_back_while_the_message_is_transcribed(
    service: AriApplication,
    fake_asterisk: FakeAsterisk,
    database: Database,
    openai_server: FakeOpenAI,
) -> None:
    transcribed = asyncio.Event()
    openai_server.script += [
        speech(0.3),  # "Please leave a message."
        Reply(text="Boiler again.", path="/v1/audio/transcriptions", stall=transcribed),
        speech(0.3),  # "Thanks, goodbye."
    ]
    channel_id = await fake_asterisk.inject_call("+14155550133", VOICEMAIL_NUMBER)
    await recording_started(fake_asterisk, channel_id)
    await fake_asterisk.press(channel_id, "#")
    async with asyncio.timeout(CALL_TIMEOUT):
        # The goodbye is asked for while the transcript cannot have come back (stalled).
        await openai_server.requested("/v1/audio/speech", times=2)
        await openai_server.requested("/v1/audio/transcriptions")
    transcribed.set()
    await finished(service)

    voicemail = await the_voicemail(database)
    assert voicemail.data["transcript"] == "Boiler again."
    async with database.transaction(read_only=True) as session:
        record = (await session.scalars(select(CallRecord))).one()
    said = [(line["speaker"], line["text"]) for line in record.state["transcript"]]
    assert ("caller", "Boiler again.") in said  # the words, where "[voicemail]" stood
    assert [speaker for speaker, _text in said][-2:] == ["caller", "agent"]  # then the goodbye


async def test_a_caller_hanging_up_mid_message_leaves_the_partial_voicemail(
    service: AriApplication,
    fake_asterisk: FakeAsterisk,
    database: Database,
    openai_server: FakeOpenAI,
) -> None:
    openai_server.script += [speech(0.3), Reply(text="Call me about")]
    channel_id = await fake_asterisk.inject_call("+14155550131", VOICEMAIL_NUMBER)
    name = await recording_started(fake_asterisk, channel_id)
    await fake_asterisk.hang_up(channel_id)
    await finished(service)

    voicemail = await the_voicemail(database)
    assert voicemail.data["transcript"] == "Call me about"
    assert voicemail.data["recording_url"].startswith("/api/v1/recordings/asterisk-")
    assert name not in fake_asterisk.stored


async def test_a_voicemail_asterisk_cannot_hand_over_is_still_on_the_timeline(
    service: AriApplication,
    fake_asterisk: FakeAsterisk,
    database: Database,
    openai_server: FakeOpenAI,
) -> None:
    openai_server.script += [speech(0.3), speech(0.3)]
    channel_id = await fake_asterisk.inject_call("+14155550132", VOICEMAIL_NUMBER)
    name = await recording_started(fake_asterisk, channel_id)
    fake_asterisk.fail_request("GET", f"/recordings/stored/{name}/file", 503, "Unavailable")
    await fake_asterisk.press(channel_id, "#")
    await finished(service)

    voicemail = await the_voicemail(database)
    assert voicemail.data["recording_url"] == STORED_URL_PREFIX + name
    assert voicemail.data["transcript"] is None
    assert name in fake_asterisk.stored  # left on Asterisk, not lost


class CountingLine(EmulatedLine):
    """The emulated line, saying when the caller's key has gone by."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keyed = asyncio.Event()

    async def events(self) -> AsyncIterator[LineEvent]:
        async for event in super().events():
            yield event
            if isinstance(event, Dtmf):
                self.keyed.set()


@dataclass
class CarrierSide:
    """A carrier that records the message itself, until the caller has talked and keyed."""

    line: CountingLine
    asked: list[tuple[float, bool, str | None, int]] = field(default_factory=list)

    async def record(
        self, *, max_seconds: float, beep: bool, finish_on_key: str | None, silence_seconds: int
    ) -> CarrierRecording | None:
        self.asked.append((max_seconds, beep, finish_on_key, silence_seconds))
        await self.line.keyed.wait()
        audio = PcmAudio(tone(1.0, rate=8000), 8000)
        return CarrierRecording(url="/api/v1/recordings/asterisk-x-1.wav", seconds=1.0, audio=audio)


async def test_while_the_carrier_records_the_listener_neither_hears_nor_keeps_keys() -> None:
    info = CallInfo(
        call_id="vm-1", direction=Direction.INBOUND, from_number="+15550100", to_number="+15550199"
    )
    line = CountingLine(
        info, [Speak(tone(1.0, rate=8000)), Press("#"), Silence(5)], tick=0.002, lead_frames=2
    )
    stt = ScriptedTranscriber(["call me back"])
    carrier = CarrierSide(line)
    call = VoiceCall(line, stt=stt, tts=InstantSpeech(), recorder=carrier)
    async with call:
        recording = await call.record(max_seconds=20)
        after = await call.gather(
            prompt=None, inputs=frozenset({InputKind.SPEECH, InputKind.DTMF}), input_timeout=0.5
        )
        assert recording is not None
        words = await recording.words()
    assert (recording.url, recording.duration_seconds, words) == (
        "/api/v1/recordings/asterisk-x-1.wav",
        1.0,
        "call me back",
    )
    assert carrier.asked == [(20, True, "#", 5)]  # the carrier beeps, not the service
    assert after.empty  # neither the message nor its key answered the next question
    assert len(stt.heard) == 1  # only the message itself was transcribed
    assert rms(ulaw_to_pcm16(bytes(line.log.played))) < 500  # no beep of the service's own
