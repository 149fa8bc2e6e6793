"""`AriApplication`: the Stasis application that answers Asterisk's inbound calls.

The dialplan sends a call here with `Stasis(voicecrm[,args])`; the
application reads the events socket and, for each caller's StasisStart,
starts one task that owns the call from beginning to end: resolve the caller
(a blocked one is hung up and put on the timeline as blocked, as Twilio
does), pick the scenario (a `scenario=NAME` Stasis argument, else the
dialled extension), answer, open an `RtpMediaLine` on a free UDP port, have
Asterisk create an ExternalMedia channel sending there, bridge the two, and
run the scenario with `run_call` over `voice_call(line, ...)`.

Channels this service creates itself carry an id prefix (`MEDIA_PREFIX` for
the ExternalMedia halves; `dialling`'s prefixes and Stasis arguments for the
channels it originates), so their StasisStart is never mistaken for a caller:
a transfer's target is handed to the transfer waiting for it (`Leg`), and an
outbound call placed by `AriOutbound` (in this process or in `voicecrm call`)
runs the scenario it was placed for, from its call row, once it answers; one
that ends unanswered closes its row as busy, no-answer or failed. The events socket is
the only source of "the caller left" (StasisEnd, ChannelDestroyed) and of
keys (ChannelDtmfReceived: a mixing bridge takes DTMF out of the media), so
the consumer hands those to the call they belong to; after a reconnect, when
events may have been lost, every call asks ARI whether its caller's channel
still exists. Any ARI refusal ends only the call it happened in.

The application owns every task it starts (the consumer, one per call, the
reconciliations) and cancels and awaits them in `aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from voicecrm.calls.interface import CallInfo, Direction
from voicecrm.cancellation import cancel_and_wait
from voicecrm.crm import call_log
from voicecrm.errors import NotFound, VoiceCRMError
from voicecrm.scenarios.crm_actions import ScenarioCRM
from voicecrm.scenarios.models import Scenario
from voicecrm.scenarios.state import CallState
from voicecrm.telephony.ari import events as ev
from voicecrm.telephony.ari.call_control import CallControl
from voicecrm.telephony.ari.client import AriClient, Channel
from voicecrm.telephony.ari.dialling import (
    ORIGINATED_PREFIX,
    Leg,
    call_log_status,
    is_own_channel,
    outbound_call_id,
    unanswered_status,
)
from voicecrm.telephony.ari.errors import (
    ApplicationReplaced,
    AriError,
    AriUnauthorized,
    ChannelGone,
)
from voicecrm.telephony.ari.events_socket import Reconnected
from voicecrm.telephony.ari.played_media import PlayedMedia
from voicecrm.telephony.ari.voicemail import AriRecorder
from voicecrm.telephony.carrier_calls import (
    CallServices,
    answered_call_state,
    blocked_scenario,
    record_blocked,
    run_voice_call,
)
from voicecrm.telephony.rtp.line import RtpMediaLine

log = logging.getLogger(__name__)

CHANNEL = "asterisk"
MEDIA_PREFIX = "voicecrm-media-"
BRIDGE_PREFIX = "voicecrm-bridge-"
STASIS_TIMEOUT = 5.0  # seconds for an ExternalMedia channel's StasisStart
CLEANUP_TIMEOUT = 5.0  # seconds for the ARI requests that tidy up after a call


class EventSource(Protocol):
    """`AriEvents`, or anything else that yields its events."""

    def __aiter__(self) -> AsyncIterator[ev.Event | Reconnected]: ...

    async def aclose(self) -> None: ...


@dataclass(kw_only=True)
class AriServices(CallServices):
    """What the Stasis application's calls need, built by the composition root."""


