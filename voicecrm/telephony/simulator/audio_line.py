"""`EmulatedLine`: a carrier in a box, for `simulate --audio`, the tests and the benchmark.

It behaves as Twilio or Asterisk does on the wire: every tick (20 ms of
audio) it plays one frame of the receptionist's queued audio and delivers one
frame of the caller's, continuously, silence included. Outgoing audio waits
in a small carrier buffer (`lead_frames`), `clear` empties it, and the
receptionist's side is kept tick by tick, so it can be written to a WAV file
and checked: what was played, and when.

The caller follows a script of actions (speak these samples, stay silent,
press keys, wait for the receptionist to finish, hang up). Ticks run at real
time by default; a shorter `tick` runs the call faster, with the same frame
arithmetic.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field

from voicecrm.audio.codec import Encoding, pcm16_to_ulaw, silence
from voicecrm.audio.frames import FRAME_SECONDS, ULAW_FRAME_BYTES, Framer
from voicecrm.calls.interface import CallEnded, CallInfo, TransferOutcome, TransferStatus
from voicecrm.voice.line import Dtmf, LineClosed, LineEvent, Media, Whisper

SILENT_FRAME = silence(Encoding.ULAW, ULAW_FRAME_BYTES)


@dataclass(frozen=True, slots=True)
class Speak:
    """The caller says this: 8 kHz 16-bit PCM."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class Silence:
    seconds: float


@dataclass(frozen=True, slots=True)
class Press:
    digits: str


@dataclass(frozen=True, slots=True)
class WaitForTurn:
    """Stay silent until the receptionist has said something and then been quiet this long."""

    quiet_seconds: float = 0.6
    max_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class WaitForSpeech:
    """Stay silent until the receptionist starts talking (then, say, talk over them)."""

    max_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class HangUp:
    pass


CallerAction = Speak | Silence | Press | WaitForTurn | WaitForSpeech | HangUp


@dataclass
class LineLog:
    """What happened on the line, tick by tick."""

    played: bytearray = field(default_factory=bytearray)  # the receptionist's side, mu-law
    voiced_ticks: list[int] = field(default_factory=list)  # ticks that played a queued frame
    clears: list[int] = field(default_factory=list)  # ticks at which `clear` arrived
    caller_speech: list[tuple[int, int]] = field(default_factory=list)  # (first, last) tick
    keys: list[tuple[int, str]] = field(default_factory=list)
    plays: list[str] = field(default_factory=list)
    transfers: list[str] = field(default_factory=list)
    hangup: str | None = None


class EmulatedLine:
    def __init__(
        self,
        info: CallInfo,
        script: Iterable[CallerAction],
        *,
        tick: float = FRAME_SECONDS,
        lead_frames: int = 2,
        transfer_outcomes: Sequence[TransferStatus] = (),
    ) -> None:
        self._info = info
        self._script = list(script)
        self._tick = tick
        self._lead = lead_frames
        self._buffer: deque[bytes] = deque()
        self._room = asyncio.Event()
        self._generation = 0
        self._closed: str | None = None
        self._outcomes = list(transfer_outcomes)
        self.ticks = 0
        self.log = LineLog()

    @property
    def info(self) -> CallInfo:
        return self._info

    # ------------------------------------------------------------- the carrier
    async def events(self) -> AsyncIterator[LineEvent]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        actions = deque(self._script)
        spoke_since_turn = False
        quiet = 0
        waited = 0
        pending: deque[bytes] = deque()  # caller frames of the current Speak
        speech_first = -1
        while self._closed is None:
            if self._tick:
                delay = start + (self.ticks + 1) * self._tick - loop.time()
                if delay < 0:
                    # A late tick moves the schedule instead of bursting to catch up: a
                    # burst would play silence while the receptionist's next frames wait
                    # for the loop, so a busy machine would change what the caller hears.
                    start -= delay
                    delay = 0
                await asyncio.sleep(delay)
                if self._closed is not None:
                    break
            else:
                await asyncio.sleep(0)
            tick = self.ticks
            self.ticks += 1
            # The receptionist's side: one queued frame plays, or silence.
            if self._buffer:
                self.log.played += self._buffer.popleft()
                self.log.voiced_ticks.append(tick)
                self._room.set()
                spoke_since_turn = True
                quiet = 0
            else:
                self.log.played += SILENT_FRAME
                quiet += 1
            # The caller's side: one frame, as the script says.
            frame = SILENT_FRAME
            if pending:
                frame = pending.popleft()
                if not pending:
                    self.log.caller_speech.append((speech_first, tick))
                    spoke_since_turn = False  # the caller's turn is over: wait for an answer
            else:
                action = actions[0] if actions else HangUp()
                if isinstance(action, Speak):
                    actions.popleft()
                    pending.extend(_frames(action.pcm))
                    speech_first = tick
                    frame = pending.popleft() if pending else frame
                elif isinstance(action, Silence):
                    waited += 1
                    if waited * FRAME_SECONDS >= action.seconds:
                        actions.popleft()
                        waited = 0
                elif isinstance(action, Press):
                    actions.popleft()
                    for digit in action.digits:
                        self.log.keys.append((tick, digit))
                        yield Dtmf(digit)
                elif isinstance(action, WaitForTurn):
                    waited += 1
                    done = spoke_since_turn and quiet * FRAME_SECONDS >= action.quiet_seconds
                    if done or waited * FRAME_SECONDS >= action.max_seconds:
                        actions.popleft()
                        waited = 0
                        spoke_since_turn = False
                elif isinstance(action, WaitForSpeech):
                    waited += 1
                    if quiet == 0 or waited * FRAME_SECONDS >= action.max_seconds:
                        actions.popleft()
                        waited = 0
                else:
                    self._close("caller hung up")
                    break
            yield Media(frame)
        yield LineClosed(self._closed or "caller hung up")

    def _close(self, reason: str) -> None:
        if self._closed is None:
            self._closed = reason
            self.log.hangup = reason
        self._room.set()

    # ------------------------------------------------------------- the receptionist
    async def send(self, frame: bytes) -> None:
        generation = self._generation
        while len(self._buffer) >= self._lead:
            if self._closed is not None:
                raise CallEnded(f"the line closed ({self._closed})")
            self._room.clear()
            await self._room.wait()
        if self._closed is not None:
            raise CallEnded(f"the line closed ({self._closed})")
        if generation == self._generation:  # a clear while waiting drops this frame
            self._buffer.append(frame)

    async def drain(self) -> None:
        while self._buffer and self._closed is None:
            self._room.clear()
            await self._room.wait()

    def unplayed_frames(self) -> int:
        return len(self._buffer)

    async def clear(self) -> None:
        self._generation += 1
        self._buffer.clear()
        self.log.clears.append(self.ticks - 1)
        self._room.set()

    async def play(self, url: str) -> None:
        self.log.plays.append(url)

    async def transfer(
        self,
        target: str,
        *,
        whisper: Whisper | None,
        ring_timeout: float,
        caller_id: str | None,
    ) -> TransferOutcome:
        status = self._outcomes.pop(0) if self._outcomes else TransferStatus.ANSWERED
        self.log.transfers.append(f"{target}: {status.value}")
        if status is TransferStatus.ANSWERED:
            self._close("transferred")
        return TransferOutcome(status=status)

    async def hangup(self, reason: str) -> None:
        self._close(reason)


def _frames(pcm: bytes) -> list[bytes]:
    framer = Framer(ULAW_FRAME_BYTES)
    frames = framer.push(pcm16_to_ulaw(pcm))
    tail = framer.flush(SILENT_FRAME[0])
    return frames + ([tail] if tail else [])
