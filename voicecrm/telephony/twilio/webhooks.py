"""Twilio's voice webhooks: the incoming call, the end of its Media Stream, status callbacks.

Each request is signature-checked first. The incoming call resolves the
caller to a contact, opens the call's row (once, however often Twilio
retries), picks the scenario by the dialled number and answers with
`<Connect><Stream>` to this service's WebSocket. When the stream ends, the
`<Connect action>` webhook answers with what the scenario decided: `<Dial>`
for a transfer, `<Hangup/>` otherwise. Status callbacks close the call's
row with Twilio's final status; a retried or late callback changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.twiml.voice_response import Connect, Dial, VoiceResponse

from voicecrm.calls.interface import CallInfo, Direction, GatherResult
from voicecrm.crm import call_log
from voicecrm.crm.call_log import FINAL_STATUSES, NewCall
from voicecrm.crm.models import Contact
from voicecrm.errors import NotFound
from voicecrm.scenarios.crm_actions import ScenarioCRM
from voicecrm.scenarios.models import Scenario
from voicecrm.scenarios.runner import run_call
from voicecrm.scenarios.state import CallState
from voicecrm.telephony.twilio.services import TWILIO, TwilioServices
from voicecrm.telephony.twilio.signature import (
    problem,
    public_base,
    refuse,
    signed_by_twilio,
    websocket_base,
)
from voicecrm.telephony.twilio.twiml_call import TwimlCall

log = logging.getLogger(__name__)

CHANNEL = "twilio"
PROGRESS_STATUSES = frozenset({"queued", "initiated", "ringing", "in-progress"})
Handler = Callable[[web.Request, TwilioServices, Mapping[str, str]], Awaitable[web.Response]]


def twiml(response: VoiceResponse) -> web.Response:
    return web.Response(text=str(response), content_type="text/xml")


def signed_form(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Checks configuration and the signature, then hands over the form's fields."""

    async def checked(request: web.Request) -> web.Response:
        services = request.config_dict[TWILIO]
        if services.validator is None:
            return problem(
                503,
                "Twilio is not configured",
                "set VOICECRM_TWILIO_AUTH_TOKEN to the account's auth token to take calls",
            )
        form = await request.post()
        fields = {name: value for name, value in form.items() if isinstance(value, str)}
        url = public_base(request, services.public_url) + request.path_qs
        if not signed_by_twilio(
            services.validator, url, form, request.headers.get("X-Twilio-Signature")
        ):
            return refuse(request, "missing or bad X-Twilio-Signature")
        if not fields.get("CallSid"):
            return problem(400, "Bad Request", "the webhook has no CallSid")
        return await handler(request, services, fields)

    return checked


async def incoming_call(
    request: web.Request, services: TwilioServices, fields: Mapping[str, str]
) -> web.Response:
    sid, dialled = fields["CallSid"], fields.get("To", "")
    try:
        scenario = services.scenarios.library.for_number(dialled)
    except NotFound:
        log.warning("twilio: no scenario answers %s; call %s is rejected", dialled, sid)
        response = VoiceResponse()
        response.reject(reason="rejected")
        return twiml(response)
    info = CallInfo(
        call_id=sid,
        direction=Direction.INBOUND
        if fields.get("Direction", "inbound") == "inbound"
        else Direction.OUTBOUND,
        from_number=fields.get("From", ""),
        to_number=dialled,
        caller_name=fields.get("CallerName") or None,
        channel=CHANNEL,
    )
    contact_id = await ScenarioCRM(services.database, services.actor).ensure_contact(info)
    async with services.database.transaction() as session:
        contact = await session.get(Contact, contact_id)
        if contact is not None and contact.blocked:
            if services.blocked_callers == "reject":
                return await _reject_blocked(session, services, info, contact_id)
            try:
                scenario = services.scenarios.library.get(services.blocked_callers)
            except NotFound:
                log.error("twilio: no scenario %r for blocked callers", services.blocked_callers)
                return await _reject_blocked(session, services, info, contact_id)
        record = await call_log.start_call(
            session,
            services.actor,
            NewCall(
                channel=CHANNEL,
                external_id=sid,
                direction=info.direction.value,
                from_number=info.from_number,
                to_number=dialled,
                contact_id=contact_id,
                scenario=scenario.name,
            ),
        )
        call_id = record.id
        saved = dict(record.state or {})
    base = public_base(request, services.public_url)
    mode = scenario.settings.twilio_mode
    if (services.mode if mode == "default" else mode) == "twiml":
        if "twilio_twiml" in saved:  # Twilio retried this webhook: the same answer again
            return web.Response(text=saved["twilio_twiml"], content_type="text/xml")
        return await _run_twiml(request, services, scenario, info, call_id, state=None, turn=1)
    connect = Connect(action=f"{base}/twilio/voice/after-stream")
    stream = connect.stream(url=f"{websocket_base(base)}/twilio/media")
    stream.parameter(name="call_id", value=str(call_id))
    response = VoiceResponse()
    response.append(connect)
    return twiml(response)


async def _reject_blocked(
    session: AsyncSession, services: TwilioServices, info: CallInfo, contact_id: int
) -> web.Response:
    """Refused before it is answered, and on the contact's timeline as blocked."""
    record = await call_log.start_call(
        session,
        services.actor,
        NewCall(
            channel=CHANNEL,
            external_id=info.call_id,
            direction=info.direction.value,
            from_number=info.from_number,
            to_number=info.to_number,
            contact_id=contact_id,
        ),
    )
    await call_log.finish_call(
        session, services.actor, record.id, status="blocked", duration_seconds=0
    )
    response = VoiceResponse()
    response.reject(reason="rejected")
    return twiml(response)


