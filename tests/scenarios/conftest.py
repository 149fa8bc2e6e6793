"""Running scenarios against the real database with the terminal simulator's call."""

from __future__ import annotations

import io
import itertools
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import pytest

from tests.conftest import TeamWorld
from voicecrm.calls.interface import CallInfo, Direction
from voicecrm.scenarios.loader import parse_scenario
from voicecrm.scenarios.models import Scenario
from voicecrm.scenarios.ports import HttpClient, LanguageModel
from voicecrm.scenarios.runner import CallRun, run_call
from voicecrm.storage import Database
from voicecrm.telephony.simulator.call import ScriptedCaller, SimulatedCall

_ids = itertools.count(1)


def scenario_from(text: str) -> Scenario:
    return parse_scenario(textwrap.dedent(text).lstrip("\n"), "test.yaml")


def inbound(
    call_id: str,
    *,
    caller: str = "+14155550123",
    caller_name: str | None = None,
    dialled: str = "+14155550100",
    channel: str = "simulator",
) -> CallInfo:
    """An inbound call's details, as a carrier would hand them over."""
    return CallInfo(
        call_id=call_id,
        direction=Direction.INBOUND,
        from_number=caller,
        to_number=dialled,
        caller_name=caller_name,
        channel=channel,
    )


@dataclass
class Simulation:
    run: CallRun
    call: SimulatedCall
    output: str


Simulate = Callable[..., Awaitable[Simulation]]


@pytest.fixture
def simulate(database: Database, world: TeamWorld) -> Simulate:
    async def run(
        scenario: Scenario | str,
        script: Sequence[str] = (),
        *,
        caller: str = "+14155550123",
        caller_name: str | None = None,
        dialled: str = "+14155550100",
        llm: LanguageModel | None = None,
        http: HttpClient | None = None,
    ) -> Simulation:
        if isinstance(scenario, str):
            scenario = scenario_from(scenario)
        output = io.StringIO()
        info = inbound(f"sim-{next(_ids)}", caller=caller, caller_name=caller_name, dialled=dialled)
        call = SimulatedCall(info, ScriptedCaller(script), output=output)
        result = await run_call(
            database, world.system, scenario, call, channel="simulator", llm=llm, http=http
        )
        return Simulation(run=result, call=call, output=output.getvalue())

    return run
