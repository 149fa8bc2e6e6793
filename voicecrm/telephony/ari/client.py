"""`AriClient`: the REST half of ARI, typed, on one aiohttp session.

Each method is one ARI request (section 2 and 3 of
../shared/reference/asterisk-ari.md) and returns a frozen dataclass read from
Asterisk's JSON, or None. A refusal becomes the typed error of its status
(`errors.error_for_status`) carrying Asterisk's own message, and a connection
failure or timeout becomes `AriUnavailable`, so callers catch ARI errors only.

Credentials travel as an `Authorization: Basic` header on every request (not
as `api_key` in the URL, which would end up in logs), which also works on a
borrowed session that other code shares. Nothing is retried: a retried
originate could ring someone twice, and a retried play would say it twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp

from voicecrm.telephony.ari.errors import (
    AriError,
    AriProtocolError,
    AriUnavailable,
    error_for_status,
)

REQUEST_TIMEOUT = 10.0  # seconds; ARI answers from memory, so a slow answer means trouble
HANGUP_REASONS = frozenset(
    {
        "normal",
        "busy",
        "congestion",
        "no_answer",
        "timeout",
        "rejected",
        "unallocated",
        "normal_unspecified",
        "number_incomplete",
        "codec_mismatch",
        "interworking",
        "failure",
        "answered_elsewhere",
    }
)
_VARIABLE_MISSING = "Provided variable was not found"  # Asterisk's 404 text for an unset variable

Params = Mapping[str, str | int | bool | None]


def ari_root(base_url: str) -> str:
    """`http://host:8088` (or with an http.conf prefix) → `http://host:8088/ari`;
    a URL already ending in `/ari` is kept."""
    root = base_url.rstrip("/")
    return root if root.endswith("/ari") else f"{root}/ari"


# --- reading Asterisk's JSON -------------------------------------------------------------


def _object(data: object, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise AriProtocolError(f"{what} is not a JSON object")
    return data


def _str(data: Mapping[str, Any], key: str, what: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if isinstance(value, str):
        return value
    if value is None and default is not None:
        return default
    raise AriProtocolError(f"{what} has no string {key!r}")


def _int(data: Mapping[str, Any], key: str, what: str, default: int = 0) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise AriProtocolError(f"{what} has no integer {key!r}")
    try:
        return int(value)
    except ValueError:
        raise AriProtocolError(f"{what} has no integer {key!r}") from None


def _strings(data: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise AriProtocolError(f"{what} has no list of strings {key!r}")
    return tuple(value)


# --- the models ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Channel:
    """An ARI Channel, with the fields a call uses; unknown fields are ignored."""

    id: str
    name: str
    state: str  # Down, Ring, Ringing, Up, ... (reference section 4)
    caller_number: str = ""
    caller_name: str = ""
    connected_number: str = ""
    connected_name: str = ""
    context: str = ""  # dialplan context when the channel entered Stasis
    exten: str = ""  # the dialled extension: which of our numbers was called
    priority: int = 0
    language: str = ""
    creationtime: str = ""
    protocol_id: str = ""  # SIP Call-ID on PJSIP, when Asterisk sends it
    channelvars: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: object) -> Channel:
        obj = _object(data, "channel")
        caller = _object(obj.get("caller") or {}, "channel caller")
        connected = _object(obj.get("connected") or {}, "channel connected")
        dialplan = _object(obj.get("dialplan") or {}, "channel dialplan")
        variables = _object(obj.get("channelvars") or {}, "channel channelvars")
        return cls(
            id=_str(obj, "id", "channel"),
            name=_str(obj, "name", "channel", ""),
            state=_str(obj, "state", "channel", "Unknown"),
            caller_number=_str(caller, "number", "channel caller", ""),
            caller_name=_str(caller, "name", "channel caller", ""),
            connected_number=_str(connected, "number", "channel connected", ""),
            connected_name=_str(connected, "name", "channel connected", ""),
            context=_str(dialplan, "context", "channel dialplan", ""),
            exten=_str(dialplan, "exten", "channel dialplan", ""),
            priority=_int(dialplan, "priority", "channel dialplan"),
            language=_str(obj, "language", "channel", ""),
            creationtime=_str(obj, "creationtime", "channel", ""),
            protocol_id=_str(obj, "protocol_id", "channel", ""),
            channelvars={str(k): "" if v is None else str(v) for k, v in variables.items()},
        )


@dataclass(frozen=True)
class Bridge:
    id: str
    bridge_type: str  # mixing / holding
    technology: str = ""
    name: str = ""
    channels: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: object) -> Bridge:
        obj = _object(data, "bridge")
        return cls(
            id=_str(obj, "id", "bridge"),
            bridge_type=_str(obj, "bridge_type", "bridge", ""),
            technology=_str(obj, "technology", "bridge", ""),
            name=_str(obj, "name", "bridge", ""),
            channels=_strings(obj, "channels", "bridge"),
        )


@dataclass(frozen=True)
class Playback:
    id: str
    media_uri: str
    target_uri: str  # channel:ID or bridge:ID
    state: str  # queued, playing, done (continuing, failed in newer releases)
    language: str = ""

    @classmethod
    def from_json(cls, data: object) -> Playback:
        obj = _object(data, "playback")
        return cls(
            id=_str(obj, "id", "playback"),
            media_uri=_str(obj, "media_uri", "playback", ""),
            target_uri=_str(obj, "target_uri", "playback", ""),
            state=_str(obj, "state", "playback", ""),
            language=_str(obj, "language", "playback", ""),
        )


@dataclass(frozen=True)
class LiveRecording:
    name: str
    format: str
    state: str  # queued, recording, paused, done, failed, canceled
    target_uri: str = ""
    cause: str = ""  # why it failed, when it did
    duration: int = 0  # seconds
    talking_duration: int = 0
    silence_duration: int = 0

    @classmethod
    def from_json(cls, data: object) -> LiveRecording:
        obj = _object(data, "recording")
        return cls(
            name=_str(obj, "name", "recording"),
            format=_str(obj, "format", "recording", ""),
            state=_str(obj, "state", "recording", ""),
            target_uri=_str(obj, "target_uri", "recording", ""),
            cause=_str(obj, "cause", "recording", ""),
            duration=_int(obj, "duration", "recording"),
            talking_duration=_int(obj, "talking_duration", "recording"),
            silence_duration=_int(obj, "silence_duration", "recording"),
        )


@dataclass(frozen=True)
class AsteriskInfo:
    """`GET /asterisk/info`: the version and entity id, plus everything else as sent."""

    version: str
    entity_id: str
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: object) -> AsteriskInfo:
        obj = _object(data, "asterisk info")
        system = _object(obj.get("system") or {}, "asterisk info system")
        return cls(
            version=_str(system, "version", "asterisk info system", ""),
            entity_id=_str(system, "entity_id", "asterisk info system", ""),
            raw=obj,
        )


# --- the client ----------------------------------------------------------------------------


class AriClient:
    """ARI's REST calls for application `app` on the Asterisk at `base_url`.

    Owns its aiohttp session unless one is lent (then `aclose` leaves it open).
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        app: str,
        session: aiohttp.ClientSession | None = None,
        *,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self.root = ari_root(base_url)
        self.app = app
        self._headers = {"Authorization": aiohttp.encode_basic_auth(username, password)}
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the session if this client created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # --- channels --------------------------------------------------------------------------

    async def get_channel(self, channel_id: str) -> Channel:
        return Channel.from_json(await self._request("GET", "channels", channel_id))

    async def answer(self, channel_id: str) -> None:
        await self._request("POST", "channels", channel_id, "answer")

    async def hangup(self, channel_id: str, reason: str = "normal") -> None:
        """Hangs up; `reason` is one of `HANGUP_REASONS` (normal, busy, rejected, ...)."""
        if reason not in HANGUP_REASONS:
            raise ValueError(f"unknown hangup reason {reason!r}")
        await self._request("DELETE", "channels", channel_id, params={"reason": reason})

    async def play(
        self,
        channel_id: str,
        media: str | Sequence[str],
        playback_id: str | None = None,
        *,
        lang: str | None = None,
    ) -> Playback:
        """Plays `media` (`sound:NAME`, `recording:NAME`, `tone:ring`, an http(s) URL;
        several make a playlist). Choosing `playback_id` lets the caller match the
        PlaybackFinished event without racing the response."""
        media_list = media if isinstance(media, str) else ",".join(media)
        segments = ("play", playback_id) if playback_id else ("play",)
        data = await self._request(
            "POST",
            "channels",
            channel_id,
            *segments,
            params={"media": media_list, "lang": lang},
        )
        return Playback.from_json(data)

    async def stop_playback(self, playback_id: str) -> None:
        await self._request("DELETE", "playbacks", playback_id)

    async def record(
        self,
        channel_id: str,
        name: str,
        format: str = "wav",
        *,
        max_duration: int = 0,
        max_silence: int = 0,
        beep: bool = False,
        terminate_on: str = "none",
        if_exists: str = "fail",
    ) -> LiveRecording:
        """Records what the caller says (only audio *from* the channel); 0 = unlimited."""
        data = await self._request(
            "POST",
            "channels",
            channel_id,
            "record",
            params={
                "name": name,
                "format": format,
                "maxDurationSeconds": max_duration,
                "maxSilenceSeconds": max_silence,
                "beep": beep,
                "terminateOn": terminate_on,
                "ifExists": if_exists,
            },
        )
        return LiveRecording.from_json(data)

    async def stop_recording(self, name: str) -> None:
        """Stops a live recording and keeps the file."""
        await self._request("POST", "recordings", "live", name, "stop")

    async def stored_recording_file(self, name: str) -> bytes:
        """The finished recording's file (a WAV for format `wav`), as Asterisk stored it."""
        return await self._request_bytes("GET", "recordings", "stored", name, "file")

    async def delete_stored_recording(self, name: str) -> None:
        await self._request("DELETE", "recordings", "stored", name)

    async def send_dtmf(
        self,
        channel_id: str,
        dtmf: str,
        *,
        between_ms: int | None = None,
        duration_ms: int | None = None,
    ) -> None:
        await self._request(
            "POST",
            "channels",
            channel_id,
            "dtmf",
            params={"dtmf": dtmf, "between": between_ms, "duration": duration_ms},
        )

    async def continue_in_dialplan(
        self,
        channel_id: str,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
        *,
        label: str | None = None,
    ) -> None:
        """Hands the channel back to the dialplan (next priority when nothing is given);
        Asterisk then sends StasisEnd."""
        await self._request(
            "POST",
            "channels",
            channel_id,
            "continue",
            params={
                "context": context,
                "extension": extension,
                "priority": priority,
                "label": label,
            },
        )

    async def redirect(self, channel_id: str, endpoint: str) -> None:
        """Transfers the channel to `endpoint` (same technology as the channel, else 422)."""
        await self._request(
            "POST", "channels", channel_id, "redirect", params={"endpoint": endpoint}
        )

    async def originate(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: Sequence[str] = (),
        caller_id: str | None = None,
        ring_timeout: int = 30,
        channel_id: str | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """Dials `endpoint` (e.g. `PJSIP/trunk/sip:+15551234567@carrier`); the channel
        enters `app` (this client's by default) when answered; `ring_timeout` is in
        seconds (-1 = none). Returns at once, before it rings."""
        data = await self._request(
            "POST",
            "channels",
            params={
                "endpoint": endpoint,
                "app": app or self.app,
                "appArgs": ",".join(app_args) if app_args else None,
                "callerId": caller_id,
                "timeout": ring_timeout,
                "channelId": channel_id,
            },
            body={"variables": dict(variables)} if variables else None,
        )
        return Channel.from_json(data)

    async def external_media(
        self,
        external_host: str,
        format: str = "ulaw",
        *,
        app: str | None = None,
        encapsulation: str = "rtp",
        transport: str = "udp",
        direction: str = "both",
        channel_id: str | None = None,
        data: str | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """Creates a channel whose audio flows to/from `external_host` (`host:port`).

        For RTP the answer's `channelvars` hold UNICASTRTP_LOCAL_ADDRESS/PORT, where
        to send audio back; for AudioSocket, `data` is the connection's UUID. The
        channel enters Stasis only after this returns: wait for its StasisStart
        before bridging it."""
        answer = await self._request(
            "POST",
            "channels",
            "externalMedia",
            params={
                "app": app or self.app,
                "external_host": external_host,
                "format": format,
                "encapsulation": encapsulation,
                "transport": transport,
                "direction": direction,
                "channelId": channel_id,
                "data": data,
            },
            body={"variables": dict(variables)} if variables else None,
        )
        return Channel.from_json(answer)

    async def get_variable(self, channel_id: str, name: str) -> str | None:
        """The variable's value, or None when it is not set (`name` may be a
        function such as `CALLERID(num)`); ChannelGone when the channel is."""
        try:
            data = await self._request(
                "GET", "channels", channel_id, "variable", params={"variable": name}
            )
        except AriError as error:
            if error.status == 404 and error.message == _VARIABLE_MISSING:
                return None
            raise
        return _str(_object(data, "variable"), "value", "variable", "")

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        """Sets a variable, or calls a function: `TALK_DETECT(set)` turns on the
        ChannelTalkingStarted/Finished events."""
        await self._request(
            "POST",
            "channels",
            channel_id,
            "variable",
            params={"variable": name, "value": value},
        )

    # --- bridges ---------------------------------------------------------------------------

    async def create_bridge(
        self,
        type: str = "mixing",
        *,
        bridge_id: str | None = None,
        name: str | None = None,
    ) -> Bridge:
        data = await self._request(
            "POST", "bridges", params={"type": type, "bridgeId": bridge_id, "name": name}
        )
        return Bridge.from_json(data)

    async def add_channel(
        self, bridge_id: str, channel_id: str | Sequence[str], *, role: str | None = None
    ) -> None:
        channels = channel_id if isinstance(channel_id, str) else ",".join(channel_id)
        await self._request(
            "POST",
            "bridges",
            bridge_id,
            "addChannel",
            params={"channel": channels, "role": role},
        )

    async def remove_channel(self, bridge_id: str, channel_id: str | Sequence[str]) -> None:
        channels = channel_id if isinstance(channel_id, str) else ",".join(channel_id)
        await self._request(
            "POST", "bridges", bridge_id, "removeChannel", params={"channel": channels}
        )

    async def destroy_bridge(self, bridge_id: str) -> None:
        await self._request("DELETE", "bridges", bridge_id)

    # --- asterisk --------------------------------------------------------------------------

    async def asterisk_info(self) -> AsteriskInfo:
        return AsteriskInfo.from_json(await self._request("GET", "asterisk", "info"))

    async def ping(self) -> None:
        """A cheap liveness check: raises unless Asterisk answers."""
        await self._request("GET", "asterisk", "ping")

    # --- the wire --------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        *segments: str,
        params: Params | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        """One ARI request: the parsed JSON answer (None for 204), or a typed error."""
        url, content = await self._send(method, segments, params, body)
        text = content.decode("utf-8", errors="replace")
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise AriProtocolError(f"{method} {url} answered with non-JSON") from None

    async def _request_bytes(self, method: str, *segments: str) -> bytes:
        """One ARI request whose answer is a file, not JSON."""
        _, content = await self._send(method, segments, None, None)
        return content

    async def _send(
        self,
        method: str,
        segments: Sequence[str],
        params: Params | None,
        body: Mapping[str, Any] | None,
    ) -> tuple[str, bytes]:
        """The request's URL and answer body; Asterisk's refusals and an unreachable
        Asterisk become typed errors here, once."""
        url = "/".join([self.root, *(quote(segment, safe="") for segment in segments)])
        query = {key: _param(value) for key, value in (params or {}).items() if value is not None}
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.request(
                method,
                url,
                params=query,
                json=body,
                headers=self._headers,
                timeout=self._timeout,
            ) as response:
                content = await response.read()
                status = response.status
                reason = response.reason or ""
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            detail = str(error) or type(error).__name__
            raise AriUnavailable(0, f"{method} {url}: {detail}") from error
        if status >= 400:
            text = content.decode("utf-8", errors="replace")
            raise error_for_status(status, _message(text) or reason)
        return url, content


def _param(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _message(text: str) -> str:
    """Asterisk's `{"message": ...}`, or the body itself when it is something else."""
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()
    if isinstance(data, Mapping) and isinstance(data.get("message"), str):
        return str(data["message"])
    return text.strip()