@dataclass
class _Call:
    channel: Channel
    args: tuple[str, ...]
    outbound_call_id: int | None = None  # the row of a call this service placed
    control: CallControl = field(init=False)
    media_id: str = field(default_factory=lambda: MEDIA_PREFIX + secrets.token_hex(8))
    bridge_id: str | None = None
    line: RtpMediaLine | None = None
    recorder: AriRecorder | None = None
    ended: str | None = None

    def close(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
        if self.line is not None:
            self.line.close(reason)


def scenario_argument(args: tuple[str, ...]) -> str | None:
    """The scenario a `Stasis(app,...,scenario=NAME)` argument names, if any."""
    for arg in args:
        key, _, value = arg.partition("=")
        if key.strip() == "scenario" and value.strip():
            return value.strip()
    return None


class AriApplication:
    """Answers the calls Asterisk sends to Stasis application `client.app`."""

    def __init__(
        self,
        services: AriServices,
        client: AriClient,
        events: EventSource,
        *,
        media_host: str = "127.0.0.1",
        media_bind: str | None = None,
        transfer_context: str | None = None,
        dial_template: str | None = None,
        sip_dial_template: str | None = None,
        stasis_timeout: float = STASIS_TIMEOUT,
        played_media: PlayedMedia | None = None,
    ) -> None:
        self.services = services
        self.client = client
        self._played_media = played_media  # audio of ours Asterisk fetches (whispers)
        self.app = client.app
        self._events = events
        self._media_host = media_host  # told to Asterisk (ExternalMedia external_host)
        self._media_bind = media_bind or media_host  # where the RTP sockets listen
        self._transfer_context = transfer_context
        self._dial_template = dial_template
        self._sip_dial_template = sip_dial_template
        self._stasis_timeout = stasis_timeout
        self._calls: dict[str, _Call] = {}  # by the caller's channel id
        self._media: dict[str, _Call] = {}  # by the ExternalMedia channel id
        self._media_started: dict[str, asyncio.Future[None]] = {}
        self._legs: dict[str, Leg] = {}  # transfer targets being dialled or bridged, by id
        # The last Dial status of each outbound call not yet answered: with Local channels
        # it alone says busy or no answer (the destroyed channel's cause may be 0).
        self._dialstatus: dict[str, str] = {}
        self.events_handled = 0
        self._catching_up: list[tuple[int, asyncio.Future[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._call_tasks: set[asyncio.Task[None]] = set()
        self._consumer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._consumer is not None:
            raise RuntimeError("the application is already started")
        self._consumer = asyncio.create_task(self._consume(), name=f"ari-{self.app}")

    async def aclose(self) -> None:
        """Stops reading events, then cancels every call and waits for each to tidy up."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await cancel_and_wait(consumer)
        await self._events.aclose()
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def join(self) -> None:
        """Returns once no call is in progress (for tests and draining)."""
        while self._call_tasks:
            await asyncio.wait(list(self._call_tasks))

    async def caught_up(self, count: int) -> None:
        """Returns once `count` events have been handled, so that a test knows the
        application has seen what its fake Asterisk sent (then `join` its calls)."""
        if self.events_handled >= count:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._catching_up.append((count, waiter))
        try:
            await waiter
        finally:
            if waiter in (w for _, w in self._catching_up):
                self._catching_up.remove((count, waiter))

    @property
    def calls_in_progress(self) -> int:
        return len(self._calls)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str, *, call: bool = False) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        if call:
            self._call_tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._call_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ARI task %s failed", task.get_name(), exc_info=task.exception())

    # ------------------------------------------------------------- events
    async def _consume(self) -> None:
        try:
            async for event in self._events:
                try:
                    self._dispatch(event)
                except Exception:  # one bad event must not stop every call's events
                    log.exception("ARI application %s: an event could not be handled", self.app)
                if not isinstance(event, Reconnected):
                    self._handled()
        except AriUnauthorized:
            log.error("ARI refused the user and password: no calls from Asterisk")
        except ApplicationReplaced as err:
            log.error(
                "%s; this instance takes no more calls from Asterisk (calls in progress"
                " lose their events)",
                err.detail,
            )

    def _handled(self) -> None:
        self.events_handled += 1
        if self._catching_up:
            for entry in list(self._catching_up):
                count, waiter = entry
                if count <= self.events_handled:
                    self._catching_up.remove(entry)
                    if not waiter.done():
                        waiter.set_result(None)

    def _dispatch(self, event: ev.Event | Reconnected) -> None:
        if isinstance(event, Reconnected):
            log.info("ARI events socket reconnected; checking %d calls", len(self._calls))
            self._spawn(self._reconcile(), "ari-reconcile")
            return
        if event.application != self.app:
            return  # another application's half of a Local channel
        leg = self._legs.get(_channel_of(event))
        if leg is not None:
            leg.on_event(event)
            return
        match event:
            case ev.Dial(peer=peer, dialstatus=status) if (
                status and peer.id.startswith(ORIGINATED_PREFIX) and peer.id not in self._calls
            ):
                self._dialstatus[peer.id] = status
            case ev.StasisStart(channel=channel, args=args):
                self._dialstatus.pop(channel.id, None)
                self._stasis_start(channel, args)
            case ev.StasisEnd(channel=channel):
                self._left(channel.id, "the caller hung up")
            case ev.ChannelDestroyed(channel=channel, cause=number, cause_txt=cause):
                if channel.id.startswith(ORIGINATED_PREFIX) and channel.id not in self._calls:
                    dialstatus = self._dialstatus.pop(channel.id, "")
                    self._spawn(
                        self._unanswered(channel.id, number, dialstatus),
                        f"ari-unanswered-{channel.id}",
                        call=True,
                    )
                    return
                self._left(channel.id, f"the caller hung up ({cause or 'destroyed'})")
            case ev.ChannelStateChange(channel=channel) if (
                channel.state == "Ringing"
                and channel.id.startswith(ORIGINATED_PREFIX)
                and channel.id not in self._calls
            ):
                self._spawn(self._ringing(channel.id), f"ari-ringing-{channel.id}", call=True)
            case ev.ChannelDtmfReceived(channel=channel, digit=digit):
                call = self._calls.get(channel.id)
                if call is not None and call.recorder is not None and call.recorder.recording:
                    return  # Asterisk's recording takes the keys (one may end the message)
                if call is not None and call.line is not None:
                    with contextlib.suppress(ValueError):
                        call.line.push_dtmf(digit)
            case (
                ev.RecordingStarted(recording=recording)
                | ev.RecordingFinished(recording=recording)
                | ev.RecordingFailed(recording=recording)
            ):
                call = self._calls.get(recording.target_uri.removeprefix("channel:"))
                if call is not None and call.recorder is not None:
                    call.recorder.on_event(event)
            case ev.PlaybackFinished(playback=playback):
                channel_id = playback.target_uri.removeprefix("channel:")
                call = self._calls.get(channel_id)
                if call is not None:
                    call.control.playback_finished(playback.id)
            case _:
                pass

    def _stasis_start(self, channel: Channel, args: tuple[str, ...]) -> None:
        if channel.id.startswith(MEDIA_PREFIX):
            started = self._media_started.get(channel.id)
            if started is not None and not started.done():
                started.set_result(None)
            return
        if channel.id in self._calls:
            return
        placed = outbound_call_id(args)
        if is_own_channel(channel.id, args) and (
            placed is None or not channel.id.startswith(ORIGINATED_PREFIX)
        ):
            # A transfer target answering after its transfer gave up: nobody wants it.
            log.info("asterisk: hanging up %s, dialled by a transfer that is over", channel.id)
            self._spawn(self._hang_up_stray(channel.id), f"ari-stray-{channel.id}")
            return
        call = _Call(channel=channel, args=args, outbound_call_id=placed)
        call.control = CallControl(
            self.client,
            channel.id,
            close_line=call.close,
            transfer_context=self._transfer_context,
            dial_template=self._dial_template,
            sip_dial_template=self._sip_dial_template,
            caller_number=channel.caller_number,
            legs=self._legs,
            media_bridge=lambda: call.bridge_id,
            stasis_timeout=self._stasis_timeout,
            media=self._played_media,
        )
        self._calls[channel.id] = call
        self._spawn(self._run(call), f"ari-call-{channel.id}", call=True)

    def _left(self, channel_id: str, reason: str) -> None:
        call = self._calls.get(channel_id)
        if call is not None:
            call.control.ended(reason)
            return
        call = self._media.get(channel_id)
        if call is not None:
            call.close("the media channel is gone")

    async def _reconcile(self) -> None:
        """Ends the calls whose caller (or transfer target) left while the events socket
        was down."""
        for channel_id, call in list(self._calls.items()):
            try:
                await self.client.get_channel(channel_id)
            except ChannelGone:
                log.info("asterisk call %s ended while the events socket was down", channel_id)
                call.control.ended("the caller hung up")
            except AriError as error:
                log.warning("asterisk call %s could not be checked: %s", channel_id, error)
        for leg_id, leg in list(self._legs.items()):
            try:
                await self.client.get_channel(leg_id)
            except ChannelGone:
                leg.gone()
            except AriError as error:
                log.warning("asterisk channel %s could not be checked: %s", leg_id, error)

    async def _hang_up_stray(self, channel_id: str) -> None:
        with contextlib.suppress(AriError):
            await self.client.hangup(channel_id, "normal")

    async def _ringing(self, channel_id: str) -> None:
        """An outbound call's phone rings: its row says so, as Twilio's progress does."""
        async with self.services.database.transaction(quick=True) as session:
            record = await call_log.find_call(session, CHANNEL, channel_id)
            if record is not None:
                await call_log.note_progress(session, record, "ringing")

    async def _unanswered(self, channel_id: str, cause: int, dialstatus: str) -> None:
        """An outbound call's channel ended before it answered: its row is closed with
        why, the Dial status first and the hang-up cause when there was none (a call
        that ran was closed by its run, and stays as it is)."""
        services = self.services
        async with services.database.transaction(quick=True) as session:
            record = await call_log.find_call(session, CHANNEL, channel_id)
            if record is None or record.ended_at is not None:
                return
            status = call_log_status(unanswered_status(cause, dialstatus))
            log.info("asterisk: outbound call %s ended unanswered: %s", record.id, status)
            await call_log.finish_call(
                session, services.actor, record.id, status=status, duration_seconds=0
            )

    # ------------------------------------------------------------- one call
    async def _run(self, call: _Call) -> None:
        channel_id = call.channel.id
        try:
            await self._answer_and_run(call)
            if call.control.bridged:
                # Transferred: the receptionist is out of the call; the two people talk
                # until either hangs up, and then the other is hung up too.
                await self._release_media(call)
                await call.control.bridged_call_ended()
        except ChannelGone:
            log.info("asterisk call %s: the caller hung up meanwhile", channel_id)
        except AriError as error:
            if call.control.gone.is_set():  # e.g. 400 "Channel not found" on addChannel
                log.info("asterisk call %s: the caller hung up meanwhile (%s)", channel_id, error)
            else:
                log.error("asterisk call %s failed: %s", channel_id, error)
        except VoiceCRMError as error:
            log.error("asterisk call %s could not run: %s", channel_id, error.detail)
        finally:
            try:
                async with asyncio.timeout(CLEANUP_TIMEOUT):
                    await self._tidy_up(call)
            except TimeoutError:
                log.warning("asterisk call %s: tidying up timed out", channel_id)
            finally:
                self._calls.pop(channel_id, None)
                self._media.pop(call.media_id, None)
                self._media_started.pop(call.media_id, None)

    async def _answer_and_run(self, call: _Call) -> None:
        services = self.services
        if call.outbound_call_id is not None:
            placed = await self._placed_call(call, call.outbound_call_id)
            if placed is None:
                await self._hang_up(call, "normal")
                return
            info, scenario, state = placed
        else:
            channel = call.channel
            info = CallInfo(
                call_id=channel.id,
                direction=Direction.INBOUND,
                from_number=channel.caller_number,
                to_number=channel.exten,
                caller_name=channel.caller_name or None,
                channel=CHANNEL,
            )
            state = None
            chosen = self._scenario(call)
            if chosen is None:
                await self._hang_up(call, "rejected")
                return
            scenario = chosen
            contact_id, blocked = await ScenarioCRM(
                services.database, services.actor
            ).ensure_caller(info)
            if blocked:
                chosen = blocked_scenario(services, CHANNEL)
                if chosen is None:
                    await self._reject_blocked(call, info, contact_id)
                    return
                scenario = chosen
            if call.ended is not None:
                return
            await self.client.answer(channel.id)
        if call.ended is not None:
            return
        line = RtpMediaLine(
            info,
            host=self._media_bind,
            # Asterisk sends no RTP while the caller's side is silent, and its events
            # say when the caller leaves: no media for a while does not end the call.
            inactivity_timeout=None,
            on_play=call.control.play,
            on_transfer=call.control.transfer,
            on_hangup=call.control.hangup,
        )
        call.line = line
        call.recorder = AriRecorder(
            self.client,
            call.channel.id,
            call.control.gone,
            lambda: call.bridge_id,
            line=line,
            sink=services.recordings,
            channel=CHANNEL,
        )
        await line.start()
        if call.ended is not None:
            line.close(call.ended)
            return
        await self._connect_media(call, line)
        await run_voice_call(
            services, line, scenario, channel=CHANNEL, state=state, recorder=call.recorder
        )

    async def _placed_call(
        self, call: _Call, call_id: int
    ) -> tuple[CallInfo, Scenario, CallState] | None:
        """The call row, scenario and starting state of an outbound call that answered;
        None (logged) when the row does not describe this channel or is closed already.

        The state is prepared here, as for Twilio's placed calls: the call's contact is
        the callee, and the scenario sees why it calls (`outbound`)."""
        services = self.services
        channel_id = call.channel.id
        async with services.database.transaction(quick=True) as session:
            try:
                record = await call_log.get_call(session, services.actor, call_id)
            except NotFound:
                log.warning("asterisk: %s names call %s, which does not exist", channel_id, call_id)
                return None
            if (
                record.external_id != channel_id
                or record.direction != Direction.OUTBOUND.value
                or record.ended_at is not None
                or record.contact_id is None
            ):
                log.warning("asterisk: %s is not the open outbound call %s", channel_id, call_id)
                return None
            try:
                scenario = services.scenarios.library.get(record.scenario or "")
            except NotFound:
                log.error("asterisk: call %s's scenario %r is gone", call_id, record.scenario)
                await call_log.finish_call(session, services.actor, record.id, status="failed")
                return None
            state = answered_call_state(record, scenario, answered_by="")
            record.state = state.to_json()
            await call_log.note_progress(session, record, "in-progress")
            info = CallInfo(
                call_id=channel_id,
                direction=Direction.OUTBOUND,
                from_number=record.from_number,
                to_number=record.to_number,
                channel=CHANNEL,
            )
        return info, scenario, state

    def _scenario(self, call: _Call) -> Scenario | None:
        library = self.services.scenarios.library
        named = scenario_argument(call.args)
        try:
            return library.get(named) if named else library.for_number(call.channel.exten)
        except NotFound:
            log.warning(
                "asterisk call %s: no scenario %s; hung up",
                call.channel.id,
                repr(named) if named else f"answers {call.channel.exten!r}",
            )
            return None

    async def _reject_blocked(self, call: _Call, info: CallInfo, contact_id: int) -> None:
        """Refused before it is answered, and on the contact's timeline as blocked."""
        async with self.services.database.transaction(quick=True) as session:
            await record_blocked(session, self.services, info, contact_id)
        await self._hang_up(call, "rejected")

    async def _connect_media(self, call: _Call, line: RtpMediaLine) -> None:
        """ExternalMedia to the line's port, then one mixing bridge holding both channels.

        The bridge is added to only after the media channel's StasisStart, since
        Asterisk answers the request before the channel enters the application
        (and refuses to bridge it until then)."""
        started = asyncio.get_running_loop().create_future()
        self._media_started[call.media_id] = started
        self._media[call.media_id] = call
        port = line.local_address[1]
        media = await self.client.external_media(
            f"{self._media_host}:{port}", "ulaw", channel_id=call.media_id
        )
        asterisk_rtp = media_address(media)
        if asterisk_rtp is not None:
            line.expect_peer(asterisk_rtp)
        try:
            async with asyncio.timeout(self._stasis_timeout):
                await started
        except TimeoutError:
            # Its StasisStart may have been lost in a socket drop: try anyway, and let
            # Asterisk's refusal end the call if it really is not there.
            log.warning("asterisk call %s: no StasisStart for its media", call.channel.id)
        bridge = await self.client.create_bridge(
            "mixing", bridge_id=BRIDGE_PREFIX + secrets.token_hex(8)
        )
        call.bridge_id = bridge.id
        await self.client.add_channel(bridge.id, [call.channel.id, call.media_id])

    async def _hang_up(self, call: _Call, reason: str) -> None:
        call.control.hung_up = True
        with contextlib.suppress(ChannelGone):
            await self.client.hangup(call.channel.id, reason)

    async def _release_media(self, call: _Call) -> None:
        """Closes the receptionist's side: the RTP line, the ExternalMedia channel and the
        bridge that held it with the caller. Safe to repeat."""
        if call.line is not None:
            await call.line.aclose()
        if self._media.pop(call.media_id, None) is not None:
            with contextlib.suppress(AriError):
                await self.client.hangup(call.media_id)
        bridge_id, call.bridge_id = call.bridge_id, None
        if bridge_id is not None:
            with contextlib.suppress(AriError):
                await self.client.destroy_bridge(bridge_id)

    async def _tidy_up(self, call: _Call) -> None:
        """Closes the media and everything Asterisk holds for the call (a transfer's
        bridge and target too); a caller still there (the scenario ended without hanging
        up, the transfer's target hung up, or the service is stopping) is hung up, unless
        the call was handed back to the dialplan."""
        control = call.control
        await self._release_media(call)
        await control.aclose()
        if call.outbound_call_id is not None:
            # Answered, so no unanswered end will close it: closed here if its run did
            # not get to (the media failed, the callee left at once).
            with contextlib.suppress(VoiceCRMError):
                async with self.services.database.transaction(quick=True) as session:
                    await call_log.finish_call(
                        session, self.services.actor, call.outbound_call_id, status="completed"
                    )
        if not (control.hung_up or control.handed_off or control.gone.is_set()):
            with contextlib.suppress(AriError):
                await self.client.hangup(call.channel.id)


def media_address(channel: Channel) -> tuple[str, int] | None:
    """Where an ExternalMedia RTP channel listens, from the channelvars Asterisk answers
    with (UNICASTRTP_LOCAL_ADDRESS and _PORT); None when they are missing or unusable."""
    host = channel.channelvars.get("UNICASTRTP_LOCAL_ADDRESS", "")
    port = channel.channelvars.get("UNICASTRTP_LOCAL_PORT", "")
    if not host or host in ("0.0.0.0", "::") or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def _channel_of(event: ev.Event) -> str:
    """The id of the channel an event is about ('' for recordings and the like)."""
    match event:
        case ev.Dial(peer=peer):
            return peer.id
        case ev.PlaybackStarted(playback=playback) | ev.PlaybackFinished(playback=playback):
            return playback.target_uri.removeprefix("channel:")
        case ev.Unknown() | ev.RecordingStarted() | ev.RecordingFinished() | ev.RecordingFailed():
            return ""
        case _:
            return event.channel.id
