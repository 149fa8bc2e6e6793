"""Turning a carrier's audio line into the `Call` a scenario runs, with its speech providers.

Every audio adapter (Twilio Media Streams, Asterisk external media, the
simulator's emulated line) does the same three things here: pick the
scenario's speech-to-text and text-to-speech (its own choice, or the
service's default), translate its turn-taking settings, and build the
`VoiceCall`. The providers are built once per process, on first use, and
closed by their owner at shutdown.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from voicecrm.audio.turns import TurnSettings
from voicecrm.scenarios import models as m
from voicecrm.voice.call import TurnObserver, VoiceCall
from voicecrm.voice.line import AudioLine
from voicecrm.voice.ports import (
    CarrierRecorder,
    MediaFetcher,
    RecordingSink,
    SpeechToText,
    TextToSpeech,
)
from voicecrm.voice.settings import VoiceSettings

# (provider name: "default", "openai" or "offline"; model or None) -> provider
SttBuilder = Callable[[str, str | None], SpeechToText]
TtsBuilder = Callable[[str, str | None], TextToSpeech]


@dataclass
class SpeechProviders:
    """The process's speech providers, built lazily and shared by its calls."""

    build_stt: SttBuilder
    build_tts: TtsBuilder
    _stt: dict[tuple[str, str | None], SpeechToText] = field(default_factory=dict)
    _tts: dict[tuple[str, str | None], TextToSpeech] = field(default_factory=dict)

    def stt(self, provider: str = "default", model: str | None = None) -> SpeechToText:
        key = (provider, model)
        if key not in self._stt:
            self._stt[key] = self.build_stt(provider, model)
        return self._stt[key]

    def tts(self, provider: str = "default", model: str | None = None) -> TextToSpeech:
        key = (provider, model)
        if key not in self._tts:
            self._tts[key] = self.build_tts(provider, model)
        return self._tts[key]

    async def aclose(self) -> None:
        providers: list[object] = [*self._stt.values(), *self._tts.values()]
        self._stt.clear()
        self._tts.clear()
        for provider in providers:
            close = getattr(provider, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    result = close()
                    if inspect.isawaitable(result):
                        await result


def voice_settings(speech: m.SpeechSettings) -> VoiceSettings:
    turns = speech.turn_taking
    return VoiceSettings(
        turns=TurnSettings(
            start_ms=turns.start_ms,
            end_silence_ms=turns.end_silence_ms,
            min_speech_ms=turns.min_speech_ms,
            max_utterance_seconds=turns.max_utterance_seconds,
        ),
        vad_aggressiveness=turns.vad_aggressiveness,
        barge_in=turns.barge_in,
    )


def voice_call(
    line: AudioLine,
    scenario: m.Scenario,
    providers: SpeechProviders,
    *,
    on_turn: TurnObserver | None = None,
    recordings: RecordingSink | None = None,
    recorder: CarrierRecorder | None = None,
    media: MediaFetcher | None = None,
) -> VoiceCall:
    """The call a scenario runs on this line; raises `SpeechUnavailable` with the reason
    when the scenario's providers cannot be had (say, no espeak-ng installed)."""
    speech = scenario.settings.speech
    return VoiceCall(
        line,
        stt=providers.stt(speech.stt, speech.stt_model),
        tts=providers.tts(speech.tts, speech.tts_model),
        settings=voice_settings(speech),
        voice=scenario.settings.voice,
        language=scenario.settings.language,
        on_turn=on_turn,
        recordings=recordings,
        recorder=recorder,
        media=media,
    )
