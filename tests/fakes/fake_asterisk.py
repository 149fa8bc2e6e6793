"""A small Asterisk ARI on loopback: the REST calls voicecrm uses and the events socket.

Shapes follow ../shared/reference/asterisk-ari.md: everything lives under
`/ari`, HTTP Basic auth (or `api_key=user:pass`) is checked (401
`{"message": "Authentication required"}` otherwise), errors are JSON
`{"message": ...}` with Asterisk's statuses: 404 for an unknown channel,
bridge, playback or recording, 409 for a channel not in Stasis, a duplicate
id or a recording name in use, 400 for a missing parameter, 422 for an unknown
recording format or a bridge member that is not there. Events are the JSON
Asterisk sends, with `type`, `application`, `timestamp`, `asterisk_id`.

Channels, bridges, playbacks and recordings live in memory. A test drives the
far end with `inject_call` (StasisStart for a new caller), `press` (DTMF),
`hang_up` (ChannelHangupRequest, StasisEnd, ChannelDestroyed),
`finish_playback`, `emit` (any event), and `drop_event_sockets` (to test
reconnection); `requests` records every REST request as received, and
`fail_next` makes the next one fail with any status, and `wait_request`
waits for one to arrive (`wait_until` for any condition on the fake's state).

Originate (`POST /channels` with `app`) behaves as the reference's section 4
says: the application is subscribed to the new channel at once, progress
(`Dial` RINGING, `ChannelStateChange` Ringing) comes first, and StasisStart
with the `appArgs` only on answer; a channel never answered ends with
`ChannelDestroyed` and no StasisStart. `dial_outcome` says what the dialled
phone does: "answer" at once, "busy" (Dial BUSY, ChannelDestroyed cause 17),
"congestion" (Dial CONGESTION, cause 34), "noanswer" (Dial RINGING then
NOANSWER, cause 19), or "ring" until hung up (or until `answer_originated`);
`unanswered_cause` replaces those causes (0, as a Local channel may report).

A playback of an http(s) URL is fetched at once, as Asterisk's HTTP media cache
does (`fetched_media` keeps what came back), and finishes as soon as it has:
`done`, or `failed` when the fetch did not succeed.

Recording (`POST /channels/{id}/record`, refused with 409 while the channel is
in a bridge) answers the LiveRecording `queued`, then sends RecordingStarted;
the message ends, with RecordingFinished and a stored WAV file of
`voicemail_audio` (served at `/recordings/stored/{name}/file`, deleted with
`DELETE /recordings/stored/{name}`), when the test presses the finishing key
(`press`: the ChannelDtmfReceived comes first, as Asterisk reports every key),
calls `finish_recording`, stops it over ARI, or hangs the caller up (the partial
message is kept, and its RecordingFinished comes before the StasisEnd).
`fail_request` makes the next request to one path fail.

An RTP ExternalMedia channel comes with a small RTP peer (`RtpPeer`): a UDP
socket that, as Asterisk does, streams 20 ms PCMU frames to `external_host`
(the caller, scripted by `caller_script`: silence, audio, waits for the
service's speech, and `Quiet` stretches with no packets at all, as from a caller
whose side makes no frames) and records what comes back, from any address (the
one Asterisk announced in UNICASTRTP_LOCAL_ADDRESS/PORT, before it sent anything).
Hanging the channel up stops it. As on a real Asterisk (22.11), the
ExternalMedia answer shows the channel `Down` (it is `Up` by its StasisStart).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import wave
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import BasicAuth, WSCloseCode, web
from aiohttp.test_utils import TestServer

from voicecrm.audio.codec import pcm16_to_ulaw, rms, ulaw_to_pcm16
from voicecrm.telephony.rtp import packet as rtp

USERNAME = "voicecrm"
PASSWORD = "ari-test-secret"
APP = "voicecrm"
ASTERISK_ID = "02:42:ac:11:00:02"
RECORDING_FORMATS = frozenset({"wav", "wav16", "gsm", "ulaw", "alaw", "sln", "sln16"})
HANGUP_CAUSES = {
    "normal": 16,
    "busy": 17,
    "no_answer": 19,
    "rejected": 21,
    "congestion": 34,
}

Json = dict[str, Any]
BODY = web.RequestKey("body", object)  # the decoded JSON body, read once by the middleware


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the /ari prefix, e.g. /channels/1700000000.1/answer
    query: Mapping[str, str]
    body: Any  # the decoded JSON body, or None


class AriFailure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def timestamp() -> str:
    """Asterisk's form: 2014-05-20T13:15:27.131-0500."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+0000"


