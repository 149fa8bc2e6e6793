"""Channels the service dials itself with ARI originate: transfer targets and outbound calls.

An originated channel enters the same Stasis application as the callers do, so
the application must tell them apart before it answers anything: each carries
an id prefix the service chose (`TRANSFER_PREFIX`, `ORIGINATED_PREFIX`) and a
first Stasis argument naming its purpose (`TRANSFER_ARG`, `OUTBOUND_ARG`).
The reference (section 4) says how such a channel's life is told: progress
events (`Dial`, `ChannelStateChange`) may come before the StasisStart that
only an answer brings, and a channel never answered ends with
ChannelDestroyed and no StasisStart; with Local channels the destroyed cause
may be 0 and only the `Dial` event's `dialstatus` says busy or no answer.
`Leg` follows one such channel through those events, so whoever dialled it
can simply await its answer.
"""

from __future__ import annotations

import asyncio

from voicecrm.calls.interface import TransferStatus
from voicecrm.cancellation import cancel_and_wait
from voicecrm.errors import ConfigurationError
from voicecrm.telephony.ari import events as ev

TRANSFER_PREFIX = "voicecrm-xfer-"  # a transfer's target, bridged with the caller
ORIGINATED_PREFIX = "voicecrm-out-"  # an outbound call placed by `AriOutbound`
TRANSFER_ARG = "voicecrm-transfer"  # Stasis args: TRANSFER_ARG, the caller's channel id
OUTBOUND_ARG = "voicecrm-outbound"  # Stasis args: OUTBOUND_ARG, call_id=N (the call's row)
NUMBER = "{number}"
ADDRESS = "{address}"  # a SIP target without its scheme: alice@example.com
SIP_SCHEMES = ("sip:", "sips:")

# Dial statuses and Q.850 causes that mean the far end will not answer.
_BUSY_DIALSTATUS = frozenset({"BUSY"})
_NO_ANSWER_DIALSTATUS = frozenset({"NOANSWER", "CANCEL"})
_FAILED_DIALSTATUS = frozenset({"CONGESTION", "CHANUNAVAIL"})
_BUSY_CAUSES = frozenset({17, 21})  # user busy, call rejected
_NO_ANSWER_CAUSES = frozenset({0, 16, 18, 19})  # (unknown), normal, no response, no answer


def dial_endpoint(template: str, number: str) -> str:
    """`PJSIP/{number}@trunk` with the number put in; the template is checked once, by
    whoever configured it, with `check_dial_template`."""
    return template.replace(NUMBER, number)


def check_dial_template(template: str) -> str:
    """Refuses a template that could not dial anyone (no `{number}`, no technology)."""
    return _check_template("VOICECRM_ARI_DIAL_TEMPLATE", template, NUMBER, "PJSIP/{number}@trunk")


def _check_template(setting: str, template: str, placeholder: str, example: str) -> str:
    if placeholder not in template or "/" not in template.split(placeholder)[0]:
        raise ConfigurationError(
            f"{setting} {template!r} needs a technology and {placeholder}, e.g. {example}"
        )
    return template


def is_sip_target(target: str) -> bool:
    return target.lower().startswith(SIP_SCHEMES)


def sip_endpoint(template: str, target: str) -> str:
    """`sip:alice@example.com` as Asterisk dials it through `template`
    (`PJSIP/{address}` gives `PJSIP/alice@example.com`)."""
    address = target.split(":", 1)[1]
    return template.replace(ADDRESS, address)


def check_sip_dial_template(template: str) -> str:
    """Refuses a SIP template that could not dial anyone (no `{address}`, no technology)."""
    return _check_template("VOICECRM_ARI_SIP_DIAL_TEMPLATE", template, ADDRESS, "PJSIP/{address}")


def is_own_channel(channel_id: str, args: tuple[str, ...]) -> bool:
    """A channel this service originated (a transfer target, an outbound call), which
    must never be answered as a caller."""
    return channel_id.startswith((TRANSFER_PREFIX, ORIGINATED_PREFIX)) or (
        bool(args) and args[0] in (TRANSFER_ARG, OUTBOUND_ARG)
    )


