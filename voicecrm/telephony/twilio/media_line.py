"""`TwilioMediaLine`: a bidirectional Media Stream as an `AudioLine`.

Twilio queues whatever it is sent and plays it in order, so the line paces
frames at real time a few frames ahead (`PlayoutClock`): a barge-in's `clear`
then drops little, and "sent minus elapsed" says what the caller heard.
`drain` sends a mark and waits for Twilio to echo it, which it does once the
audio before it has played.

Transfers and hang-ups end the stream: the line notes what should happen, its
owner saves that with the call and closes the WebSocket, and the `<Connect
action>` webhook answers with `<Dial>` or `<Hangup/>` (see `webhooks.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from voicecrm.audio.pacing import PlayoutClock
from voicecrm.calls.interface import CallEnded, CallInfo, TransferOutcome, TransferStatus
from voicecrm.telephony.twilio import media_protocol as proto
from voicecrm.voice.line import CannotPlayUrls, Dtmf, LineClosed, LineEvent, Media, Whisper

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Handoff:
    """What the `<Connect action>` webhook does once the stream is closed."""

    action: str  # "dial" or "hangup"
    target: str | None = None
    caller_id: str | None = None
    ring_timeout: float = 30.0
    reason: str = "completed"
    whisper: str | None = None  # said to the person who answers (`dialling`)


class TwilioMediaLine:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        stream_sid: str,
        info: CallInfo,
        *,
        lead_frames: int = 5,
    ) -> None:
        self._ws = ws
        self._sid = stream_sid
        self._info = info
        self._pacer = PlayoutClock(lead_frames=lead_frames)
        self._loop = asyncio.get_running_loop()
        self._generation = 0
        self._marks: dict[str, asyncio.Future[None]] = {}
        self._mark_ids = itertools.count(1)
        self.closed: str | None = None
        self.handoff: Handoff | None = None
        self.frames_sent = 0

    @property
    def info(self) -> CallInfo:
        return self._info

    # ------------------------------------------------------------- Twilio -> us
    async def events(self) -> AsyncIterator[LineEvent]:
        reason = "the media stream closed"
        async for message in self._ws:
            if message.type is not WSMsgType.TEXT:
                if message.type is WSMsgType.ERROR:
                    reason = f"the media stream failed: {self._ws.exception()}"
                    break
                continue
            try:
                event = proto.parse(message.data)
            except proto.MediaProtocolError as err:
                log.warning("media stream %s: %s", self._sid, err.detail)
                continue
            if isinstance(event, proto.MediaChunk):
                if event.track == "inbound":
                    yield Media(event.payload)
            elif isinstance(event, proto.DtmfDigit):
                yield Dtmf(event.digit)
            elif isinstance(event, proto.MarkReached):
                waiter = self._marks.pop(event.name, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            elif isinstance(event, proto.Stopped):
                reason = "caller hung up"
                break
        self._close(reason)
        yield LineClosed(reason)

    def _close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
        for waiter in self._marks.values():
            if not waiter.done():
                waiter.set_result(None)
        self._marks.clear()

    # ------------------------------------------------------------- us -> Twilio
    async def _send_text(self, text: str) -> None:
        if self.closed is not None or self._ws.closed:
            raise CallEnded(f"the media stream has ended ({self.closed or 'closed'})")
        try:
            await self._ws.send_str(text)
        except ConnectionError as err:
            self._close("the media stream broke")
            raise CallEnded("the media stream broke") from err

    async def send(self, frame: bytes) -> None:
        generation = self._generation
        delay = self._pacer.delay(self._loop.time())
        if delay > 0:
            await asyncio.sleep(delay)  # pacing at real time is the point here
        if generation != self._generation:
            return  # a clear while this frame waited: drop it
        await self._send_text(proto.media(self._sid, frame))
        self._pacer.sent(self._loop.time())
        self.frames_sent += 1

    def unplayed_frames(self) -> int:
        return self._pacer.unplayed(self._loop.time())

    async def clear(self) -> None:
        self._generation += 1
        self._pacer.reset()
        with contextlib.suppress(CallEnded):
            await self._send_text(proto.clear(self._sid))

    async def drain(self) -> None:
        """Wait for Twilio to echo a mark placed after the audio; bounded by the audio's own
        length plus a second, should the mark never come back."""
        ends = self._pacer.drained_at()
        if ends is None:
            return
        name = f"m{next(self._mark_ids)}"
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._marks[name] = waiter
        await self._send_text(proto.mark(self._sid, name))
        timeout = max(0.0, ends - self._loop.time()) + 1.0
        try:
            # Not wait_for, which on 3.11 can swallow a cancellation that comes with the mark.
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            log.info("media stream %s: mark %s not echoed in time", self._sid, name)
        finally:
            self._marks.pop(name, None)

    async def play(self, url: str) -> None:
        """Twilio plays no URL into a stream: the voice call sends the file down it."""
        raise CannotPlayUrls(f"a Media Stream cannot play {url} itself")

    async def transfer(
        self,
        target: str,
        *,
        whisper: Whisper | None,
        ring_timeout: float,
        caller_id: str | None,
    ) -> TransferOutcome:
        """Hand the caller to `<Dial>`: the stream ends here, whatever the dial's outcome."""
        self.handoff = Handoff(
            "dial",
            target=target,
            caller_id=caller_id,
            ring_timeout=ring_timeout,
            whisper=whisper.text if whisper else None,
        )
        await self._end("transferred")
        return TransferOutcome(TransferStatus.ANSWERED, detail="handed to Twilio <Dial>")

    async def hangup(self, reason: str) -> None:
        if self.handoff is None:
            self.handoff = Handoff("hangup", reason=reason)
        await self._end(reason)

    async def _end(self, reason: str) -> None:
        """No more audio; the stream's owner saves the handoff, then closes the socket, so
        the `<Connect action>` webhook (on any instance) finds it."""
        self._close(reason)
