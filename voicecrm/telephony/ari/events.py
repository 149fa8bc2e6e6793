"""ARI events as frozen dataclasses: `parse_event` reads one events-socket message.

Only the events a call acts on get a class (section 4 of
../shared/reference/asterisk-ari.md); every other `type` becomes `Unknown`,
which the reference says must be tolerated, and fields Asterisk adds in newer
releases are ignored. A message that cannot be read at all (not JSON, no
`type`, a known type without its channel) raises `MalformedEvent`, so the
socket can log it and go on rather than hand the call half an event.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from voicecrm.telephony.ari.client import Channel, LiveRecording, Playback
from voicecrm.telephony.ari.errors import AriProtocolError, MalformedEvent


@dataclass(frozen=True, kw_only=True)
class _Base:
    application: str  # which app the event is for: filter on it (Local channels leak others')
    timestamp: str  # ISO-8601 with offset, as Asterisk wrote it


@dataclass(frozen=True, kw_only=True)
class _OnChannel(_Base):
    channel: Channel


@dataclass(frozen=True, kw_only=True)
class StasisStart(_OnChannel):
    """A channel entered the application: an inbound call, or an answered originate."""

    args: tuple[str, ...]  # from Stasis(app,arg1,...) or appArgs
    replace_channel: Channel | None = None


@dataclass(frozen=True, kw_only=True)
class StasisEnd(_OnChannel):
    """The channel left the application (hangup, continue, move): the call's end here."""


@dataclass(frozen=True, kw_only=True)
class ChannelStateChange(_OnChannel):
    """`channel.state` is the new state (Ringing, Up, ...)."""


@dataclass(frozen=True, kw_only=True)
class ChannelDtmfReceived(_OnChannel):
    digit: str  # 0-9, A-E, #, *; sent when the key is released
    duration_ms: int


@dataclass(frozen=True, kw_only=True)
class ChannelHangupRequest(_OnChannel):
    cause: int  # Q.850
    soft: bool = False


@dataclass(frozen=True, kw_only=True)
class ChannelDestroyed(_OnChannel):
    cause: int  # Q.850: 16 normal, 17 busy, 19 no answer, 21 rejected, 34 congestion
    cause_txt: str


@dataclass(frozen=True, kw_only=True)
class ChannelTalkingStarted(_OnChannel):
    """Needs TALK_DETECT(set) on the channel."""


@dataclass(frozen=True, kw_only=True)
class ChannelTalkingFinished(_OnChannel):
    duration: int  # ms of talking


@dataclass(frozen=True, kw_only=True)
class PlaybackStarted(_Base):
    playback: Playback


@dataclass(frozen=True, kw_only=True)
class PlaybackFinished(_Base):
    playback: Playback


@dataclass(frozen=True, kw_only=True)
class RecordingStarted(_Base):
    recording: LiveRecording


@dataclass(frozen=True, kw_only=True)
class RecordingFinished(_Base):
    recording: LiveRecording


@dataclass(frozen=True, kw_only=True)
class RecordingFailed(_Base):
    """`recording.cause` says why."""

    recording: LiveRecording


@dataclass(frozen=True, kw_only=True)
class Dial(_Base):
    """Progress of a dial: `dialstatus` is empty at first, then RINGING, ..., and
    finally ANSWER, BUSY, NOANSWER, CANCEL, CONGESTION or CHANUNAVAIL."""

    peer: Channel
    dialstatus: str
    caller: Channel | None = None
    dialstring: str = ""


@dataclass(frozen=True, kw_only=True)
class Unknown(_Base):
    """Any other event, kept whole for whoever wants it."""

    type: str
    data: Mapping[str, Any]


Event = (
    StasisStart
    | StasisEnd
    | ChannelStateChange
    | ChannelDtmfReceived
    | ChannelHangupRequest
    | ChannelDestroyed
    | ChannelTalkingStarted
    | ChannelTalkingFinished
    | PlaybackStarted
    | PlaybackFinished
    | RecordingStarted
    | RecordingFinished
    | RecordingFailed
    | Dial
    | Unknown
)


