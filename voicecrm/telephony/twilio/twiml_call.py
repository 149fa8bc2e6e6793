"""`TwimlCall`: the `Call` interface written as TwiML, for calls without a Media Stream.

For businesses with no speech providers: Twilio speaks (`<Say>`) and listens
(`<Gather input="speech dtmf">`) itself. Each webhook runs the scenario from
its saved state until it must wait for the caller; `gather` then adds a
`<Gather>` whose action is the next webhook and suspends the call, and `record`
(a voicemail) a `<Record>` with the same action. The state lives in the
database, so the next webhook may reach another instance.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence

from twilio.twiml.voice_response import Gather, VoiceResponse

from voicecrm.calls.interface import (
    VOICEMAIL_SILENCE_SECONDS,
    CallInfo,
    CallSuspended,
    GatherResult,
    InputKind,
    Recording,
    Spoken,
    TransferOutcome,
    TransferStatus,
)
from voicecrm.calls.latency import TurnLatency
from voicecrm.errors import VoiceCRMError
from voicecrm.telephony.twilio.dialling import dial, whisper_url


class NeedsMediaStreams(VoiceCRMError):
    title = "Needs Media Streams"


class TwimlCall:
    def __init__(
        self,
        info: CallInfo,
        *,
        gather_url: str,
        public_base: str,
        voice: str | None = None,
        language: str = "en-US",
    ) -> None:
        self._info = info
        self._gather_url = gather_url
        self._public_base = public_base
        self._voice = voice
        self._language = language
        self.response = VoiceResponse()
        self.ended = False

    @property
    def info(self) -> CallInfo:
        return self._info

    @property
    def latencies(self) -> Sequence[TurnLatency]:
        return ()

    def mark(self, event: str, *, waited: float = 0.0) -> None:
        """Twilio speaks and listens itself: no turns of ours to time."""

    def _say(
        self, node: VoiceResponse | Gather, text: str, voice: str | None, language: str | None
    ) -> None:
        attributes = {"language": language or self._language}
        if voice or self._voice:
            attributes["voice"] = voice or self._voice or ""
        node.say(text, **attributes)

    async def say(
        self, text: str, *, voice: str | None = None, language: str | None = None
    ) -> Spoken:
        self._say(self.response, text, voice, language)
        return Spoken(heard=text)

    async def speak(
        self,
        sentences: AsyncIterable[str],
        *,
        voice: str | None = None,
        language: str | None = None,
    ) -> Spoken:
        text = " ".join([sentence async for sentence in sentences])
        return await self.say(text, voice=voice, language=language)

    async def play(self, url: str) -> None:
        self.response.play(url)

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
        attributes: dict[str, object] = {
            "input": " ".join(sorted(kind.value for kind in inputs)),
            "action": self._gather_url,
            "method": "POST",
            "timeout": max(1, round(input_timeout)),
            "action_on_empty_result": True,
            "language": language or self._language,
        }
        if num_digits:
            attributes["num_digits"] = num_digits
        if finish_on_key is not None:
            attributes["finish_on_key"] = finish_on_key
        if hints:
            attributes["hints"] = ", ".join(hints)
        gather = Gather(**attributes)
        if prompt:
            self._say(gather, prompt, None, language)
        self.response.append(gather)
        raise CallSuspended("waiting for Twilio's <Gather> webhook")

    async def transfer(
        self,
        target: str,
        *,
        whisper: str | None = None,
        ring_timeout: float = 30.0,
        caller_id: str | None = None,
    ) -> TransferOutcome:
        said = (
            whisper_url(self._public_base, whisper, language=self._language, voice=self._voice)
            if whisper
            else None
        )
        self.response.append(
            dial(target, ring_timeout=ring_timeout, caller_id=caller_id, whisper=said)
        )
        self.ended = True
        return TransferOutcome(TransferStatus.ANSWERED, detail="handed to Twilio <Dial>")

    async def record(
        self,
        *,
        max_seconds: float,
        beep: bool = True,
        finish_on_key: str | None = "#",
        silence_seconds: int = VOICEMAIL_SILENCE_SECONDS,
    ) -> Recording | None:
        """Twilio records (`<Record>`) and the call suspends; its action, the next gather
        webhook, resumes the voicemail step with the message (`Engine.take_pending_recording`).

        The message is Twilio's recording, linked where it lies; it is not transcribed, as
        a TwiML-only call has no speech provider of the service's own.
        """
        attributes: dict[str, object] = {
            "action": self._gather_url,
            "method": "POST",
            "timeout": silence_seconds,
            "max_length": max(1, round(max_seconds)),
            "play_beep": beep,
        }
        if finish_on_key is not None:
            attributes["finish_on_key"] = finish_on_key
        self.response.record(**attributes)
        raise CallSuspended("waiting for Twilio's <Record> webhook")

    async def echo(self, seconds: float) -> None:
        raise NeedsMediaStreams("the echo test needs the call's audio: use a Media Stream")

    async def hangup(self, reason: str = "completed") -> None:
        if not self.ended:
            self.ended = True
            self.response.hangup()

    async def audio_in(self) -> AsyncIterator[bytes]:
        raise NeedsMediaStreams("a TwiML-only call carries no audio to the service")
        yield b""  # pragma: no cover - makes this an async generator

    async def send_audio(self, frame: bytes) -> None:
        raise NeedsMediaStreams("a TwiML-only call carries no audio to the service")

    async def clear_audio(self) -> None:
        return None
