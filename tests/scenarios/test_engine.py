"""The engine runs each step kind against a simulated call and the real CRM."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import TeamWorld
from tests.scenarios.conftest import Simulate, inbound, scenario_from
from voicecrm.crm import stages, timeline
from voicecrm.crm.models import CallRecord, Contact, Note, Task
from voicecrm.crm.schemas import UNKNOWN_CALLER
from voicecrm.scenarios.crm_actions import ScenarioCRM
from voicecrm.scenarios.engine import Engine
from voicecrm.scenarios.runner import run_call
from voicecrm.storage import Database
from voicecrm.telephony.simulator.call import ScriptedCaller, SimulatedCall


async def events(database: Database, contact_id: int) -> list[tuple[str, dict[str, Any]]]:
    async with database.transaction(read_only=True) as session:
        page = await timeline.page(session, contact_id, limit=100)
    return [(e.kind, e.data) for e in page.events]


async def test_a_menu_routes_by_the_digit_pressed_and_records_the_transcript(
    simulate: Simulate, database: Database
) -> None:
    sim = await simulate(
        """
        name: menu
        steps:
          ask:
            gather:
              prompt: "Press 1 for sales or 2 for support."
              input: [dtmf]
              choices: {"1": sales, "2": support}
          sales:
            say: "Sales it is."
            next: bye
          support:
            say: "Support it is."
          bye:
            hangup:
    """,
        ["#2"],
    )
    assert sim.call.spoken == ["Press 1 for sales or 2 for support.", "Support it is."]
    assert sim.run.state.outcome == "completed"
    kinds = [kind for kind, _ in await events(database, sim.run.contact_id)]
    assert kinds[:2] == ["transcript", "call"]
    transcript = (await events(database, sim.run.contact_id))[0][1]
    lines = [(line["speaker"], line["text"]) for line in transcript["lines"]]
    assert lines == [
        ("agent", "Press 1 for sales or 2 for support."),
        ("caller", "2"),
        ("agent", "Support it is."),
    ]


async def test_create_crm_note_for_an_unknown_caller_creates_the_contact_first(
    simulate: Simulate, database: Database
) -> None:
    sim = await simulate(
        """
        name: note
        steps:
          write:
            create_crm_note:
              content: "Called from {{ call.from }}; is known: {{ contact.known }}"
              type: Warning
    """,
        caller="+14155550177",
    )
    async with database.transaction(read_only=True) as session:
        contact = await session.get(Contact, sim.run.contact_id)
        note = (await session.scalars(select(Note))).one()
    assert contact is not None and contact.name == UNKNOWN_CALLER
    assert (note.contact_id, note.type) == (contact.id, "warning")
    assert note.content == "Called from +14155550177; is known: False"
    kinds = [kind for kind, _ in await events(database, contact.id)]
    assert "note_added" in kinds and kinds[-1] == "contact_created"


async def test_create_crm_note_for_a_known_caller_uses_their_contact(
    simulate: Simulate, database: Database
) -> None:
    first = await simulate("name: a\nsteps: {s: {update_contact: {name: Dana Scully}}}")
    sim = await simulate("""
        name: note
        steps:
          write:
            create_crm_note: "{{ contact.name }} called again"
    """)
    assert sim.run.contact_id == first.run.contact_id
    async with database.transaction(read_only=True) as session:
        note = (await session.scalars(select(Note))).one()
    assert (note.content, note.type) == ("Dana Scully called again", "general")


async def test_silence_is_retried_then_takes_the_no_input_path(simulate: Simulate) -> None:
    sim = await simulate(
        """
        name: retry
        steps:
          ask:
            gather:
              prompt: "Your account number?"
              retries: 1
              retry_prompt: "Sorry, I didn't hear you."
              no_input: nobody
          thanks:
            say: "Thanks."
            hangup:
          nobody:
            say: "Goodbye."
    """.replace("            hangup:\n", "          end:\n            hangup:\n"),
        ["", ""],
    )
    assert sim.call.spoken == [
        "Your account number?",
        "Sorry, I didn't hear you. Your account number?",
        "Goodbye.",
    ]


async def test_a_valid_pattern_keeps_asking_until_it_matches(simulate: Simulate) -> None:
    sim = await simulate(
        """
        name: digits
        steps:
          ask:
            gather: {prompt: "Four digits?", valid: "^[0-9]{4}$", save_as: pin, retries: 2}
          done:
            say: "Got {{ pin }}."
    """,
        ["#12", "#1234"],
    )
    assert sim.call.spoken[-1] == "Got 1234."


async def test_branches_read_the_contact_and_the_variables(
    simulate: Simulate, database: Database
) -> None:
    scenario = """
        name: branchy
        steps:
          route:
            branch:
              - if: "'vip' in contact.tags"
                goto: vip
              - if: "contact.known"
                goto: known
            else: stranger
          vip:
            say: "Welcome back, valued customer."
            next: end
          known:
            say: "Hello {{ contact.name }}."
            next: end
          stranger:
            say: "Hello stranger."
            next: tag
          tag:
            add_tag: vip
          end:
            hangup:
    """
    assert (await simulate(scenario)).call.spoken == ["Hello stranger."]
    assert (await simulate(scenario)).call.spoken == ["Welcome back, valued customer."]


async def test_stage_changes_are_recorded_and_a_missing_stage_takes_the_error_path(
    simulate: Simulate, database: Database, world: TeamWorld
) -> None:
    async with database.transaction() as session:
        await stages.add_stage(session, world.admin, "Qualified")
    sim = await simulate("""
        name: stages
        steps:
          good:
            set_stage: qualified
          bad:
            set_stage: Nonexistent
            on_error: oops
          unreachable_without_error:
            say: "not said"
            next: end
          oops:
            say: "Problem: {{ error }}"
          end:
            hangup:
    """)
    assert sim.call.spoken == [
        "Problem: no stage named 'Nonexistent'; the team's stages: Qualified"
    ]
    changed = [
        data for kind, data in await events(database, sim.run.contact_id) if kind == "stage_changed"
    ]
    assert changed == [
        {
            "from_stage_id": None,
            "from_stage": None,
            "to_stage_id": 1,
            "to_stage": "Qualified",
            "reason": "scenario",
        }
    ]


async def test_a_failing_step_without_an_error_path_apologises_and_hangs_up(
    simulate: Simulate,
) -> None:
    sim = await simulate("""
        name: fails
        steps:
          bad:
            set_stage: Nonexistent
          after:
            say: "never"
    """)
    assert sim.run.state.outcome == "error"
    assert sim.call.spoken == [
        "Sorry, something went wrong on our side. Please call again later. Goodbye."
    ]


async def test_an_endless_loop_is_stopped_by_the_step_limit(simulate: Simulate) -> None:
    sim = await simulate("""
        name: loop
        settings: {limits: {max_steps: 25}}
        steps:
          a:
            set: {n: "{{ (n or 0) | int + 1 }}"}
          b:
            goto: a
    """)
    assert sim.run.state.outcome == "step_limit"
    assert sim.run.state.steps_run == 25
    assert sim.run.state.variables["n"] == "13"


async def test_transfers_end_the_call_when_answered_and_go_on_when_not(simulate: Simulate) -> None:
    scenario = """
        name: xfer
        steps:
          try:
            transfer: {to: "+14155550111", whisper: "Call from {{ contact.name }}",
                       no_answer: sorry}
          sorry:
            say: "Nobody is free; {{ transfer_status }}."
    """
    answered = await simulate(scenario)
    assert answered.run.state.outcome == "transferred"
    assert (
        "[transfer to +14155550111: answered] (whisper: Call from Unknown Caller)"
        in answered.output
    )
    missed = await simulate(scenario, ["!transfer no_answer"])
    assert missed.call.spoken == ["Nobody is free; no_answer."]


async def test_voicemail_lands_on_the_timeline(simulate: Simulate, database: Database) -> None:
    sim = await simulate(
        """
        name: vm
        steps:
          record:
            voicemail: {prompt: "Leave a message.", max_seconds: 60}
    """,
        ["Please call me back about the invoice"],
    )
    voicemails = [
        data for kind, data in await events(database, sim.run.contact_id) if kind == "voicemail"
    ]
    assert voicemails[0]["transcript"] == "Please call me back about the invoice"
    assert voicemails[0]["call_id"] == sim.run.call_id
    calls = [data for kind, data in await events(database, sim.run.contact_id) if kind == "call"]
    assert calls[0]["recording_url"] == f"simulator://voicemail/{sim.call.info.call_id}"
    async with database.transaction(read_only=True) as session:
        record = await session.get(CallRecord, sim.run.call_id)
    assert record is not None and record.recording_url == calls[0]["recording_url"]


async def test_contact_tags_status_and_tasks_are_written(
    simulate: Simulate, database: Database
) -> None:
    sim = await simulate(
        """
        name: crm
        steps:
          ask:
            gather: {prompt: "Your name?", save_as: name}
          save:
            update_contact: {name: "{{ name }}", email: "x@example.com",
                             custom_fields: {channel: phone}}
          tags:
            add_tag: [lead, "from-{{ call.direction }}"]
          untag:
            remove_tag: lead
          won:
            set_status: won
          callback:
            create_task: {title: "Call {{ contact.name }} back", due_in_minutes: 30}
    """,
        ["Fox Mulder"],
    )
    async with database.transaction(read_only=True) as session:
        contact = await session.get(Contact, sim.run.contact_id)
        task = (await session.scalars(select(Task))).one()
        record = await session.get(CallRecord, sim.run.call_id)
    assert contact is not None
    assert (contact.name, contact.status, contact.custom_fields) == (
        "Fox Mulder",
        "won",
        {"channel": "phone"},
    )
    assert task.title == "Call Fox Mulder back" and task.call_id == sim.run.call_id
    assert record is not None and record.ended_at is not None
    assert record.state["outcome"] == "completed"
    kinds = [kind for kind, _ in await events(database, contact.id)]
    assert {"task_created", "status_changed", "tags_changed", "contact_updated"} <= set(kinds)


async def test_an_agent_step_without_a_language_model_says_so_and_takes_the_error_path(
    simulate: Simulate,
) -> None:
    sim = await simulate("""
        name: ai
        steps:
          brain:
            agent: {instructions: "Be helpful."}
            on_error: fallback
          fallback:
            say: "{{ error }}"
    """)
    assert "needs a language model" in sim.call.spoken[0]


async def test_the_caller_hanging_up_mid_flow_still_logs_the_call(
    simulate: Simulate, database: Database
) -> None:
    sim = await simulate(
        """
        name: hang
        steps:
          ask:
            gather: {prompt: "Hello?"}
          never:
            say: "not reached"
    """,
        ["!hangup"],
    )
    assert sim.run.state.outcome == "caller_hung_up"
    assert "call" in [kind for kind, _ in await events(database, sim.run.contact_id)]


async def test_play_and_echo_reach_the_call(simulate: Simulate) -> None:
    sim = await simulate("""
        name: sounds
        steps:
          music:
            play: "https://example.com/hold.wav"
          test:
            echo: {seconds: 3}
    """)
    assert "[plays https://example.com/hold.wav]" in sim.output
    assert "[echo test: the caller hears themselves for 3 s]" in sim.output
    assert [line["text"] for line in sim.run.state.transcript] == [
        "[plays https://example.com/hold.wav]",
        "[echo test, 3 s]",
    ]


async def test_the_greeting_is_a_template_over_the_contact_and_the_business(
    simulate: Simulate,
) -> None:
    sim = await simulate(
        """
        name: greet
        settings: {greeting: "Thanks for calling {{ business.name }}, {{ contact.name }}."}
        business: {name: Acme}
        steps:
          bye:
            hangup:
    """
    )
    assert sim.call.spoken == ["Thanks for calling Acme, Unknown Caller."]


async def test_a_call_cut_by_a_shutdown_is_closed_on_the_timeline(
    database: Database, world: TeamWorld
) -> None:
    """Stopping the service mid-call cancels the call's task: the call must not stay
    "in progress" forever, and what was said is kept."""
    never, asked = asyncio.Event(), asyncio.Event()

    class Waiting(ScriptedCaller):
        async def next_line(self) -> str | None:
            asked.set()
            await never.wait()  # the caller is thinking when the service stops
            return None

    info = inbound("cut-1", channel="test")
    scenario = scenario_from(
        """
        name: cut
        steps:
          ask:
            gather: {prompt: "How can I help?"}
        """
    )
    call = SimulatedCall(info, Waiting([]), output=io.StringIO())
    task = asyncio.create_task(run_call(database, world.system, scenario, call, channel="test"))
    await asked.wait()  # the prompt has been said: the call waits for the caller
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with database.transaction(read_only=True) as session:
        record = (await session.scalars(select(CallRecord))).one()
    assert record.status == "interrupted" and record.ended_at is not None
    assert record.state["outcome"] == "service_stopped"
    assert record.state["transcript"][0]["text"] == "How can I help?"


class HungUpWatch(SimulatedCall):
    """A simulated call that says when the engine hangs it up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hung_up = asyncio.Event()

    async def hangup(self, reason: str = "completed") -> None:
        await super().hangup(reason)
        self.hung_up.set()


async def test_work_a_step_leaves_for_later_is_done_before_the_run_returns(
    database: Database, world: TeamWorld, caplog: pytest.LogCaptureFixture
) -> None:
    """`Engine.after` (a voicemail saved once transcribed): the run waits for it, and a
    failure of such work is logged, not raised into a call that is already over."""
    call = HungUpWatch(inbound("later-1"), ScriptedCaller([]), output=io.StringIO())
    engine = Engine(
        scenario_from('name: short\nsteps:\n  hello:\n    say: "Hello."\n'),
        call,
        ScenarioCRM(database, world.system),
    )
    release, saved = asyncio.Event(), []

    async def save_when_released() -> None:
        await release.wait()
        saved.append("voicemail")

    async def broken() -> None:
        raise RuntimeError("the disk is full")

    engine.after(save_when_released())
    engine.after(broken())
    running = asyncio.create_task(engine.run(engine.new_state()))
    await call.hung_up.wait()  # the steps are over
    assert not running.done()  # and the run waits for the work
    release.set()
    state = await running
    assert saved == ["voicemail"] and state.outcome == "completed"
    assert "failed after the call" in caplog.text and "the disk is full" in caplog.text
