"""ARI events: parsing the JSON the reference shows, and the events socket that survives drops."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.fakes.fake_asterisk import APP, PASSWORD, USERNAME, FakeAsterisk, fake_asterisk
from voicecrm.telephony.ari import AriEvents, AriUnauthorized, Backoff, MalformedEvent, Reconnected
from voicecrm.telephony.ari.errors import ApplicationReplaced
from voicecrm.telephony.ari.events import (
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelHangupRequest,
    ChannelStateChange,
    ChannelTalkingFinished,
    Dial,
    PlaybackFinished,
    RecordingFinished,
    StasisEnd,
    StasisStart,
    Unknown,
    parse_event,
)

__all__ = ["fake_asterisk"]

CHANNEL: dict[str, Any] = {
    "id": "1700000000.17",
    "name": "PJSIP/trunk-00000011",
    "state": "Ring",
    "protocol_id": "a84b4c76e66710@pc33.example.com",
    "caller": {"name": "Ada", "number": "+14155550123"},
    "connected": {"name": "", "number": ""},
    "accountcode": "",
    "dialplan": {
        "context": "from-trunk",
        "exten": "+14155550100",
        "priority": 2,
        "app_name": "Stasis",
        "app_data": "voicecrm,inbound,+14155550100",
    },
    "creationtime": "2014-05-20T13:15:27.131-0500",
    "language": "en",
    "channelvars": {"PJSIP_HEADER(read,X-Tenant)": "acme"},
    "tenantid": "",  # newer fields are ignored
}
ENVELOPE = {
    "application": "voicecrm",
    "timestamp": "2014-05-20T13:15:27.131-0500",
    "asterisk_id": "02:42:ac:11:00:02",
}
NO_WAIT = Backoff(initial=0.0, maximum=0.0)


def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **ENVELOPE, **fields}


def test_stasis_start_carries_the_caller_the_dialled_number_and_the_args() -> None:
    parsed = parse_event(
        json.dumps(event("StasisStart", args=["inbound", "+14155550100"], channel=CHANNEL))
    )

    assert isinstance(parsed, StasisStart)
    assert parsed.application == "voicecrm"
    assert parsed.timestamp == "2014-05-20T13:15:27.131-0500"
    assert parsed.args == ("inbound", "+14155550100")
    assert parsed.replace_channel is None
    channel = parsed.channel
    assert (channel.id, channel.name, channel.state) == (
        "1700000000.17",
        "PJSIP/trunk-00000011",
        "Ring",
    )
    assert (channel.caller_number, channel.caller_name) == ("+14155550123", "Ada")
    assert (channel.context, channel.exten, channel.priority) == ("from-trunk", "+14155550100", 2)
    assert channel.protocol_id == "a84b4c76e66710@pc33.example.com"
    assert channel.channelvars == {"PJSIP_HEADER(read,X-Tenant)": "acme"}


def test_channel_events() -> None:
    up = {**CHANNEL, "state": "Up"}
    changed = parse_event(event("ChannelStateChange", channel=up))
    assert isinstance(changed, ChannelStateChange)
    assert changed.channel.state == "Up"
    dtmf = parse_event(event("ChannelDtmfReceived", digit="#", duration_ms=120, channel=up))
    assert isinstance(dtmf, ChannelDtmfReceived)
    assert (dtmf.digit, dtmf.duration_ms) == ("#", 120)
    hangup = parse_event(event("ChannelHangupRequest", cause=16, soft=False, channel=up))
    assert isinstance(hangup, ChannelHangupRequest)
    assert hangup.cause == 16
    destroyed = parse_event(
        event("ChannelDestroyed", cause=17, cause_txt="User busy", channel=CHANNEL)
    )
    assert isinstance(destroyed, ChannelDestroyed)
    assert (destroyed.cause, destroyed.cause_txt) == (17, "User busy")
    talked = parse_event(event("ChannelTalkingFinished", duration=1840, channel=up))
    assert isinstance(talked, ChannelTalkingFinished)
    assert talked.duration == 1840
    assert isinstance(parse_event(event("StasisEnd", channel=up)), StasisEnd)


def test_playback_recording_and_dial_events() -> None:
    playback = parse_event(
        event(
            "PlaybackFinished",
            playback={
                "id": "greeting-1",
                "media_uri": "sound:hello-world",
                "target_uri": "channel:1700000000.17",
                "language": "en",
                "state": "done",
            },
        )
    )
    assert isinstance(playback, PlaybackFinished)
    assert (playback.playback.id, playback.playback.state) == ("greeting-1", "done")

    recording = parse_event(
        event(
            "RecordingFinished",
            recording={
                "name": "msg-1",
                "format": "wav",
                "target_uri": "channel:1700000000.17",
                "state": "done",
                "duration": 12,
                "talking_duration": 9,
                "silence_duration": 3,
            },
        )
    )
    assert isinstance(recording, RecordingFinished)
    assert (recording.recording.duration, recording.recording.talking_duration) == (12, 9)

    dial = parse_event(
        event("Dial", peer={**CHANNEL, "id": "out-1"}, dialstatus="BUSY", dialstring="1001")
    )
    assert isinstance(dial, Dial)
    assert (dial.peer.id, dial.dialstatus, dial.caller) == ("out-1", "BUSY", None)


def test_unknown_types_are_kept_whole() -> None:
    parsed = parse_event(event("ChannelVarset", variable="X", value="1", channel=CHANNEL))

    assert isinstance(parsed, Unknown)
    assert parsed.type == "ChannelVarset"
    assert parsed.data["variable"] == "X"


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        "[1, 2]",
        json.dumps({"application": "voicecrm"}),
        json.dumps(event("StasisStart", args=[])),  # no channel
        json.dumps(event("StasisStart", args="inbound", channel=CHANNEL)),
        json.dumps(event("ChannelDtmfReceived", digit="1", duration_ms="long", channel=CHANNEL)),
        json.dumps(event("StasisEnd", channel={"name": "PJSIP/x"})),  # channel without id
        json.dumps(event("PlaybackStarted")),
    ],
)
def test_malformed_events_raise(message: str) -> None:
    with pytest.raises(MalformedEvent):
        parse_event(message)


# --- the events socket ---------------------------------------------------------------------


def events_for(fake: FakeAsterisk, *, password: str = PASSWORD, **kwargs: Any) -> AriEvents:
    return AriEvents(fake.base_url, USERNAME, password, APP, backoff=NO_WAIT, **kwargs)


async def test_a_call_arrives_as_events(fake_asterisk: FakeAsterisk) -> None:
    async with events_for(fake_asterisk, subscribe_all=True) as events:
        assert events.url.endswith("/ari/events?app=voicecrm&subscribeAll=true")
        first = asyncio.create_task(anext(events))
        await fake_asterisk.wait_connected()
        channel_id = await fake_asterisk.inject_call(caller_number="+14155550177")
        await fake_asterisk.press(channel_id, "5")
        await fake_asterisk.hang_up(channel_id)

        start = await first
        assert isinstance(start, StasisStart)
        assert start.channel.caller_number == "+14155550177"
        dtmf = await anext(events)
        assert isinstance(dtmf, ChannelDtmfReceived)
        assert dtmf.digit == "5"
        kinds = [type(await anext(events)) for _ in range(3)]
        assert kinds == [ChannelHangupRequest, StasisEnd, ChannelDestroyed]


async def test_the_socket_reconnects_and_says_so(fake_asterisk: FakeAsterisk) -> None:
    async with events_for(fake_asterisk) as events:
        first = asyncio.create_task(anext(events))
        await fake_asterisk.wait_connected()
        await fake_asterisk.drop_event_sockets()

        assert await first == Reconnected(attempts=1)
        await fake_asterisk.wait_connected(2)
        channel_id = await fake_asterisk.inject_call()
        after = await anext(events)
        assert isinstance(after, StasisStart)
        assert after.channel.id == channel_id


async def test_malformed_messages_are_skipped(fake_asterisk: FakeAsterisk) -> None:
    async with events_for(fake_asterisk) as events:
        first = asyncio.create_task(anext(events))
        await fake_asterisk.wait_connected()
        for ws in fake_asterisk.sockets:
            await ws.send_str("not json")
        await fake_asterisk.inject_call()

        assert isinstance(await first, StasisStart)


async def test_closing_the_iterator_closes_the_socket(fake_asterisk: FakeAsterisk) -> None:
    events = events_for(fake_asterisk)
    waiting = asyncio.create_task(anext(events))
    await fake_asterisk.wait_connected()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    await events.aclose()

    await fake_asterisk.wait_disconnected()
    assert not events.connected
    with pytest.raises(StopAsyncIteration):
        await anext(events)


async def test_refused_credentials_end_the_iteration(fake_asterisk: FakeAsterisk) -> None:
    async with events_for(fake_asterisk, password="wrong") as events:
        with pytest.raises(AriUnauthorized):
            await anext(events)


async def test_unreachable_asterisk_is_retried_with_growing_capped_delays() -> None:
    delays: list[float] = []
    events = AriEvents(
        "http://127.0.0.1:1",
        USERNAME,
        PASSWORD,
        APP,
        backoff=Backoff(initial=0.5, maximum=2.0, factor=2.0, jitter=0.5, random=lambda: 0.0),
        sleep=lambda delay: record(delay),
    )

    async def record(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 4:
            await events.aclose()

    with pytest.raises(StopAsyncIteration):
        await anext(events)
    assert delays == [0.5, 1.0, 2.0, 2.0]


def test_jitter_only_shortens_the_delay() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, jitter=0.5, random=lambda: 1.0)
    assert [backoff.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]


async def test_a_takeover_of_the_application_stops_the_socket_for_good(
    fake_asterisk: FakeAsterisk,
) -> None:
    """A second instance registering the same app must not be fought over forever."""
    async with events_for(fake_asterisk) as events:
        waiting = asyncio.create_task(anext(events))
        await fake_asterisk.wait_connected()
        await fake_asterisk.emit({"type": "ApplicationReplaced"})
        with pytest.raises(ApplicationReplaced):
            await waiting
        with pytest.raises(StopAsyncIteration):
            await anext(events)
        await fake_asterisk.wait_disconnected()