def parse_event(message: str | bytes | Mapping[str, Any]) -> Event:
    """One events-socket message (its JSON text, or the decoded object) as an Event."""
    if isinstance(message, str | bytes):
        try:
            data: object = json.loads(message)
        except ValueError:
            raise MalformedEvent("ARI event is not JSON") from None
    else:
        data = message
    if not isinstance(data, Mapping):
        raise MalformedEvent("ARI event is not a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str) or not kind:
        raise MalformedEvent("ARI event has no type")
    base = {
        "application": _text(data, "application", kind),
        "timestamp": _text(data, "timestamp", kind),
    }
    reader = _READERS.get(kind)
    if reader is None:
        return Unknown(type=kind, data=data, **base)
    try:
        return reader(data, base)
    except AriProtocolError as error:
        raise MalformedEvent(f"{kind}: {error.detail}") from None


def _text(data: Mapping[str, Any], key: str, kind: str, default: str = "") -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise MalformedEvent(f"{kind}: {key!r} is not a string")
    return value


def _number(data: Mapping[str, Any], key: str, kind: str) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedEvent(f"{kind}: {key!r} is not an integer")
    return value


def _channel(data: Mapping[str, Any], key: str = "channel") -> Channel:
    if key not in data:
        raise AriProtocolError(f"no {key!r}")
    return Channel.from_json(data[key])


def _stasis_start(data: Mapping[str, Any], base: dict[str, str]) -> Event:
    args = data.get("args") or []
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise AriProtocolError("'args' is not a list of strings")
    replaced = data.get("replace_channel")
    return StasisStart(
        channel=_channel(data),
        args=tuple(args),
        replace_channel=None if replaced is None else Channel.from_json(replaced),
        **base,
    )


def _dial(data: Mapping[str, Any], base: dict[str, str]) -> Event:
    caller = data.get("caller")
    return Dial(
        peer=_channel(data, "peer"),
        dialstatus=_text(data, "dialstatus", "Dial"),
        caller=None if caller is None else Channel.from_json(caller),
        dialstring=_text(data, "dialstring", "Dial"),
        **base,
    )


def _playback(data: Mapping[str, Any]) -> Playback:
    if "playback" not in data:
        raise AriProtocolError("no 'playback'")
    return Playback.from_json(data["playback"])


def _recording(data: Mapping[str, Any]) -> LiveRecording:
    if "recording" not in data:
        raise AriProtocolError("no 'recording'")
    return LiveRecording.from_json(data["recording"])


_Reader = Callable[[Mapping[str, Any], dict[str, str]], Event]

_READERS: dict[str, _Reader] = {
    "StasisStart": _stasis_start,
    "StasisEnd": lambda d, b: StasisEnd(channel=_channel(d), **b),
    "ChannelStateChange": lambda d, b: ChannelStateChange(channel=_channel(d), **b),
    "ChannelDtmfReceived": lambda d, b: ChannelDtmfReceived(
        channel=_channel(d),
        digit=_text(d, "digit", "ChannelDtmfReceived"),
        duration_ms=_number(d, "duration_ms", "ChannelDtmfReceived"),
        **b,
    ),
    "ChannelHangupRequest": lambda d, b: ChannelHangupRequest(
        channel=_channel(d),
        cause=_number(d, "cause", "ChannelHangupRequest"),
        soft=bool(d.get("soft", False)),
        **b,
    ),
    "ChannelDestroyed": lambda d, b: ChannelDestroyed(
        channel=_channel(d),
        cause=_number(d, "cause", "ChannelDestroyed"),
        cause_txt=_text(d, "cause_txt", "ChannelDestroyed"),
        **b,
    ),
    "ChannelTalkingStarted": lambda d, b: ChannelTalkingStarted(channel=_channel(d), **b),
    "ChannelTalkingFinished": lambda d, b: ChannelTalkingFinished(
        channel=_channel(d), duration=_number(d, "duration", "ChannelTalkingFinished"), **b
    ),
    "PlaybackStarted": lambda d, b: PlaybackStarted(playback=_playback(d), **b),
    "PlaybackFinished": lambda d, b: PlaybackFinished(playback=_playback(d), **b),
    "RecordingStarted": lambda d, b: RecordingStarted(recording=_recording(d), **b),
    "RecordingFinished": lambda d, b: RecordingFinished(recording=_recording(d), **b),
    "RecordingFailed": lambda d, b: RecordingFailed(recording=_recording(d), **b),
    "Dial": _dial,
}
