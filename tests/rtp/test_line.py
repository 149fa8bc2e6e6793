"""The RTP media line against a fake Asterisk: a real UDP peer on loopback.

The fake sends 20 ms packets as Asterisk's ExternalMedia channel does and
records what the line sends back, with arrival times. Assertions about time
are loose (a busy two-core machine); everything else is awaited, not slept.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import cast

import pytest

from tests.speech_audio import InstantSpeech, ScriptedTranscriber, needs_espeak, spoken, tone
from voicecrm.audio.codec import (
    Encoding,
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    rms,
    ulaw_to_pcm16,
)
from voicecrm.audio.frames import FRAME_SAMPLES, ULAW_FRAME_BYTES
from voicecrm.calls.interface import (
    CallEnded,
    CallInfo,
    Direction,
    InputKind,
    TransferOutcome,
    TransferStatus,
)
from voicecrm.telephony.rtp import packet as rtp
from voicecrm.telephony.rtp.line import NoCallControl, RtpMediaLine
from voicecrm.voice.call import VoiceCall
from voicecrm.voice.line import Dtmf, LineClosed, LineEvent, Media, Whisper

INFO = CallInfo(
    call_id="rtp-1", direction=Direction.INBOUND, from_number="+15550100", to_number="+15550199"
)
FRAME = 0.02
LOUD = pcm16_to_ulaw(tone(FRAME, rate=8000, level=8000))  # one 20 ms frame of 440 Hz
SILENT = b"\xff" * ULAW_FRAME_BYTES


def loud(payload: bytes) -> bool:
    return rms(ulaw_to_pcm16(payload)) > 1000


@dataclass(frozen=True)
class Arrival:
    at: float
    packet: rtp.RtpPacket


@dataclass
class FakeAsterisk(asyncio.DatagramProtocol):
    """Asterisk's side of an ExternalMedia channel: sends caller RTP, records ours."""

    ssrc: int = 0x5EED
    sequence: int = 1000
    timestamp: int = 2**32 - 320  # wraps after two frames
    arrivals: list[Arrival] = field(default_factory=list)
    inbox: asyncio.Queue[Arrival] = field(default_factory=asyncio.Queue)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[object, ...]) -> None:
        arrival = Arrival(asyncio.get_running_loop().time(), rtp.parse(data))
        self.arrivals.append(arrival)
        self.inbox.put_nowait(arrival)

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def send_raw(self, data: bytes, to: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, to)

    def send(
        self,
        payload: bytes,
        to: tuple[str, int],
        *,
        payload_type: int = rtp.PCMU,
        sequence: int | None = None,
        timestamp: int | None = None,
        marker: bool = False,
    ) -> None:
        """One packet; by default the next in sequence, a frame later."""
        if sequence is None:
            self.sequence = rtp.sequence_add(self.sequence, 1)
            sequence = self.sequence
        if timestamp is None:
            self.timestamp = rtp.timestamp_add(self.timestamp, FRAME_SAMPLES)
            timestamp = self.timestamp
        packet = rtp.RtpPacket(payload_type, sequence, timestamp, self.ssrc, payload, marker)
        self.send_raw(packet.to_bytes(), to)

    async def next(self) -> Arrival:
        return await asyncio.wait_for(self.inbox.get(), 3.0)

    async def collect(self, n: int) -> list[Arrival]:
        return [await self.next() for _ in range(n)]


@pytest.fixture
async def asterisk() -> AsyncIterator[FakeAsterisk]:
    loop = asyncio.get_running_loop()
    transport, fake = await loop.create_datagram_endpoint(FakeAsterisk, local_addr=("127.0.0.1", 0))
    try:
        yield fake
    finally:
        transport.close()


async def take(events: AsyncIterator[LineEvent], n: int) -> list[LineEvent]:
    return [await asyncio.wait_for(anext(events), 3.0) for _ in range(n)]


