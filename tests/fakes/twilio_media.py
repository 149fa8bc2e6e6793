"""Twilio's side of a bidirectional Media Stream, over a real WebSocket, for tests.

It speaks the wire format of `../shared/reference/twilio.md` section 5: it
sends `connected`, `start` (with custom parameters), then one `media` frame
of the caller per tick (silence included, as Twilio does), `dtmf` for keys
and `stop` when the caller hangs up. What the service sends is queued as
Twilio queues it and played one frame per tick; a `mark` is echoed once the
audio before it has played, and `clear` empties the queue and returns the
marks still in it. The caller follows the same script actions as the
simulator's emulated line.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientWebSocketResponse, WSMsgType

from voicecrm.audio.codec import pcm16_to_ulaw
from voicecrm.audio.frames import ULAW_FRAME_BYTES, Framer
from voicecrm.telephony.simulator.audio_line import (
    SILENT_FRAME,
    CallerAction,
    HangUp,
    Press,
    Silence,
    Speak,
    WaitForSpeech,
    WaitForTurn,
)


@dataclass
class CarrierLog:
    played: bytearray = field(default_factory=bytearray)
    voiced_ticks: list[int] = field(default_factory=list)
    clears: list[int] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)  # echoed, in order
    caller_speech: list[tuple[int, int]] = field(default_factory=list)
    keys: list[tuple[int, str]] = field(default_factory=list)
    sent_stop: bool = False
    closed_by_service_at: int | None = None


class TwilioCarrier:
    def __init__(
        self,
        ws: ClientWebSocketResponse,
        *,
        call_sid: str,
        stream_sid: str = "MZ00000000000000000000000000000001",
        tick: float = 0.002,
    ) -> None:
        self.ws = ws
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.tick = tick
        self.log = CarrierLog()
        self._queue: deque[tuple[str, Any]] = deque()
        self._sequence = 0
        self._chunk = 0

    async def _send(self, message: dict[str, Any]) -> None:
        self._sequence += 1
        await self.ws.send_str(json.dumps({**message, "sequenceNumber": str(self._sequence)}))

    async def _reader(self) -> None:
        async for message in self.ws:
            if message.type is not WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            assert data["streamSid"] == self.stream_sid, data
            if data["event"] == "media":
                self._queue.append(("media", base64.b64decode(data["media"]["payload"])))
            elif data["event"] == "mark":
                self._queue.append(("mark", data["mark"]["name"]))
            elif data["event"] == "clear":
                self.log.clears.append(self._ticks)
                outstanding = [item for kind, item in self._queue if kind == "mark"]
                self._queue.clear()
                for name in outstanding:
                    await self._echo(name)

    async def _echo(self, name: str) -> None:
        self.log.marks.append(name)
        await self._send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def run(self, script: list[CallerAction], custom_parameters: dict[str, str]) -> None:
        """Hold the call until the service closes the stream or the caller hangs up."""
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send(
            {
                "event": "start",
                "streamSid": self.stream_sid,
                "start": {
                    "streamSid": self.stream_sid,
                    "accountSid": "AC" + "0" * 32,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": custom_parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )
        self._ticks = 0
        reader = asyncio.create_task(self._reader())
        try:
            await self._ticking(deque(script), reader)
        finally:
            if not reader.done():
                await self.ws.close()
            await reader

    async def _ticking(self, actions: deque[CallerAction], reader: asyncio.Task[None]) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        pending: deque[bytes] = deque()
        spoke, quiet, waited, first = False, 0, 0, 0
        while not reader.done():
            delay = start + (self._ticks + 1) * self.tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if reader.done():
                break
            tick = self._ticks
            self._ticks += 1
            # Play one queued frame, then echo the marks it reached.
            played = False
            while self._queue:
                kind, item = self._queue[0]
                if kind == "mark":
                    self._queue.popleft()
                    await self._echo(item)
                    continue
                if played:
                    break
                self._queue.popleft()
                self.log.played += item
                self.log.voiced_ticks.append(tick)
                played = spoke = True
            if not played:
                self.log.played += SILENT_FRAME
            quiet = 0 if played else quiet + 1
            frame = SILENT_FRAME
            if pending:
                frame = pending.popleft()
                if not pending:
                    self.log.caller_speech.append((first, tick))
                    spoke = False
            elif actions:
                action = actions[0]
                if isinstance(action, Speak):
                    actions.popleft()
                    framer = Framer(ULAW_FRAME_BYTES)
                    pending.extend(framer.push(pcm16_to_ulaw(action.pcm)))
                    first = tick
                    frame = pending.popleft()
                elif isinstance(action, Silence | WaitForTurn | WaitForSpeech):
                    waited += 1
                    done = (
                        waited * 0.02 >= action.seconds
                        if isinstance(action, Silence)
                        else (spoke and quiet * 0.02 >= action.quiet_seconds)
                        if isinstance(action, WaitForTurn)
                        else quiet == 0
                    )
                    if done or waited * 0.02 >= getattr(action, "max_seconds", 1e9):
                        actions.popleft()
                        waited = 0
                        if isinstance(action, WaitForTurn):
                            spoke = False
                elif isinstance(action, Press):
                    actions.popleft()
                    for digit in action.digits:
                        self.log.keys.append((tick, digit))
                        await self._send(
                            {
                                "event": "dtmf",
                                "streamSid": self.stream_sid,
                                "dtmf": {"track": "inbound_track", "digit": digit},
                            }
                        )
                elif isinstance(action, HangUp):
                    self.log.sent_stop = True
                    await self._send(
                        {
                            "event": "stop",
                            "streamSid": self.stream_sid,
                            "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_sid},
                        }
                    )
                    return
            self._chunk += 1
            await self._send(
                {
                    "event": "media",
                    "streamSid": self.stream_sid,
                    "media": {
                        "track": "inbound",
                        "chunk": str(self._chunk),
                        "timestamp": str(tick * 20),
                        "payload": base64.b64encode(frame).decode(),
                    },
                }
            )
        self.log.closed_by_service_at = self._ticks