async def _run_twiml(
    request: web.Request,
    services: TwilioServices,
    scenario: Scenario,
    info: CallInfo,
    call_id: int,
    *,
    state: CallState | None,
    turn: int,
    answer: GatherResult | None = None,
) -> web.Response:
    """Run the scenario until it waits for the caller; answer with the TwiML it wrote.

    `turn` numbers this webhook's `<Gather>` action URL, so a retried or stale gather
    webhook is recognised and answered with the TwiML already given, not run twice.
    """
    base = public_base(request, services.public_url)
    call = TwimlCall(
        info,
        gather_url=f"{base}/twilio/voice/gather?call_id={call_id}&turn={turn}",
        voice=scenario.settings.voice,
        language=scenario.settings.language,
    )
    run = await run_call(
        services.database,
        services.actor,
        scenario,
        call,
        channel=CHANNEL,
        llm=services.llm,
        http=services.http,
        state=state,
        answer=answer,
    )
    if run.state.finished and not call.ended:
        call.response.hangup()
    text = str(call.response)
    async with services.database.transaction() as session:
        record = await call_log.get_call(session, services.actor, call_id)
        record.state = {**(record.state or {}), "twilio_twiml": text, "twilio_turn": turn}
    return web.Response(text=text, content_type="text/xml")


async def gather_answer(
    request: web.Request, services: TwilioServices, fields: Mapping[str, str]
) -> web.Response:
    """The caller's answer to a `<Gather>`: resume the scenario where it waited."""
    try:
        call_id = int(request.query.get("call_id", ""))
        turn = int(request.query.get("turn", ""))
    except ValueError:
        return problem(400, "Bad Request", "the gather URL needs call_id and turn numbers")
    async with services.database.transaction(read_only=True) as session:
        try:
            record = await call_log.get_call(session, services.actor, call_id)
        except NotFound:
            return problem(404, "Not Found", f"call {call_id} does not exist")
        if record.external_id != fields["CallSid"]:
            return problem(400, "Bad Request", "this gather belongs to another call")
        saved = dict(record.state or {})
        info = CallInfo(
            call_id=record.external_id,
            direction=Direction(record.direction),
            from_number=record.from_number,
            to_number=record.to_number,
            channel=CHANNEL,
        )
        scenario_name = record.scenario
    if saved.get("twilio_turn") != turn or not saved.get("awaiting"):
        # A retry, or an answer to a prompt already answered: repeat what was said last.
        response = VoiceResponse()
        response.hangup()
        return web.Response(
            text=saved.get("twilio_twiml") or str(response), content_type="text/xml"
        )
    try:
        scenario = services.scenarios.library.get(scenario_name or "")
    except NotFound:
        return problem(409, "Conflict", f"the call's scenario {scenario_name!r} is gone")
    state = CallState.from_json(
        {k: v for k, v in saved.items() if k not in ("twilio_twiml", "twilio_turn")}
    )
    confidence = fields.get("Confidence", "")
    try:
        level = float(confidence) if confidence else None
    except ValueError:
        return problem(400, "Bad Request", f"Confidence {confidence!r} is not a number")
    answer = GatherResult(
        digits=fields.get("Digits", ""), speech=fields.get("SpeechResult", ""), confidence=level
    )
    return await _run_twiml(
        request, services, scenario, info, call_id, state=state, turn=turn + 1, answer=answer
    )


async def after_stream(
    request: web.Request, services: TwilioServices, fields: Mapping[str, str]
) -> web.Response:
    async with services.database.transaction(read_only=True) as session:
        record = await call_log.find_call(session, CHANNEL, fields["CallSid"])
        handoff = (record.state or {}).get("twilio_handoff") if record is not None else None
    response = VoiceResponse()
    if isinstance(handoff, dict) and handoff.get("action") == "dial" and handoff.get("target"):
        dial = Dial(
            timeout=int(handoff.get("ring_timeout") or 30),
            caller_id=handoff.get("caller_id") or None,
        )
        target = str(handoff["target"])
        if target.startswith("sip:"):
            dial.sip(target)
        else:
            dial.number(target)
        response.append(dial)
    else:
        response.hangup()
    return twiml(response)


async def status_callback(
    request: web.Request, services: TwilioServices, fields: Mapping[str, str]
) -> web.Response:
    status = fields.get("CallStatus", "")
    if status not in FINAL_STATUSES | PROGRESS_STATUSES:
        return problem(400, "Bad Request", f"unknown CallStatus {status!r}")
    duration = fields.get("CallDuration", "")
    async with services.database.transaction() as session:
        record = await call_log.find_call(session, CHANNEL, fields["CallSid"])
        if record is None:
            return web.Response(status=204)  # a call that never reached the voice webhook
        if status in FINAL_STATUSES:
            await call_log.finish_call(
                session,
                services.actor,
                record.id,
                status=status,
                duration_seconds=int(duration) if duration.isdigit() else None,
            )
        else:
            await call_log.note_progress(session, record, status)
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/voice", signed_form(incoming_call)),
        web.post("/voice/after-stream", signed_form(after_stream)),
        web.post("/voice/gather", signed_form(gather_answer)),
        web.post("/status", signed_form(status_callback)),
    ]
