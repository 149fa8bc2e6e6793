"""Voicemail on an Asterisk call, recorded by Asterisk itself (`POST /channels/{id}/record`).

Asterisk records what the caller's channel hears from the caller, with its own
beep, silence detection and finishing key, so the message does not depend on
the external-media stream reaching the service intact. A channel in a bridge
cannot be recorded (409), so the caller leaves the receptionist's media bridge
for the message and rejoins it afterwards; meanwhile the media line may hear
nothing, and its inactivity timeout is held off.

The message ends with RecordingFinished (the key, the silence or the time
limit), RecordingFailed, or the caller hanging up: Asterisk keeps what was
recorded up to the hang-up, so a partial message is fetched like a whole one.
The file (`GET /recordings/stored/{name}/file`) goes to the service's own
`RecordingSink`, exactly where the RTP-recorded voicemail goes, and only then
is the stored recording deleted on Asterisk. When the file cannot be fetched or
kept, the message stays on Asterisk, the error is logged, and the call still
says that a voicemail was left (its URL names the recording on Asterisk).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import secrets
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voicecrm.calls.interface import CallEnded
from voicecrm.cancellation import cancel_and_wait
from voicecrm.errors import VoiceCRMError
from voicecrm.telephony.ari import events as ev
from voicecrm.telephony.ari.client import AriClient, LiveRecording
from voicecrm.telephony.ari.errors import AriError, ChannelGone
from voicecrm.telephony.rtp.line import RtpMediaLine
from voicecrm.voice.ports import CarrierRecording, PcmAudio, RecordingSink

log = logging.getLogger(__name__)

VOICEMAIL_PREFIX = "voicecrm-vm-"
STORED_URL_PREFIX = "asterisk:recording:"  # a message left on Asterisk, not fetched
FINISH_MARGIN = 10.0  # seconds past the limit before a lost RecordingFinished is given up
HANGUP_GRACE = 2.0  # seconds after the caller left for the recording's end to be reported
TERMINATE_KEYS = frozenset("#*")  # the keys ARI's terminateOn can name; others: any key


class UnreadableRecording(VoiceCRMError):
    """Asterisk's stored recording is not the 16-bit mono WAV that was asked for."""

    title = "Unreadable recording"


