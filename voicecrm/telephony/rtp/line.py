"""`RtpMediaLine`: an Asterisk ExternalMedia channel (RTP over UDP) as an `AudioLine`.

Asterisk streams the caller's audio to our UDP socket as soon as the channel
exists, and plays whatever RTP comes back to the address it sends from. It
does not pace what it is sent, and strict RTP (rtp.conf `strictrtp`) may drop
packets from any other source, so the line answers from the very socket that
receives, to the address the first packet came from (unless told the peer),
and keeps the stream continuous. Asterisk sends nothing while the caller's side
makes no frames (a Local channel in `Wait()`, silence suppression), so the
address it said it listens on (`expect_peer`) is used until a packet arrives:

- `send` paces the receptionist's frames at real time with a `PlayoutClock`, a
  few frames ahead, so a barge-in's `clear` leaves at most that lead on the wire;
- a small sender task owned by the line fills every 20 ms slot nobody spoke in
  with comfort noise, so Asterisk (and the phone behind it) never sees a gap;
  the first packet of speech after it carries the marker bit.

Incoming packets become `Media` (A-law is converted to mu-law: the pipeline
speaks mu-law), RFC 4733 telephone events become one `Dtmf` per key, late and
duplicate packets are dropped by sequence number and gaps are counted as lost.
`events()` ends with `LineClosed` on `close()`, on a hang-up, or when nothing
arrived for `inactivity_timeout` seconds.

The line only carries media: playing a file, transferring and hanging up are
ARI requests, injected by whoever created the channel.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from voicecrm.audio.codec import (
    Encoding,
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from voicecrm.audio.comfort import comfort_noise
from voicecrm.audio.frames import FRAME_SAMPLES, FRAME_SECONDS
from voicecrm.audio.pacing import PlayoutClock
from voicecrm.calls.interface import CallEnded, CallInfo, TransferOutcome
from voicecrm.cancellation import cancel_and_wait
from voicecrm.errors import VoiceCRMError
from voicecrm.telephony.rtp import packet as rtp
from voicecrm.voice.line import Dtmf, LineClosed, LineEvent, Media, Whisper

log = logging.getLogger(__name__)

Address = tuple[str, int]

# A jump of more than this many sequence numbers is a restarted stream, not a loss.
MAX_DROPOUT = 3000
_PAYLOAD_TYPES = {Encoding.ULAW: rtp.PCMU, Encoding.ALAW: rtp.PCMA}
DTMF_DIGITS = frozenset("0123456789*#ABCD")


class NoCallControl(VoiceCRMError):
    """The media line was asked to play, transfer or hang up without a way to do it."""

    title = "Not available on this media line"


class Transfer(Protocol):
    async def __call__(
        self,
        target: str,
        *,
        whisper: Whisper | None,
        ring_timeout: float,
        caller_id: str | None,
    ) -> TransferOutcome: ...


@dataclass(slots=True)
class RtpStats:
    packets_received: int = 0
    packets_lost: int = 0  # gaps in the sequence numbers
    packets_dropped: int = 0  # late or duplicate
    packets_ignored: int = 0  # malformed, from a stranger, or of an unknown payload type
    packets_sent: int = 0
    frames_sent: int = 0  # the receptionist's frames (the rest is comfort noise)
    comfort_sent: int = 0


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, line: RtpMediaLine) -> None:
        self._line = line

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._line._received(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.info("rtp line %s: %s", self._line.info.call_id, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._line.close("the media socket closed")


class RtpMediaLine:
    def __init__(
        self,
        info: CallInfo,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        peer: Address | None = None,
        codec: Encoding = Encoding.ULAW,
        dtmf_payload_type: int = rtp.TELEPHONE_EVENT,
        lead_frames: int = 3,
        inactivity_timeout: float | None = 10.0,
        comfort_noise_dbfs: float | None = -60.0,
        ssrc: int | None = None,
        on_play: Callable[[str], Awaitable[None]] | None = None,
        on_transfer: Transfer | None = None,
        on_hangup: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._info = info
        self._host, self._port = host, port
        self._peer = peer
        self._peer_learned = peer is not None  # told or learned: strict from then on
        self._codec = codec
        self._payload_type = _PAYLOAD_TYPES[codec]
        self._dtmf_payload_type = dtmf_payload_type
        self._pacer = PlayoutClock(lead_frames=lead_frames)
        self._inactivity = inactivity_timeout
        self._comfort = (
            comfort_noise(comfort_noise_dbfs) if comfort_noise_dbfs is not None else None
        )
        self._on_play, self._on_transfer, self._on_hangup = on_play, on_transfer, on_hangup
        self.stats = RtpStats()
        self.closed: str | None = None
        # Outgoing stream state.
        self._ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self._sequence = secrets.randbits(16)
        self._timestamp = secrets.randbits(32)
        self._slot: float | None = None  # when the next packet's audio plays
        self._speech_ends: float | None = None  # when the last speech frame sent plays out
        self._talking = False  # the last packet sent was speech: no marker on the next
        self._sending = 0  # send() calls in flight
        self._generation = 0
        self._interrupt = asyncio.Event()  # set on clear and close: wakes drain
        # Incoming stream state.
        self._in_ssrc: int | None = None
        self._in_sequence: int | None = None
        self._dtmf_done: int | None = None  # timestamp of the last event reported
        self._inbox: collections.deque[LineEvent] = collections.deque()
        self._arrived = asyncio.Event()
        self._last_packet = 0.0
        self._quiet_allowed = 0  # holds on the inactivity timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._sender: asyncio.Task[None] | None = None

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> RtpMediaLine:
        if self._transport is not None:
            raise RuntimeError("the line is already started")
        self._loop = asyncio.get_running_loop()
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Endpoint(self), local_addr=(self._host, self._port)
        )
        self._transport = transport
        self._last_packet = self._loop.time()
        if self._comfort is not None:
            self._sender = asyncio.create_task(
                self._fill_silence(), name=f"rtp-comfort-{self._info.call_id}"
            )
        return self

    async def aclose(self, reason: str = "the media line was closed") -> None:
        self.close(reason)
        sender, self._sender = self._sender, None
        if sender is not None:
            await cancel_and_wait(sender)
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    async def __aenter__(self) -> RtpMediaLine:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def close(self, reason: str = "the media line was closed") -> None:
        """End the media: `events()` yields `LineClosed(reason)`, `send` raises `CallEnded`."""
        if self.closed is not None:
            return
        self.closed = reason
        self._inbox.append(LineClosed(reason))
        self._arrived.set()
        self._interrupt.set()

    @property
    def info(self) -> CallInfo:
        return self._info

    @property
    def local_address(self) -> Address:
        """Where Asterisk should send (the ExternalMedia `external_host`)."""
        if self._transport is None:
            raise RuntimeError("the line is not started")
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    @property
    def peer(self) -> Address | None:
        return self._peer

    def expect_peer(self, address: Address) -> None:
        """Where Asterisk said it listens (ExternalMedia's UNICASTRTP_LOCAL_ADDRESS and
        _PORT): the line sends there at once, since Asterisk sends nothing while the
        caller's side is silent (a Local channel, silence suppression). The source of the
        first packet that arrives still takes over, as without this."""
        if not self._peer_learned:
            self._peer = address

    @property
    def ssrc(self) -> int:
        return self._ssrc

    # ------------------------------------------------------------- Asterisk -> us
    def _received(self, data: bytes, addr: Address) -> None:
        if self.closed is not None or self._loop is None:
            return
        if not self._peer_learned:
            self._peer = addr  # answer from this socket to where Asterisk sends from
            self._peer_learned = True
        elif addr != self._peer:
            self.stats.packets_ignored += 1  # strict RTP, as Asterisk does it
            return
        try:
            packet = rtp.parse(data)
        except rtp.RtpError as err:
            self.stats.packets_ignored += 1
            log.debug("rtp line %s: %s", self._info.call_id, err.detail)
            return
        self._last_packet = self._loop.time()
        if not self._in_order(packet):
            self.stats.packets_dropped += 1
            return
        self.stats.packets_received += 1
        event: LineEvent | None = None
        if packet.payload_type == rtp.PCMU:
            event = Media(packet.payload)
        elif packet.payload_type == rtp.PCMA:
            event = Media(pcm16_to_ulaw(alaw_to_pcm16(packet.payload)))
        elif packet.payload_type == self._dtmf_payload_type:
            event = self._dtmf(packet)
        else:
            self.stats.packets_ignored += 1
        if event is not None:
            self._inbox.append(event)
            self._arrived.set()

    def _in_order(self, packet: rtp.RtpPacket) -> bool:
        """Whether the packet is new: late and duplicate packets are not; gaps count as lost."""
        last = self._in_sequence
        if last is None or packet.ssrc != self._in_ssrc:
            self._in_ssrc, self._in_sequence = packet.ssrc, packet.sequence
            return True
        delta = rtp.sequence_delta(packet.sequence, last)
        if abs(delta) > MAX_DROPOUT:
            self._in_sequence = packet.sequence  # the sender restarted its numbering
            return True
        if delta <= 0:
            return False
        self.stats.packets_lost += delta - 1
        self._in_sequence = packet.sequence
        return True

    def _dtmf(self, packet: rtp.RtpPacket) -> Dtmf | None:
        """One `Dtmf` per event: at its first end packet (the end is sent three times)."""
        try:
            event = rtp.parse_telephone_event(packet.payload)
        except rtp.RtpError as err:
            self.stats.packets_ignored += 1
            log.debug("rtp line %s: %s", self._info.call_id, err.detail)
            return None
        if not event.end or event.digit is None or packet.timestamp == self._dtmf_done:
            return None
        self._dtmf_done = packet.timestamp
        return Dtmf(event.digit)

    def push_dtmf(self, digit: str) -> None:
        """A key the carrier reported out of band, as if it had come in the stream.

        In a mixing bridge Asterisk takes the caller's keys out of the media and
        reports them as ARI `ChannelDtmfReceived` events instead, so the external
        media socket never sees them as RFC 4733 packets: whoever reads those
        events hands each key over here."""
        if len(digit) != 1 or digit not in DTMF_DIGITS:
            raise ValueError(f"not a DTMF key: {digit!r}")
        if self.closed is not None:
            return
        self._inbox.append(Dtmf(digit))
        self._arrived.set()

    @contextlib.contextmanager
    def quiet_allowed(self) -> Iterator[None]:
        """Silence from Asterisk is expected for a while (the caller is out of the media
        bridge, recording a message): no inactivity timeout until the block ends, and
        then a full one."""
        self._quiet_allowed += 1
        try:
            yield
        finally:
            self._quiet_allowed -= 1
            if self._loop is not None:
                self._last_packet = self._loop.time()
            self._arrived.set()  # the reader waits without a timeout: let it take one again

    async def events(self) -> AsyncGenerator[LineEvent, None]:
        assert self._loop is not None, "start the line first"
        while True:
            while self._inbox:
                event = self._inbox.popleft()
                yield event
                if isinstance(event, LineClosed):
                    return
            self._arrived.clear()
            if self._inactivity is None or self._quiet_allowed:
                await self._arrived.wait()
                continue
            quiet_until = self._last_packet + self._inactivity
            remaining = quiet_until - self._loop.time()
            if remaining <= 0:
                self.close(f"no media for {self._inactivity:g} s")
                continue
            with contextlib.suppress(TimeoutError):
                # asyncio.timeout, not wait_for: on 3.11 wait_for returns normally when the
                # task is cancelled just as a packet arrives, and the reader then never stops.
                async with asyncio.timeout(remaining):
                    await self._arrived.wait()

    # ------------------------------------------------------------- us -> Asterisk
    def _transmit(self, payload: bytes, *, speech: bool) -> None:
        assert self._loop is not None and self._transport is not None and self._peer is not None
        now = self._loop.time()
        marker = speech and not self._talking
        if self._slot is None:
            self._slot, marker = now, True
        elif now - self._slot > 2 * FRAME_SECONDS:
            # Nothing went out for a while (no comfort noise, or a stalled loop): the
            # timestamps follow the time that passed, and the marker says "resync".
            skipped = round((now - self._slot) / FRAME_SECONDS)
            self._timestamp = rtp.timestamp_add(self._timestamp, skipped * FRAME_SAMPLES)
            self._slot, marker = now, True
        packet = rtp.RtpPacket(
            payload_type=self._payload_type,
            sequence=self._sequence,
            timestamp=self._timestamp,
            ssrc=self._ssrc,
            payload=payload,
            marker=marker,
        )
        self._transport.sendto(packet.to_bytes(), self._peer)
        self._sequence = rtp.sequence_add(self._sequence, 1)
        self._timestamp = rtp.timestamp_add(self._timestamp, FRAME_SAMPLES)
        self._slot += FRAME_SECONDS
        self._talking = speech
        self.stats.packets_sent += 1
        if speech:
            self._speech_ends = self._slot

    def _encode(self, frame: bytes) -> bytes:
        if self._codec is Encoding.ALAW:
            return pcm16_to_alaw(ulaw_to_pcm16(frame))
        return frame

    async def send(self, frame: bytes) -> None:
        if self.closed is not None:
            raise CallEnded(f"the media line has ended ({self.closed})")
        assert self._loop is not None, "start the line first"
        generation = self._generation
        self._sending += 1
        try:
            delay = self._pacer.delay(self._loop.time())
            if delay > 0:
                await asyncio.sleep(delay)  # pacing at real time is the point here
        finally:
            self._sending -= 1
        if self.closed is not None:
            raise CallEnded(f"the media line has ended ({self.closed})")
        if generation != self._generation:
            return  # a clear while this frame waited: drop it
        if self._peer is not None:
            self._transmit(self._encode(frame), speech=True)
        self._pacer.sent(self._loop.time())
        self.stats.frames_sent += 1

    async def _fill_silence(self) -> None:
        """Comfort noise in every slot the receptionist leaves empty, until the line closes."""
        assert self._loop is not None and self._comfort is not None
        while self.closed is None:
            now = self._loop.time()
            slot = self._slot if self._slot is not None else now
            if now < slot:
                await asyncio.sleep(slot - now)  # the next slot's time: real-time pacing
                continue
            if self._sending and now - slot < FRAME_SECONDS:
                # A frame of speech is about to go: give it the slot.
                await asyncio.sleep(FRAME_SECONDS / 4)
                continue
            if self._peer is not None:
                self._transmit(self._encode(next(self._comfort)), speech=False)
                self.stats.comfort_sent += 1
            else:
                await asyncio.sleep(FRAME_SECONDS)  # nobody to send to yet

    def unplayed_frames(self) -> int:
        assert self._loop is not None, "start the line first"
        return self._pacer.unplayed(self._loop.time())

    async def clear(self) -> None:
        """Drop the frames waiting to be sent; at most the lead already sent still plays."""
        self._generation += 1
        self._pacer.reset()
        self._speech_ends = None
        self._interrupt.set()
        self._interrupt = asyncio.Event()

    async def drain(self) -> None:
        assert self._loop is not None, "start the line first"
        ends = [t for t in (self._pacer.drained_at(), self._speech_ends) if t is not None]
        if not ends or self.closed is not None:
            return
        remaining = max(ends) - self._loop.time()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):  # not wait_for: see events()
                    await self._interrupt.wait()

    # ------------------------------------------------------------- call control (ARI's)
    async def play(self, url: str) -> None:
        if self._on_play is None:
            raise NoCallControl("this media line cannot play recordings: no player was given")
        await self._on_play(url)

    async def transfer(
        self,
        target: str,
        *,
        whisper: Whisper | None,
        ring_timeout: float,
        caller_id: str | None,
    ) -> TransferOutcome:
        if self._on_transfer is None:
            raise NoCallControl("this media line cannot transfer: no transfer was given")
        return await self._on_transfer(
            target, whisper=whisper, ring_timeout=ring_timeout, caller_id=caller_id
        )

    async def hangup(self, reason: str) -> None:
        """Hang up through the injected control (once), then end the media."""
        if self._on_hangup is None:
            raise NoCallControl("this media line cannot hang up: no hang-up was given")
        if self.closed is not None:
            return
        self.close(reason)
        await self._on_hangup(reason)
