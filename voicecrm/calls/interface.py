"""The `Call` protocol and the small value types that cross it.

Each verb is what a receptionist does on a phone line, not what a carrier
calls it: `say` may become Twilio's <Say>, speech synthesis over a Media
Stream, or ARI playback of a rendered file; `gather` may be <Gather>, DTMF
events plus speech recognition, or lines typed in a terminal. Implementations
raise `CallEnded` from any verb once the caller has hung up, so the engine can
stop the flow wherever it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from voicecrm.calls.latency import TurnLatency
from voicecrm.errors import VoiceCRMError


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class InputKind(StrEnum):
    SPEECH = "speech"
    DTMF = "dtmf"


class CallEnded(VoiceCRMError):
    """The far end hung up (or the call was ended) while a verb was running."""

    title = "Call ended"


class CallSuspended(VoiceCRMError):
    """The call cannot wait here in-process (a TwiML <Gather>): save state and resume later.

    A webhook-driven call raises this from `gather`; the engine saves its state
    with the step still pending, and the next webhook, on any instance, resumes
    the engine with the caller's answer.
    """

    title = "Call suspended"


@dataclass(frozen=True, slots=True)
class CallInfo:
    """Who called whom, as the carrier reported it (numbers not yet normalised)."""

    call_id: str
    direction: Direction
    from_number: str
    to_number: str
    caller_name: str | None = None
    channel: str = "unknown"
    started_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class GatherResult:
    """What the caller answered; both empty means no input before the timeout."""

    digits: str = ""
    speech: str = ""
    confidence: float | None = None

    @property
    def empty(self) -> bool:
        return not self.digits and not self.speech.strip()

    @property
    def text(self) -> str:
        return self.digits or self.speech.strip()


class TransferStatus(StrEnum):
    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class TransferOutcome:
    status: TransferStatus
    # After an answered transfer the caller is bridged away: the scenario is over.
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Spoken:
    """What the caller heard of something said: all of it, unless they talked over it.

    A conversation records `heard`, not what was meant to be said, so that the
    model knows the caller never heard the part they interrupted.
    """

    heard: str
    interrupted: bool = False


# Silence that ends a voicemail unless a scenario says otherwise; shorter pauses are
# part of the message. Twilio's <Record> and Asterisk's maxSilenceSeconds take whole seconds.
VOICEMAIL_SILENCE_SECONDS = 5


@dataclass(frozen=True, slots=True)
class Recording:
    """A voicemail. Its words may still be on their way when the recording is handed
    over: transcribing a message takes seconds, which the caller would otherwise
    spend in silence before hearing goodbye. `pending_transcript` then gives them
    (None when there are none, or the provider failed); the call that made it owns
    that work and settles it by the time the call is closed."""

    url: str
    duration_seconds: float
    transcript: str | None = None
    pending_transcript: Awaitable[str | None] | None = None

    async def words(self) -> str | None:
        """The transcript, once it is known."""
        if self.pending_transcript is None:
            return self.transcript
        return await self.pending_transcript


# What a suspended call resumes with (`CallSuspended`): the caller's answer to a gather,
# or the message a carrier recorded in its own time (TwiML's <Record>).
ResumeAnswer = GatherResult | Recording


class Call(Protocol):
    """One live phone call, whatever carries it."""

    @property
    def info(self) -> CallInfo: ...

    async def say(
        self, text: str, *, voice: str | None = None, language: str | None = None
    ) -> Spoken:
        """Speak `text`; returns when it has been played (or interrupted by the caller)."""

    async def speak(
        self,
        sentences: AsyncIterable[str],
        *,
        voice: str | None = None,
        language: str | None = None,
    ) -> Spoken:
        """Speak sentences as they come (a language model's answer): the first is
        heard while the later ones are still being written. Stops taking sentences
        when the caller interrupts."""

    def mark(self, event: str, *, waited: float = 0.0) -> None:
        """Note a moment of the current turn for its latency record: "first_token"
        when the model's first token arrived, "llm" with the seconds spent waiting
        for the model before the first sentence could be spoken."""

    @property
    def latencies(self) -> Sequence[TurnLatency]:
        """Each caller turn's latency so far (empty where there is no audio)."""
        ...

    async def play(self, url: str) -> None:
        """Play an audio file or URL to the caller."""

    async def gather(
        self,
        *,
        prompt: str | None,
        inputs: frozenset[InputKind],
        input_timeout: float,
        num_digits: int | None = None,
        finish_on_key: str | None = None,
        language: str | None = None,
        hints: tuple[str, ...] = (),
    ) -> GatherResult:
        """Say `prompt` (interruptible) and wait for speech and/or DTMF."""

    async def transfer(
        self,
        target: str,
        *,
        whisper: str | None = None,
        ring_timeout: float = 30.0,
        caller_id: str | None = None,
    ) -> TransferOutcome:
        """Connect the caller to `target` (E.164 number or SIP URI)."""

    async def record(
        self,
        *,
        max_seconds: float,
        beep: bool = True,
        finish_on_key: str | None = "#",
        silence_seconds: int = VOICEMAIL_SILENCE_SECONDS,
    ) -> Recording | None:
        """Record the caller (voicemail) until `silence_seconds` of silence, the key,
        a hang-up or `max_seconds`; None when nothing was said."""

    async def echo(self, seconds: float) -> None:
        """Send the caller's own audio back to them: a line test."""

    async def hangup(self, reason: str = "completed") -> None:
        """End the call. Idempotent."""

    def audio_in(self) -> AsyncIterator[bytes]:
        """The caller's audio, 20 ms frames of 8 kHz mu-law, until the call ends."""
        ...

    async def send_audio(self, frame: bytes) -> None:
        """Queue 20 ms of 8 kHz mu-law audio for the caller."""

    async def clear_audio(self) -> None:
        """Drop queued audio at once (barge-in)."""