def outbound_call_id(args: tuple[str, ...]) -> int | None:
    """The call row an outbound channel's Stasis args name (`call_id=N`), if they do."""
    if not args or args[0] != OUTBOUND_ARG:
        return None
    for arg in args[1:]:
        key, _, value = arg.partition("=")
        if key == "call_id" and value.isdigit():
            return int(value)
    return None


def unanswered_status(cause: int, dialstatus: str = "") -> TransferStatus:
    """Why a dialled channel ended without an answer, in the carrier-neutral terms."""
    if dialstatus in _BUSY_DIALSTATUS:
        return TransferStatus.BUSY
    if dialstatus in _NO_ANSWER_DIALSTATUS:
        return TransferStatus.NO_ANSWER
    if dialstatus in _FAILED_DIALSTATUS:
        return TransferStatus.FAILED
    if cause in _BUSY_CAUSES:
        return TransferStatus.BUSY
    if cause in _NO_ANSWER_CAUSES:
        return TransferStatus.NO_ANSWER
    return TransferStatus.FAILED


def call_log_status(status: TransferStatus) -> str:
    """The call log's final status for an outbound call that was never answered."""
    return {
        TransferStatus.BUSY: "busy",
        TransferStatus.NO_ANSWER: "no-answer",
    }.get(status, "failed")


class Leg:
    """One channel this service dialled, from the originate request to its end.

    The Stasis application feeds it every event about its channel (`on_event`);
    `answered` is set by its StasisStart (or its state going Up), `in_stasis` by
    the StasisStart alone (only then can it be bridged), `ended` when it left.
    """

    def __init__(self, channel_id: str) -> None:
        self.channel_id = channel_id
        self.answered = asyncio.Event()
        self.in_stasis = asyncio.Event()
        self.ended = asyncio.Event()
        self.cause = 0
        self.dialstatus = ""
        self._playbacks: dict[str, asyncio.Future[str]] = {}

    def expect_playback(self, playback_id: str) -> asyncio.Future[str]:
        """Done, with the playback's last state (`done`, or `failed` where Asterisk
        reports it), when the playback `playback_id` on this channel finishes."""
        waiter = self._playbacks[playback_id] = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(lambda _: self._playbacks.pop(playback_id, None))
        return waiter

    def on_event(self, event: ev.Event) -> None:
        match event:
            case ev.PlaybackFinished(playback=playback):
                waiter = self._playbacks.get(playback.id)
                if waiter is not None and not waiter.done():
                    waiter.set_result(playback.state)
            case ev.StasisStart():
                self.in_stasis.set()
                self.answered.set()
            case ev.ChannelStateChange(channel=channel) if channel.state == "Up":
                self.answered.set()
            case ev.Dial(dialstatus=status) if status:
                self.dialstatus = status
            case ev.ChannelDestroyed(cause=cause):
                self.cause = cause
                self.ended.set()
            case ev.StasisEnd():
                self.ended.set()
            case _:
                pass

    def gone(self) -> None:
        """The channel is known to be gone (ARI answered 404 for it)."""
        self.ended.set()

    @property
    def status(self) -> TransferStatus:
        """How it ended, when it ended without an answer."""
        return unanswered_status(self.cause, self.dialstatus)

    async def wait_answer(self, within: float, caller_gone: asyncio.Event) -> TransferStatus | None:
        """ANSWERED; BUSY, NO_ANSWER or FAILED when it ended unanswered; NO_ANSWER when
        `within` seconds passed; None when the caller left first."""
        waits = {
            asyncio.ensure_future(self.answered.wait()),
            asyncio.ensure_future(self.ended.wait()),
            asyncio.ensure_future(caller_gone.wait()),
        }
        try:
            await asyncio.wait(waits, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(*waits)
        if caller_gone.is_set():
            return None
        if self.ended.is_set():
            return self.status
        if self.answered.is_set():
            return TransferStatus.ANSWERED
        return TransferStatus.NO_ANSWER

    async def wait_end(self, caller_gone: asyncio.Event) -> None:
        """Returns once this channel or the caller has left."""
        waits = {
            asyncio.ensure_future(self.ended.wait()),
            asyncio.ensure_future(caller_gone.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(*waits)
