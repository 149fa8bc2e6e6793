"""Steps that talk and listen: say, play, gather, echo."""

from __future__ import annotations

import re

from voicecrm.calls.interface import GatherResult, InputKind
from voicecrm.scenarios import models as m
from voicecrm.scenarios.engine import NEXT, Engine


async def say(engine: Engine, name: str, step: m.SayStep) -> str:
    args = step.say if isinstance(step.say, m.SayArgs) else m.SayArgs(text=step.say)
    await engine.say(await engine.render_now(args.text), voice=args.voice, language=args.language)
    return NEXT


async def play(engine: Engine, name: str, step: m.PlayStep) -> str:
    url = step.play.url if isinstance(step.play, m.PlayArgs) else step.play
    engine.state.say("agent", f"[plays {url}]", engine.clock())
    await engine.call.play(url)
    return NEXT


def _choice(answer: GatherResult, choices: dict[str, str]) -> str | None:
    if answer.digits and answer.digits in choices:
        return choices[answer.digits]
    spoken = answer.speech.lower()
    for key, target in choices.items():
        if not key.isdigit() and re.search(rf"\b{re.escape(key.lower())}\b", spoken):
            return target
    return None


async def gather(engine: Engine, name: str, step: m.GatherStep) -> str:
    g = step.gather
    state = engine.state
    answer = engine.take_pending_input()
    if answer is None:
        prompt_template = g.retry_prompt if state.attempts and g.retry_prompt else None
        prompt = await engine.render_now(prompt_template or g.prompt or "")
        if prompt_template and g.prompt:
            prompt = f"{prompt} {await engine.render_now(g.prompt)}"
        if prompt:
            state.say("agent", prompt, engine.clock())
        answer = await engine.call.gather(
            prompt=prompt or None,
            inputs=frozenset(InputKind(i) for i in g.input),
            input_timeout=g.timeout,
            num_digits=g.num_digits,
            finish_on_key=g.finish_on_key or None,
            language=engine.scenario.settings.language,
            hints=tuple(g.hints),
        )
    engine.heard(answer.text)
    if answer.empty:
        return _retry_or(engine, name, g, g.no_input, "")
    text = answer.text
    if g.choices is not None:
        target = _choice(answer, g.choices)
        if target is None:
            return _retry_or(engine, name, g, g.no_match, text)
        state.variables[g.save_as] = text
        return target
    if g.valid is not None and not re.search(g.valid, text):
        return _retry_or(engine, name, g, g.no_match, text)
    state.variables[g.save_as] = text
    return NEXT


def _retry_or(engine: Engine, name: str, g: m.GatherArgs, target: str | None, text: str) -> str:
    """Ask again while retries remain; then go to `target` (or on, with an empty answer)."""
    if engine.state.attempts < g.retries:
        engine.state.attempts += 1
        return name
    engine.state.variables[g.save_as] = text
    return target or NEXT


async def echo(engine: Engine, name: str, step: m.EchoStep) -> str:
    seconds = (step.echo or m.EchoArgs()).seconds
    engine.state.say("agent", f"[echo test, {seconds:g} s]", engine.clock())
    await engine.call.echo(seconds)
    return NEXT
