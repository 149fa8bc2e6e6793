"""The speech providers the voice pipeline needs, as small protocols.

Implementations live in `voicecrm.speech` (OpenAI-compatible servers through
the openai client; offline espeak-ng and PocketSphinx); this package never
imports them, so tests and benchmarks can plug in instant fakes.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol

from voicecrm.errors import VoiceCRMError


class SpeechProviderError(VoiceCRMError):
    """A speech provider failed or timed out; the call takes its error path."""

    title = "Speech provider failed"


class SpeechUnavailable(SpeechProviderError):
    """No provider is configured or installed for speech in or out."""

    title = "Speech provider unavailable"


@dataclass(frozen=True, slots=True)
class PcmAudio:
    """Signed 16-bit little-endian mono samples at `sample_rate` Hz."""

    pcm: bytes
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    confidence: float | None = None


class SpeechToText(Protocol):
    @property
    def label(self) -> str:
        """Who transcribes, for logs and the simulator ("pocketsphinx (offline, low accuracy)")."""
        ...

    async def transcribe(
        self, audio: PcmAudio, *, language: str, hints: tuple[str, ...] = ()
    ) -> Transcript:
        """Transcribe one finished utterance. `hints` are words or phrases the
        caller is likely to say (a menu's choices); providers may bias towards them.

        Raises `SpeechProviderError` on failure.
        """
        ...


class TextToSpeech(Protocol):
    @property
    def label(self) -> str: ...

    def synthesize(
        self, text: str, *, voice: str | None, language: str
    ) -> AsyncGenerator[PcmAudio, None]:
        """Stream the speech for `text` as it is produced: chunks of any length,
        all at one sample rate. A generator, so that a barge-in can close it and
        with it the provider's response. Raises `SpeechProviderError` on failure.
        """
        ...


class MediaUnavailable(VoiceCRMError):
    """A recording to play could not be fetched, or is not audio the call can play."""

    title = "Media unavailable"


class MediaFetcher(Protocol):
    async def fetch(self, url: str) -> bytes:
        """The file at `url` (a recording a scenario plays). Raises `MediaUnavailable`."""
        ...


class RecordingSink(Protocol):
    async def save(self, channel: str, external_call_id: str, pcm: bytes, sample_rate: int) -> str:
        """Keep a recording of the call; returns the URL to link it from."""
        ...


@dataclass(frozen=True, slots=True)
class CarrierRecording:
    """A message the carrier recorded itself and the recorder has already kept.

    `audio` is what was kept, for the transcript; None when the carrier made the
    recording but it could not be fetched (the recorder logged why, and `url`
    says where the carrier still holds it), so the call still says a message
    was left."""

    url: str
    seconds: float
    audio: PcmAudio | None = None


class CarrierRecorder(Protocol):
    async def record(
        self, *, max_seconds: float, beep: bool, finish_on_key: str | None, silence_seconds: int
    ) -> CarrierRecording | None:
        """Record the caller on the carrier's side (its own beep, silence detection and
        keys) and keep the file; None when nothing was recorded. A caller hanging up
        mid-message ends the recording, and what was said is returned."""
        ...
