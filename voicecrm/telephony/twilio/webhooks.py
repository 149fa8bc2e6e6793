"""Twilio's voice webhooks: the incoming call, the end of its Media Stream, status callbacks.

Each request is signature-checked first. The incoming call resolves the
caller to a contact, opens the call's row (once, however often Twilio
retries), picks the scenario by the dialled number and answers with
`<Connect><Stream>` to this service's WebSocket. When the stream ends, the
`<Connect action>` webhook answers with what the scenario decided: `<Dial>`
for a transfer (its whisper said by the `/twilio/whisper` webhook to the
person who answers, `dialling`), `<Hangup/>` otherwise. Status callbacks close the call's
row with Twilio's final status; a retried or late callback changes nothing.

A TwiML-only call runs its scenario in the webhooks themselves, a turn per
`<Gather>` answer. A retried webhook (Twilio gave up waiting, maybe on another
instance) must not run a turn twice: the request that runs it claims the turn
under the call row's lock (`ANSWERING`), a duplicate arriving meanwhile is told
to pause and ask again (`_hold_on`), and one arriving after gets the TwiML the
turn produced.

A call this service placed (`TwilioOutbound`) comes back to the same voice
webhook with its row's id in the URL: it runs the scenario it was placed for,
with the callee's contact, not the scenario of any dialled number. With
answering machine detection, `AnsweredBy` decides first: a machine is hung up
on (the call ends as "machine") unless the scenario's `outbound.on_machine`
says to continue and leave a message; a fax always is.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.twiml.voice_response import Connect, VoiceResponse

from voicecrm.calls.interface import CallInfo, Direction, GatherResult, Recording, ResumeAnswer
from voicecrm.calls.outbound import Answerer
from voicecrm.crm import call_log
from voicecrm.crm.call_log import FINAL_STATUSES, NewCall
from voicecrm.crm.models import CallRecord
from voicecrm.errors import Conflict, NotFound
from voicecrm.scenarios.crm_actions import ScenarioCRM
from voicecrm.scenarios.models import Scenario
from voicecrm.scenarios.models import Settings as ScenarioSettings
from voicecrm.scenarios.runner import run_call
from voicecrm.scenarios.state import CallState
from voicecrm.telephony.carrier_calls import (
    answered_call_state,
    blocked_scenario,
    record_blocked,
)
from voicecrm.telephony.twilio.dialling import (
    WHISPER_PATH,
    dial,
    whisper_response,
    whisper_url,
)
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
MACHINES = frozenset(
    {"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other"}
)
STATE_FIELDS = frozenset(f.name for f in dataclasses.fields(CallState))
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


def answerer(answered_by: str) -> Answerer:
    """Twilio's `AnsweredBy` in the carrier-neutral terms the call log and scenarios use."""
    if answered_by in MACHINES:
        return Answerer.MACHINE
    if answered_by in (Answerer.FAX, Answerer.HUMAN):
        return Answerer(answered_by)
    return Answerer.UNKNOWN


def engine_state(saved: Mapping[str, Any]) -> CallState:
    """The scenario engine's part of a call's saved state, without this adapter's keys."""
    return CallState.from_json({k: v for k, v in saved.items() if k in STATE_FIELDS})


def placed_call_state(record: CallRecord) -> CallState | None:
    """The state the voice webhook prepared for a call this service placed (the callee's
    contact, who answered, the campaign), for its Media Stream to start from; None for an
    incoming call, whose run resolves the caller itself."""
    saved = record.state or {}
    if record.direction != Direction.OUTBOUND.value or "version" not in saved:
        return None
    return engine_state(saved)


def _connect_stream(base: str, call_id: int) -> web.Response:
    connect = Connect(action=f"{base}/twilio/voice/after-stream")
    stream = connect.stream(
        url=f"{websocket_base(base)}/twilio/media",
        status_callback=f"{base}/twilio/stream-status",
    )
    stream.parameter(name="call_id", value=str(call_id))
    response = VoiceResponse()
    response.append(connect)
    return twiml(response)


def _uses_twiml(services: TwilioServices, scenario: Scenario) -> bool:
    mode = scenario.settings.twilio_mode
    return (services.mode if mode == "default" else mode) == "twiml"


