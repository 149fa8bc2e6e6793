"""How long the receptionist took to answer, one caller turn at a time.

A turn starts when the caller's utterance is judged finished and ends with
the first frame of the answer on the line. Between those, the service waits
for providers (speech-to-text, the language model's first sentence,
text-to-speech's first audio) and does its own work; `service_seconds` is the
part that is ours: the total minus the provider waits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class TurnLatency:
    # Monotonic clock readings, in seconds.
    speech_end: float
    transcript_ready: float | None = None
    first_token: float | None = None
    first_audio: float | None = None
    first_frame: float | None = None
    stt_wait: float = 0.0
    llm_wait: float = 0.0
    tts_wait: float = 0.0

    @property
    def complete(self) -> bool:
        return self.first_frame is not None

    @property
    def total_seconds(self) -> float | None:
        return None if self.first_frame is None else self.first_frame - self.speech_end

    @property
    def provider_seconds(self) -> float:
        return self.stt_wait + self.llm_wait + self.tts_wait

    @property
    def service_seconds(self) -> float | None:
        total = self.total_seconds
        return None if total is None else max(0.0, total - self.provider_seconds)

    def as_dict(self) -> dict[str, Any]:
        """Milliseconds after the end of the caller's speech, for the call record."""

        def since(at: float | None) -> float | None:
            return None if at is None else round((at - self.speech_end) * 1000, 1)

        service = self.service_seconds
        return {
            "transcript_ms": since(self.transcript_ready),
            "first_token_ms": since(self.first_token),
            "first_audio_ms": since(self.first_audio),
            "first_frame_ms": since(self.first_frame),
            "stt_ms": round(self.stt_wait * 1000, 1),
            "llm_ms": round(self.llm_wait * 1000, 1),
            "tts_ms": round(self.tts_wait * 1000, 1),
            "service_ms": None if service is None else round(service * 1000, 2),
        }
