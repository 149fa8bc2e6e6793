"""The channel-agnostic call: what the scenario engine drives and every carrier implements.

Twilio (webhooks and Media Streams), Asterisk (ARI) and the terminal simulator
each provide a `Call`; the scenario engine knows nothing else about them.
"""

from voicecrm.calls.interface import (
    Call,
    CallEnded,
    CallInfo,
    CallSuspended,
    Direction,
    GatherResult,
    InputKind,
    Recording,
    TransferOutcome,
)

__all__ = [
    "Call",
    "CallEnded",
    "CallInfo",
    "CallSuspended",
    "Direction",
    "GatherResult",
    "InputKind",
    "Recording",
    "TransferOutcome",
]