# --- the media: an RTP peer per ExternalMedia channel ------------------------------------

FRAME = 0.02
FRAME_BYTES = 160
SILENCE = b"\xff" * FRAME_BYTES  # mu-law digital silence
VOICED_RMS = 500


@dataclass(frozen=True)
class WaitForSpeech:
    """Send silence until the service has sent voiced audio."""


@dataclass(frozen=True)
class WaitForQuiet:
    """Send silence until the service has spoken and then been quiet for `frames` frames."""

    frames: int = 15


@dataclass(frozen=True)
class Quiet:
    """Send nothing at all for `seconds` (None: for good), as a real Asterisk does while
    the caller's side makes no frames (a Local channel in `Wait()`, silence suppression):
    it forwards only the frames it gets, and starts no stream of its own."""

    seconds: float | None = None


# bytes: 16-bit PCM at 8 kHz said by the caller; float: seconds of silence.
CallerPart = bytes | float | WaitForSpeech | WaitForQuiet | Quiet


def voiced(payload: bytes) -> bool:
    return rms(ulaw_to_pcm16(payload)) > VOICED_RMS


class RtpPeer(asyncio.DatagramProtocol):
    """Asterisk's end of an ExternalMedia channel: the caller's audio out, ours recorded."""

    def __init__(self, remote: tuple[str, int], script: Sequence[CallerPart]) -> None:
        self.remote = remote
        self.script = list(script)
        self.received: list[bytes] = []  # payloads the service sent, in order
        self.voiced_frames = 0
        self.quiet_run = 0  # frames since the service's last voiced one
        self.heard_speech = asyncio.Event()
        self.script_done = asyncio.Event()
        self.frames_sent = 0
        self._sequence = 4000
        self._timestamp = 160_000
        self._transport: asyncio.DatagramTransport | None = None
        self._sender: asyncio.Task[None] | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    async def start(self) -> RtpPeer:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self._sender = asyncio.create_task(self._send_script(), name="fake-asterisk-rtp")
        return self

    async def aclose(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            packet = rtp.parse(data)
        except rtp.RtpError:
            return
        self.received.append(packet.payload)
        if voiced(packet.payload):
            self.voiced_frames += 1
            self.quiet_run = 0
            self.heard_speech.set()
        else:
            self.quiet_run += 1

    def _frames(self, pcm: bytes) -> list[bytes]:
        ulaw = pcm16_to_ulaw(pcm)
        ulaw += SILENCE[: -len(ulaw) % FRAME_BYTES]
        return [ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)]

    async def _send_script(self) -> None:
        """Paced at real time on an absolute schedule, as Asterisk's 20 ms frames come."""
        loop = asyncio.get_running_loop()
        slot = loop.time()

        async def send(payload: bytes) -> None:
            nonlocal slot
            delay = slot - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # real-time pacing of the caller's stream
            packet = rtp.RtpPacket(rtp.PCMU, self._sequence, self._timestamp, 0xA57E, payload)
            if self._transport is not None:
                self._transport.sendto(packet.to_bytes(), self.remote)
            self._sequence = rtp.sequence_add(self._sequence, 1)
            self._timestamp = rtp.timestamp_add(self._timestamp, FRAME_BYTES)
            self.frames_sent += 1
            slot += FRAME

        for part in self.script:
            if isinstance(part, bytes):
                for frame in self._frames(part):
                    await send(frame)
            elif isinstance(part, float | int):
                for _ in range(round(part / FRAME)):
                    await send(SILENCE)
            elif isinstance(part, Quiet):
                if part.seconds is None:
                    await asyncio.Event().wait()  # until the channel is hung up
                else:
                    await asyncio.sleep(part.seconds)
                slot = loop.time()
            elif isinstance(part, WaitForSpeech):
                while not self.heard_speech.is_set():
                    await send(SILENCE)
            else:
                while not (self.voiced_frames and self.quiet_run >= part.frames):
                    await send(SILENCE)
        self.script_done.set()
        while True:  # a caller's side that makes frames streams while the channel lives
            await send(SILENCE)


