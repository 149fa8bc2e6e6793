"""Tests of the speech providers, on real speech.

The offline voice (espeak-ng) renders the audio the other tests listen to, and
the recogniser is measured on recordings in tests/fixtures/audio (see the
README there). What the helpers below share: finding espeak-ng (CI must have it;
`tests/run.sh` installs it), reading the fixtures, and an honest word error rate.
"""

from __future__ import annotations

import os
import re
import shutil
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voicecrm.voice.ports import PcmAudio

AUDIO_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "audio"


def require_espeak() -> None:
    """Skip without espeak-ng locally; under CI its absence is a failure, not a skip."""
    if shutil.which("espeak-ng") is None:
        if os.environ.get("CI"):
            pytest.fail("espeak-ng is not installed: CI must run the speech tests")
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")


def read_wav(name: str) -> PcmAudio:
    """A fixture recording: mono 16-bit WAV, at whatever rate it was made."""
    with wave.open(str(AUDIO_FIXTURES / f"{name}.wav"), "rb") as reader:
        assert reader.getnchannels() == 1 and reader.getsampwidth() == 2
        return PcmAudio(reader.readframes(reader.getnframes()), reader.getframerate())


async def collect(stream: AsyncIterator[PcmAudio]) -> list[PcmAudio]:
    return [chunk async for chunk in stream]


def joined(chunks: list[PcmAudio]) -> PcmAudio:
    """The chunks of one synthesis as one piece of audio (they share one rate)."""
    rates = {chunk.sample_rate for chunk in chunks}
    assert len(rates) == 1, f"chunks at several sample rates: {rates}"
    return PcmAudio(b"".join(chunk.pcm for chunk in chunks), rates.pop())


def words(text: str) -> list[str]:
    """Lower-case words without punctuation: "Smith." and "smith" are the same word."""
    return re.findall(r"[a-z0-9']+", text.lower())


def word_errors(reference: str, hypothesis: str) -> int:
    """Substitutions + deletions + insertions turning `reference` into `hypothesis`
    (word-level Levenshtein distance), the numerator of the word error rate."""
    ref, hyp = words(reference), words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        current = [i]
        for j, hyp_word in enumerate(hyp, start=1):
            current.append(
                min(
                    previous[j] + 1,  # deletion
                    current[j - 1] + 1,  # insertion
                    previous[j - 1] + (ref_word != hyp_word),  # substitution or match
                )
            )
        previous = current
    return previous[-1]
