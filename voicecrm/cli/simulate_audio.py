"""`voicecrm simulate --audio`: a call through the real audio pipeline, from WAV files.

Each WAV file is one thing the caller says (a folder holds several, taken in
name order); the caller waits for the receptionist to finish before each one
and hangs up after the last answer. The call runs on an emulated carrier line
at real time (or `--speed` times faster) through voice activity detection,
speech-to-text, the scenario, text-to-speech and barge-in, exactly as a
Twilio or Asterisk call would; the receptionist's side is written to a WAV
file, and every turn's latency is printed.
"""

from __future__ import annotations

import contextlib
import wave
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np

from voicecrm.app import speech_providers
from voicecrm.audio.codec import ulaw_to_pcm16
from voicecrm.audio.frames import FRAME_SECONDS, SAMPLE_RATE
from voicecrm.audio.resample import resample
from voicecrm.calls.interface import CallInfo
from voicecrm.calls.latency import TurnLatency
from voicecrm.config import Settings
from voicecrm.errors import InvalidInput
from voicecrm.recordings.store import RecordingStore
from voicecrm.scenarios.models import Scenario
from voicecrm.telephony.simulator.audio_line import (
    CallerAction,
    EmulatedLine,
    HangUp,
    Speak,
    WaitForTurn,
)
from voicecrm.telephony.voice_calls import SpeechProviders, voice_call
from voicecrm.voice.call import VoiceCall
from voicecrm.voice.ports import PcmAudio
from voicecrm.voice.wav import wav_bytes


def read_utterances(path: Path) -> list[tuple[str, bytes]]:
    """The caller's utterances as 8 kHz 16-bit PCM: one WAV file, or a folder's WAV files."""
    files = sorted(path.glob("*.wav")) if path.is_dir() else [path]
    if not files:
        raise InvalidInput(f"{path}: no .wav files in this folder")
    return [(file.name, _read_wav(file)) for file in files]


def _read_wav(file: Path) -> bytes:
    try:
        with wave.open(str(file), "rb") as reader:
            width, channels, rate = (
                reader.getsampwidth(),
                reader.getnchannels(),
                reader.getframerate(),
            )
            data = reader.readframes(reader.getnframes())
    except (OSError, EOFError, wave.Error) as err:
        raise InvalidInput(f"{file}: not a readable WAV file ({err})") from err
    if width != 2:
        raise InvalidInput(f"{file}: {8 * width}-bit samples; 16-bit PCM WAV is needed")
    samples = np.frombuffer(data, dtype="<i2")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype("<i2")
    return resample(samples.tobytes(), rate, SAMPLE_RATE)


def write_wav(path: Path, ulaw: bytes) -> None:
    path.write_bytes(wav_bytes(PcmAudio(ulaw_to_pcm16(ulaw), SAMPLE_RATE)))


def caller_script(utterances: Sequence[tuple[str, bytes]]) -> list[CallerAction]:
    script: list[CallerAction] = []
    for _name, pcm in utterances:
        script += [WaitForTurn(), Speak(pcm)]
    return [*script, WaitForTurn(), HangUp()]


class AudioSimulation:
    """Owns the emulated line, the providers and the voice call of one simulated call."""

    def __init__(
        self,
        settings: Settings,
        utterances: Sequence[tuple[str, bytes]],
        *,
        speed: float = 1.0,
        providers: SpeechProviders | None = None,
    ) -> None:
        if speed <= 0:
            raise InvalidInput("--speed must be positive")
        self.utterances = utterances
        self.speed = speed
        self.providers = providers or speech_providers(settings)
        self.recordings = RecordingStore(Path(settings.recordings_dir))
        self.line: EmulatedLine | None = None
        self.call: VoiceCall | None = None

    @contextlib.asynccontextmanager
    async def open(self, info: CallInfo, scenario: Scenario) -> AsyncIterator[VoiceCall]:
        self.line = EmulatedLine(
            info, caller_script(self.utterances), tick=FRAME_SECONDS / self.speed
        )
        try:
            call = voice_call(self.line, scenario, self.providers, recordings=self.recordings)
            self.call = call
            async with call:
                yield call
        finally:
            await self.providers.aclose()

    def describe_providers(self) -> str:
        if self.call is None:
            return ""
        return f"speech in: {self.call.stt_label}; speech out: {self.call.tts_label}"

    def receptionist_audio(self) -> bytes:
        return bytes(self.line.log.played) if self.line else b""


def latency_table(turns: Sequence[TurnLatency]) -> list[str]:
    """One line a turn, in milliseconds after the end of the caller's speech."""
    if not turns:
        return ["no caller turns were answered (a voicemail is not a turn)"]
    lines = ["turn  transcript  1st token  1st audio  1st frame   service"]
    for number, turn in enumerate(turns, 1):
        row = turn.as_dict()

        def cell(key: str, row: dict[str, float | None] = row) -> str:
            value = row[key]
            return "-" if value is None else f"{value:.0f} ms"

        lines.append(
            f"{number:>4}  {cell('transcript_ms'):>10}  {cell('first_token_ms'):>9}  "
            f"{cell('first_audio_ms'):>9}  {cell('first_frame_ms'):>9}  "
            f"{row['service_ms'] if row['service_ms'] is not None else '-':>6} ms"
        )
    return lines
