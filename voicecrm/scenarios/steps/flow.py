"""Steps that decide where the call goes: branch, set, goto, hangup."""

from __future__ import annotations

from voicecrm.scenarios import models as m
from voicecrm.scenarios.engine import END, NEXT, Engine


async def branch(engine: Engine, name: str, step: m.BranchStep) -> str:
    for case in step.branch:
        if await engine.condition(case.if_):
            return case.goto
    return step.else_ or NEXT


async def set_variables(engine: Engine, name: str, step: m.SetStep) -> str:
    for key, value in step.set.items():
        engine.state.variables[key] = await engine.render_value(value)
    return NEXT


async def goto(engine: Engine, name: str, step: m.GotoStep) -> str:
    return step.goto


async def hangup(engine: Engine, name: str, step: m.HangupStep) -> str:
    reason = (step.hangup or m.HangupArgs()).reason
    engine.state.outcome = reason
    await engine.call.hangup(reason)
    return END