def assert_continuous(arrivals: Sequence[Arrival]) -> None:
    """One stream: same SSRC, sequence +1 each packet, timestamps +160 (or a marked resync)."""
    assert len({a.packet.ssrc for a in arrivals}) == 1
    for before, after in itertools.pairwise(arrivals):
        assert after.packet.sequence == rtp.sequence_add(before.packet.sequence, 1)
        step = (after.packet.timestamp - before.packet.timestamp) % 2**32
        assert step == FRAME_SAMPLES or (after.packet.marker and step % FRAME_SAMPLES == 0)


# ------------------------------------------------------------------ the caller's side
async def test_the_callers_frames_arrive_in_order_without_duplicates_or_late_ones(
    asterisk: FakeAsterisk,
) -> None:
    async with RtpMediaLine(INFO) as line, contextlib.aclosing(line.events()) as events:
        to = line.local_address
        frame = [bytes([i]) * 160 for i in range(8)]
        for seq, payload in [(10, 0), (11, 1), (11, 1), (13, 3), (12, 2), (14, 4), (65535, 5)]:
            asterisk.send(frame[payload], to, sequence=seq)
        asterisk.send(frame[6], to, sequence=15)
        asterisk.send(frame[7], to, sequence=25000)  # a restarted numbering: not 25000 lost
        got = await take(events, 6)
        assert got == [Media(frame[i]) for i in (0, 1, 3, 4, 6, 7)]
        assert line.peer == asterisk.address  # learned from the first packet
        assert line.stats.packets_lost == 1  # 12 came too late to be played
        # the duplicate 11, the late 12, and 65535: far behind 14, not a wrapped one
        assert line.stats.packets_dropped == 3
        assert line.stats.packets_received == 6


async def test_sequence_numbers_wrap_without_losses(asterisk: FakeAsterisk) -> None:
    async with RtpMediaLine(INFO) as line, contextlib.aclosing(line.events()) as events:
        for seq in (65534, 65535, 0, 1):
            asterisk.send(bytes([seq % 256]) * 160, line.local_address, sequence=seq)
        got = await take(events, 4)
    assert [e.payload[0] for e in got if isinstance(e, Media)] == [254, 255, 0, 1]
    assert line.stats.packets_lost == 0


async def test_alaw_from_asterisk_reaches_the_pipeline_as_mulaw(asterisk: FakeAsterisk) -> None:
    pcm = tone(FRAME, rate=8000)
    async with RtpMediaLine(INFO, codec=Encoding.ALAW) as line:
        async with contextlib.aclosing(line.events()) as events:
            asterisk.send(pcm16_to_alaw(pcm), line.local_address, payload_type=rtp.PCMA)
            (event,) = await take(events, 1)
        assert isinstance(event, Media)
        assert event.payload == pcm16_to_ulaw(alaw_to_pcm16(pcm16_to_alaw(pcm)))
        back = await asterisk.next()  # and the line answers in A-law
        assert back.packet.payload_type == rtp.PCMA


async def test_malformed_datagrams_and_strangers_are_ignored(asterisk: FakeAsterisk) -> None:
    loop = asyncio.get_running_loop()
    stranger, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        async with RtpMediaLine(INFO) as line, contextlib.aclosing(line.events()) as events:
            asterisk.send_raw(b"\x80\x00junk", line.local_address)
            asterisk.send(LOUD, line.local_address)
            (first,) = await take(events, 1)
            stranger.sendto(rtp.RtpPacket(0, 1, 1, 1, SILENT).to_bytes(), line.local_address)
            asterisk.send_raw(rtp.RtpPacket(96, 1, 1, 1, b"video").to_bytes(), line.local_address)
            asterisk.send(SILENT, line.local_address)
            (second,) = await take(events, 1)
    finally:
        stranger.close()
    assert (first, second) == (Media(LOUD), Media(SILENT))
    assert line.stats.packets_ignored == 3  # junk, the stranger (strict RTP), payload type 96


