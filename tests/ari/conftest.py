"""The running service against the fake Asterisk, shared by the ARI tests.

Each test module writes its own scenarios and declares a `settings` fixture
with `service_settings`; `running` and `service` start the real app on them.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr
from pytest_aiohttp.plugin import AiohttpClient
from sqlalchemy import select

from tests.conftest import TeamWorld
from tests.fakes.fake_asterisk import (
    APP,
    PASSWORD,
    USERNAME,
    FakeAsterisk,
    RtpPeer,
    fake_asterisk,
)
from tests.fakes.openai_server import FakeOpenAI, Reply, openai_server
from tests.speech_audio import tone
from voicecrm.app import ARI, build_app
from voicecrm.config import Settings
from voicecrm.crm.models import CallRecord
from voicecrm.storage import Database
from voicecrm.telephony.ari.stasis import AriApplication

__all__ = ["fake_asterisk", "openai_server"]

CALL_TIMEOUT = 60.0  # seconds: a whole call in real time on a busy machine


def speech(seconds: float) -> Reply:
    """What the fake speech endpoint answers for one sentence: `seconds` of tone."""
    return Reply(audio=tone(seconds, rate=24000), audio_chunks=(4800,) * 100)


def write_scenarios(folder: Path, scenarios: Mapping[str, str]) -> Path:
    folder.mkdir(exist_ok=True)
    for name, text in scenarios.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


def service_settings(
    database_url: str,
    scenarios_dir: Path,
    openai_server: FakeOpenAI,
    fake_asterisk: FakeAsterisk,
    **extra: Any,
) -> Settings:
    """The service's settings for these tests: the fakes, OpenAI-style speech, `extra`."""
    return Settings(
        database_url=database_url,
        migrate_on_start=False,
        scenarios_dir=str(scenarios_dir),
        llm_base_url=openai_server.base_url,
        llm_api_key=SecretStr("sk-test"),
        stt_provider="openai",
        tts_provider="openai",
        ari_url=fake_asterisk.base_url,
        ari_user=USERNAME,
        ari_password=SecretStr(PASSWORD),
        ari_app=APP,
        ari_media_host="127.0.0.1",
        **extra,
    )


@pytest.fixture
def service_url(unused_tcp_port: int) -> str:
    """The address the service will listen on, known before it starts, for settings that
    name it (VOICECRM_ARI_HTTP_URL, where the fake Asterisk fetches media)."""
    return f"http://127.0.0.1:{unused_tcp_port}"


@pytest.fixture
async def running(
    aiohttp_client: AiohttpClient,
    settings: Settings,
    world: TeamWorld,
    fake_asterisk: FakeAsterisk,
    service_url: str,
) -> AsyncIterator[TestClient[Any, Any]]:
    """The running service (its HTTP API too), connected to the fake Asterisk."""
    port = int(service_url.rpartition(":")[2])
    client: TestClient[Any, Any] = await aiohttp_client(
        build_app(settings), server_kwargs={"port": port}
    )
    await fake_asterisk.wait_connected()
    try:
        yield client
    finally:
        await client.close()  # before the fake Asterisk goes, or the app would redial it


@pytest.fixture
def service(running: TestClient[Any, Any]) -> AriApplication:
    """The running service's Stasis application."""
    application: AriApplication = running.app[ARI]
    return application


async def finished(application: AriApplication) -> None:
    """Every call the application took has ended."""
    async with asyncio.timeout(CALL_TIMEOUT):
        await application.join()


async def call_heard(fake: FakeAsterisk, caller: str, dialled: str) -> tuple[str, RtpPeer]:
    """A call comes in, and the caller hears the receptionist: its channel and RTP peer."""
    channel_id = await fake.inject_call(caller, dialled)
    peer = await fake.wait_peer()
    async with asyncio.timeout(CALL_TIMEOUT):
        await peer.heard_speech.wait()
    return channel_id, peer


async def the_call(database: Database) -> CallRecord:
    async with database.transaction(read_only=True) as session:
        return (await session.scalars(select(CallRecord))).one()
