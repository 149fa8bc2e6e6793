"""Checks that span steps: targets exist, every step is reachable, text parses, tools exist.

The pydantic models check each value's shape; what only makes sense across the
whole scenario is checked here, each finding tied to the path (and so the
file:line:column) where the author wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from voicecrm.scenarios import models as m
from voicecrm.scenarios.templates import TemplateError, check_expression, check_template
from voicecrm.scenarios.yaml_source import Path

Finding = tuple[Path, str]

# Steps after which the flow never falls through to the step written below.
_TERMINAL = (m.HangupStep, m.GotoStep)


def targets(name: str, step: m.StepBase) -> Iterator[tuple[Path, str]]:
    """Every step name this step can jump to, with the path where it is written."""
    base: Path = ("steps", name)
    if step.next:
        yield (*base, "next"), step.next
    if step.on_error:
        yield (*base, "on_error"), step.on_error
    match step:
        case m.GotoStep(goto=goto):
            yield (*base, "goto"), goto
        case m.BranchStep(branch=cases, else_=else_):
            for i, case in enumerate(cases):
                yield (*base, "branch", i, "goto"), case.goto
            if else_:
                yield (*base, "else"), else_
        case m.GatherStep(gather=g):
            if g.no_input:
                yield (*base, "gather", "no_input"), g.no_input
            if g.no_match:
                yield (*base, "gather", "no_match"), g.no_match
            for answer, target in (g.choices or {}).items():
                yield (*base, "gather", "choices", answer), target
        case m.TransferStep(transfer=m.TransferArgs(no_answer=no_answer)) if no_answer:
            yield (*base, "transfer", "no_answer"), no_answer
        case _:
            pass


def falls_through(step: m.StepBase) -> bool:
    return not isinstance(step, _TERMINAL) and step.next is None


def templates(name: str, step: m.StepBase) -> Iterator[tuple[Path, str]]:
    """Every template string in a step, with its path."""
    base: Path = ("steps", name)
    match step:
        case m.SayStep(say=str() as text):
            yield (*base, "say"), text
        case m.SayStep(say=m.SayArgs(text=text)):
            yield (*base, "say", "text"), text
        case m.GatherStep(gather=g):
            for key in ("prompt", "retry_prompt"):
                if getattr(g, key):
                    yield (*base, "gather", key), getattr(g, key)
        case m.CreateNoteStep(create_crm_note=str() as content):
            yield (*base, "create_crm_note"), content
        case m.CreateNoteStep(create_crm_note=m.NoteArgs(content=content)):
            yield (*base, "create_crm_note", "content"), content
        case m.SetStep(set=values):
            yield from _nested((*base, "set"), values)
        case m.SetStageStep(set_stage=str() as stage):
            yield (*base, "set_stage"), stage
        case m.UpdateContactStep(update_contact=u):
            for key in ("name", "company", "email"):
                if getattr(u, key) is not None:
                    yield (*base, "update_contact", key), getattr(u, key)
            yield from _nested((*base, "update_contact", "custom_fields"), u.custom_fields)
        case m.CreateTaskStep(create_task=t):
            yield (*base, "create_task", "title"), t.title
            if t.description:
                yield (*base, "create_task", "description"), t.description
        case m.HttpRequestStep(http_request=r):
            yield from _request((*base, "http_request"), r)
        case m.TransferStep(transfer=str() as to):
            yield (*base, "transfer"), to
        case m.TransferStep(transfer=m.TransferArgs() as t):
            yield (*base, "transfer", "to"), t.to
            if t.whisper:
                yield (*base, "transfer", "whisper"), t.whisper
        case m.VoicemailStep(voicemail=m.VoicemailArgs(prompt=str() as prompt)):
            yield (*base, "voicemail", "prompt"), prompt
        case m.AgentStep(agent=a):
            yield (*base, "agent", "instructions"), a.instructions
            if a.greeting:
                yield (*base, "agent", "greeting"), a.greeting
        case _:
            pass


def _request(base: Path, request: m.HttpRequestArgs) -> Iterator[tuple[Path, str]]:
    yield (*base, "url"), request.url
    yield from _nested((*base, "headers"), request.headers)
    yield from _nested((*base, "json"), request.json_body)


def _nested(base: Path, value: Any) -> Iterator[tuple[Path, str]]:
    if isinstance(value, str):
        yield base, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _nested((*base, key), item)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _nested((*base, i), item)


def check(scenario: m.Scenario) -> list[Finding]:
    findings: list[Finding] = []
    names = list(scenario.steps)
    if scenario.start and scenario.start not in scenario.steps:
        findings.append(
            (
                ("start",),
                f"start step {scenario.start!r} does not exist; steps are: {', '.join(names)}",
            )
        )
    if scenario.settings.greeting:
        findings += _template_findings(("settings", "greeting"), scenario.settings.greeting)
    for tool_name, tool in scenario.tools.items():
        for path, text in _request(("tools", tool_name, "request"), tool.request):
            findings += _template_findings(path, text)

    edges: dict[str, set[str]] = {name: set() for name in names}
    for index, (name, step) in enumerate(scenario.steps.items()):
        for path, target in targets(name, step):
            if target not in scenario.steps:
                findings.append((path, f"goes to step {target!r}, which does not exist"))
            else:
                edges[name].add(target)
        if falls_through(step) and index + 1 < len(names):
            edges[name].add(names[index + 1])
        for path, text in templates(name, step):
            findings += _template_findings(path, text)
        findings += _step_specific(name, step, scenario)

    reachable = _reachable(scenario.first_step, edges)
    for name in names:
        if name not in reachable and scenario.first_step in scenario.steps:
            findings.append(
                (
                    ("steps", name),
                    f"step {name!r} can never be reached from {scenario.first_step!r}",
                )
            )
    return findings


def _step_specific(name: str, step: m.StepBase, scenario: m.Scenario) -> list[Finding]:
    base: Path = ("steps", name)
    findings: list[Finding] = []
    match step:
        case m.BranchStep(branch=cases):
            for i, case in enumerate(cases):
                try:
                    check_expression(case.if_)
                except TemplateError as err:
                    findings.append(((*base, "branch", i, "if"), str(err)))
        case m.GatherStep(gather=g) if g.valid is not None:
            try:
                re.compile(g.valid)
            except re.error as err:
                findings.append(((*base, "gather", "valid"), f"not a regular expression: {err}"))
        case m.AgentStep(agent=a):
            known = set(m.BUILTIN_TOOLS) | set(scenario.tools)
            for i, tool in enumerate(a.tools):
                if tool not in known:
                    findings.append(
                        (
                            (*base, "agent", "tools", i),
                            f"unknown tool {tool!r}; known tools: {', '.join(sorted(known))}",
                        )
                    )
        case _:
            pass
    return findings


def _template_findings(path: Path, text: str) -> list[Finding]:
    try:
        check_template(text)
    except TemplateError as err:
        return [(path, str(err) + (f" (template line {err.line})" if err.line > 1 else ""))]
    return []


def _reachable(start: str, edges: dict[str, set[str]]) -> set[str]:
    seen = {start}
    stack = [start]
    while stack:
        for target in edges.get(stack.pop(), ()):
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen
