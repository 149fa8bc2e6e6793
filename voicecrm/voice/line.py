"""`AudioLine`: what a carrier's media connection gives the voice pipeline.

A Twilio Media Stream, an Asterisk external-media channel and the simulator's
emulated line each implement it. The line owns the carrier connection and its
pacing: `send` returns when the carrier can take the next frame, so no more
than a frame or two wait at the carrier, and `clear` drops those at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from voicecrm.calls.interface import CallInfo, TransferOutcome
from voicecrm.errors import VoiceCRMError
from voicecrm.voice.ports import PcmAudio


@dataclass(frozen=True, slots=True)
class Media:
    """Caller audio: 8 kHz mu-law, of any length (usually one 20 ms frame)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str


@dataclass(frozen=True, slots=True)
class LineClosed:
    """The carrier ended the media (the caller hung up, or the call was moved away)."""

    reason: str = "caller hung up"


LineEvent = Media | Dtmf | LineClosed


class CannotPlayUrls(VoiceCRMError):
    """The carrier cannot fetch and play a URL itself (Twilio Media Streams): the voice
    call plays the file down the line instead, when it can fetch it."""

    title = "The carrier cannot play URLs"


@dataclass(frozen=True, slots=True)
class Whisper:
    """What the person a transfer reaches hears before the caller is put through.

    A carrier that speaks text itself (Twilio's `<Say>`) takes `text`; one that can
    only play audio (Asterisk) calls `audio()`, which synthesises it with the call's
    own voice and language, and only then: most transfers need no audio of ours.
    Raises `SpeechProviderError` when synthesis fails.
    """

    text: str
    audio: Callable[[], Awaitable[PcmAudio]]


class AudioLine(Protocol):
    @property
    def info(self) -> CallInfo: ...

    def events(self) -> AsyncIterator[LineEvent]:
        """The caller's side, in order, until the line closes. Iterated once."""
        ...

    async def send(self, frame: bytes) -> None:
        """Queue one 20 ms frame of 8 kHz mu-law; returns when the line takes the next."""

    async def drain(self) -> None:
        """Return once every frame sent has played (or was cleared): the end of a `say`."""

    def unplayed_frames(self) -> int:
        """Frames sent that the caller has not heard yet (waiting at the carrier)."""
        ...

    async def clear(self) -> None:
        """Drop every frame the caller has not heard yet (barge-in)."""

    async def play(self, url: str) -> None:
        """Play a recording the carrier can fetch (its own playback, not the stream)."""

    async def transfer(
        self,
        target: str,
        *,
        whisper: Whisper | None,
        ring_timeout: float,
        caller_id: str | None,
    ) -> TransferOutcome: ...

    async def hangup(self, reason: str) -> None:
        """End the call. Idempotent."""
