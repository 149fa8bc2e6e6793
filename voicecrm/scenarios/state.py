"""A call's progress through its scenario, as plain JSON-able data.

Everything the engine needs to continue a call lives here, not in the
engine object: the step to run next, the variables, retry counters, the
transcript and the agent's conversation. A call whose next webhook reaches
another instance, or whose instance restarted, continues from this.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

STATE_VERSION = 1


@dataclass
class CallState:
    scenario: str
    step: str | None
    call_id: int | None = None
    contact_id: int | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    steps_run: int = 0
    attempts: int = 0
    started_at: str = ""
    transcript: list[dict[str, str]] = field(default_factory=list)
    agent_messages: list[dict[str, Any]] = field(default_factory=list)
    agent_turns: int = 0
    awaiting: str | None = None  # "gather" while a suspended call waits for the caller
    pending_input: dict[str, Any] | None = None
    outcome: str | None = None  # set when the call is over: completed, transferred, error…
    latency: list[dict[str, Any]] = field(default_factory=list)  # one record a caller turn
    version: int = STATE_VERSION

    @property
    def finished(self) -> bool:
        return self.outcome is not None

    def say(self, speaker: str, text: str, at: datetime) -> dict[str, str]:
        line = {"speaker": speaker, "text": text, "at": at.isoformat()}
        self.transcript.append(line)
        return line

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallState:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"call state version {data.get('version')} is not {STATE_VERSION}")
        return cls(**data)