# In a TwiML call's state while a request runs its scenario for a turn (0: the first
# webhook), with when it began: a duplicate of that webhook, on any instance, waits
# instead of running the turn a second time.
ANSWERING = "twilio_answering"
# A claim older than this is taken over: the request that made it is gone (its instance
# stopped), and Twilio, which waits 15 s for an answer, has long given up on it.
CLAIM_SECONDS = 30.0


def _claim(turn: int) -> dict[str, Any]:
    return {"turn": turn, "at": datetime.now(UTC).isoformat()}


def _unclaimed(state: Mapping[str, Any] | None) -> dict[str, Any]:
    """The call's state without a turn's claim."""
    return {key: value for key, value in (state or {}).items() if key != ANSWERING}


def _claimed(saved: Mapping[str, Any], turn: int) -> bool:
    """Whether another request is running `turn` now (a claim on it, not yet stale)."""
    claim = saved.get(ANSWERING)
    if not isinstance(claim, dict) or claim.get("turn") != turn:
        return False
    try:
        since = datetime.fromisoformat(str(claim.get("at")))
    except ValueError:
        return False
    if since.tzinfo is None:
        return False
    return (datetime.now(UTC) - since).total_seconds() < CLAIM_SECONDS


async def incoming_call(
    request: web.Request, services: TwilioServices, fields: Mapping[str, str]
) -> web.Response:
    if "call_id" in request.query or fields.get("Direction") == "outbound-api":
        return await placed_call_answered(request, services, fields)
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
    crm = ScenarioCRM(services.database, services.actor)
    contact_id, blocked = await crm.ensure_caller(info)
    async with services.database.transaction(quick=True) as session:
        if blocked:
            instead = blocked_scenario(services, "twilio")
            if instead is None:
                return await _reject_blocked(session, services, info, contact_id)
            scenario = instead
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
        uses_twiml = _uses_twiml(services, scenario)
        if uses_twiml:
            record = await call_log.lock_call(session, services.actor, call_id)
            saved = dict(record.state or {})
            if "twilio_twiml" in saved:  # Twilio retried this webhook: the same answer again
                return web.Response(text=saved["twilio_twiml"], content_type="text/xml")
            if _claimed(saved, 0):  # the same webhook, being answered by another request
                return _hold_on(request, services)
            record.state = {**saved, ANSWERING: _claim(0)}
    if uses_twiml:
        return await _run_twiml(request, services, scenario, info, call_id, state=None, turn=1)
    return _connect_stream(public_base(request, services.public_url), call_id)


async def _placed_call(
    session: AsyncSession, services: TwilioServices, request: web.Request, sid: str
) -> CallRecord | web.Response:
    """The row of a call this service placed, by the id in the URL (checked against the
    CallSid) or by the CallSid; the row takes the CallSid if Twilio's webhook is the first
    to name it."""
    raw = request.query.get("call_id")
    if raw is None:
        found = await call_log.find_call(session, CHANNEL, sid)
        if found is None:
            return problem(404, "Not Found", f"call {sid} was not placed by this service")
        record = found
    else:
        try:
            call_id = int(raw)
        except ValueError:
            return problem(400, "Bad Request", f"call_id {raw!r} is not a number")
        try:
            record = await call_log.get_call(session, services.actor, call_id)
        except NotFound:
            return problem(404, "Not Found", f"call {call_id} does not exist")
    if record.direction != Direction.OUTBOUND.value:
        return problem(400, "Bad Request", f"call {record.id} is not a call this service placed")
    if record.external_id != sid:
        if not call_log.is_pending(record.external_id):
            return problem(400, "Bad Request", "this webhook belongs to another call")
        try:
            await call_log.set_external_id(session, services.actor, record.id, sid)
        except Conflict as err:
            return problem(409, "Conflict", err.detail)
    return record


