"""The caller's side of a voice call: one reader per call, from line events to turns.

The reader decodes each frame, asks the VAD, feeds the turn detector and puts
what matters (speech started, an utterance, a key, the line closing, a
timeout) in the call's inbox for whichever verb is waiting. Barge-in is
decided here, on the frame that proves the caller is talking: the reader
calls the interrupt hook before it reads the next frame.

Timeouts count frames of caller audio, which carriers send continuously at
real time: no timers, and tests may feed audio faster than real time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from voicecrm.audio.codec import ulaw_to_pcm16
from voicecrm.audio.frames import ULAW_FRAME_BYTES, Framer, frames_for
from voicecrm.audio.turns import (
    SpeechDiscarded,
    SpeechEnded,
    SpeechStarted,
    TurnDetector,
    TurnSettings,
)
from voicecrm.audio.vad import VoiceActivityDetector
from voicecrm.voice.line import AudioLine, Dtmf, LineClosed, Media


@dataclass(frozen=True, slots=True)
class DigitPressed:
    digit: str
    frame: int


@dataclass(frozen=True, slots=True)
class TimedOut:
    token: int


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str


InboxItem = SpeechStarted | SpeechEnded | SpeechDiscarded | DigitPressed | TimedOut | Closed
FrameTap = Callable[[bytes, bytes], None]  # (mu-law frame, PCM frame)


class Listener:
    def __init__(
        self,
        line: AudioLine,
        vad: VoiceActivityDetector,
        turns: TurnSettings,
        *,
        on_speech: Callable[[], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        self._line = line
        self._vad = vad
        self._detector = TurnDetector(turns)
        self._on_speech = on_speech
        self._clock = clock
        self._framer = Framer(ULAW_FRAME_BYTES)
        self.inbox: asyncio.Queue[InboxItem] = asyncio.Queue()
        self.frames = 0  # caller frames read so far
        self.closed: str | None = None
        self.speech_ended_at: float | None = None  # clock reading at the last endpoint
        self._deadline: tuple[int, int] | None = None  # (frame, token)
        self._tokens = 0
        self.taps: list[FrameTap] = []
        self.on_close: list[Callable[[], None]] = []
        self._muted = 0

    # ----------------------------------------------------------- timeouts
    def arm(self, seconds: float) -> int:
        """Put a `TimedOut` in the inbox after `seconds` of caller audio; returns its token."""
        self._tokens += 1
        self._deadline = (self.frames + max(1, frames_for(seconds * 1000)), self._tokens)
        return self._tokens

    def disarm(self) -> None:
        self._deadline = None

    def forget_speech(self) -> None:
        self._detector.reset()

    @contextlib.contextmanager
    def muted(self) -> Iterator[None]:
        """While the carrier handles the caller itself (its own recording), frames are
        counted but not heard and keys are dropped: no barge-in, no utterance, nothing
        left in the inbox for the next question."""
        self._muted += 1
        try:
            yield
        finally:
            self._muted -= 1
            if not self._muted:
                self._detector.reset()

    # ----------------------------------------------------------- the reader
    async def run(self) -> None:
        reason = "the line closed"
        try:
            async for event in self._line.events():
                if isinstance(event, Media):
                    for frame in self._framer.push(event.payload):
                        await self._frame(frame)
                elif isinstance(event, Dtmf):
                    if self._muted:
                        continue
                    self.inbox.put_nowait(DigitPressed(event.digit, self.frames))
                    await self._on_speech()
                elif isinstance(event, LineClosed):
                    reason = event.reason
                    break
        finally:
            self.closed = reason
            self.inbox.put_nowait(Closed(reason))
            for hook in self.on_close:
                hook()

    async def _frame(self, ulaw: bytes) -> None:
        if self._muted:
            self.frames += 1
            return
        pcm = ulaw_to_pcm16(ulaw)
        event = self._detector.feed(pcm, self._vad.is_speech(pcm))
        self.frames += 1
        for tap in self.taps:
            tap(ulaw, pcm)
        if event is not None:
            if isinstance(event, SpeechStarted):
                await self._on_speech()
            elif isinstance(event, SpeechEnded):
                self.speech_ended_at = self._clock()
            self.inbox.put_nowait(event)
        deadline = self._deadline
        if deadline is not None and self.frames >= deadline[0]:
            self._deadline = None
            self.inbox.put_nowait(TimedOut(deadline[1]))
