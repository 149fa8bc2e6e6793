"""Recordings the service made (voicemail on audio calls), for the team whose call it was."""

from __future__ import annotations

from aiohttp import web

from voicecrm.api.routing import Ctx, Route
from voicecrm.crm import call_log
from voicecrm.errors import InvalidInput, NotFound
from voicecrm.recordings.store import RecordingName, RecordingStore

RECORDINGS = web.AppKey("recordings", RecordingStore)


async def get_recording(ctx: Ctx) -> web.StreamResponse:
    """404 alike for a bad name, another team's call and a missing file: nothing to probe."""
    raw = ctx.request.match_info["name"]
    try:
        name = RecordingName.parse(raw)
    except InvalidInput:
        raise NotFound(f"recording {raw!r} does not exist") from None
    record = await call_log.find_call(ctx.session, name.channel, name.external_call_id)
    path = ctx.request.config_dict[RECORDINGS].path(name)
    if record is None or record.team_id != ctx.actor.team_id or not path.is_file():
        raise NotFound(f"recording {raw!r} does not exist")
    return web.FileResponse(path, headers={"Content-Type": "audio/wav"})


ROUTES = [
    Route(
        "GET",
        "/recordings/{name}",
        get_recording,
        "A recording of a call (WAV)",
        "calls",
        read_only=True,
        response_content={"audio/wav": {"schema": {"type": "string", "format": "binary"}}},
        errors=(404,),
    ),
]