async def test_each_rfc4733_key_press_is_one_dtmf_event(asterisk: FakeAsterisk) -> None:
    line = RtpMediaLine(INFO, dtmf_payload_type=101)
    async with line, contextlib.aclosing(line.events()) as events:
        to = line.local_address
        for key, start in (("5", 8000), ("#", 16000)):
            for n in range(3):  # the press, repeated while the key is down
                payload = rtp.telephone_event(key, end=False, duration=160 * (n + 1))
                asterisk.send(payload, to, payload_type=101, timestamp=start, marker=n == 0)
            for _ in range(3):  # the end, sent three times
                payload = rtp.telephone_event(key, end=True, duration=800)
                asterisk.send(payload, to, payload_type=101, timestamp=start)
        asterisk.send(SILENT, to)
        got = await take(events, 3)
    assert got == [Dtmf("5"), Dtmf("#"), Media(SILENT)]


async def test_a_key_reported_out_of_band_joins_the_stream_in_order(
    asterisk: FakeAsterisk,
) -> None:
    async with RtpMediaLine(INFO) as line, contextlib.aclosing(line.events()) as events:
        asterisk.send(SILENT, line.local_address)
        assert await take(events, 1) == [Media(SILENT)]
        line.push_dtmf("7")
        asterisk.send(LOUD, line.local_address)
        assert await take(events, 2) == [Dtmf("7"), Media(LOUD)]
        with pytest.raises(ValueError):
            line.push_dtmf("x")
        line.close("hung up")
        line.push_dtmf("1")  # too late: the call is over
        assert await take(events, 1) == [LineClosed("hung up")]


# ------------------------------------------------------------------ the receptionist's side
async def test_silence_is_filled_with_a_continuous_stream_of_comfort_noise(
    asterisk: FakeAsterisk,
) -> None:
    async with RtpMediaLine(INFO) as line:
        await asyncio.sleep(0.1)  # before Asterisk's first packet the line knows nobody
        assert asterisk.arrivals == []
        asterisk.send(SILENT, line.local_address)
        arrivals = await asterisk.collect(26)
    assert arrivals[0].packet.marker
    assert all(a.packet.payload_type == rtp.PCMU for a in arrivals)
    assert all(len(a.packet.payload) == 160 and not loud(a.packet.payload) for a in arrivals)
    assert len({a.packet.payload for a in arrivals}) > 1  # a hiss, not a constant
    assert_continuous(arrivals)
    span = arrivals[-1].at - arrivals[1].at  # 24 intervals of 20 ms
    assert 0.4 < span < 0.75


async def test_a_given_peer_is_sent_to_at_once(asterisk: FakeAsterisk) -> None:
    async with RtpMediaLine(INFO, peer=asterisk.address) as line:
        arrivals = await asterisk.collect(3)
        assert line.peer == asterisk.address
    assert_continuous(arrivals)


async def test_the_announced_address_is_sent_to_until_asterisk_sends_from_another(
    asterisk: FakeAsterisk,
) -> None:
    # Asterisk sends nothing while the caller is silent: the line starts on the address
    # ExternalMedia announced, and the first packet's source still takes over.
    loop = asyncio.get_running_loop()
    other, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        async with RtpMediaLine(INFO) as line, contextlib.aclosing(line.events()) as events:
            line.expect_peer(other.get_extra_info("sockname")[:2])
            line.expect_peer(asterisk.address)  # told again: the latest word counts
            await asterisk.collect(2)  # comfort noise, before Asterisk sent anything
            other.sendto(rtp.RtpPacket(0, 1, 1, 1, LOUD).to_bytes(), line.local_address)
            assert await take(events, 1) == [Media(LOUD)]
            line.expect_peer(asterisk.address)  # learned from a packet: no longer changes
            assert line.peer == other.get_extra_info("sockname")[:2]
    finally:
        other.close()


