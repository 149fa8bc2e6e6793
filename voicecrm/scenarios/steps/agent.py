"""The agent step: the AI receptionist's conversation loop.

Each turn listens to the caller, streams the model's reply and speaks it
sentence by sentence as it arrives (the caller hears the first words before
the whole answer exists), runs the tools the model asks for and feeds their
results back, until the model ends the call, transfers it, or the turn limit
is reached. The conversation lives in the call state, so a suspended call
resumes mid-conversation.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncGenerator
from typing import Any

from voicecrm.calls.interface import InputKind, Spoken
from voicecrm.scenarios import models as m
from voicecrm.scenarios.agent_tools import run_tool, tool_specs
from voicecrm.scenarios.engine import END, NEXT, Engine
from voicecrm.scenarios.ports import Completion, LanguageModelUnavailable, ProviderError, TextDelta

LISTEN_SECONDS = 8.0
SILENCES_BEFORE_GOODBYE = 2
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def system_prompt(instructions: str, contact: dict[str, Any], scenario: m.Scenario) -> str:
    lines = [instructions.strip(), "", "# The caller (from the CRM)"]
    if contact.get("known"):
        lines.append(f"Name: {contact['name']}")
    else:
        lines.append("Unknown caller: ask for their name if it matters.")
    for key in ("company", "stage", "status"):
        if contact.get(key):
            lines.append(f"{key.capitalize()}: {contact[key]}")
    if contact.get("tags"):
        lines.append("Tags: " + ", ".join(contact["tags"]))
    recent = [
        e
        for e in contact.get("recent", [])
        if e["kind"] in ("note_added", "call", "stage_changed", "task_created")
    ]
    if recent:
        lines.append("Recent history, newest first:")
        for event in recent[:5]:
            summary = (
                event["data"].get("content")
                or event["data"].get("title")
                or event["data"].get("to_stage")
                or event["data"].get("status")
                or ""
            )
            lines.append(f"- {event['at'][:10]} {event['kind']}: {summary}"[:200])
    if scenario.business.name:
        lines += ["", f"# The business: {scenario.business.name}"]
    lines += [
        "",
        "You are on a phone call: answer in one to three short spoken sentences, "
        "no lists or markdown.",
    ]
    return "\n".join(lines)


async def _respond(engine: Engine, args: m.AgentArgs) -> tuple[Completion | None, Spoken]:
    """Stream one model response into speech, sentence by sentence as it is written.

    The caller hears the first sentence while the model writes the rest. When
    they talk over it, speaking stops, the model's stream is closed, and there
    is no completion: the conversation keeps only what was heard. Marks the
    turn's latency record (first token; time spent waiting for the model
    before the first sentence) and records the engine's own overhead: the
    response's time minus the time spent waiting for the model.
    """
    llm = engine.llm
    assert llm is not None
    settings = engine.scenario.settings.llm
    call = engine.call
    result: list[Completion] = []

    async def sentences() -> AsyncGenerator[str, None]:
        pending = ""
        began = time.perf_counter()
        waited = 0.0
        spoke = False
        stream = llm.stream(
            messages=engine.state.agent_messages,
            tools=tool_specs(engine.scenario, args),
            model=args.model or settings.model,
            temperature=args.temperature if args.temperature is not None else settings.temperature,
            timeout=settings.timeout_seconds,
        )
        async with contextlib.aclosing(stream):
            while True:
                asked = time.perf_counter()
                try:
                    event = await anext(stream)
                except StopAsyncIteration:
                    break
                finally:
                    waited += time.perf_counter() - asked
                if isinstance(event, TextDelta):
                    if not pending and not spoke:
                        call.mark("first_token")
                    pending += event.text
                    *finished, pending = _SENTENCE_END.split(pending)
                    for sentence in finished:
                        if not spoke:
                            call.mark("llm", waited=waited)
                            spoke = True
                        yield sentence.strip()
                else:
                    result.append(event)
        if pending.strip():
            if not spoke:
                call.mark("llm", waited=waited)
            yield pending.strip()
        engine.agent_overhead.append(time.perf_counter() - began - waited)

    async with contextlib.aclosing(sentences()) as spoken_sentences:
        spoken = await engine.speak(spoken_sentences)
    if not result and not spoken.interrupted:
        raise ProviderError("the language model's answer ended without a completion")
    return (result[0] if result else None), spoken


def _assistant_message(completion: Completion, spoken: Spoken) -> dict[str, Any]:
    text = spoken.heard if spoken.interrupted else completion.text
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if completion.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in completion.tool_calls
        ]
    return message


async def agent(engine: Engine, name: str, step: m.AgentStep) -> str:
    args = step.agent
    if engine.llm is None:
        raise LanguageModelUnavailable(
            "this agent step needs a language model; configure an OpenAI-compatible server "
            "(VOICECRM_LLM_BASE_URL and VOICECRM_LLM_API_KEY)"
        )
    state = engine.state
    limits = engine.scenario.settings.limits
    max_turns = args.max_turns or limits.max_agent_turns
    if not state.agent_messages:
        contact = await engine.contact()
        instructions = await engine.render_now(args.instructions)
        state.agent_messages.append(
            {"role": "system", "content": system_prompt(instructions, contact, engine.scenario)}
        )
        if args.greeting:
            greeting = await engine.render_now(args.greeting)
            state.agent_messages.append({"role": "assistant", "content": greeting})
            await engine.say(greeting)
    silences = int(state.variables.get("_agent_silences", 0))
    while state.agent_turns < max_turns:
        if engine.over_limits():
            await engine.say("I'm sorry, we have to end the call here. Goodbye.")
            await engine.call.hangup(state.outcome or "duration_limit")
            return END

        answer = engine.take_pending_input()
        if answer is None:
            answer = await engine.call.gather(
                prompt=None,
                inputs=frozenset({InputKind.SPEECH, InputKind.DTMF}),
                input_timeout=LISTEN_SECONDS,
                language=engine.scenario.settings.language,
            )
        if answer.empty:
            silences += 1
            state.variables["_agent_silences"] = silences
            if silences > SILENCES_BEFORE_GOODBYE:
                await engine.say("I can't hear you, so I'll end the call now. Goodbye.")
                state.outcome = "caller_silent"
                await engine.call.hangup("caller_silent")
                return END
            await engine.say("Are you still there?")
            continue
        silences = 0
        state.variables["_agent_silences"] = 0
        engine.heard(answer.text)
        state.agent_messages.append({"role": "user", "content": answer.text})
        state.agent_turns += 1
        for _round in range(limits.max_tool_calls_per_turn + 1):
            completion, spoken = await _respond(engine, args)
            if completion is None:
                # Interrupted before the model finished: keep what was heard, and
                # listen; what the caller said over it is their next turn.
                if spoken.heard:
                    state.agent_messages.append({"role": "assistant", "content": spoken.heard})
                break
            state.agent_messages.append(_assistant_message(completion, spoken))
            if not completion.tool_calls:
                break
            ends = False
            for index, call in enumerate(completion.tool_calls):
                if index >= limits.max_tool_calls_per_turn:
                    result: dict[str, Any] = {"error": "too many tool calls in one turn"}
                else:
                    outcome = await run_tool(engine, args, call)
                    result, ends = outcome.result, ends or outcome.ends_call
                state.agent_messages.append(
                    {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}
                )
            if ends:
                if state.outcome != "transferred":
                    await engine.call.hangup(state.outcome or "completed")
                return END
    return NEXT
