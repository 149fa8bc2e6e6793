"""Recordings the service made: WAV files served only to the team whose call it was."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import pytest
from pytest_aiohttp.plugin import AiohttpClient

from tests.conftest import TeamWorld, make_team
from voicecrm.app import build_app
from voicecrm.config import Settings
from voicecrm.crm import call_log
from voicecrm.crm.call_log import NewCall
from voicecrm.errors import InvalidInput
from voicecrm.recordings.store import RecordingName, RecordingStore
from voicecrm.storage import Database


async def test_a_voicemail_is_served_to_its_team_only(
    aiohttp_client: AiohttpClient,
    database: Database,
    database_url: str,
    world: TeamWorld,
    tmp_path: Path,
) -> None:
    async with database.transaction() as session:
        await call_log.start_call(
            session,
            world.system,
            NewCall(
                channel="twilio",
                external_id="CA" + "7" * 32,
                direction="inbound",
                from_number="+14155550123",
                to_number="+14155550100",
                contact_id=None,
            ),
        )
    store = RecordingStore(tmp_path / "recordings")
    pcm = b"\x01\x02" * 8000  # one second at 8 kHz
    first = await store.save("twilio", "CA" + "7" * 32, pcm, 8000)
    second = await store.save("twilio", "CA" + "7" * 32, pcm, 8000)
    assert first.endswith("-1.wav") and second.endswith("-2.wav")

    settings = Settings(
        database_url=database_url,
        migrate_on_start=False,
        recordings_dir=str(tmp_path / "recordings"),
    )
    client = await aiohttp_client(build_app(settings))
    mine = {"Authorization": f"Bearer {world.admin_token}"}
    response = await client.get(first, headers=mine)
    assert response.status == 200 and response.content_type == "audio/wav"
    with wave.open(io.BytesIO(await response.read())) as wav:
        assert (wav.getframerate(), wav.getnframes()) == (8000, 8000)

    other = await make_team(database, "Other")
    theirs = {"Authorization": f"Bearer {other.admin_token}"}
    for path, headers in (
        (first, theirs),  # another team's call
        ("/api/v1/recordings/twilio-CA0-9.wav", mine),  # no such call
        ("/api/v1/recordings/..%2Fsecret.wav", mine),  # not a recording name
    ):
        response = await client.get(path, headers=headers)
        assert response.status == 404
        assert response.content_type == "application/problem+json"
    assert (await client.get(first)).status == 401


def test_recording_names_cannot_leave_the_folder() -> None:
    assert RecordingName.parse("twilio-CA12-3.wav").number == 3
    for bad in ("../x-1.wav", "twilio-CA..-1.wav", "twilio-CA/x-1.wav", "x.wav", "TWILIO-a-1.wav"):
        with pytest.raises(InvalidInput):
            RecordingName.parse(bad)
