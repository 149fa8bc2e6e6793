"""Real speech for tests, rendered by espeak-ng, and instant fake providers.

Rendering happens once per phrase per session. Audio comes back as 8 kHz
16-bit PCM, the phone line's rate, so tests feed what a carrier would.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess
import wave
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import numpy as np
import pytest

from voicecrm.audio.resample import resample
from voicecrm.voice.ports import PcmAudio, Transcript

ESPEAK = shutil.which("espeak-ng")
needs_espeak = pytest.mark.skipif(
    ESPEAK is None and not os.environ.get("CI"),
    reason="espeak-ng is not installed (tests/run.sh installs it)",
)


@functools.lru_cache(maxsize=64)
def spoken(text: str, *, rate: int = 8000, words_per_minute: int = 160) -> bytes:
    """`text` as espeak-ng says it, as 16-bit PCM at `rate` Hz, trimmed of leading silence."""
    assert ESPEAK is not None, "espeak-ng is not installed"
    wav = subprocess.run(
        [ESPEAK, "-v", "en-us", "-s", str(words_per_minute), "--stdout", "--", text],
        check=True,
        capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        source_rate = reader.getframerate()
        pcm = reader.readframes(reader.getnframes())
    samples = np.frombuffer(resample(pcm, source_rate, rate), dtype="<i2")
    loud = np.flatnonzero(np.abs(samples) > 300)
    return samples[loud[0] :].tobytes() if loud.size else samples.tobytes()


def tone(seconds: float, *, rate: int = 24000, hz: int = 440, level: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


@dataclass
class InstantSpeech:
    """Text-to-speech that answers at once: a tone lasting `seconds_per_word` a word, at 24 kHz
    in 100 ms chunks, as a streaming provider would send it."""

    seconds_per_word: float = 0.3
    label: str = "instant test voice"
    said: list[str] = field(default_factory=list)
    closed_early: int = 0
    _tones: dict[int, bytes] = field(default_factory=dict)

    async def synthesize(
        self, text: str, *, voice: str | None, language: str
    ) -> AsyncGenerator[PcmAudio, None]:
        self.said.append(text)
        words = max(1, len(text.split()))
        if words not in self._tones:
            self._tones[words] = tone(words * self.seconds_per_word)
        pcm = self._tones[words]
        chunk = 4800  # 100 ms at 24 kHz
        finished = False
        try:
            for i in range(0, len(pcm), chunk):
                yield PcmAudio(pcm[i : i + chunk], 24000)
            finished = True
        finally:
            if not finished:
                self.closed_early += 1


@dataclass
class ScriptedTranscriber:
    """Speech-to-text that answers at once with the next scripted text, keeping the audio."""

    answers: list[str] = field(default_factory=list)
    label: str = "scripted test transcriber"
    heard: list[PcmAudio] = field(default_factory=list)

    async def transcribe(
        self, audio: PcmAudio, *, language: str, hints: tuple[str, ...] = ()
    ) -> Transcript:
        self.heard.append(audio)
        return Transcript(self.answers.pop(0) if self.answers else "", confidence=0.9)
