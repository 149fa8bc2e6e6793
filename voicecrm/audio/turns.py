"""Turn taking: when the caller starts talking, and when they have finished.

A small state machine fed one frame at a time with the VAD's verdict. Speech
*starts* after `start_ms` of consecutive voiced audio (the moment to stop
talking over the caller: barge-in); an utterance *ends* after `end_silence_ms`
of silence, or at `max_utterance_seconds`. A start that never reaches
`min_speech_ms` of voiced audio was a cough or a click and is dropped. The
audio just before the start (`preroll_ms`) is kept, so the recogniser hears
the first syllable whole.

Everything is counted in frames of audio, not wall-clock time: the carrier
sends frames at real time, and tests can feed them faster.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from voicecrm.audio.frames import FRAME_MS, frames_for


@dataclass(frozen=True, slots=True)
class TurnSettings:
    start_ms: int = 40
    end_silence_ms: int = 700
    min_speech_ms: int = 120
    preroll_ms: int = 200
    max_utterance_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.start_ms < FRAME_MS or self.end_silence_ms < FRAME_MS:
            raise ValueError(f"turn thresholds must be at least one frame ({FRAME_MS} ms)")
        if self.max_utterance_seconds <= 0 or self.min_speech_ms < 0 or self.preroll_ms < 0:
            raise ValueError("turn limits must be positive")


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller began talking; `frame` counts frames since the line opened."""

    frame: int


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """A finished utterance: its PCM (8 kHz, 16-bit), with the preroll in front."""

    pcm: bytes
    start_frame: int
    last_voiced_frame: int
    end_frame: int
    voiced_frames: int


@dataclass(frozen=True, slots=True)
class SpeechDiscarded:
    """What started as speech was too short to be words."""

    start_frame: int


TurnEvent = SpeechStarted | SpeechEnded | SpeechDiscarded


class TurnDetector:
    __slots__ = (
        "_end_frames",
        "_frame",
        "_last_voiced",
        "_max_frames",
        "_min_voiced",
        "_preroll",
        "_run",
        "_silent_run",
        "_start",
        "_start_frames",
        "_utterance",
        "_voiced",
    )

    def __init__(self, settings: TurnSettings | None = None) -> None:
        s = settings or TurnSettings()
        self._start_frames = frames_for(s.start_ms)
        self._end_frames = frames_for(s.end_silence_ms)
        self._min_voiced = frames_for(s.min_speech_ms)
        self._max_frames = frames_for(s.max_utterance_seconds * 1000)
        self._preroll: deque[bytes] = deque(maxlen=frames_for(s.preroll_ms) + self._start_frames)
        self._frame = -1
        self._run = 0  # consecutive voiced frames while idle
        self._start: int | None = None  # frame where the current utterance began
        self._utterance: list[bytes] = []
        self._voiced = 0
        self._silent_run = 0
        self._last_voiced = -1

    @property
    def in_speech(self) -> bool:
        return self._start is not None

    @property
    def frame(self) -> int:
        """The index of the last frame fed."""
        return self._frame

    def feed(self, pcm_frame: bytes, voiced: bool) -> TurnEvent | None:
        self._frame += 1
        if self._start is None:
            self._preroll.append(pcm_frame)
            if not voiced:
                self._run = 0
                return None
            self._run += 1
            if self._run < self._start_frames:
                return None
            start = self._frame - self._run + 1
            self._start = start
            self._utterance = list(self._preroll)
            self._preroll.clear()
            self._voiced = self._run
            self._silent_run = 0
            self._last_voiced = self._frame
            self._run = 0
            return SpeechStarted(frame=start)

        self._utterance.append(pcm_frame)
        if voiced:
            self._voiced += 1
            self._silent_run = 0
            self._last_voiced = self._frame
        else:
            self._silent_run += 1
        too_long = self._frame - self._start + 1 >= self._max_frames
        if self._silent_run < self._end_frames and not too_long:
            return None
        return self._finish()

    def _finish(self) -> TurnEvent:
        start = self._start
        assert start is not None
        utterance, self._utterance = self._utterance, []
        self._start = None
        voiced, self._voiced = self._voiced, 0
        self._silent_run = 0
        if voiced < self._min_voiced:
            return SpeechDiscarded(start_frame=start)
        return SpeechEnded(
            pcm=b"".join(utterance),
            start_frame=start,
            last_voiced_frame=self._last_voiced,
            end_frame=self._frame,
            voiced_frames=voiced,
        )

    def reset(self) -> None:
        """Forget any utterance in progress (the call moved on without it)."""
        self._utterance = []
        self._start = None
        self._voiced = self._silent_run = self._run = 0
        self._preroll.clear()
