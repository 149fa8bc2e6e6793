"""The control verbs of one Asterisk call (play, transfer, hang up) as ARI requests.

`RtpMediaLine` only carries audio; these are the callables it is given for
the rest. Each turns "the caller's channel is gone" (`ChannelGone`, or the
call's own record that the caller left) into `CallEnded`, which is what the
voice call and the engine already understand as the caller hanging up, so an
ARI refusal mid-call ends that call instead of surfacing as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from voicecrm.calls.interface import CallEnded, TransferOutcome, TransferStatus
from voicecrm.telephony.ari.client import AriClient
from voicecrm.telephony.ari.errors import AriError, ChannelGone

log = logging.getLogger(__name__)

PLAYBACK_PREFIX = "voicecrm-pb-"
PLAYBACK_TIMEOUT = 300.0  # seconds; a PlaybackFinished lost in a socket drop must not hang a call
# Media URI schemes Asterisk plays itself (reference section 2); anything else is a sound name.
MEDIA_SCHEMES = ("sound:", "recording:", "number:", "digits:", "characters:", "tone:", "http")


def media_uri(url: str) -> str:
    """A scenario's `play:` value as an ARI media URI: bare names are Asterisk sounds."""
    return url if url.startswith(MEDIA_SCHEMES) else f"sound:{url}"


@dataclass
class CallControl:
    """ARI requests on the caller's channel `channel_id`.

    `gone` is set by the application when Asterisk says the caller left
    (StasisEnd, ChannelDestroyed, or reconciliation after a reconnect); a
    playback waits on it as well as on its PlaybackFinished. `handed_off` and
    `hung_up` tell the call's cleanup not to hang the caller up again.
    """

    client: AriClient
    channel_id: str
    close_line: Callable[[str], None]
    transfer_context: str | None = None
    playback_timeout: float = PLAYBACK_TIMEOUT
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    handed_off: bool = False
    hung_up: bool = False
    playbacks: dict[str, asyncio.Future[None]] = field(default_factory=dict)

    def ended(self, reason: str) -> None:
        """The caller's channel left the application: end the media and any waits."""
        self.gone.set()
        self.close_line(reason)

    def _gone(self, error: ChannelGone) -> CallEnded:
        self.ended("the caller hung up")
        return CallEnded(f"the caller's channel is gone ({error.message})")

    def playback_finished(self, playback_id: str) -> None:
        waiter = self.playbacks.get(playback_id)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def play(self, url: str) -> None:
        """Plays on the caller's channel and waits for PlaybackFinished, the caller
        leaving, or `playback_timeout`, whichever comes first."""
        if self.gone.is_set():
            raise CallEnded("the caller hung up")
        playback_id = PLAYBACK_PREFIX + secrets.token_hex(8)
        waiter = asyncio.get_running_loop().create_future()
        self.playbacks[playback_id] = waiter
        gone = asyncio.ensure_future(self.gone.wait())
        try:
            try:
                await self.client.play(self.channel_id, media_uri(url), playback_id)
            except ChannelGone as error:
                raise self._gone(error) from None
            done, _ = await asyncio.wait(
                {waiter, gone}, timeout=self.playback_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                log.warning("asterisk call %s: playback %s timed out", self.channel_id, url)
                with contextlib.suppress(AriError):
                    await self.client.stop_playback(playback_id)
            elif waiter not in done:
                raise CallEnded("the caller hung up during a playback")
        finally:
            self.playbacks.pop(playback_id, None)
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gone

    async def transfer(
        self,
        target: str,
        *,
        whisper: str | None,
        ring_timeout: float,
        caller_id: str | None,
    ) -> TransferOutcome:
        """Hands the caller back to the dialplan at extension `target`, priority 1, in
        `transfer_context` (else the channel's own context): dialling belongs to the
        dialplan, which knows the trunks. The service does not learn whether the
        target answered, and cannot whisper; the call is over for it either way."""
        if whisper:
            log.info("asterisk call %s: a whisper is not played on a transfer", self.channel_id)
        try:
            await self.client.continue_in_dialplan(
                self.channel_id, self.transfer_context, target, 1
            )
        except ChannelGone as error:
            raise self._gone(error) from None
        self.handed_off = True
        return TransferOutcome(TransferStatus.ANSWERED, detail="handed to the dialplan")

    async def hangup(self, reason: str) -> None:
        """Hangs up the caller; one who already left needs nothing more."""
        self.hung_up = True
        if self.gone.is_set():
            return
        with contextlib.suppress(ChannelGone):
            await self.client.hangup(self.channel_id, "normal")
