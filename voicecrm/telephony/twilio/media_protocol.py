"""The Media Streams WebSocket messages, parsed and built: pure, no I/O.

Every message is a JSON text frame with an `event` discriminator. Twilio adds
fields over time, so parsing ignores what it does not know; a message that is
not JSON or lacks what its event needs is a `MediaProtocolError`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from voicecrm.errors import VoiceCRMError


class MediaProtocolError(VoiceCRMError):
    title = "Bad Media Streams message"


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str


@dataclass(frozen=True, slots=True)
class Start:
    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: dict[str, str] = field(default_factory=dict)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000


@dataclass(frozen=True, slots=True)
class MediaChunk:
    payload: bytes
    track: str = "inbound"


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    digit: str


@dataclass(frozen=True, slots=True)
class MarkReached:
    name: str


@dataclass(frozen=True, slots=True)
class Stopped:
    call_sid: str | None


@dataclass(frozen=True, slots=True)
class Unknown:
    event: str


InboundMessage = Connected | Start | MediaChunk | DtmfDigit | MarkReached | Stopped | Unknown


def parse(text: str) -> InboundMessage:
    try:
        message = json.loads(text)
    except ValueError as err:
        raise MediaProtocolError(f"not JSON: {err}") from err
    if not isinstance(message, dict) or not isinstance(message.get("event"), str):
        raise MediaProtocolError("a message must be an object with an 'event'")
    event: str = message["event"]
    try:
        if event == "media":
            media = message["media"]
            return MediaChunk(
                payload=base64.b64decode(media["payload"], validate=True),
                track=str(media.get("track", "inbound")),
            )
        if event == "start":
            start: dict[str, Any] = message["start"]
            media_format = start.get("mediaFormat") or {}
            params = start.get("customParameters") or {}
            return Start(
                stream_sid=str(start.get("streamSid") or message["streamSid"]),
                call_sid=str(start["callSid"]),
                account_sid=str(start.get("accountSid", "")),
                custom_parameters={str(k): str(v) for k, v in params.items()},
                encoding=str(media_format.get("encoding", "audio/x-mulaw")),
                sample_rate=int(media_format.get("sampleRate", 8000)),
            )
        if event == "dtmf":
            return DtmfDigit(digit=str(message["dtmf"]["digit"]))
        if event == "mark":
            return MarkReached(name=str(message["mark"]["name"]))
        if event == "stop":
            stop = message.get("stop") or {}
            return Stopped(call_sid=stop.get("callSid"))
        if event == "connected":
            return Connected(protocol=str(message.get("protocol", "")))
    except (KeyError, TypeError, ValueError, binascii.Error) as err:
        raise MediaProtocolError(f"a {event!r} message lacks a valid {err}") from err
    return Unknown(event=event)


def media(stream_sid: str, ulaw: bytes) -> str:
    payload = base64.b64encode(ulaw).decode("ascii")
    return json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})


def mark(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": stream_sid})