async def placed_call_answered(
    request: web.Request, services: TwilioServices, fields: Mapping[str, str]
) -> web.Response:
    """The callee answered a call this service placed: run the scenario it was placed for.

    The engine's state is prepared here, not by the run, because an outbound call's
    contact is the callee (the run would resolve the caller, which is this business) and
    the scenario should know who answered (`answered_by`) and why it calls (`outbound`).
    """
    sid, answered_by = fields["CallSid"], fields.get("AnsweredBy", "")
    async with services.database.transaction(quick=True) as session:
        found = await _placed_call(session, services, request, sid)
        if isinstance(found, web.Response):
            return found
        # Locked: a duplicate of this webhook handled at once sees what this one decided.
        record = await call_log.lock_call(session, services.actor, found.id)
        saved = dict(record.state or {})
        if "twilio_twiml" in saved:  # Twilio retried this webhook: the same answer again
            return web.Response(text=saved["twilio_twiml"], content_type="text/xml")
        if record.ended_at is not None:  # given up on (placing it timed out): nothing to run
            return _hang_up()
        asked = request.query.get("scenario")
        if asked is not None and asked != record.scenario:
            return problem(400, "Bad Request", f"call {record.id} was not placed for {asked!r}")
        try:
            scenario = services.scenarios.library.get(record.scenario or "")
        except NotFound:
            return problem(409, "Conflict", f"the call's scenario {record.scenario!r} is gone")
        if "version" in saved:  # answered already: a retry while its Media Stream runs
            if _uses_twiml(services, scenario):
                return problem(409, "Conflict", f"call {record.id} is already being answered")
            return _connect_stream(public_base(request, services.public_url), record.id)
        state = answered_call_state(record, scenario, answered_by)
        who = answerer(answered_by)
        if who in (Answerer.MACHINE, Answerer.FAX):
            keep_going = (
                who is Answerer.MACHINE and scenario.settings.outbound.on_machine == "continue"
            )
            action = "continue" if keep_going else "hangup"
            await call_log.machine_answered(session, services.actor, record, answered_by, action)
            if not keep_going:
                log.info("twilio: call %s answered by %s: hung up", record.id, answered_by)
                state.step, state.outcome = None, "machine"
                response = _hang_up()
                record.state = {**state.to_json(), "twilio_twiml": response.text}
                await call_log.finish_call(session, services.actor, record.id, status="machine")
                return response
        record.state = state.to_json()
        call_id = record.id
        info = CallInfo(
            call_id=sid,
            direction=Direction.OUTBOUND,
            from_number=record.from_number,
            to_number=record.to_number,
            channel=CHANNEL,
        )
    if _uses_twiml(services, scenario):
        return await _run_twiml(request, services, scenario, info, call_id, state=state, turn=1)
    return _connect_stream(public_base(request, services.public_url), call_id)


def _hang_up() -> web.Response:
    response = VoiceResponse()
    response.hangup()
    return twiml(response)


async def _reject_blocked(
    session: AsyncSession, services: TwilioServices, info: CallInfo, contact_id: int
) -> web.Response:
    """Refused before it is answered, and on the contact's timeline as blocked."""
    await record_blocked(session, services, info, contact_id)
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
    answer: ResumeAnswer | None = None,
) -> web.Response:
    """Run the scenario until it waits for the caller; answer with the TwiML it wrote.

    `turn` numbers this webhook's `<Gather>` action URL, so a retried or stale gather
    webhook is recognised and answered with the TwiML already given, not run twice.
    """
    base = public_base(request, services.public_url)
    call = TwimlCall(
        info,
        gather_url=f"{base}/twilio/voice/gather?call_id={call_id}&turn={turn}",
        public_base=base,
        voice=scenario.settings.voice,
        language=scenario.settings.language,
    )
    try:
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
    except BaseException:
        # The turn was not answered: a retry of the webhook may run it. (Should that not
        # be written either, the claim expires: `CLAIM_SECONDS`.)
        try:
            async with services.database.transaction(quick=True) as session:
                record = await call_log.lock_call(session, services.actor, call_id)
                record.state = _unclaimed(record.state)
        except Exception:
            log.exception("twilio: call %s: its turn's claim could not be released", call_id)
        raise
    if run.state.finished and not call.ended:
        call.response.hangup()
    text = str(call.response)
    async with services.database.transaction(quick=True) as session:
        record = await call_log.lock_call(session, services.actor, call_id)
        record.state = {**_unclaimed(record.state), "twilio_twiml": text, "twilio_turn": turn}
    return web.Response(text=text, content_type="text/xml")


