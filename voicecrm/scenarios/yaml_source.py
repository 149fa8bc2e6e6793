"""YAML read with positions, so every error can name file:line:column.

PyYAML's composer keeps a mark (line, column) on every node; we build the
plain Python value from the node tree ourselves and remember, for each path
into the document, where its key and its value were written. Validation
errors from pydantic carry such paths. Duplicate keys, which YAML forbids but
PyYAML silently accepts, are reported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from voicecrm.errors import ScenarioInvalid, ScenarioIssue

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Position:
    line: int  # 1-based
    column: int  # 1-based


@dataclass
class Positions:
    """Where each path's key and value were written in the file."""

    file: str
    values: dict[Path, Position] = field(default_factory=dict)
    keys: dict[Path, Position] = field(default_factory=dict)

    def of(self, path: Path, *, key: bool = False) -> Position:
        """The position of `path`, or of its nearest written ancestor."""
        table = self.keys if key else self.values
        probe = tuple(path)
        while probe:
            if probe in table:
                return table[probe]
            if probe in self.values:
                return self.values[probe]
            probe = probe[:-1]
        return self.values.get((), Position(1, 1))

    def issue(self, path: Path, message: str, *, key: bool = False) -> ScenarioIssue:
        pos = self.of(path, key=key)
        return ScenarioIssue(self.file, pos.line, pos.column, message)


def _pos(node: yaml.Node) -> Position:
    return Position(node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, file: str) -> None:
        self.positions = Positions(file)
        self.issues: list[ScenarioIssue] = []
        self.constructor = yaml.SafeLoader("")

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.positions.values[path] = _pos(node)
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self.issues.append(self.positions.issue(path, "keys must be plain names"))
                    continue
                key = str(key_node.value)
                if key == "<<":
                    self.issues.append(
                        ScenarioIssue(
                            self.positions.file,
                            *_astuple(key_node),
                            "merge keys (<<) are not supported",
                        )
                    )
                    continue
                if key in result:
                    line, column = _astuple(key_node)
                    self.issues.append(
                        ScenarioIssue(self.positions.file, line, column, f"duplicate key {key!r}")
                    )
                    continue
                self.positions.keys[(*path, key)] = _pos(key_node)
                result[key] = self.build(value_node, (*path, key))
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.constructor.construct_object(node, deep=True)


def _astuple(node: yaml.Node) -> tuple[int, int]:
    pos = _pos(node)
    return pos.line, pos.column


def load_yaml(text: str, file: str) -> tuple[Any, Positions]:
    """Parse one YAML document; syntax errors become `ScenarioInvalid` with the mark."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = err.problem or "invalid YAML"
        context = f" ({err.context})" if err.context else ""
        raise ScenarioInvalid(
            [ScenarioIssue(file, line, column, f"YAML syntax: {problem}{context}")]
        ) from err
    except yaml.YAMLError as err:
        raise ScenarioInvalid([ScenarioIssue(file, 1, 1, f"YAML syntax: {err}")]) from err
    if node is None:
        raise ScenarioInvalid([ScenarioIssue(file, 1, 1, "the file is empty")])
    builder = _Builder(file)
    data = builder.build(node, ())
    if builder.issues:
        raise ScenarioInvalid(builder.issues)
    return data, builder.positions
