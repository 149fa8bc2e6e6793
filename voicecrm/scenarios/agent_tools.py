"""The tools an agent step offers its language model, and how each one runs.

Every tool's arguments are a pydantic model (built-in tools) or the JSON
Schema a scenario declares (its HTTP tools). Arguments the model sends are
validated before anything runs; a validation error or a failure while running
is returned to the model as the tool's result, so the model can correct
itself, and the call goes on.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from voicecrm.calls.interface import TransferStatus
from voicecrm.errors import VoiceCRMError
from voicecrm.scenarios import models as m
from voicecrm.scenarios.ports import ToolCall, ToolSpec

if TYPE_CHECKING:
    from voicecrm.scenarios.engine import Engine

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateNoteArgs(_Args):
    """Write a note on the caller's CRM record (what they want, facts they gave)."""

    content: Text
    type: Literal["general", "info", "warning", "danger"] = Field(
        "general", description="info for facts, warning/danger for problems to flag"
    )


class SetStageArgs(_Args):
    """Move the caller's contact to a pipeline stage, by the stage's name."""

    stage: Text


class UpdateContactArgs(_Args):
    """Correct or complete the caller's contact details with what they said."""

    name: Text | None = None
    company: Text | None = None
    email: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+$")] | None = None


class AddTagArgs(_Args):
    """Tag the caller's contact (for example 'wants-quote')."""

    tag: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class CreateTaskArgs(_Args):
    """Ask a team member to do something, such as call the caller back."""

    title: Text
    description: Text | None = None
    due_in_minutes: int = Field(60, ge=0, le=60 * 24 * 30)


class TransferCallArgs(_Args):
    """Connect the caller to a person or department, by one of the listed names."""

    target: str


class EndCallArgs(_Args):
    """Hang up once the conversation is finished and you have said goodbye."""

    reason: str = "completed"


class LookupBusinessInfoArgs(_Args):
    """Look up a fact about the business (hours, address, prices...) by topic."""

    topic: Text


BUILTIN_ARGS: dict[str, type[_Args]] = {
    "create_crm_note": CreateNoteArgs,
    "set_stage": SetStageArgs,
    "update_contact": UpdateContactArgs,
    "add_tag": AddTagArgs,
    "create_task": CreateTaskArgs,
    "transfer_call": TransferCallArgs,
    "end_call": EndCallArgs,
    "lookup_business_info": LookupBusinessInfoArgs,
}


@dataclass
class ToolOutcome:
    """What to tell the model, and whether the call is over."""

    result: dict[str, Any]
    ends_call: bool = False


@functools.cache
def _builtin_schema(name: str) -> dict[str, Any]:
    """A built-in tool's JSON Schema, made once: pydantic's schema generation is slow."""
    schema = BUILTIN_ARGS[name].model_json_schema()
    schema.pop("title", None)
    return schema


def tool_specs(scenario: m.Scenario, args: m.AgentArgs) -> list[ToolSpec]:
    specs: list[ToolSpec] = []
    for name in args.tools:
        if name == "transfer_call" and not args.transfer_targets:
            continue  # nothing to transfer to: do not tempt the model
        if name in BUILTIN_ARGS:
            model = BUILTIN_ARGS[name]
            schema = copy.deepcopy(_builtin_schema(name))
            description = (model.__doc__ or name).strip()
            if name == "transfer_call":
                schema["properties"]["target"]["enum"] = sorted(args.transfer_targets)
            if name == "lookup_business_info" and scenario.business.facts:
                description += " Topics: " + ", ".join(sorted(scenario.business.facts))
            specs.append(ToolSpec(name=name, description=description, parameters=schema))
        else:
            tool = scenario.tools[name]
            specs.append(
                ToolSpec(name=name, description=tool.description, parameters=tool.parameters)
            )
    return specs


def _parse(call: ToolCall) -> dict[str, Any]:
    try:
        value = json.loads(call.arguments or "{}")
    except json.JSONDecodeError as err:
        raise ValueError(f"arguments are not valid JSON: {err.msg}") from None
    if not isinstance(value, dict):
        raise ValueError("arguments must be a JSON object")
    return value


