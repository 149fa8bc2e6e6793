"""`python -m bench.engine`: what the scenario engine itself costs, providers excluded.

Prints, on a fresh SQLite file:
- engine time per step for steps that only talk and decide (say, set, branch,
  gather) and for a CRM write (create_crm_note, one transaction each);
- engine time per agent turn with an instant in-process language model, so
  the figure is prompt building, tool validation and running, and bookkeeping;
- how many whole simulated calls per second one process (one core) completes
  when many run at once.
The call is the terminal simulator's with a script and a null output, so no
time goes to a network or a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

from voicecrm.accounts import service as accounts
from voicecrm.accounts.actor import Actor, Role
from voicecrm.calls.interface import CallInfo, Direction
from voicecrm.scenarios.crm_actions import ScenarioCRM
from voicecrm.scenarios.engine import Engine
from voicecrm.scenarios.loader import parse_scenario
from voicecrm.scenarios.ports import Completion, ModelEvent, TextDelta, ToolCall, ToolSpec
from voicecrm.scenarios.runner import run_call
from voicecrm.storage import Database
from voicecrm.storage.migrate import upgrade
from voicecrm.telephony.simulator.call import ScriptedCaller, SimulatedCall

TALK = """
name: talk
settings: {limits: {max_steps: 100000}}
steps:
  hello:
    say: "Hello {{ contact.name }}, thanks for calling {{ business.name }}."
  count:
    set: {n: "{{ (n or 0) | int + 1 }}"}
  ask:
    gather: {prompt: "Press a key.", input: [dtmf], num_digits: 1, save_as: key}
  route:
    branch:
      - if: "n | int >= 250"
        goto: bye
      - if: "key == '1' and 'vip' in contact.tags"
        goto: hello
    else: count
  bye:
    hangup:
"""

NOTES = """
name: notes
settings: {limits: {max_steps: 100000}}
steps:
  note:
    create_crm_note: {content: "Call {{ n }} from {{ call.from }}", type: Info}
  count:
    set: {n: "{{ (n or 0) | int + 1 }}"}
  again:
    branch:
      - if: "n | int < 200"
        goto: note
"""

AGENT = """
name: agent
settings: {limits: {max_agent_turns: 500, max_steps: 100000}}
business: {name: Acme, facts: {hours: "8 to 6"}}
steps:
  brain:
    agent:
      instructions: "You are the receptionist of {{ business.name }}."
      max_turns: 200
"""

CALL = """
name: call
steps:
  hello:
    say: "Thanks for calling {{ business.name }}."
  menu:
    gather: {prompt: "Press 1 for sales.", input: [dtmf], choices: {"1": sales}}
  sales:
    add_tag: sales
  note:
    create_crm_note: "Wanted sales ({{ call.from }})"
  bye:
    say: "Goodbye."
"""


class InstantModel:
    """A language model that answers at once: every other turn it also calls a tool."""

    def __init__(self) -> None:
        self.turn = 0

    async def stream(
        self,
        *,
        messages: list[dict[str, Any]],
        tools: list[ToolSpec],
        model: str,
        temperature: float,
        timeout: float,  # noqa: ASYNC109  (the LanguageModel port's parameter)
    ) -> AsyncGenerator[ModelEvent, None]:
        self.turn += 1
        if messages[-1]["role"] == "user" and self.turn % 2 == 0:
            yield Completion(
                text="",
                tool_calls=(
                    ToolCall(
                        id=f"c{self.turn}",
                        name="lookup_business_info",
                        arguments='{"topic": "hours"}',
                    ),
                ),
                finish_reason="tool_calls",
            )
            return
        for piece in ("We are open ", "from 8 to 6. ", "Anything else?"):
            yield TextDelta(piece)
        yield Completion(text="We are open from 8 to 6. Anything else?", finish_reason="stop")


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _line(metric: str, value: float, unit: str) -> None:
    print(f"engine.{metric}: {value:.3f} {unit}", flush=True)


def _call(name: str, script: list[str]) -> SimulatedCall:
    info = CallInfo(
        call_id=name,
        direction=Direction.INBOUND,
        from_number="+14155550123",
        to_number="+14155550100",
        channel="bench",
    )
    return SimulatedCall(info, ScriptedCaller(script), output=io.StringIO())


async def _steps(
    database: Database, actor: Actor, text: str, script: list[str], llm: Any = None
) -> Engine:
    scenario = parse_scenario(text, "bench.yaml")
    engine = Engine(scenario, _call(scenario.name, script), ScenarioCRM(database, actor), llm=llm)
    await engine.run(engine.new_state())
    return engine


async def run(calls: int, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        database = Database(f"sqlite+aiosqlite:///{Path(folder) / 'engine.db'}")
        try:
            await upgrade(database)
            async with database.transaction() as session:
                team = await accounts.create_team(session, "Bench")
                actor = Actor(team=accounts.team_settings(team), role=Role.SYSTEM)

            talk = await _steps(database, actor, TALK, ["#2"] * 400)
            samples = talk.step_seconds[10:]
            _line("talk_step_p50", _percentile(samples, 0.5) * 1e3, "ms")
            _line("talk_step_p99", _percentile(samples, 0.99) * 1e3, "ms")
            _line("talk_steps_per_second", len(samples) / sum(samples), "steps/s")

            notes = await _steps(database, actor, NOTES, [])
            note_steps = notes.step_seconds[0::3][5:]
            _line("note_step_p50", _percentile(note_steps, 0.5) * 1e3, "ms")
            _line("note_step_p99", _percentile(note_steps, 0.99) * 1e3, "ms")

            agent = await _steps(
                database, actor, AGENT, ["What are your hours?"] * 200, llm=InstantModel()
            )
            overhead = agent.agent_overhead[10:]
            _line("agent_response_overhead_p50", _percentile(overhead, 0.5) * 1e3, "ms")
            _line("agent_response_overhead_p99", _percentile(overhead, 0.99) * 1e3, "ms")
            turns = max(1, agent.state.agent_turns)
            _line("agent_turn_mean", sum(agent.step_seconds) / turns * 1e3, "ms")

            scenario = parse_scenario(CALL, "bench.yaml")
            semaphore = asyncio.Semaphore(concurrency)
            durations: list[float] = []

            async def one(index: int) -> None:
                async with semaphore:
                    began = time.perf_counter()
                    info = CallInfo(
                        call_id=f"bench-{index}",
                        direction=Direction.INBOUND,
                        from_number=f"+1415555{index % 10000:04d}",
                        to_number="+14155550100",
                        channel="bench",
                    )
                    call = SimulatedCall(info, ScriptedCaller(["#1"]), output=io.StringIO())
                    await run_call(database, actor, scenario, call, channel="bench")
                    durations.append(time.perf_counter() - began)

            began = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(calls)))
            elapsed = time.perf_counter() - began
            _line("calls_per_second_one_core", calls / elapsed, "calls/s")
            _line("call_p50", statistics.median(durations) * 1e3, "ms")
            _line("call_p99", _percentile(durations, 0.99) * 1e3, "ms")
            print(
                f"engine.note: {calls} calls of 5 steps (resolve caller, open call, tag, "
                f"note, close call with transcript), {concurrency} at once, SQLite",
                flush=True,
            )
        finally:
            await database.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args(argv)
    asyncio.run(run(args.calls, args.concurrency))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