def read_wav(data: bytes) -> PcmAudio:
    """The samples of a 16-bit mono WAV file, as Asterisk's `wav` format writes them."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
                raise UnreadableRecording(
                    f"{wav.getnchannels()} channels of {8 * wav.getsampwidth()}-bit samples"
                )
            return PcmAudio(wav.readframes(wav.getnframes()), wav.getframerate())
    except (wave.Error, EOFError) as error:
        raise UnreadableRecording(f"not a WAV file: {error}") from None


def terminate_on(key: str | None) -> str:
    if key is None:
        return "none"
    return key if key in TERMINATE_KEYS else "any"


@dataclass
class AriRecorder:
    """Records voicemail on the caller's channel `channel_id` (the `CarrierRecorder`
    of an Asterisk call).

    The Stasis application hands it the recording events (`on_event`) and asks
    `recording` before handing keys to the media line: a key pressed during a
    message belongs to the recording (it may be the one that ends it).
    """

    client: AriClient
    channel_id: str
    gone: asyncio.Event  # the caller left (set by the application)
    media_bridge: Callable[[], str | None]
    line: RtpMediaLine | None = None
    sink: RecordingSink | None = None
    channel: str = "asterisk"
    finish_margin: float = FINISH_MARGIN
    hangup_grace: float = HANGUP_GRACE
    _live: dict[str, asyncio.Future[LiveRecording]] = field(default_factory=dict)

    @property
    def recording(self) -> bool:
        return bool(self._live)

    def on_event(self, event: ev.Event) -> None:
        match event:
            case (
                ev.RecordingFinished(recording=recording) | ev.RecordingFailed(recording=recording)
            ):
                waiter = self._live.get(recording.name)
                if waiter is not None and not waiter.done():
                    waiter.set_result(recording)
            case _:
                pass

    async def record(
        self, *, max_seconds: float, beep: bool, finish_on_key: str | None, silence_seconds: int
    ) -> CarrierRecording | None:
        if self.gone.is_set():
            raise CallEnded("the caller hung up")
        name = VOICEMAIL_PREFIX + secrets.token_hex(8)
        waiter: asyncio.Future[LiveRecording] = asyncio.get_running_loop().create_future()
        self._live[name] = waiter
        media = self.media_bridge()
        hold = self.line.quiet_allowed() if self.line is not None else contextlib.nullcontext()
        try:
            with hold:
                if media is not None:
                    await self._leave(media)
                try:
                    try:
                        await self.client.record(
                            self.channel_id,
                            name,
                            "wav",
                            max_duration=max(1, math.ceil(max_seconds)),
                            max_silence=silence_seconds,
                            beep=beep,
                            terminate_on=terminate_on(finish_on_key),
                        )
                    except ChannelGone as error:
                        self.gone.set()
                        raise CallEnded(f"the caller's channel is gone ({error.message})") from None
                    except AriError as error:
                        if self.gone.is_set():
                            raise CallEnded("the caller hung up") from None
                        log.error(
                            "asterisk call %s: voicemail not recorded: %s", self.channel_id, error
                        )
                        return None
                    finished = await self._finished(name, waiter, max_seconds)
                finally:
                    if media is not None:
                        await self._rejoin(media)
        finally:
            self._live.pop(name, None)
        if finished is not None and finished.state == "failed":
            log.error(
                "asterisk call %s: voicemail %s failed: %s",
                self.channel_id,
                name,
                finished.cause or "no cause given",
            )
            return None
        return await self._keep(name, finished)

    async def _leave(self, bridge_id: str) -> None:
        """Out of the receptionist's bridge: Asterisk records no channel in a bridge."""
        try:
            await self.client.remove_channel(bridge_id, self.channel_id)
        except AriError as error:
            if self.gone.is_set() or isinstance(error, ChannelGone):
                raise CallEnded("the caller hung up") from None
            raise

    async def _rejoin(self, bridge_id: str) -> None:
        """Back with the receptionist, who may still have something to say."""
        if self.gone.is_set():
            return
        try:
            await self.client.add_channel(bridge_id, self.channel_id)
        except AriError as error:
            if not self.gone.is_set():
                log.warning(
                    "asterisk call %s: back to the receptionist after the voicemail: %s",
                    self.channel_id,
                    error,
                )

    async def _finished(
        self, name: str, waiter: asyncio.Future[LiveRecording], max_seconds: float
    ) -> LiveRecording | None:
        """The recording as Asterisk reported its end; None when no end was reported (the
        caller left and the event with them, or it was lost in a socket drop): the
        stored file is asked for anyway."""
        gone = asyncio.ensure_future(self.gone.wait())
        waits: set[asyncio.Future[Any]] = {waiter, gone}
        try:
            done, _ = await asyncio.wait(
                waits,
                timeout=max_seconds + self.finish_margin,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            await cancel_and_wait(gone)
        if waiter.done():
            return waiter.result()
        if not done:
            log.warning(
                "asterisk call %s: voicemail %s did not end; stopping it", self.channel_id, name
            )
            with contextlib.suppress(AriError):
                await self.client.stop_recording(name)
        # The caller left (or the end was lost): Asterisk keeps what was recorded.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.hangup_grace):
                return await asyncio.shield(waiter)
        return None

    async def _keep(self, name: str, finished: LiveRecording | None) -> CarrierRecording | None:
        """The message fetched from Asterisk into the sink, then deleted there."""
        left = CarrierRecording(
            url=STORED_URL_PREFIX + name,
            seconds=float(finished.duration) if finished is not None else 0.0,
        )
        try:
            audio = read_wav(await self.client.stored_recording_file(name))
        except ChannelGone:
            log.info("asterisk call %s: voicemail %s holds nothing", self.channel_id, name)
            return None
        except (AriError, UnreadableRecording) as error:
            log.error(
                "asterisk call %s: voicemail %s could not be fetched and stays on Asterisk: %s",
                self.channel_id,
                name,
                error,
            )
            return left
        if not audio.pcm or (
            finished is not None and finished.talking_duration == 0 and finished.silence_duration
        ):
            await self._delete(name)  # nothing was said
            return None
        url = f"voicecrm://recordings/{self.channel_id}"  # not kept: no store configured
        if self.sink is not None:
            try:
                url = await self.sink.save(
                    self.channel, self.channel_id, audio.pcm, audio.sample_rate
                )
            except (OSError, VoiceCRMError) as error:
                log.error(
                    "asterisk call %s: voicemail %s could not be kept and stays on Asterisk: %s",
                    self.channel_id,
                    name,
                    error,
                )
                return CarrierRecording(url=left.url, seconds=audio.seconds, audio=audio)
        await self._delete(name)
        return CarrierRecording(url=url, seconds=audio.seconds, audio=audio)

    async def _delete(self, name: str) -> None:
        try:
            await self.client.delete_stored_recording(name)
        except AriError as error:
            log.warning(
                "asterisk call %s: stored recording %s not deleted: %s",
                self.channel_id,
                name,
                error,
            )
