"""Loading scenario files: YAML with positions, model validation, cross-step checks.

Every problem found is reported, not just the first, each as
`file:line:column: message`, so an author fixes a file in one pass.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Any

from pydantic import ValidationError

from voicecrm.errors import ScenarioInvalid, ScenarioIssue
from voicecrm.scenarios import checks
from voicecrm.scenarios.models import Scenario
from voicecrm.scenarios.yaml_source import Path, Positions, load_yaml

MAX_FILE_BYTES = 1_048_576

_MESSAGES = {
    "missing": "missing required field {field!r}",
    "extra_forbidden": "unknown field {field!r}",
}


def _data_path(data: Any, loc: tuple[int | str, ...]) -> Path:
    """The path into the document of a pydantic error location (union tags dropped)."""
    path: list[str | int] = []
    node = data
    if len(loc) > 2 and loc[0] == "steps":
        loc = (*loc[:2], *loc[3:])  # loc[2] is the step's union tag, not a key
    for part in loc:
        # Parts that are not in the data are union member tags ("str", "SayArgs"): skip them.
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            path.append(part)
    return tuple(path)


def _issues_from_validation(
    err: ValidationError, data: Any, positions: Positions
) -> list[ScenarioIssue]:
    errors = err.errors(include_url=False)
    located = []
    for e in errors:
        loc = tuple(e["loc"])
        path = _data_path(data, loc)
        located.append((path, e))
    issues: list[ScenarioIssue] = []
    seen: set[tuple[Path, str]] = set()
    for path, e in located:
        kind = e["type"]
        # In a union (text or a mapping), a type mismatch with one member is noise when
        # another member got further: report the most specific error only.
        if kind.endswith("_type") and any(
            other_path[: len(path)] == path and not other["type"].endswith("_type")
            for other_path, other in located
            if other is not e
        ):
            continue
        field = str(e["loc"][-1]) if e["loc"] else ""
        if kind == "missing":
            message = _MESSAGES["missing"].format(field=field)
        elif kind == "extra_forbidden":
            message = _MESSAGES["extra_forbidden"].format(field=field)
        else:
            message = e["msg"]
            if kind.endswith("_type") or kind.startswith("literal"):
                message = f"wrong type: {message[0].lower()}{message[1:]}"
        if (path, message) in seen:
            continue
        seen.add((path, message))
        issues.append(positions.issue(path, message, key=kind == "extra_forbidden"))
    return issues


def parse_scenario(text: str, file: str) -> Scenario:
    """A validated scenario, or `ScenarioInvalid` listing every problem with its position."""
    data, positions = load_yaml(text, file)
    if not isinstance(data, dict):
        raise ScenarioInvalid([positions.issue((), "a scenario is a mapping with name and steps")])
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as err:
        raise ScenarioInvalid(
            sorted(_issues_from_validation(err, data, positions), key=lambda i: (i.line, i.column))
        ) from err
    findings = checks.check(scenario)
    if findings:
        issues = [positions.issue(path, message) for path, message in findings]
        raise ScenarioInvalid(sorted(issues, key=lambda i: (i.line, i.column)))

    return scenario


def load_file(path: FsPath) -> Scenario:
    name = str(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ScenarioInvalid([ScenarioIssue(name, 1, 1, "file is larger than 1 MiB")])
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ScenarioInvalid([ScenarioIssue(name, 1, 1, f"not UTF-8 text: {err}")]) from err
    except OSError as err:
        raise ScenarioInvalid([ScenarioIssue(name, 1, 1, f"cannot read: {err.strerror}")]) from err
    return parse_scenario(text, name)
