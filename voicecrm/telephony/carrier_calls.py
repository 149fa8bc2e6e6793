"""What every carrier does with a call once its wire protocol is spoken for.

Twilio (Media Streams and TwiML) and Asterisk (Stasis and external media)
differ in how a call arrives and how its audio travels, but not in what the
service does with it: the same shared resources (`CallServices`, built once by
the composition root), the same rule for blocked callers (refused and on the
timeline as blocked, or a named scenario instead), the same row for a call
placed (queued, then failed when the carrier refuses it), and the same way a scenario
runs over an audio line (the `VoiceCall` built by `voice_call`, and `run_call`,
which opens the call's row, runs the engine and closes the row). Keeping that
here is what lets the carriers never import each other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.actor import Actor
from voicecrm.calls.interface import CallInfo, Direction
from voicecrm.calls.outbound import CalleeBlocked, OutboundCallFailed, OutboundRequest
from voicecrm.crm import call_log, contacts
from voicecrm.crm.call_log import NewCall
from voicecrm.crm.callers import resolve_caller
from voicecrm.crm.models import CallRecord
from voicecrm.errors import NotFound
from voicecrm.scenarios.library import ScenarioRegistry
from voicecrm.scenarios.models import Scenario
from voicecrm.scenarios.ports import HttpClient, LanguageModel
from voicecrm.scenarios.runner import run_call
from voicecrm.scenarios.state import CallState
from voicecrm.storage import Database, utcnow
from voicecrm.telephony.voice_calls import SpeechProviders, voice_call
from voicecrm.voice.call import TurnObserver
from voicecrm.voice.line import AudioLine
from voicecrm.voice.ports import CarrierRecorder, MediaFetcher, RecordingSink

log = logging.getLogger(__name__)

REJECT = "reject"  # `blocked_callers`: refuse them, rather than run a scenario


@dataclass(kw_only=True)
class CallServices:
    """What a carrier's calls need from the rest of the service."""

    database: Database
    actor: Actor
    scenarios: ScenarioRegistry
    providers: SpeechProviders
    llm: LanguageModel | None = None
    http: HttpClient | None = None
    media: MediaFetcher | None = None  # fetches the recordings `play` sends down a line
    on_turn: TurnObserver | None = None
    recordings: RecordingSink | None = None
    blocked_callers: str = REJECT  # or the name of the scenario blocked callers get


def blocked_scenario(services: CallServices, carrier: str) -> Scenario | None:
    """The scenario a blocked caller gets; None: refuse the call (also when the named
    scenario is gone, which is logged, so a typo never lets a blocked caller through)."""
    name = services.blocked_callers
    if name == REJECT:
        return None
    try:
        return services.scenarios.library.get(name)
    except NotFound:
        log.error("%s: no scenario %r for blocked callers", carrier, name)
        return None


async def record_blocked(
    session: AsyncSession, services: CallServices, info: CallInfo, contact_id: int
) -> None:
    """The refused call on the contact's timeline, as blocked."""
    await call_log.record_blocked_call(
        session,
        services.actor,
        NewCall(
            channel=info.channel,
            external_id=info.call_id,
            direction=info.direction.value,
            from_number=info.from_number,
            to_number=info.to_number,
            contact_id=contact_id,
        ),
    )


async def run_voice_call(
    services: CallServices,
    line: AudioLine,
    scenario: Scenario,
    *,
    channel: str,
    state: CallState | None = None,
    recorder: CarrierRecorder | None = None,
) -> None:
    """Runs `scenario` over the audio line, from its first step (or `state`, for a call
    this service placed) to its end; raises what `voice_call` and `run_call` raise."""
    async with voice_call(
        line,
        scenario,
        services.providers,
        on_turn=services.on_turn,
        recordings=services.recordings,
        recorder=recorder,
        media=services.media,
    ) as call:
        await run_call(
            services.database,
            services.actor,
            scenario,
            call,
            channel=channel,
            llm=services.llm,
            http=services.http,
            state=state,
        )


async def open_outbound_call(
    database: Database,
    actor: Actor,
    request: OutboundRequest,
    scenario: Scenario,
    *,
    channel: str,
    external_id: str,
    from_number: str,
) -> int:
    """The callee's contact (named, or resolved from the number) and the placed call's
    row, queued; refuses a blocked callee (`CalleeBlocked`)."""
    async with database.transaction(quick=True) as session:
        if request.contact_id is not None:
            contact = await contacts.get_contact(session, actor, request.contact_id)
        else:
            contact = (await resolve_caller(session, actor, request.to)).contact
        if contact.blocked:
            raise CalleeBlocked(f"contact {contact.id} is blocked: not calling {request.to}")
        record = await call_log.start_call(
            session,
            actor,
            NewCall(
                channel=channel,
                external_id=external_id,
                direction=Direction.OUTBOUND.value,
                from_number=from_number,
                to_number=request.to,
                contact_id=contact.id,
                scenario=scenario.name,
                status="queued",
            ),
        )
        record.state = {"outbound": request.scenario_variables()}
        return record.id


async def outbound_failed(
    database: Database, actor: Actor, call_id: int, error: OutboundCallFailed, carrier: str
) -> OutboundCallFailed:
    """Closes the row of a call that could not be placed as failed (on the contact's
    timeline too) and hands back the error, for its caller to raise."""
    log.warning("%s: call %s not placed: %s", carrier, call_id, error.detail)
    async with database.transaction(quick=True) as session:
        await call_log.finish_call(session, actor, call_id, status="failed", duration_seconds=0)
    return error


def answered_call_state(record: CallRecord, scenario: Scenario, answered_by: str) -> CallState:
    """Where a placed call's scenario starts once the callee answers: the callee is the
    call's contact, and the scenario sees who answered and why it calls (`outbound`)."""
    saved = dict(record.state or {})
    return CallState(
        scenario=scenario.name,
        step=scenario.first_step,
        call_id=record.id,
        contact_id=record.contact_id,
        started_at=utcnow().isoformat(),
        variables={
            "answered_by": answered_by,
            "outbound": saved.get("outbound") or {"campaign": "", "metadata": {}},
        },
    )