async def gather_answer(
    request: web.Request, services: TwilioServices, fields: Mapping[str, str]
) -> web.Response:
    """The caller's answer to a `<Gather>`, or the message a `<Record>` took: resume the
    scenario where it waited."""
    try:
        call_id = int(request.query.get("call_id", ""))
        turn = int(request.query.get("turn", ""))
    except ValueError:
        return problem(400, "Bad Request", "the gather URL needs call_id and turn numbers")
    answer = _resume_answer(fields)
    if isinstance(answer, web.Response):
        return answer
    async with services.database.transaction(quick=True) as session:
        try:
            record = await call_log.lock_call(session, services.actor, call_id)
        except NotFound:
            return problem(404, "Not Found", f"call {call_id} does not exist")
        if record.external_id != fields["CallSid"]:
            return problem(400, "Bad Request", "this gather belongs to another call")
        saved = dict(record.state or {})
        if saved.get("twilio_turn") != turn or not saved.get("awaiting"):
            # A retry, or an answer to a prompt already answered: repeat what was said last.
            response = VoiceResponse()
            response.hangup()
            return web.Response(
                text=saved.get("twilio_twiml") or str(response), content_type="text/xml"
            )
        if _claimed(saved, turn):
            return _hold_on(request, services)
        try:
            scenario = services.scenarios.library.get(record.scenario or "")
        except NotFound:
            return problem(409, "Conflict", f"the call's scenario {record.scenario!r} is gone")
        record.state = {**saved, ANSWERING: _claim(turn)}  # this request runs the turn
        info = CallInfo(
            call_id=record.external_id,
            direction=Direction(record.direction),
            from_number=record.from_number,
            to_number=record.to_number,
            channel=CHANNEL,
        )
    return await _run_twiml(
        request,
        services,
        scenario,
        info,
        call_id,
        state=engine_state(saved),
        turn=turn + 1,
        answer=answer,
    )


def _hold_on(request: web.Request, services: TwilioServices) -> web.Response:
    """The answer to a webhook that another request for the same turn is answering (a
    retry, on this instance or another): a second's pause, then this webhook again,
    which by then repeats what that request said."""
    response = VoiceResponse()
    response.pause(length=1)
    response.redirect(public_base(request, services.public_url) + request.path_qs, method="POST")
    return twiml(response)


def _resume_answer(fields: Mapping[str, str]) -> ResumeAnswer | web.Response:
    """What the call resumes with: a `<Record>`'s message (its action carries
    `RecordingUrl` and `RecordingDuration`, both empty when nothing was recorded) or a
    `<Gather>`'s answer; a 400 problem for numbers that are not numbers."""
    if "RecordingUrl" in fields or "RecordingDuration" in fields:
        duration = fields.get("RecordingDuration", "")
        try:
            seconds = float(duration) if duration else 0.0
        except ValueError:
            return problem(400, "Bad Request", f"RecordingDuration {duration!r} is not a number")
        return Recording(url=fields.get("RecordingUrl", ""), duration_seconds=seconds)
    confidence = fields.get("Confidence", "")
    try:
        level = float(confidence) if confidence else None
    except ValueError:
        return problem(400, "Bad Request", f"Confidence {confidence!r} is not a number")
    return GatherResult(
        digits=fields.get("Digits", ""), speech=fields.get("SpeechResult", ""), confidence=level
    )


async def after_stream(
    request: web.Request, services: TwilioServices, fields: Mapping[str, str]
) -> web.Response:
    async with services.database.transaction(read_only=True, quick=True) as session:
        record = await call_log.find_call(session, CHANNEL, fields["CallSid"])
        handoff = (record.state or {}).get("twilio_handoff") if record is not None else None
    response = VoiceResponse()
    if isinstance(handoff, dict) and handoff.get("action") == "dial" and handoff.get("target"):
        whisper = handoff.get("whisper")
        said = None
        if whisper:
            language = _scenario_language(services, record.scenario if record else None)
            base = public_base(request, services.public_url)
            said = whisper_url(base, whisper, language=language)
        response.append(
            dial(
                str(handoff["target"]),
                ring_timeout=int(handoff.get("ring_timeout") or 30),
                caller_id=handoff.get("caller_id"),
                whisper=said,
            )
        )
    else:
        response.hangup()
    return twiml(response)


