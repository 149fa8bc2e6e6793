"""Voice activity detection on 20 ms frames of 8 kHz 16-bit PCM.

WebRTC's detector (the maintained `webrtcvad-wheels` build) classifies a frame
in microseconds, in C, which is what lets one core watch hundreds of calls. A
level floor in front of it keeps line hiss and comfort noise, which the
detector sometimes calls speech at its gentler settings, from counting.
"""

from __future__ import annotations

from typing import Protocol

import webrtcvad

from voicecrm.audio.codec import rms
from voicecrm.audio.frames import SAMPLE_RATE


class VoiceActivityDetector(Protocol):
    def is_speech(self, pcm_frame: bytes) -> bool:
        """Whether one 20 ms frame of 8 kHz 16-bit PCM holds speech."""
        ...


class WebRtcVad:
    """`aggressiveness` 0 (lets most sound through) to 3 (only clear speech)."""

    __slots__ = ("_min_rms", "_vad")

    def __init__(self, aggressiveness: int = 2, *, min_rms: int = 150) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError("VAD aggressiveness is 0, 1, 2 or 3")
        self._vad = webrtcvad.Vad(aggressiveness)
        self._min_rms = min_rms

    def is_speech(self, pcm_frame: bytes) -> bool:
        if self._min_rms and rms(pcm_frame) < self._min_rms:
            return False
        return bool(self._vad.is_speech(pcm_frame, SAMPLE_RATE))
