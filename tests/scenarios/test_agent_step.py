"""The agent step through the real openai client, against the local fake server.

The fake streams chunks exactly as the API does, so these tests cover the
whole path: prompt building, streaming, sentence-by-sentence speech, tool
calls validated and run against the real CRM, and failures taking the
scenario's error path.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tests.conftest import TeamWorld
from tests.fakes.openai_server import FakeOpenAI, Reply, openai_server
from tests.scenarios.conftest import Simulate, scenario_from
from voicecrm.agent.openai_llm import OpenAILanguageModel
from voicecrm.calls.interface import CallInfo, Direction
from voicecrm.crm import timeline
from voicecrm.crm.models import Contact, Note, Task
from voicecrm.scenarios.crm_actions import ScenarioCRM
from voicecrm.scenarios.engine import Engine
from voicecrm.storage import Database
from voicecrm.telephony.simulator.call import ScriptedCaller, SimulatedCall

__all__ = ["openai_server"]

RECEPTIONIST = """
name: ai
business:
  name: Acme Plumbing
  facts: {hours: "8 to 6, Monday to Friday"}
steps:
  brain:
    agent:
      greeting: "Acme Plumbing, how can I help?"
      instructions: "You work for {{ business.name }}."
      transfer_targets: {office: "+14155550122"}
    on_error: fallback
  fallback:
    say: "Our assistant is unavailable."
"""


@pytest.fixture
async def llm(openai_server: FakeOpenAI) -> AsyncIterator[OpenAILanguageModel]:
    model = OpenAILanguageModel(base_url=openai_server.base_url, api_key="sk-test")
    try:
        yield model
    finally:
        await model.aclose()


async def test_the_agent_writes_a_note_with_a_tool_and_ends_the_call(
    simulate: Simulate, database: Database, openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    openai_server.script += [
        Reply(
            text="I'm sorry to hear that. Let me note it down.",
            tool_calls=[
                (
                    "create_crm_note",
                    json.dumps({"content": "Leaking pipe in the kitchen", "type": "warning"}),
                ),
                ("update_contact", json.dumps({"name": "Jane Roe"})),
            ],
        ),
        Reply(
            text="Done. A plumber will call you today. Goodbye!", tool_calls=[("end_call", "{}")]
        ),
    ]
    sim = await simulate(
        RECEPTIONIST, ["Hi, I'm Jane Roe and my kitchen pipe is leaking."], llm=llm
    )
    assert sim.call.spoken == [
        "Acme Plumbing, how can I help?",
        "I'm sorry to hear that.",
        "Let me note it down.",
        "Done.",
        "A plumber will call you today.",
        "Goodbye!",
    ]
    assert sim.run.state.outcome == "completed"
    async with database.transaction(read_only=True) as session:
        note = (await session.scalars(select(Note))).one()
        contact = await session.get(Contact, sim.run.contact_id)
        page = await timeline.page(session, sim.run.contact_id, limit=50)
    assert (note.content, note.type) == ("Leaking pipe in the kitchen", "warning")
    assert contact is not None and contact.name == "Jane Roe"
    assert "note_added" in [e.kind for e in page.events]

    first, second = openai_server.requests
    assert first["messages"][0]["role"] == "system"
    assert "You work for Acme Plumbing." in first["messages"][0]["content"]
    assert first["messages"][-1] == {
        "role": "user",
        "content": "Hi, I'm Jane Roe and my kitchen pipe is leaking.",
    }
    offered = {tool["function"]["name"] for tool in first["tools"]}
    assert {"create_crm_note", "transfer_call", "end_call", "lookup_business_info"} <= offered
    tool_results = [m for m in second["messages"] if m["role"] == "tool"]
    assert [json.loads(m["content"])["ok"] for m in tool_results] == [True, True]


async def test_bad_tool_arguments_go_back_to_the_model_which_corrects_itself(
    simulate: Simulate, database: Database, openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    openai_server.script += [
        Reply(tool_calls=[("create_crm_note", '{"content": "x", "type": "urgent"}')]),
        Reply(tool_calls=[("create_crm_note", '{"content": "Wants a quote", "type": "info"}')]),
        Reply(text="Noted."),
    ]
    await simulate(RECEPTIONIST, ["I'd like a quote."], llm=llm)
    error = json.loads(openai_server.requests[1]["messages"][-1]["content"])
    assert error["error"].startswith("invalid arguments: type: Input should be 'general'")
    async with database.transaction(read_only=True) as session:
        notes = list(await session.scalars(select(Note.content)))
    assert notes == ["Wants a quote"]


async def test_a_failing_model_hands_the_call_to_the_error_path(
    simulate: Simulate, openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    openai_server.script.append(Reply.http_error(500, "The server had an error"))
    sim = await simulate(RECEPTIONIST, ["Hello?"], llm=llm)
    assert sim.call.spoken == ["Acme Plumbing, how can I help?", "Our assistant is unavailable."]


async def test_a_stream_cut_mid_answer_is_a_failure_not_silence(
    simulate: Simulate, openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    openai_server.script.append(Reply(text="Our opening hours are", stop_after=3, abort=True))
    sim = await simulate(RECEPTIONIST, ["When are you open?"], llm=llm)
    assert sim.call.spoken[-1] == "Our assistant is unavailable."


async def test_business_facts_and_transfers_work_through_tools(
    simulate: Simulate, openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    openai_server.script += [
        Reply(tool_calls=[("lookup_business_info", '{"topic": "hours"}')]),
        Reply(
            text="We're open 8 to 6. Connecting you to the office.",
            tool_calls=[("transfer_call", '{"target": "office"}')],
        ),
    ]
    sim = await simulate(RECEPTIONIST, ["When are you open? Can I talk to someone?"], llm=llm)
    looked_up = json.loads(openai_server.requests[1]["messages"][-1]["content"])
    assert looked_up == {"topic": "hours", "answer": "8 to 6, Monday to Friday"}
    assert sim.run.state.outcome == "transferred"
    assert "[transfer to +14155550122: answered]" in sim.output


async def test_a_callback_task_and_a_tag_come_from_tools(
    simulate: Simulate, database: Database, openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    openai_server.script += [
        Reply(
            tool_calls=[
                ("create_task", '{"title": "Call back about the boiler", "due_in_minutes": 30}'),
                ("add_tag", '{"tag": "Wants-Quote"}'),
            ]
        ),
        Reply(text="Someone will call you back within the hour."),
    ]
    sim = await simulate(RECEPTIONIST, ["Please call me back about my boiler.", "!hangup"], llm=llm)
    async with database.transaction(read_only=True) as session:
        task = (await session.scalars(select(Task))).one()
        page = await timeline.page(session, sim.run.contact_id, kinds=["tags_changed"])
    assert task.title == "Call back about the boiler"
    assert page.events[0].data["added"] == ["wants-quote"]
    assert sim.run.state.outcome == "caller_hung_up"


async def test_a_long_conversation_is_ended_at_the_duration_limit(
    database: Database, world: TeamWorld, openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    scenario = scenario_from(
        RECEPTIONIST.replace(
            "business:", "settings: {limits: {max_duration_seconds: 100}}\nbusiness:"
        )
    )
    ticks = itertools.count()
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def clock() -> datetime:  # every reading of the clock is a minute later
        return start + timedelta(minutes=next(ticks))

    openai_server.script += [Reply(text="Sure."), Reply(text="Of course."), Reply(text="Yes.")]
    info = CallInfo(
        call_id="long",
        direction=Direction.INBOUND,
        from_number="+14155550123",
        to_number="+14155550100",
    )
    call = SimulatedCall(
        info, ScriptedCaller(["one", "two", "three", "four"]), output=io.StringIO()
    )
    engine = Engine(scenario, call, ScenarioCRM(database, world.system), llm=llm, clock=clock)
    state = await engine.run(engine.new_state())
    assert state.outcome == "duration_limit"
    assert call.spoken[-1] == "I'm sorry, we have to end the call here. Goodbye."
    assert state.agent_turns < 4


async def test_a_tool_that_fails_tells_the_model_and_the_call_goes_on(
    simulate: Simulate, openai_server: FakeOpenAI, llm: OpenAILanguageModel
) -> None:
    openai_server.script += [
        Reply(tool_calls=[("set_stage", '{"stage": "Platinum"}')]),
        Reply(text="I couldn't update that, but I've noted your request."),
    ]
    sim = await simulate(RECEPTIONIST, ["Make me a platinum customer."], llm=llm)
    failure = json.loads(openai_server.requests[1]["messages"][-1]["content"])
    assert failure == {"error": "no stage named 'Platinum'; the team's stages: none"}
    assert sim.call.spoken[-1] == "I couldn't update that, but I've noted your request."