def _scenario_language(services: TwilioServices, name: str | None) -> str:
    """The language the call's scenario speaks (its default when the scenario is gone)."""
    try:
        return services.scenarios.library.get(name or "").settings.language
    except NotFound:
        return ScenarioSettings().language


async def whisper_to_answerer(
    request: web.Request, services: TwilioServices, fields: Mapping[str, str]
) -> web.Response:
    """Said to the person a transfer reaches before the caller is put through (`dialling`)."""
    text = request.query.get("text", "").strip()
    if not text:
        return problem(400, "Bad Request", "the whisper has no text")
    language = request.query.get("language") or ScenarioSettings().language
    return twiml(whisper_response(text, language=language, voice=request.query.get("voice")))


async def status_callback(
    request: web.Request, services: TwilioServices, fields: Mapping[str, str]
) -> web.Response:
    status = fields.get("CallStatus", "")
    if status not in FINAL_STATUSES | PROGRESS_STATUSES:
        return problem(400, "Bad Request", f"unknown CallStatus {status!r}")
    duration = fields.get("CallDuration", "")
    async with services.database.transaction(quick=True) as session:
        record: CallRecord | None
        if "call_id" in request.query:  # a call this service placed, perhaps not yet named
            found = await _placed_call(session, services, request, fields["CallSid"])
            if isinstance(found, web.Response):
                return found
            record = found
        else:
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


async def recording_status(
    request: web.Request, services: TwilioServices, fields: Mapping[str, str]
) -> web.Response:
    """A recording Twilio made (of the call, a `<Dial>`, a `<Record>`): kept on the call."""
    status = fields.get("RecordingStatus", "")
    url = fields.get("RecordingUrl", "")
    if status not in ("in-progress", "completed", "absent", "failed"):
        return problem(400, "Bad Request", f"unknown RecordingStatus {status!r}")
    if status != "completed":
        if status in ("absent", "failed"):
            log.warning("twilio: recording of %s %s", fields["CallSid"], status)
        return web.Response(status=204)
    if not url.startswith("https://"):
        return problem(400, "Bad Request", "a completed recording needs an https RecordingUrl")
    duration = fields.get("RecordingDuration", "")
    async with services.database.transaction(quick=True) as session:
        record = await call_log.find_call(session, CHANNEL, fields["CallSid"])
        if record is None:
            return problem(404, "Not Found", "no call has this CallSid")
        await call_log.attach_recording(
            session,
            services.actor,
            record.id,
            url,
            float(duration) if duration.isdigit() else None,
        )
    return web.Response(status=204)


async def stream_status(
    request: web.Request, services: TwilioServices, fields: Mapping[str, str]
) -> web.Response:
    """Twilio's view of a Media Stream; an error is kept with the call for whoever looks."""
    event = fields.get("StreamEvent", "")
    if event not in ("stream-started", "stream-stopped", "stream-error"):
        return problem(400, "Bad Request", f"unknown StreamEvent {event!r}")
    if event == "stream-error":
        error = fields.get("StreamError", "unknown error")
        log.warning("twilio: stream of %s failed: %s", fields["CallSid"], error)
        async with services.database.transaction(quick=True) as session:
            record = await call_log.find_call(session, CHANNEL, fields["CallSid"])
            if record is not None:
                record.state = {**(record.state or {}), "twilio_stream_error": error}
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/voice", signed_form(incoming_call)),
        web.post("/voice/after-stream", signed_form(after_stream)),
        web.post("/voice/gather", signed_form(gather_answer)),
        web.post("/status", signed_form(status_callback)),
        web.post("/recording", signed_form(recording_status)),
        web.post("/stream-status", signed_form(stream_status)),
        web.post(WHISPER_PATH.removeprefix("/twilio"), signed_form(whisper_to_answerer)),
    ]
