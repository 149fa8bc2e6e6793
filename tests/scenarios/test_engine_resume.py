"""A call's state survives between webhooks, and http_request steps call real endpoints."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import TeamWorld
from tests.scenarios.conftest import Simulate, scenario_from
from voicecrm.calls.interface import (
    CallInfo,
    CallSuspended,
    Direction,
    GatherResult,
    InputKind,
)
from voicecrm.crm import call_log
from voicecrm.integrations.http_client import AiohttpClient
from voicecrm.scenarios.runner import run_call
from voicecrm.scenarios.state import CallState
from voicecrm.storage import Database
from voicecrm.telephony.simulator.call import ScriptedCaller, SimulatedCall

FLOW = """
name: two-webhooks
steps:
  ask_name:
    gather: {prompt: "What is your name?", save_as: name}
  ask_reason:
    gather: {prompt: "Thanks {{ name }}. Why are you calling?", save_as: reason}
  note:
    create_crm_note: "{{ name }} called about {{ reason }}"
  bye:
    say: "Goodbye {{ name }}."
"""


class WebhookCall(SimulatedCall):
    """A call that cannot wait for input in-process, like a TwiML <Gather>."""

    async def gather(
        self,
        *,
        prompt: str | None,
        inputs: frozenset[InputKind],
        input_timeout: float,
        num_digits: int | None = None,
        finish_on_key: str | None = None,
        language: str | None = None,
        hints: tuple[str, ...] = (),
    ) -> GatherResult:
        if prompt:
            await self.say(prompt)
        raise CallSuspended("waiting for the next webhook")


def webhook_call(call_id: str) -> WebhookCall:
    info = CallInfo(
        call_id=call_id,
        direction=Direction.INBOUND,
        from_number="+14155550123",
        to_number="+14155550100",
        channel="test",
    )
    return WebhookCall(info, ScriptedCaller([]))


async def test_a_suspended_call_resumes_in_a_fresh_engine_from_its_saved_state(
    database: Database, world: TeamWorld
) -> None:
    scenario = scenario_from(FLOW)
    first = await run_call(database, world.system, scenario, webhook_call("CA1"), channel="test")
    assert first.state.awaiting == "gather" and first.state.step == "ask_name"

    for answer in ("Jane", "a broken boiler"):
        # Each webhook: a new engine, the state read back from the database as JSON.
        async with database.transaction(read_only=True) as session:
            record = await call_log.find_call(session, "test", "CA1")
            assert record is not None
            saved = json.loads(json.dumps(record.state))
        resumed = await run_call(
            database,
            world.system,
            scenario,
            webhook_call("CA1"),
            channel="test",
            state=CallState.from_json(saved),
            answer=GatherResult(speech=answer),
        )
    assert resumed.state.outcome == "completed"
    assert resumed.call_id == first.call_id
    assert [line["text"] for line in resumed.state.transcript] == [
        "What is your name?",
        "Jane",
        "Thanks Jane. Why are you calling?",
        "a broken boiler",
        "Goodbye Jane.",
    ]


@pytest.fixture
async def webhook_server() -> AsyncIterator[tuple[TestServer, list[dict[str, object]]]]:
    received: list[dict[str, object]] = []

    async def lookup(request: web.Request) -> web.Response:
        received.append(await request.json())
        if request.headers.get("X-Fail"):
            return web.json_response({"error": "down"}, status=503)
        return web.json_response({"balance": 42.5, "currency": "EUR"})

    app = web.Application()
    app.router.add_post("/balance", lookup)
    server = TestServer(app)
    await server.start_server()
    try:
        yield server, received
    finally:
        await server.close()


async def test_http_request_saves_the_answer_and_failures_take_the_error_path(
    simulate: Simulate, webhook_server: tuple[TestServer, list[dict[str, object]]]
) -> None:
    server, received = webhook_server
    url = str(server.make_url("/balance"))
    flow = f"""
        name: balance
        steps:
          ask:
            http_request:
              method: POST
              url: "{url}"
              json: {{caller: "{{{{ call.from }}}}"}}
              save_as: account
            on_error: failed
          tell:
            say: "Your balance is {{{{ account.balance }}}} {{{{ account.currency }}}}."
            next: end
          failed:
            say: "The balance service is unavailable."
          end:
            hangup:
    """
    async with aiohttp.ClientSession() as session:
        ok = await simulate(flow, http=AiohttpClient(session))
        failing = await simulate(
            flow.replace(
                "save_as: account", "save_as: account\n              headers: {X-Fail: 'yes'}"
            ),
            http=AiohttpClient(session),
        )
    assert ok.call.spoken == ["Your balance is 42.5 EUR."]
    assert received[0] == {"caller": "+14155550123"}
    assert failing.call.spoken == ["The balance service is unavailable."]
