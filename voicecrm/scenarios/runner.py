"""One inbound or outbound call from its first event to its last, whatever the carrier.

The carrier adapter hands over a `Call`; this resolves the caller to a
contact, opens the call's row, runs the engine, saves the engine's state
whenever the call suspends, and on the end writes the call and its transcript
to the contact's timeline. Each of those writes is its own short transaction.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from voicecrm.accounts.actor import Actor
from voicecrm.calls.interface import Call, ResumeAnswer
from voicecrm.crm import call_log
from voicecrm.crm.call_log import NewCall, TranscriptLine
from voicecrm.scenarios.crm_actions import ScenarioCRM
from voicecrm.scenarios.engine import Engine
from voicecrm.scenarios.models import Scenario
from voicecrm.scenarios.ports import HttpClient, LanguageModel
from voicecrm.scenarios.state import CallState
from voicecrm.storage import Database

log = logging.getLogger(__name__)


@dataclass
class CallRun:
    state: CallState
    call_id: int
    contact_id: int


async def run_call(
    database: Database,
    actor: Actor,
    scenario: Scenario,
    call: Call,
    *,
    channel: str,
    llm: LanguageModel | None = None,
    http: HttpClient | None = None,
    state: CallState | None = None,
    answer: ResumeAnswer | None = None,
) -> CallRun:
    """Run (or resume, given `state` and the caller's `answer`) a call through `scenario`."""
    crm = ScenarioCRM(database, actor)
    engine = Engine(scenario, call, crm, llm=llm, http=http)
    info = call.info
    if state is None:
        new_contact = await crm.ensure_contact(info)
        async with database.transaction(quick=True) as session:
            record = await call_log.start_call(
                session,
                actor,
                NewCall(
                    channel=channel,
                    external_id=info.call_id,
                    direction=info.direction.value,
                    from_number=info.from_number,
                    to_number=info.to_number,
                    contact_id=new_contact,
                    scenario=scenario.name,
                ),
            )
        state = engine.new_state(call_id=record.id, contact_id=new_contact)
    call_id, contact_id = state.call_id, state.contact_id
    assert call_id is not None and contact_id is not None

    try:
        state = await engine.run(state, answer=answer)
    except asyncio.CancelledError:
        # The service is stopping mid-call: the call is over for the caller too, so it
        # goes on the timeline as such, with what was said, before the task ends.
        running = engine.state
        running.outcome = running.outcome or "service_stopped"
        try:
            await _record(database, actor, call, running, call_id, status="interrupted")
        except Exception:
            log.exception("call %s was cut by a shutdown and could not be recorded", call_id)
        raise
    await _record(database, actor, call, state, call_id, status="completed")
    return CallRun(state=state, call_id=call_id, contact_id=contact_id)


async def _record(
    database: Database, actor: Actor, call: Call, state: CallState, call_id: int, *, status: str
) -> None:
    """Save the state; once the call is over, close it on the timeline with its transcript.

    A call the engine ran was answered; how it ended (transfer, hang-up, error) is the
    state's `outcome`, kept with the call.
    """
    state.latency.extend(turn.as_dict() for turn in call.latencies if turn.complete)
    async with database.transaction(quick=True) as session:
        await call_log.save_state(session, actor, call_id, state.to_json())
        if state.finished:
            voicemail = state.variables.get("voicemail")
            await call_log.finish_call(
                session,
                actor,
                call_id,
                status=status,
                transcript=[TranscriptLine.model_validate(line) for line in state.transcript],
                recording_url=voicemail if isinstance(voicemail, str) and voicemail else None,
            )
