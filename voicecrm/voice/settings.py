"""How a voice call listens and speaks: thresholds a scenario may tune."""

from __future__ import annotations

from dataclasses import dataclass, field

from voicecrm.audio.turns import TurnSettings


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    turns: TurnSettings = field(default_factory=TurnSettings)
    vad_aggressiveness: int = 2
    # Stop talking when the caller talks (or presses a key) over the receptionist.
    barge_in: bool = True
    # Seconds of audio to wait for the next key once the caller has started typing.
    digit_timeout: float = 3.0
    # How far synthesis may run ahead of the line, in seconds of audio.
    synthesis_lead_seconds: float = 2.0
    # Speaking rate used to guess how much of an unfinished sentence was heard.
    words_per_second: float = 2.5
