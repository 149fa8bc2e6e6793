"""The Media Streams WebSocket: one bidirectional stream holds one call's scenario.

Twilio opens it after the incoming-call webhook's `<Connect><Stream>`: the
upgrade request is signature-checked like any webhook, then `connected` and
`start` arrive, `start` naming (in its custom parameters) the call's row the
webhook opened. The handler owns the socket and everything built on it: the
line, the voice call and its reader. It runs the scenario, saves what should
happen next (a `<Dial>` for a transfer, else a hang-up) before closing the
socket, so that the `<Connect action>` webhook finds it on any instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

from aiohttp import WSMsgType, web

from voicecrm.calls.interface import CallInfo, Direction
from voicecrm.crm import call_log
from voicecrm.errors import NotFound, VoiceCRMError
from voicecrm.telephony.carrier_calls import run_voice_call
from voicecrm.telephony.twilio import media_protocol as proto
from voicecrm.telephony.twilio.media_line import TwilioMediaLine
from voicecrm.telephony.twilio.services import TWILIO, TwilioServices
from voicecrm.telephony.twilio.signature import (
    problem,
    public_base,
    refuse,
    signed_by_twilio,
    websocket_base,
)
from voicecrm.telephony.twilio.webhooks import CHANNEL, placed_call_state

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0  # seconds for Twilio to send `connected` and `start`


async def _start(ws: web.WebSocketResponse) -> proto.Start | None:
    """Wait for the `start` message; anything else first but `connected` ends the stream."""
    async with asyncio.timeout(START_TIMEOUT):
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                return None
            event = proto.parse(message.data)
            if isinstance(event, proto.Start):
                return event
            if not isinstance(event, proto.Connected):
                raise proto.MediaProtocolError(f"expected 'start', got {type(event).__name__}")
    return None


async def media_stream(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[TWILIO]
    if services.validator is None:
        return problem(503, "Twilio is not configured", "set VOICECRM_TWILIO_AUTH_TOKEN")
    url = websocket_base(public_base(request, services.public_url)) + request.path_qs
    if not signed_by_twilio(services.validator, url, {}, request.headers.get("X-Twilio-Signature")):
        return refuse(request, "missing or bad X-Twilio-Signature on the stream")

    ws = web.WebSocketResponse(heartbeat=None, max_msg_size=1 << 20)
    await ws.prepare(request)
    try:
        try:
            start = await _start(ws)
        except (TimeoutError, proto.MediaProtocolError) as err:
            log.warning("twilio media stream refused before start: %s", err)
            return ws
        if start is None:
            return ws
        if start.encoding != "audio/x-mulaw" or start.sample_rate != 8000:
            log.warning("twilio stream %s: unsupported %s", start.stream_sid, start.encoding)
            return ws
        await _run(services, ws, start)
    finally:
        await ws.close()
    return ws


async def _run(services: TwilioServices, ws: web.WebSocketResponse, start: proto.Start) -> None:
    try:
        call_id = int(start.custom_parameters.get("call_id", ""))
    except ValueError:
        log.warning("twilio stream %s: no call_id parameter", start.stream_sid)
        return
    async with services.database.transaction(read_only=True, quick=True) as session:
        try:
            record = await call_log.get_call(session, services.actor, call_id)
        except NotFound:
            log.warning("twilio stream %s: call %s does not exist", start.stream_sid, call_id)
            return
        info = CallInfo(
            call_id=record.external_id,
            direction=Direction(record.direction),
            from_number=record.from_number,
            to_number=record.to_number,
            channel=CHANNEL,
        )
        scenario_name = record.scenario
        state = placed_call_state(record)
    if record.external_id != start.call_sid:
        log.warning(
            "twilio stream %s: call %s is not %s", start.stream_sid, call_id, start.call_sid
        )
        return
    try:
        scenario = (
            services.scenarios.library.get(scenario_name)
            if scenario_name
            else services.scenarios.library.for_number(info.to_number)
        )
    except NotFound:
        log.warning("twilio call %s: scenario %s is gone", call_id, scenario_name)
        return
    line = TwilioMediaLine(ws, start.stream_sid, info)
    try:
        await run_voice_call(services, line, scenario, channel=CHANNEL, state=state)
    except VoiceCRMError as err:
        log.error("twilio call %s could not run: %s", call_id, err.detail)
    if line.handoff is not None:
        async with services.database.transaction(quick=True) as session:
            record = await call_log.get_call(session, services.actor, call_id)
            record.state = {
                **(record.state or {}),
                "twilio_handoff": dataclasses.asdict(line.handoff),
            }
    with contextlib.suppress(ConnectionError):
        await ws.close()


def routes() -> list[web.RouteDef]:
    return [web.get("/media", media_stream)]