class FakeAsterisk:
    def __init__(self, username: str = USERNAME, password: str = PASSWORD) -> None:
        self.username = username
        self.password = password
        self.base_url = ""  # http://127.0.0.1:PORT, set by the fixture
        self.channels: dict[str, Json] = {}
        self.in_stasis: dict[str, str] = {}  # channel id -> application
        self.subscribed: dict[str, str] = {}  # originated, not yet in Stasis -> application
        self.originate_args: dict[str, list[str]] = {}  # originated channel id -> appArgs
        self.dial_outcome = "answer"  # what the next originated channel does: answer/busy/ring
        # The cause an unanswered originated channel is destroyed with; None: the Q.850 one
        # (17 busy, 19 no answer). Through a Local channel Asterisk may give 0 instead.
        self.unanswered_cause: int | None = None
        self.variables: dict[str, dict[str, str]] = {}
        self.bridges: dict[str, Json] = {}
        self.playbacks: dict[str, Json] = {}
        # http(s) media played, as Asterisk's HTTP media cache fetched it:
        # (channel id, URL, HTTP status, body)
        self.fetched_media: list[tuple[str, str, int, bytes]] = []
        self.recordings: dict[str, Json] = {}  # live ones, and finished ones until stored
        self.stored: dict[str, bytes] = {}  # finished recordings' files, by name
        self.voicemail_audio: bytes = b"\x00\x10" * 8000  # 16-bit 8 kHz PCM a message holds
        self.requests: list[Request] = []
        self.failures: deque[AriFailure] = deque()
        self.path_failures: dict[tuple[str, str], AriFailure] = {}
        self.sockets: dict[web.WebSocketResponse, frozenset[str]] = {}
        self.connections = 0  # event sockets ever accepted
        self.events_sent = 0  # events sent on any socket: what a listener has to catch up with
        self.caller_script: list[CallerPart] = [30.0]  # what the next media peer's caller says
        self.media_peers: dict[str, RtpPeer] = {}  # by ExternalMedia channel id, while it lives
        self.peers: list[RtpPeer] = []  # every one ever started
        self._changed = asyncio.Condition()  # a request arrived, a peer started
        self._connected = asyncio.Condition()
        self._ids = itertools.count(1)
        self.app = web.Application(middlewares=[self._middleware])
        self.app.on_shutdown.append(self._close_sockets)
        routes = [
            ("GET", "/ari/events", self._events),
            ("GET", "/ari/asterisk/info", self._info),
            ("GET", "/ari/asterisk/ping", self._ping),
            ("POST", "/ari/channels", self._originate),
            ("POST", "/ari/channels/externalMedia", self._external_media),
            ("GET", "/ari/channels/{id}", self._get_channel),
            ("DELETE", "/ari/channels/{id}", self._hangup),
            ("POST", "/ari/channels/{id}/answer", self._answer),
            ("POST", "/ari/channels/{id}/play", self._play),
            ("POST", "/ari/channels/{id}/play/{playback}", self._play),
            ("POST", "/ari/channels/{id}/record", self._record),
            ("POST", "/ari/channels/{id}/dtmf", self._dtmf),
            ("POST", "/ari/channels/{id}/continue", self._continue),
            ("POST", "/ari/channels/{id}/redirect", self._redirect),
            ("GET", "/ari/channels/{id}/variable", self._get_variable),
            ("POST", "/ari/channels/{id}/variable", self._set_variable),
            ("DELETE", "/ari/playbacks/{id}", self._stop_playback),
            ("POST", "/ari/recordings/live/{name}/stop", self._stop_recording),
            ("GET", "/ari/recordings/stored/{name}/file", self._stored_file),
            ("DELETE", "/ari/recordings/stored/{name}", self._delete_stored),
            ("POST", "/ari/bridges", self._create_bridge),
            ("DELETE", "/ari/bridges/{id}", self._destroy_bridge),
            ("POST", "/ari/bridges/{id}/addChannel", self._add_channel),
            ("POST", "/ari/bridges/{id}/removeChannel", self._remove_channel),
        ]
        for method, path, handler in routes:
            self.app.router.add_route(method, path, handler)

    # --- test helpers ----------------------------------------------------------------------

    def fail_next(self, status: int, message: str) -> None:
        self.failures.append(AriFailure(status, message))

    def fail_request(self, method: str, path: str, status: int, message: str) -> None:
        """The next `method` request to `path` (without /ari) fails with `status`."""
        self.path_failures[(method, path)] = AriFailure(status, message)

    def live_recording(self, channel_id: str) -> str | None:
        """The name of the recording running on the channel, if one is."""
        return next(
            (
                name
                for name, recording in self.recordings.items()
                if recording["target_uri"] == f"channel:{channel_id}"
                and recording["state"] == "recording"
            ),
            None,
        )

    async def finish_recording(self, name: str, *, talking: bool = True) -> None:
        """The message ends (silence, the time limit): its file is stored, then
        RecordingFinished."""
        recording = self.recordings[name]
        audio = self.voicemail_audio
        seconds = len(audio) // 16000
        recording.update(
            state="done",
            duration=seconds,
            talking_duration=seconds if talking else 0,
            silence_duration=0 if talking else seconds,
        )
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(8000)
            wav.writeframes(audio)
        self.stored[name] = buffer.getvalue()
        channel_id = str(recording["target_uri"]).removeprefix("channel:")
        await self.emit(
            {
                "type": "RecordingFinished",
                "recording": {k: v for k, v in recording.items() if k != "terminate_on"},
            },
            self.in_stasis.get(channel_id, APP),
        )
        await self._notify()

    async def wait_connected(self, count: int = 1) -> None:
        """Returns once `count` event sockets have ever been accepted (1 = the first)."""
        async with self._connected:
            await self._connected.wait_for(lambda: self.connections >= count)

    async def wait_disconnected(self) -> None:
        """Returns once no events socket is open."""
        async with self._connected:
            await self._connected.wait_for(lambda: not self.sockets)

    async def wait_request(self, method: str, path: str) -> Request:
        """Returns the first request (ever) with this method and path."""

        def found() -> Request | None:
            return next((r for r in self.requests if (r.method, r.path) == (method, path)), None)

        async with self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        request = found()
        assert request is not None
        return request

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Returns once `condition` holds; checked after every request and state change."""
        async with self._changed:
            await self._changed.wait_for(condition)

    async def answer_originated(self, channel_id: str) -> None:
        """The dialled phone picks up: state Up, then StasisStart with the appArgs."""
        channel = self.channels[channel_id]
        application = self.subscribed.pop(channel_id)
        channel["state"] = "Up"
        await self.emit({"type": "ChannelStateChange", "channel": channel}, application)
        self.in_stasis[channel_id] = application
        await self.emit(
            {
                "type": "StasisStart",
                "args": self.originate_args.get(channel_id, []),
                "channel": channel,
            },
            application,
        )
        await self._notify()

    async def wait_peer(self, count: int = 1) -> RtpPeer:
        """Returns the `count`th media peer, once an ExternalMedia request started it."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.peers) >= count)
        return self.peers[count - 1]

    async def vanish(self, channel_id: str) -> None:
        """The channel disappears without a word, as while the events socket is down."""
        self.channels.pop(channel_id, None)
        self.in_stasis.pop(channel_id, None)

    async def close_media(self) -> None:
        for peer in list(self.media_peers.values()):
            await peer.aclose()
        self.media_peers.clear()

    async def drop_event_sockets(self) -> None:
        """Closes every events socket from Asterisk's side, as a restart would."""
        await self._close_sockets(self.app)

    async def emit(self, event: Json, application: str = APP) -> None:
        """Sends an event (type and fields) to the sockets of `application`."""
        message = {
            **event,
            "application": application,
            "timestamp": timestamp(),
            "asterisk_id": ASTERISK_ID,
        }
        for ws, apps in list(self.sockets.items()):
            if application in apps and not ws.closed:
                await ws.send_json(message)
                self.events_sent += 1

    async def inject_call(
        self,
        caller_number: str = "+14155550123",
        exten: str = "+14155550100",
        *,
        caller_name: str = "",
        context: str = "from-trunk",
        args: Sequence[str] = ("inbound",),
        application: str = APP,
        channelvars: Mapping[str, str] | None = None,
    ) -> str:
        """A new inbound call entering Stasis(application, *args); returns its channel id."""
        channel = self._new_channel(
            f"PJSIP/trunk-{next(self._ids):08x}",
            "Ring",
            caller_number=caller_number,
            caller_name=caller_name,
            exten=exten,
            context=context,
            channelvars=channelvars,
        )
        self.in_stasis[channel["id"]] = application
        await self.emit(
            {"type": "StasisStart", "args": list(args), "channel": channel}, application
        )
        return str(channel["id"])

    async def press(self, channel_id: str, digit: str, duration_ms: int = 120) -> None:
        await self._emit_for(
            channel_id,
            {"type": "ChannelDtmfReceived", "digit": digit, "duration_ms": duration_ms},
        )
        name = self.live_recording(channel_id)
        if name is not None and self.recordings[name]["terminate_on"] in (digit, "any"):
            await self.finish_recording(name)

    async def hang_up(self, channel_id: str, cause: int = 16) -> None:
        """The caller hangs up: ChannelHangupRequest, (the end of a recording running on
        the channel, which keeps what it holds,) StasisEnd, ChannelDestroyed."""
        await self._emit_for(channel_id, {"type": "ChannelHangupRequest", "cause": cause})
        name = self.live_recording(channel_id)
        if name is not None:
            await self.finish_recording(name)
        await self._destroy(channel_id, cause)

    async def finish_playback(self, playback_id: str) -> None:
        playback = self.playbacks.pop(playback_id)
        playback["state"] = "done"
        await self._emit_playback("PlaybackFinished", playback)

    # --- channels --------------------------------------------------------------------------

    def _new_channel(
        self,
        name: str,
        state: str,
        *,
        channel_id: str | None = None,
        caller_number: str = "",
        caller_name: str = "",
        exten: str = "s",
        context: str = "default",
        channelvars: Mapping[str, str] | None = None,
    ) -> Json:
        channel_id = channel_id or f"1700000000.{next(self._ids)}"
        channel: Json = {
            "id": channel_id,
            "name": name,
            "state": state,
            "protocol_id": "",
            "caller": {"name": caller_name, "number": caller_number},
            "connected": {"name": "", "number": ""},
            "accountcode": "",
            "dialplan": {
                "context": context,
                "exten": exten,
                "priority": 1,
                "app_name": "Stasis",
                "app_data": APP,
            },
            "creationtime": timestamp(),
            "language": "en",
        }
        if channelvars:
            channel["channelvars"] = dict(channelvars)
        self.channels[channel_id] = channel
        self.variables[channel_id] = dict(channelvars or {})
        return channel

    def _channel(self, request: web.Request, *, stasis: bool = True) -> Json:
        channel = self.channels.get(request.match_info["id"])
        if channel is None:
            raise AriFailure(404, "Channel not found")
        if stasis and channel["id"] not in self.in_stasis:
            raise AriFailure(409, "Channel not in Stasis application")
        return channel

    def _application(self, channel_id: str) -> str:
        return self.in_stasis.get(channel_id) or self.subscribed.get(channel_id) or APP

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _emit_for(self, channel_id: str, event: Json) -> None:
        channel = self.channels[channel_id]
        await self.emit({**event, "channel": channel}, self._application(channel_id))

    async def _destroy(self, channel_id: str, cause: int) -> None:
        channel = self.channels.pop(channel_id, None)
        if channel is None:
            return
        in_stasis = self.in_stasis.pop(channel_id, None)
        application = in_stasis or self.subscribed.pop(channel_id, None) or APP
        peer = self.media_peers.pop(channel_id, None)
        if peer is not None:
            await peer.aclose()
        for bridge in self.bridges.values():
            if channel_id in bridge["channels"]:
                bridge["channels"].remove(channel_id)
        if in_stasis is not None or channel_id not in self.originate_args:
            await self.emit({"type": "StasisEnd", "channel": channel}, application)
        await self.emit(
            {
                "type": "ChannelDestroyed",
                "cause": cause,
                "cause_txt": "Normal Clearing" if cause == 16 else "Other",
                "channel": channel,
            },
            application,
        )
        await self._notify()

    async def _get_channel(self, request: web.Request) -> web.Response:
        return web.json_response(self._channel(request, stasis=False))

    async def _answer(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        if channel["state"] != "Up":
            channel["state"] = "Up"
            await self._emit_for(channel["id"], {"type": "ChannelStateChange"})
        return web.Response(status=204)

    async def _hangup(self, request: web.Request) -> web.Response:
        channel = self._channel(request, stasis=False)
        reason = request.query.get("reason", "normal")
        if reason not in HANGUP_CAUSES and reason != "failure":
            raise AriFailure(400, "Invalid reason for hangup provided")
        await self._destroy(channel["id"], HANGUP_CAUSES.get(reason, 16))
        return web.Response(status=204)

    async def _play(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        media = request.query.get("media", "")
        if not media:
            raise AriFailure(400, "media: Argument required")
        playback_id = (
            request.match_info.get("playback")
            or request.query.get("playbackId")
            or f"pb-{next(self._ids)}"
        )
        if playback_id in self.playbacks:
            raise AriFailure(409, "Playback ID already in use")  # (verify) status
        playback: Json = {
            "id": playback_id,
            "media_uri": media.split(",")[0],
            "target_uri": f"channel:{channel['id']}",
            "language": request.query.get("lang", "en"),
            "state": "playing",
        }
        self.playbacks[playback_id] = playback
        await self._emit_playback("PlaybackStarted", playback)
        if str(playback["media_uri"]).startswith(("http://", "https://")):
            await self._play_fetched(playback)
        return web.json_response(
            playback, status=201, headers={"Location": f"/playback/{playback_id}"}
        )

    async def _play_fetched(self, playback: Json) -> None:
        """An http(s) URL: fetched (the HTTP media cache), then played to its end at once;
        a fetch that fails ends the playback as `failed`."""
        url = str(playback["media_uri"])
        try:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                body = await response.read()
                status = response.status
        except aiohttp.ClientError:
            body, status = b"", 0  # nobody answers there
        channel_id = str(playback["target_uri"]).removeprefix("channel:")
        self.fetched_media.append((channel_id, url, status, body))
        self.playbacks.pop(str(playback["id"]), None)
        playback["state"] = "done" if status == 200 else "failed"
        await self._emit_playback("PlaybackFinished", playback)

    async def _emit_playback(self, kind: str, playback: Json) -> None:
        channel_id = str(playback["target_uri"]).removeprefix("channel:")
        await self.emit({"type": kind, "playback": playback}, self.in_stasis.get(channel_id, APP))

    async def _stop_playback(self, request: web.Request) -> web.Response:
        playback = self.playbacks.pop(request.match_info["id"], None)
        if playback is None:
            raise AriFailure(404, "Playback not found")
        playback["state"] = "done"
        await self._emit_playback("PlaybackFinished", playback)
        return web.Response(status=204)

    async def _record(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        name, fmt = request.query.get("name", ""), request.query.get("format", "")
        if not name or not fmt:
            raise AriFailure(400, "Missing required parameter")
        if fmt not in RECORDING_FORMATS:
            raise AriFailure(422, "Recording format does not exist")
        if any(channel["id"] in bridge["channels"] for bridge in self.bridges.values()):
            raise AriFailure(409, "Channel is in a bridge")
        if_exists = request.query.get("ifExists", "fail")
        if (name in self.recordings or name in self.stored) and if_exists == "fail":
            raise AriFailure(409, "Recording name already in use")
        recording: Json = {
            "name": name,
            "format": fmt,
            "target_uri": f"channel:{channel['id']}",
            "state": "queued",
        }
        self.recordings[name] = {**recording, "terminate_on": request.query.get("terminateOn")}
        answer = web.json_response(recording, status=201)
        self.recordings[name]["state"] = "recording"
        started = {**recording, "state": "recording"}
        await self.emit(
            {"type": "RecordingStarted", "recording": started}, self.in_stasis[channel["id"]]
        )
        return answer

    async def _stop_recording(self, request: web.Request) -> web.Response:
        recording = self.recordings.get(request.match_info["name"])
        if recording is None or recording["state"] != "recording":
            raise AriFailure(404, "Recording not found")
        await self.finish_recording(request.match_info["name"])
        return web.Response(status=204)

    async def _stored_file(self, request: web.Request) -> web.Response:
        data = self.stored.get(request.match_info["name"])
        if data is None:
            raise AriFailure(404, "Recording not found")
        return web.Response(body=data, content_type="audio/wav")

    async def _delete_stored(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if self.stored.pop(name, None) is None:
            raise AriFailure(404, "Recording not found")
        self.recordings.pop(name, None)
        return web.Response(status=204)

    async def _dtmf(self, request: web.Request) -> web.Response:
        self._channel(request)
        if not request.query.get("dtmf"):
            raise AriFailure(400, "DTMF is required")
        return web.Response(status=204)

    async def _continue(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        application = self.in_stasis.pop(channel["id"])
        await self.emit({"type": "StasisEnd", "channel": channel}, application)
        return web.Response(status=204)

    async def _redirect(self, request: web.Request) -> web.Response:
        channel = self._channel(request)
        endpoint = request.query.get("endpoint", "")
        if not endpoint:
            raise AriFailure(400, "Required parameter 'endpoint' not provided.")
        if endpoint.split("/")[0] != str(channel["name"]).split("/")[0]:
            raise AriFailure(422, "Endpoint technology does not match channel technology")
        return web.Response(status=204)

    async def _get_variable(self, request: web.Request) -> web.Response:
        channel = self._channel(request, stasis=False)
        name = request.query.get("variable", "")
        if not name:
            raise AriFailure(400, "Variable name is required")
        if name == "CALLERID(num)":
            return web.json_response({"value": channel["caller"]["number"]})
        value = self.variables[channel["id"]].get(name)
        if value is None:
            raise AriFailure(404, "Provided variable was not found")
        return web.json_response({"value": value})

    async def _set_variable(self, request: web.Request) -> web.Response:
        channel = self._channel(request, stasis=False)
        name = request.query.get("variable", "")
        if not name:
            raise AriFailure(400, "Variable name is required")
        self.variables[channel["id"]][name] = request.query.get("value", "")
        return web.Response(status=204)

    async def _originate(self, request: web.Request) -> web.Response:
        endpoint = request.query.get("endpoint", "")
        if not endpoint:
            raise AriFailure(400, "Endpoint must be specified")
        channel_id = request.query.get("channelId")
        if channel_id and channel_id in self.channels:
            raise AriFailure(409, "Channel with given unique ID already exists")
        application = request.query.get("app", "")
        if not application and not request.query.get("extension"):
            raise AriFailure(400, "Application or extension must be specified")
        body = request.get(BODY)
        variables = body.get("variables") if isinstance(body, dict) else None
        channel = self._new_channel(
            f"{endpoint.split('@')[0]}-{next(self._ids):08x}",
            "Down",
            channel_id=channel_id,
            caller_number=request.query.get("callerId", ""),
        )
        self.variables[channel["id"]].update(variables or {})
        answer = web.json_response(channel)
        if not application:
            return answer  # into the dialplan: nothing more this fake models
        new_id = str(channel["id"])
        self.subscribed[new_id] = application
        self.originate_args[new_id] = [a for a in request.query.get("appArgs", "").split(",") if a]
        outcome = self.dial_outcome
        dial: Json = {"type": "Dial", "peer": channel, "dialstring": endpoint}
        cause = self.unanswered_cause
        if outcome in ("busy", "congestion"):
            status = "BUSY" if outcome == "busy" else "CONGESTION"
            await self.emit({**dial, "dialstatus": status}, application)
            await self._destroy(new_id, HANGUP_CAUSES[outcome] if cause is None else cause)
            return answer
        await self.emit({**dial, "dialstatus": "RINGING"}, application)
        channel["state"] = "Ringing"
        await self.emit({"type": "ChannelStateChange", "channel": channel}, application)
        if outcome == "noanswer":
            await self.emit({**dial, "dialstatus": "NOANSWER"}, application)
            await self._destroy(new_id, HANGUP_CAUSES["no_answer"] if cause is None else cause)
            return answer
        if outcome == "answer":
            await self.emit({**dial, "dialstatus": "ANSWER"}, application)
            await self.answer_originated(new_id)
        return answer

    async def _external_media(self, request: web.Request) -> web.Response:
        query = request.query
        for required in ("app", "external_host", "format"):
            if not query.get(required):
                raise AriFailure(400, f"{required} cannot be empty")
        if ":" not in query["external_host"]:
            raise AriFailure(400, "external_host must be <host>:<port>")
        pair = (query.get("encapsulation", "rtp"), query.get("transport", "udp"))
        if pair not in {("rtp", "udp"), ("audiosocket", "tcp"), ("none", "websocket")}:
            raise AriFailure(501, "The encapsulation and/or transport is not supported")
        if pair == ("audiosocket", "tcp") and not query.get("data"):
            raise AriFailure(400, "data can not be empty")
        channel_id = query.get("channelId")
        if channel_id and channel_id in self.channels:
            raise AriFailure(409, "Channel with given unique ID already exists")
        peer: RtpPeer | None = None
        channelvars: dict[str, str] = {}
        if pair[0] == "rtp":
            host, _, port = query["external_host"].rpartition(":")
            peer = await RtpPeer((host, int(port)), self.caller_script).start()
            address, local_port = peer.address
            channelvars = {
                "UNICASTRTP_LOCAL_ADDRESS": address,
                "UNICASTRTP_LOCAL_PORT": str(local_port),
            }
        channel = self._new_channel(
            f"UnicastRTP/{query['external_host']}-{next(self._ids):08x}",
            "Down",
            channel_id=channel_id,
            channelvars=channelvars,
        )
        self.in_stasis[channel["id"]] = query["app"]
        if peer is not None:
            self.media_peers[channel["id"]] = peer
            self.peers.append(peer)
            async with self._changed:
                self._changed.notify_all()
        answer = web.json_response(channel)  # Asterisk answers before it dials: Down
        channel["state"] = "Up"
        await self.emit({"type": "StasisStart", "args": [], "channel": channel}, query["app"])
        return answer

    # --- bridges ---------------------------------------------------------------------------

    def _bridge(self, request: web.Request) -> Json:
        bridge = self.bridges.get(request.match_info["id"])
        if bridge is None:
            raise AriFailure(404, "Bridge not found")
        return bridge

    async def _create_bridge(self, request: web.Request) -> web.Response:
        bridge_id = request.query.get("bridgeId") or f"bridge-{next(self._ids)}"
        kinds = request.query.get("type", "mixing")
        bridge: Json = {
            "id": bridge_id,
            "technology": "simple_bridge",
            "bridge_type": "holding" if "holding" in kinds else "mixing",
            "bridge_class": "stasis",
            "creator": "Stasis",
            "name": request.query.get("name", ""),
            "channels": [],
            "creationtime": timestamp(),
        }
        self.bridges[bridge_id] = bridge
        return web.json_response(bridge)

    async def _destroy_bridge(self, request: web.Request) -> web.Response:
        self._bridge(request)
        del self.bridges[request.match_info["id"]]
        return web.Response(status=204)

    async def _add_channel(self, request: web.Request) -> web.Response:
        bridge = self._bridge(request)
        ids = [i for i in request.query.get("channel", "").split(",") if i]
        if not ids or any(i not in self.channels for i in ids):
            raise AriFailure(400, "Channel not found")
        if any(i not in self.in_stasis for i in ids):
            raise AriFailure(422, "Channel not in Stasis application")
        for other in self.bridges.values():  # a channel is in one bridge at a time
            if other is not bridge:
                other["channels"] = [i for i in other["channels"] if i not in ids]
        bridge["channels"].extend(i for i in ids if i not in bridge["channels"])
        return web.Response(status=204)

    async def _remove_channel(self, request: web.Request) -> web.Response:
        bridge = self._bridge(request)
        ids = [i for i in request.query.get("channel", "").split(",") if i]
        if not ids or any(i not in self.channels for i in ids):
            raise AriFailure(400, "Channel not found")
        if any(i not in bridge["channels"] for i in ids):
            raise AriFailure(422, "Channel not in this bridge")
        for i in ids:
            bridge["channels"].remove(i)
        return web.Response(status=204)

    # --- asterisk and the wire -------------------------------------------------------------

    async def _info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "build": {"os": "Linux", "kernel": "6.1", "machine": "x86_64"},
                "system": {"version": "22.10.1", "entity_id": ASTERISK_ID},
                "config": {"name": "", "default_language": "en"},
                "status": {"startup_time": timestamp(), "last_reload_time": timestamp()},
            }
        )

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"asterisk_id": ASTERISK_ID, "ping": "pong", "timestamp": timestamp()}
        )

    async def _events(self, request: web.Request) -> web.StreamResponse:
        apps = frozenset(a for a in request.query.get("app", "").split(",") if a)
        if not apps:
            raise AriFailure(400, "app: Argument required")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.sockets[ws] = apps
        async with self._connected:
            self.connections += 1
            self._connected.notify_all()
        try:
            async for _ in ws:
                pass  # Asterisk ignores what apps send (bar REST-over-WebSocket)
        finally:
            self.sockets.pop(ws, None)
            async with self._connected:
                self._connected.notify_all()
        return ws

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self.sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY)

    @staticmethod
    async def _body(request: web.Request) -> Any:
        if not request.can_read_body:
            return None
        return await request.json()

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if header:
            try:
                auth = BasicAuth.decode(header)
            except ValueError:
                return False
            return (auth.login, auth.password) == (self.username, self.password)
        return request.query.get("api_key") == f"{self.username}:{self.password}"

    @web.middleware
    async def _middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if not self._authorized(request):
            return web.json_response(
                {"message": "Authentication required"},
                status=401,
                headers={"WWW-Authenticate": 'Basic realm="Asterisk REST Interface"'},
            )
        if request.path != "/ari/events":
            body = request[BODY] = await self._body(request)
            self.requests.append(
                Request(
                    request.method,
                    request.path.removeprefix("/ari"),
                    dict(request.query),
                    body,
                )
            )
            async with self._changed:
                self._changed.notify_all()
            planned = self.path_failures.pop(
                (request.method, request.path.removeprefix("/ari")), None
            )
            if self.failures or planned is not None:
                failure = planned or self.failures.popleft()
                return web.json_response({"message": failure.message}, status=failure.status)
        try:
            return await handler(request)
        except AriFailure as failure:
            return web.json_response({"message": failure.message}, status=failure.status)
        finally:
            await self._notify()  # the state changed: wake `wait_until`


AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]


@pytest.fixture
async def fake_asterisk(aiohttp_server: AiohttpServer) -> AsyncIterator[FakeAsterisk]:
    """A `FakeAsterisk` on 127.0.0.1; `base_url` is its http://host:port."""
    fake = FakeAsterisk()
    server = await aiohttp_server(fake.app)
    fake.base_url = str(server.make_url("")).rstrip("/")
    try:
        yield fake
    finally:
        await fake.close_media()
