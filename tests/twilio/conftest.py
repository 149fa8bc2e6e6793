"""The service as Twilio sees it: signed webhooks and Media Streams over loopback.

The app is the real one (`build_app`) on the suite's database, with its speech
and language model pointed at the local fake OpenAI server, and Twilio's
public URL fixed so requests can be signed as Twilio signs them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pydantic import SecretStr
from pytest_aiohttp.plugin import AiohttpClient
from twilio.request_validator import RequestValidator

from tests.conftest import TeamWorld
from tests.fakes.openai_server import FakeOpenAI, openai_server
from voicecrm.app import build_app
from voicecrm.config import Settings

__all__ = ["openai_server"]

TOKEN = "twilio-test-auth-token"
PUBLIC = "https://voicecrm.example.com"
SIGNER = RequestValidator(TOKEN)

SCENARIOS = {
    "receptionist.yaml": """
        name: receptionist
        default: true
        numbers: ["+14155550100"]
        business: {name: Acme Plumbing}
        steps:
          brain:
            agent:
              greeting: "Acme Plumbing, how can I help?"
              instructions: "You work for {{ business.name }}."
              transfer_targets: {office: "+14155550122"}
    """,
    "intake.yaml": """
        name: intake
        numbers: ["+14155550102"]
        settings: {twilio_mode: twiml, greeting: "Thanks for calling."}
        steps:
          ask_name:
            gather: {prompt: "What is your name?", save_as: name}
          ask_reason:
            gather: {prompt: "Thanks {{ name }}. Why are you calling?", save_as: reason}
          note:
            create_crm_note: "{{ name }} called about {{ reason }}"
          bye:
            say: "Goodbye {{ name }}."
    """,
    "menu.yaml": """
        name: menu
        numbers: ["+14155550101"]
        steps:
          ask:
            gather:
              prompt: "For support press 2."
              input: [dtmf]
              num_digits: 1
              timeout: 5
              choices: {"2": support}
              no_input: bye
              no_match: bye
          support:
            create_crm_note: {content: "Support from the phone menu.", type: Info}
          transfer:
            transfer: {to: "+14155550122", whisper: "Support call from {{ call.from }}"}
          bye:
            say: "Goodbye."
    """,
    "messages.yaml": """
        name: messages
        numbers: ["+14155550108"]
        settings: {twilio_mode: twiml}
        steps:
          message:
            voicemail: {prompt: "Please leave a message.", max_seconds: 90, silence_seconds: 4}
          bye:
            say: "Thanks, goodbye."
    """,
    "handover.yaml": """
        name: handover
        numbers: ["+14155550109"]
        settings: {twilio_mode: twiml, language: en-GB, voice: Polly.Amy}
        steps:
          transfer:
            transfer: {to: "sip:desk@pbx.example.com", whisper: "A caller for the desk"}
    """,
}


def signed_headers(url: str, params: Mapping[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": SIGNER.compute_signature(url, dict(params))}


@pytest.fixture
def scenarios_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    for name, text in SCENARIOS.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


@pytest.fixture
def settings(database_url: str, scenarios_dir: Path, openai_server: FakeOpenAI) -> Settings:
    return Settings(
        database_url=database_url,
        migrate_on_start=False,
        scenarios_dir=str(scenarios_dir),
        public_url=PUBLIC,
        twilio_auth_token=SecretStr(TOKEN),
        llm_base_url=openai_server.base_url,
        llm_api_key=SecretStr("sk-test"),
        stt_provider="openai",
        tts_provider="openai",
    )


@pytest.fixture
async def twilio(
    aiohttp_client: AiohttpClient, settings: Settings, world: TeamWorld
) -> TestClient[Any, Any]:
    """The service, as Twilio reaches it."""
    return await aiohttp_client(build_app(settings))


@pytest.fixture
async def second_instance(
    aiohttp_client: AiohttpClient, settings: Settings, world: TeamWorld
) -> TestClient[Any, Any]:
    """Another instance of the service on the same database, behind the same public URL."""
    return await aiohttp_client(build_app(settings))


def call_fields(
    sid: str, *, caller: str = "+14155550123", to: str = "+14155550100", **extra: str
) -> dict[str, str]:
    return {
        "CallSid": sid,
        "AccountSid": "AC" + "0" * 32,
        "From": caller,
        "To": to,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        **extra,
    }


async def post_signed(
    client: TestClient[Any, Any], path: str, fields: Mapping[str, str], *, url: str | None = None
) -> tuple[int, str]:
    response = await client.post(
        path, data=dict(fields), headers=signed_headers(url or PUBLIC + path, fields)
    )
    return response.status, await response.text()