async def test_speech_goes_out_paced_at_20_ms_in_one_continuous_stream(
    asterisk: FakeAsterisk,
) -> None:
    async with RtpMediaLine(INFO, peer=asterisk.address, lead_frames=3) as line:
        await asterisk.collect(5)  # comfort noise is flowing
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(50):
            await line.send(LOUD)
        sent_in = loop.time() - started
        assert line.unplayed_frames() <= 3
        await line.drain()
        drained_in = loop.time() - started
        assert line.unplayed_frames() == 0
        while not asterisk.inbox.empty():
            asterisk.inbox.get_nowait()
        more = await asterisk.collect(3)  # and the hiss resumes
    speech = [a for a in asterisk.arrivals if loud(a.packet.payload)]
    assert len(speech) == 50 and line.stats.frames_sent == 50
    assert_continuous(asterisk.arrivals)
    first = asterisk.arrivals.index(speech[0])
    assert speech[0].packet.marker and not any(a.packet.marker for a in speech[1:])
    assert asterisk.arrivals[first : first + 50] == speech  # no noise in the middle of speech
    assert not loud(more[-1].packet.payload)
    # One second of audio: sent in about (50 - lead) frames' time, played out by drain.
    assert 0.85 < sent_in < 1.4
    assert 0.95 < drained_in < 1.6
    gaps = [b.at - a.at for a, b in itertools.pairwise(speech[3:])]
    jitter_ms = statistics.pstdev(gaps) * 1000
    print(f"speech: mean {statistics.mean(gaps) * 1000:.2f} ms, jitter {jitter_ms:.2f} ms")
    assert 0.017 < statistics.mean(gaps) < 0.026


async def test_clear_stops_the_queued_speech_at_once(asterisk: FakeAsterisk) -> None:
    async with RtpMediaLine(INFO, peer=asterisk.address, lead_frames=3) as line:
        stop = asyncio.Event()

        async def talk() -> None:
            for _ in range(500):
                if stop.is_set():
                    return
                await line.send(LOUD)

        talker = asyncio.create_task(talk())
        heard = 0
        while heard < 10:
            heard += loud((await asyncio.wait_for(asterisk.inbox.get(), 3)).packet.payload)
        stop.set()
        await line.clear()
        assert line.unplayed_frames() == 0
        sent_at_clear = line.stats.frames_sent
        await talker  # its frame waiting for its turn was dropped
        after = await asterisk.collect(10)
        await line.drain()  # nothing left to play: returns at once
    assert line.stats.frames_sent == sent_at_clear
    assert sum(loud(a.packet.payload) for a in after) <= 3  # at most the lead already sent
    assert not any(loud(a.packet.payload) for a in after[4:])
    assert_continuous(asterisk.arrivals)


async def test_drain_ends_early_on_clear(asterisk: FakeAsterisk) -> None:
    async with RtpMediaLine(INFO, peer=asterisk.address, lead_frames=20) as line:
        for _ in range(20):
            await line.send(LOUD)  # all sent at once: 400 ms ahead
        loop = asyncio.get_running_loop()
        started = loop.time()
        drainer = asyncio.create_task(line.drain())
        await asyncio.sleep(0)
        await line.clear()
        await drainer
        assert loop.time() - started < 0.2


# ------------------------------------------------------------------ the end of the line
async def test_nothing_arriving_for_the_inactivity_timeout_closes_the_line(
    asterisk: FakeAsterisk,
) -> None:
    async with RtpMediaLine(INFO, inactivity_timeout=0.3) as line:
        loop = asyncio.get_running_loop()
        async with contextlib.aclosing(line.events()) as events:
            asterisk.send(SILENT, line.local_address)
            (media,) = await take(events, 1)
            heard_at = loop.time()
            (closed,) = await take(events, 1)
            quiet = loop.time() - heard_at
            assert [e async for e in events] == []  # and it ends there
        assert media == Media(SILENT)
        assert isinstance(closed, LineClosed) and "no media" in closed.reason
        assert 0.25 < quiet < 1.0
        with pytest.raises(CallEnded):
            await line.send(LOUD)


