"""The control verbs of one Asterisk call (play, transfer, hang up) as ARI requests.

`RtpMediaLine` only carries audio; these are the callables it is given for
the rest. Each turns "the caller's channel is gone" (`ChannelGone`, or the
call's own record that the caller left) into `CallEnded`, which is what the
voice call and the engine already understand as the caller hanging up, so an
ARI refusal mid-call ends that call instead of surfacing as an error.

A transfer either hands the caller back to the dialplan (no dial template is
configured, or the target is written `dialplan:EXTEN`), or dials the target
itself and bridges: originate into this Stasis application, wait for the
answer within the scenario's ring timeout, then one mixing bridge with the
caller and the target, the caller taken out of the receptionist's media
bridge. Busy, no answer or a refusal hang the dialled channel up and return
that outcome, so the scenario takes its no-answer path with the receptionist
still on the line. A whisper is synthesised while the target rings and played
to it once it answers, before the bridge (Asterisk fetches the audio from this
service: `played_media`). After a bridged transfer this control owns the bridge
and the target's channel until `aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from voicecrm.calls.interface import CallEnded, TransferOutcome, TransferStatus
from voicecrm.cancellation import cancel_and_wait
from voicecrm.telephony.ari.client import AriClient
from voicecrm.telephony.ari.dialling import (
    TRANSFER_ARG,
    TRANSFER_PREFIX,
    Leg,
    dial_endpoint,
    is_sip_target,
    sip_endpoint,
)
from voicecrm.telephony.ari.errors import AriError, ChannelGone
from voicecrm.telephony.ari.played_media import PlayedMedia
from voicecrm.voice.line import Whisper
from voicecrm.voice.ports import PcmAudio, SpeechProviderError

log = logging.getLogger(__name__)

PLAYBACK_PREFIX = "voicecrm-pb-"
TRANSFER_BRIDGE_PREFIX = "voicecrm-xbridge-"
DIALPLAN_TARGET = "dialplan:"  # a transfer target that always goes back to the dialplan
STASIS_TIMEOUT = 5.0  # seconds for an answered target's StasisStart, before bridging anyway
PLAYBACK_TIMEOUT = 300.0  # seconds; a PlaybackFinished lost in a socket drop must not hang a call
# Seconds a transfer's target, who has answered, may wait for its whisper to be synthesised.
WHISPER_SYNTHESIS_TIMEOUT = 10.0
# Seconds beyond its length a whisper may take to play (Asterisk fetches it first).
WHISPER_GRACE = 5.0
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

    `legs` is the application's map of dialled channels, through which their
    events reach the `Leg` a transfer waits on; `media_bridge` tells which
    bridge holds the caller with the receptionist's media.
    """

    client: AriClient
    channel_id: str
    close_line: Callable[[str], None]
    transfer_context: str | None = None
    dial_template: str | None = None
    sip_dial_template: str | None = None
    caller_number: str = ""
    legs: MutableMapping[str, Leg] = field(default_factory=dict)
    media_bridge: Callable[[], str | None] = lambda: None
    playback_timeout: float = PLAYBACK_TIMEOUT
    stasis_timeout: float = STASIS_TIMEOUT
    media: PlayedMedia | None = None  # where Asterisk fetches audio the service made
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    handed_off: bool = False
    hung_up: bool = False
    playbacks: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    leg: Leg | None = None  # the transfer target being dialled, or bridged with the caller
    bridge_id: str | None = None  # the bridge holding the caller and the target

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
            await cancel_and_wait(gone)

    async def transfer(
        self,
        target: str,
        *,
        whisper: Whisper | None,
        ring_timeout: float,
        caller_id: str | None,
    ) -> TransferOutcome:
        """Dials `target` and bridges it with the caller when a dial template is
        configured (a `sip:` target through the SIP one, which it needs); otherwise (or
        for a `dialplan:EXTEN` target) hands the caller back to the dialplan. A whisper
        is played to the target once it answers, before the bridge (`_whisper`); the
        dialplan's own dial cannot play one."""
        if is_sip_target(target):
            if self.sip_dial_template is None:
                log.error(
                    "asterisk call %s: cannot transfer to %s: SIP targets need "
                    "VOICECRM_ARI_SIP_DIAL_TEMPLATE",
                    self.channel_id,
                    target,
                )
                return TransferOutcome(
                    TransferStatus.FAILED,
                    detail=f"{target}: SIP targets need VOICECRM_ARI_SIP_DIAL_TEMPLATE",
                )
            return await self._dial_and_bridge(
                sip_endpoint(self.sip_dial_template, target), ring_timeout, caller_id, whisper
            )
        if self.dial_template is None or target.startswith(DIALPLAN_TARGET):
            if whisper is not None:
                log.info(
                    "asterisk call %s: the whisper is not played: the dialplan dials %s",
                    self.channel_id,
                    target,
                )
            return await self._continue_in_dialplan(target.removeprefix(DIALPLAN_TARGET))
        return await self._dial_and_bridge(
            dial_endpoint(self.dial_template, target), ring_timeout, caller_id, whisper
        )

    async def _continue_in_dialplan(self, extension: str) -> TransferOutcome:
        """Extension `extension`, priority 1, in `transfer_context` (else the channel's
        own context): the dialplan knows the trunks. The service does not learn whether
        the target answered; the call is over for it either way."""
        try:
            await self.client.continue_in_dialplan(
                self.channel_id, self.transfer_context, extension, 1
            )
        except ChannelGone as error:
            raise self._gone(error) from None
        self.handed_off = True
        return TransferOutcome(TransferStatus.ANSWERED, detail="handed to the dialplan")

    async def _dial_and_bridge(
        self, endpoint: str, ring_timeout: float, caller_id: str | None, whisper: Whisper | None
    ) -> TransferOutcome:
        if self.gone.is_set():
            raise CallEnded("the caller hung up")
        if self.leg is not None:
            return TransferOutcome(TransferStatus.FAILED, detail="already transferring")
        leg = self.leg = Leg(TRANSFER_PREFIX + secrets.token_hex(8))
        self.legs[leg.channel_id] = leg  # before the originate: its events may come first
        bridged = False
        # The whisper is synthesised while the target's phone rings.
        speech = self._start_whisper(whisper)
        try:
            try:
                await self.client.originate(
                    endpoint,
                    app_args=(TRANSFER_ARG, self.channel_id),
                    caller_id=caller_id or self.caller_number or None,
                    ring_timeout=max(1, math.ceil(ring_timeout)),
                    channel_id=leg.channel_id,
                )
            except AriError as error:
                log.warning(
                    "asterisk call %s: dialling %s refused: %s", self.channel_id, endpoint, error
                )
                leg.gone()
                return TransferOutcome(TransferStatus.FAILED, detail=error.message)
            status = await leg.wait_answer(ring_timeout, self.gone)
            if status is None:
                raise CallEnded("the caller hung up during a transfer")
            if status is not TransferStatus.ANSWERED:
                log.info("asterisk call %s: %s: %s", self.channel_id, endpoint, status.value)
                return TransferOutcome(status, detail=f"{endpoint}: {status.value}")
            await self._in_stasis(leg)
            if speech is not None:
                await self._whisper(leg, speech)
                if self.gone.is_set():
                    raise CallEnded("the caller hung up during the whisper")
            try:
                await self._bridge(leg)
            except AriError as error:
                if self.gone.is_set():
                    raise CallEnded("the caller hung up during a transfer") from None
                log.warning(
                    "asterisk call %s: bridging %s failed: %s", self.channel_id, endpoint, error
                )
                return TransferOutcome(TransferStatus.FAILED, detail=error.message)
            bridged = True
            log.info("asterisk call %s: bridged with %s", self.channel_id, leg.channel_id)
            return TransferOutcome(TransferStatus.ANSWERED, detail=f"bridged with {endpoint}")
        finally:
            if speech is not None:
                with contextlib.suppress(SpeechProviderError):  # logged where it was awaited
                    await cancel_and_wait(speech)
            if not bridged:
                await self._release_transfer()

    def _start_whisper(self, whisper: Whisper | None) -> asyncio.Future[PcmAudio] | None:
        """The whisper's synthesis, started; None when there is none to play."""
        if whisper is None:
            return None
        if self.media is None or self.media.base_url is None:
            log.info(
                "asterisk call %s: the whisper is not played: set VOICECRM_ARI_HTTP_URL "
                "(where Asterisk fetches the audio)",
                self.channel_id,
            )
            return None
        return asyncio.ensure_future(whisper.audio())

    async def _whisper(self, leg: Leg, speech: asyncio.Future[PcmAudio]) -> None:
        """Plays the whisper to the target, who has answered, before the caller is put
        through, and waits for it to end (or for either of them to hang up).

        Asterisk fetches the audio from this service (`PlayedMedia`), which offers it
        only while it plays. A whisper that cannot be made or played is logged and left
        out: the caller is put through without it rather than not at all.
        """
        assert self.media is not None
        try:
            async with asyncio.timeout(WHISPER_SYNTHESIS_TIMEOUT):
                audio = await speech
        except (SpeechProviderError, TimeoutError) as error:
            log.warning("asterisk call %s: no whisper: %s", self.channel_id, error or "timeout")
            return
        url = self.media.offer(audio)
        playback_id = PLAYBACK_PREFIX + secrets.token_hex(8)
        finished = leg.expect_playback(playback_id)
        ended = asyncio.ensure_future(leg.ended.wait())
        gone = asyncio.ensure_future(self.gone.wait())
        try:
            await self.client.play(leg.channel_id, url, playback_id)
            waits: set[asyncio.Future[Any]] = {finished, ended, gone}
            await asyncio.wait(
                waits,
                timeout=audio.seconds + WHISPER_GRACE,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if finished.done() and finished.result() == "failed":
                log.warning(
                    "asterisk call %s: Asterisk could not play the whisper: can it fetch %s "
                    "(VOICECRM_ARI_HTTP_URL must reach this instance)?",
                    self.channel_id,
                    self.media.base_url,
                )
        except AriError as error:
            log.warning("asterisk call %s: the whisper failed: %s", self.channel_id, error)
        finally:
            self.media.withdraw(url)
            await cancel_and_wait(finished, ended, gone)

    async def _in_stasis(self, leg: Leg) -> None:
        """Waits (a little) for an answered target to enter the application: only then
        can it be played to or bridged."""
        if not leg.in_stasis.is_set():  # answered (Up), but not yet in the application
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.stasis_timeout):
                    await leg.in_stasis.wait()

    async def _bridge(self, leg: Leg) -> None:
        """A mixing bridge with the target (in the application: `_in_stasis`), then the
        caller moved into it from the receptionist's bridge (and back, if Asterisk
        refuses the move)."""
        bridge_id = TRANSFER_BRIDGE_PREFIX + secrets.token_hex(8)
        await self.client.create_bridge("mixing", bridge_id=bridge_id)
        self.bridge_id = bridge_id
        await self.client.add_channel(bridge_id, leg.channel_id)
        media = self.media_bridge()
        if media is not None:
            await self.client.remove_channel(media, self.channel_id)
        try:
            await self.client.add_channel(bridge_id, self.channel_id)
        except AriError:
            if media is not None:
                with contextlib.suppress(AriError):
                    await self.client.add_channel(media, self.channel_id)
            raise

    @property
    def bridged(self) -> bool:
        return self.bridge_id is not None and self.leg is not None

    async def bridged_call_ended(self) -> None:
        """Returns once the caller or the target of a bridged transfer has hung up."""
        if self.leg is not None:
            await self.leg.wait_end(self.gone)

    async def _release_transfer(self) -> None:
        """Destroys the transfer's bridge and hangs up its target, whatever state they
        are in; safe to repeat."""
        bridge_id, self.bridge_id = self.bridge_id, None
        leg, self.leg = self.leg, None
        if bridge_id is not None:
            with contextlib.suppress(AriError):
                await self.client.destroy_bridge(bridge_id)
        if leg is not None:
            self.legs.pop(leg.channel_id, None)
            if not leg.ended.is_set():
                with contextlib.suppress(AriError):
                    await self.client.hangup(leg.channel_id, "normal")

    async def aclose(self) -> None:
        """Ends what a transfer left behind (its bridge and its target's channel)."""
        await self._release_transfer()

    async def hangup(self, reason: str) -> None:
        """Hangs up the caller; one who already left needs nothing more."""
        self.hung_up = True
        if self.gone.is_set():
            return
        with contextlib.suppress(ChannelGone):
            await self.client.hangup(self.channel_id, "normal")