async def run_tool(engine: Engine, agent: m.AgentArgs, call: ToolCall) -> ToolOutcome:
    """Validate and run one tool call; errors come back as results, never as exceptions."""
    if call.name not in agent.tools or (
        call.name not in BUILTIN_ARGS and call.name not in engine.scenario.tools
    ):
        return ToolOutcome({"error": f"unknown tool {call.name!r}"})
    try:
        raw = _parse(call)
        if call.name in BUILTIN_ARGS:
            parsed = BUILTIN_ARGS[call.name].model_validate(raw)
            return await _run_builtin(engine, agent, parsed)
        tool = engine.scenario.tools[call.name]
        jsonschema.validate(raw, tool.parameters)
        return await _run_http_tool(engine, tool, raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
            for e in err.errors(include_url=False)
        )
        return ToolOutcome({"error": f"invalid arguments: {problems}"})
    except jsonschema.ValidationError as err:
        return ToolOutcome({"error": f"invalid arguments: {err.message}"})
    except ValueError as err:
        return ToolOutcome({"error": str(err)})
    except VoiceCRMError as err:
        return ToolOutcome({"error": err.detail})


async def _run_builtin(engine: Engine, agent: m.AgentArgs, args: _Args) -> ToolOutcome:
    contact_id = await engine.contact_id()
    match args:
        case CreateNoteArgs(content=content, type=note_type):
            note_id = await engine.crm.add_note(contact_id, content, note_type)
            engine.contact_changed()
            return ToolOutcome({"ok": True, "note_id": note_id})
        case SetStageArgs(stage=stage):
            await engine.crm.set_stage(contact_id, stage)
            engine.contact_changed()
            return ToolOutcome({"ok": True, "stage": stage})
        case UpdateContactArgs(name=name, company=company, email=email):
            await engine.crm.update_contact(contact_id, name=name, company=company, email=email)
            engine.contact_changed()
            return ToolOutcome({"ok": True})
        case AddTagArgs(tag=tag):
            await engine.crm.change_tags(contact_id, [tag], [])
            engine.contact_changed()
            return ToolOutcome({"ok": True, "tag": tag.lower()})
        case CreateTaskArgs(title=title, description=description, due_in_minutes=due):
            task_id = await engine.crm.create_task(
                contact_id,
                title=title,
                description=description,
                due_in_minutes=due,
                assign_to=None,
                call_id=engine.state.call_id,
            )
            return ToolOutcome({"ok": True, "task_id": task_id})
        case TransferCallArgs(target=target):
            number = agent.transfer_targets.get(target)
            if number is None:
                return ToolOutcome(
                    {"error": f"unknown target; use one of {sorted(agent.transfer_targets)}"}
                )
            outcome = await engine.call.transfer(number)
            engine.state.variables["transfer_status"] = outcome.status.value
            if outcome.status is TransferStatus.ANSWERED:
                engine.state.outcome = "transferred"
                return ToolOutcome({"ok": True}, ends_call=True)
            return ToolOutcome(
                {
                    "error": f"transfer failed: {outcome.status.value}; "
                    "tell the caller and offer a call-back"
                }
            )
        case EndCallArgs(reason=reason):
            engine.state.outcome = reason or "completed"
            return ToolOutcome({"ok": True}, ends_call=True)
        case LookupBusinessInfoArgs(topic=topic):
            facts = engine.scenario.business.facts
            key = next((k for k in facts if k.lower() == topic.lower()), None)
            if key is None:
                key = next((k for k in facts if topic.lower() in k.lower()), None)
            if key is None:
                return ToolOutcome(
                    {"error": f"no information about {topic!r}; known topics: {sorted(facts)}"}
                )
            return ToolOutcome({"topic": key, "answer": facts[key]})
    return ToolOutcome({"error": "tool not implemented"})


async def _run_http_tool(
    engine: Engine, tool: m.HttpTool, arguments: dict[str, Any]
) -> ToolOutcome:
    from voicecrm.scenarios.steps.connect import call_http

    engine.state.variables["args"] = arguments
    try:
        result = await call_http(engine, tool.request)
    finally:
        engine.state.variables.pop("args", None)
    if result.status >= 400:
        return ToolOutcome(
            {"error": f"the service answered HTTP {result.status}", "body": result.body}
        )
    return ToolOutcome({"result": result.body})