async def test_a_reader_cancelled_just_as_an_event_arrives_stops() -> None:
    """The voice call stops its reader by cancelling it; an event arriving in the same
    moment must not swallow the cancellation (asyncio.wait_for on Python 3.11 does), or
    the reader runs on for as long as the caller sends, and the call never ends."""
    async with RtpMediaLine(INFO) as line:
        received: list[LineEvent] = []

        async def reader() -> None:
            async for event in line.events():
                received.append(event)

        task = asyncio.create_task(reader())
        await asyncio.sleep(0)  # the reader now waits for the first event
        line.push_dtmf("1")  # an event arrives...
        task.cancel()  # ...as the reader is told to stop
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(2):  # a swallowed cancel would wait here for ever
                await task


async def test_close_ends_the_events_and_the_sending() -> None:
    async with RtpMediaLine(INFO) as line:
        async with contextlib.aclosing(line.events()) as events:
            line.close("moved to voicemail")
            assert await take(events, 1) == [LineClosed("moved to voicemail")]
        with pytest.raises(CallEnded):
            await line.send(LOUD)
        await line.drain()
    assert line.closed == "moved to voicemail"


async def test_call_control_is_what_was_injected_or_a_clear_refusal() -> None:
    async with RtpMediaLine(INFO) as bare:
        with pytest.raises(NoCallControl):
            await bare.play("https://example.test/hold.wav")
        with pytest.raises(NoCallControl):
            await bare.transfer("+15550111", whisper=None, ring_timeout=20, caller_id=None)
        with pytest.raises(NoCallControl):
            await bare.hangup("done")

    done: list[str] = []

    async def play(url: str) -> None:
        done.append(f"play {url}")

    async def transfer(
        target: str, *, whisper: Whisper | None, ring_timeout: float, caller_id: str | None
    ) -> TransferOutcome:
        done.append(f"transfer {target} {ring_timeout:g}")
        return TransferOutcome(TransferStatus.ANSWERED)

    async def hangup(reason: str) -> None:
        done.append(f"hangup {reason}")

    async with RtpMediaLine(INFO, on_play=play, on_transfer=transfer, on_hangup=hangup) as line:
        await line.play("sound:beep")
        outcome = await line.transfer("+15550111", whisper=None, ring_timeout=20, caller_id=None)
        await line.hangup("completed")
        await line.hangup("completed")  # idempotent
        assert line.closed == "completed"
    assert outcome.status is TransferStatus.ANSWERED
    assert done == ["play sound:beep", "transfer +15550111 20", "hangup completed"]


# ------------------------------------------------------------------ with the voice call
@needs_espeak
async def test_a_voice_call_over_rtp_hears_the_caller_and_answers(asterisk: FakeAsterisk) -> None:
    words = pcm16_to_ulaw(spoken("I would like to book an appointment"))
    words += SILENT * 100  # two seconds of the caller saying nothing
    frames = [words[i : i + 160] for i in range(0, len(words) - 159, 160)]
    stt = ScriptedTranscriber(["book an appointment"])
    async with RtpMediaLine(INFO) as line:
        to = line.local_address

        async def caller() -> None:
            for frame in frames:  # Asterisk sends a packet every 20 ms
                asterisk.send(frame, to)
                await asyncio.sleep(FRAME)
            while True:
                asterisk.send(SILENT, to)
                await asyncio.sleep(FRAME)

        phone = asyncio.create_task(caller())
        try:
            async with VoiceCall(line, stt=stt, tts=InstantSpeech()) as call:
                answer = await call.gather(
                    prompt=None,
                    inputs=frozenset({InputKind.SPEECH, InputKind.DTMF}),
                    input_timeout=5,
                )
                await call.say("Sure.")
        finally:
            phone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await phone
    assert answer.speech == "book an appointment"
    assert stt.heard and stt.heard[0].sample_rate == 8000
    assert sum(loud(a.packet.payload) for a in asterisk.arrivals) >= 10  # "Sure." was sent
    assert_continuous(asterisk.arrivals)
    assert line.stats.packets_lost == 0 and line.stats.packets_received > len(frames) // 2
