"""`SimulatedCall`: the `Call` interface over lines of text.

The caller's side comes from a `CallerInput` (the keyboard, or a script file
for tests and demos); what the receptionist says is written to an output
stream. Its conventions, shared by the keyboard and scripts:

    text         the caller says this
    #123         the caller presses keys 1, 2, 3
    (empty line) the caller stays silent (the gather times out)
    !hangup      the caller hangs up
    !transfer no_answer|busy|failed|answered
                 how the next transfer ends (default: answered)

Voicemail takes the next line as the recorded message. When a script runs out,
the caller hangs up.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import Protocol, TextIO

from voicecrm.calls.interface import (
    VOICEMAIL_SILENCE_SECONDS,
    CallEnded,
    CallInfo,
    GatherResult,
    InputKind,
    Recording,
    Spoken,
    TransferOutcome,
    TransferStatus,
)
from voicecrm.calls.latency import TurnLatency


class CallerInput(Protocol):
    async def next_line(self) -> str | None:
        """The caller's next line, or None when they are gone."""
        ...

    async def transfer_outcome(self, target: str) -> str:
        """How a transfer to `target` ends: answered, no_answer, busy or failed."""
        ...


class ScriptedCaller:
    """The caller's lines from a list (a script file's lines); '# ' lines are comments."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = [
            line.rstrip("\n") for line in lines if not line.startswith("# ") and line.strip() != "#"
        ]

    async def next_line(self) -> str | None:
        return self._lines.pop(0) if self._lines else None

    async def transfer_outcome(self, target: str) -> str:
        """A `!transfer OUTCOME` line next in the script decides; otherwise it is answered."""
        if self._lines and self._lines[0].startswith("!transfer "):
            return self._lines.pop(0).split(None, 1)[1].strip()
        return "answered"


class KeyboardCaller:
    """The caller types at the terminal; reading runs in a thread so the loop stays free."""

    def __init__(self, prompt: str = "you> ") -> None:
        self.prompt = prompt

    async def next_line(self) -> str | None:
        try:
            return await asyncio.to_thread(input, self.prompt)
        except EOFError:
            return None

    async def transfer_outcome(self, target: str) -> str:
        answer = await asyncio.to_thread(
            input, f"[transfer to {target}] answered? [Y]es / (n)o answer / (b)usy: "
        )
        return {"n": "no_answer", "b": "busy"}.get(answer.strip().lower()[:1], "answered")


class SimulatedCall:
    """A `Call` whose caller is a `CallerInput` and whose voice is text on `output`."""

    def __init__(
        self,
        info: CallInfo,
        caller: CallerInput,
        *,
        output: TextIO | None = None,
        speaker: str = "receptionist",
    ) -> None:
        self._info = info
        self._caller = caller
        self._output = output or sys.stdout
        self._speaker = speaker

        self.ended: str | None = None
        self.spoken: list[str] = []

    @property
    def info(self) -> CallInfo:
        return self._info

    def _emit(self, text: str) -> None:
        self._output.write(text + "\n")
        self._output.flush()

    def _check_open(self) -> None:
        if self.ended is not None:
            raise CallEnded(f"the call has ended ({self.ended})")

    async def _line(self) -> str:
        """The next line the caller says, handling directives; raises CallEnded when gone."""
        while True:
            line = await self._caller.next_line()
            if line is None or line.strip() == "!hangup":
                self.ended = "caller hung up"
                self._emit("[caller hangs up]")
                raise CallEnded("the caller hung up")
            return line

    async def say(
        self, text: str, *, voice: str | None = None, language: str | None = None
    ) -> Spoken:
        self._check_open()
        self.spoken.append(text)
        self._emit(f"{self._speaker}: {text}")
        return Spoken(heard=text)

    async def speak(
        self,
        sentences: AsyncIterable[str],
        *,
        voice: str | None = None,
        language: str | None = None,
    ) -> Spoken:
        said = [(await self.say(s, voice=voice, language=language)).heard async for s in sentences]
        return Spoken(heard=" ".join(said))

    def mark(self, event: str, *, waited: float = 0.0) -> None:
        """Text has no audio turns to time."""

    @property
    def latencies(self) -> Sequence[TurnLatency]:
        return ()

    async def play(self, url: str) -> None:
        self._check_open()
        self._emit(f"[plays {url}]")

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
        self._check_open()
        if prompt:
            await self.say(prompt)
        line = (await self._line()).strip()
        if not line:
            self._emit("[silence]")
            return GatherResult()
        if line.startswith("#") and InputKind.DTMF in inputs:
            digits = line[1:].strip()
            if finish_on_key and finish_on_key in digits:
                digits = digits.split(finish_on_key, 1)[0]
            if num_digits:
                digits = digits[:num_digits]
            self._emit(f"[caller presses {digits}]")
            return GatherResult(digits=digits)
        if InputKind.SPEECH not in inputs:
            self._emit("[speech ignored: this step takes keys only]")
            return GatherResult()
        self._emit(f"caller: {line}")
        return GatherResult(speech=line, confidence=1.0)

    async def transfer(
        self,
        target: str,
        *,
        whisper: str | None = None,
        ring_timeout: float = 30.0,
        caller_id: str | None = None,
    ) -> TransferOutcome:
        self._check_open()
        status = TransferStatus(await self._caller.transfer_outcome(target))
        self._emit(
            f"[transfer to {target}: {status.value}]"
            + (f" (whisper: {whisper})" if whisper else "")
        )
        if status is TransferStatus.ANSWERED:
            self.ended = "transferred"
        return TransferOutcome(status=status)

    async def record(
        self,
        *,
        max_seconds: float,
        beep: bool = True,
        finish_on_key: str | None = "#",
        silence_seconds: int = VOICEMAIL_SILENCE_SECONDS,
    ) -> Recording | None:
        self._check_open()
        if beep:
            self._emit("[beep]")
        message = (await self._line()).strip()
        if not message:
            return None
        seconds = min(float(max_seconds), max(1.0, len(message.split()) / 2.5))
        return Recording(
            url=f"simulator://voicemail/{self._info.call_id}",
            duration_seconds=round(seconds, 1),
            transcript=message,
        )

    async def echo(self, seconds: float) -> None:
        self._check_open()
        self._emit(f"[echo test: the caller hears themselves for {seconds:g} s]")

    async def hangup(self, reason: str = "completed") -> None:
        if self.ended is None:
            self.ended = reason
            self._emit(f"[call ends: {reason}]")

    async def audio_in(self) -> AsyncIterator[bytes]:
        self._check_open()
        return
        yield b""  # an async generator with no audio: the simulator speaks in text

    async def send_audio(self, frame: bytes) -> None:
        self._check_open()

    async def clear_audio(self) -> None:
        return None
