"""Steps that reach beyond the call: HTTP webhooks, transfers, voicemail."""

from __future__ import annotations

import asyncio

from voicecrm.calls.interface import Recording, TransferStatus
from voicecrm.scenarios import models as m
from voicecrm.scenarios.engine import END, NEXT, Engine, StepFailed
from voicecrm.scenarios.ports import HttpResult, ProviderError


async def call_http(engine: Engine, request: m.HttpRequestArgs) -> HttpResult:
    """Run one templated HTTP request within its timeout; failures become `ProviderError`."""
    if engine.http is None:
        raise ProviderError("no HTTP client is configured for this scenario run")
    url = await engine.render_now(request.url)
    headers = {k: await engine.render_now(v) for k, v in request.headers.items()}
    body = await engine.render_value(request.json_body)
    try:
        async with asyncio.timeout(request.timeout):
            return await engine.http.request(request.method, url, headers=headers, json_body=body)
    except TimeoutError:
        raise ProviderError(
            f"{request.method} {url} took longer than {request.timeout:g} s"
        ) from None


async def http_request(engine: Engine, name: str, step: m.HttpRequestStep) -> str:
    result = await call_http(engine, step.http_request)
    if result.status >= 400:
        raise StepFailed(f"{step.http_request.method} answered HTTP {result.status}")
    if step.http_request.save_as:
        engine.state.variables[step.http_request.save_as] = result.body
    return NEXT


async def transfer(engine: Engine, name: str, step: m.TransferStep) -> str:
    args = (
        step.transfer
        if isinstance(step.transfer, m.TransferArgs)
        else m.TransferArgs(to=step.transfer)
    )
    target = (await engine.render_now(args.to)).strip()
    whisper = await engine.render_now(args.whisper) if args.whisper else None
    engine.state.say("agent", f"[transfers to {target}]", engine.clock())
    outcome = await engine.call.transfer(
        target, whisper=whisper, ring_timeout=args.timeout, caller_id=args.caller_id
    )
    engine.state.variables["transfer_status"] = outcome.status.value
    if outcome.status is TransferStatus.ANSWERED:
        engine.state.outcome = "transferred"
        return END
    return args.no_answer or NEXT


async def voicemail(engine: Engine, name: str, step: m.VoicemailStep) -> str:
    args = step.voicemail or m.VoicemailArgs()
    recording = engine.take_pending_recording()  # resumed: the carrier recorded it
    if recording is None:
        if args.prompt:
            await engine.say(await engine.render_now(args.prompt))
        recording = await engine.call.record(
            max_seconds=args.max_seconds, beep=args.beep, silence_seconds=args.silence_seconds
        )
    elif not (recording.url and recording.duration_seconds > 0):
        recording = None  # the caller left no message
    if recording is None:
        engine.state.variables["voicemail"] = ""
        return NEXT
    line = engine.heard(recording.transcript or "[voicemail]")
    engine.state.variables["voicemail"] = recording.url
    contact_id = await engine.contact_id()
    if recording.pending_transcript is None:
        await engine.crm.save_voicemail(contact_id, engine.state.call_id, recording)
    else:
        # The caller hears the next step now; the message lands once it is transcribed.
        engine.after(_save_transcribed(engine, contact_id, recording, line))
    engine.contact_changed()
    return NEXT


async def _save_transcribed(
    engine: Engine, contact_id: int, recording: Recording, line: dict[str, str] | None
) -> None:
    """Save a voicemail with its words, in the call's transcript and on the timeline.

    Saved without them if the service stops meanwhile: the message is never lost.
    """
    try:
        words = await recording.words()
    except asyncio.CancelledError:
        await engine.crm.save_voicemail(contact_id, engine.state.call_id, recording)
        raise
    if words and line is not None:
        line["text"] = words
    transcribed = Recording(recording.url, recording.duration_seconds, transcript=words)
    await engine.crm.save_voicemail(contact_id, engine.state.call_id, transcribed)
