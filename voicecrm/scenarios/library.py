"""The set of scenarios a service runs, and which one answers a dialled number.

A library is immutable: reloading builds a new one and swaps it in, so a call
in progress keeps the scenario object it started with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicecrm.errors import NotFound, ScenarioInvalid, ScenarioIssue
from voicecrm.scenarios.loader import load_file
from voicecrm.scenarios.models import Scenario


def scenario_files(paths: list[Path]) -> list[Path]:
    """YAML files named directly or found (not recursively) in folders, sorted."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        else:
            files.append(path)
    return files


@dataclass(frozen=True)
class ScenarioLibrary:
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    by_number: dict[str, str] = field(default_factory=dict)
    default: str | None = None

    @classmethod
    def load(cls, paths: list[Path]) -> ScenarioLibrary:
        """Load every file; all problems of all files are raised together."""
        issues: list[ScenarioIssue] = []
        scenarios: dict[str, Scenario] = {}
        sources: dict[str, str] = {}
        for file in scenario_files(paths):
            try:
                scenario = load_file(file)
            except ScenarioInvalid as err:
                issues += err.issues
                continue
            if scenario.name in scenarios:
                issues.append(
                    ScenarioIssue(
                        str(file),
                        1,
                        1,
                        f"scenario name {scenario.name!r} is also used by {sources[scenario.name]}",
                    )
                )
                continue
            scenarios[scenario.name] = scenario
            sources[scenario.name] = str(file)
        by_number: dict[str, str] = {}
        defaults = [s.name for s in scenarios.values() if s.default]
        for scenario in scenarios.values():
            for number in scenario.numbers:
                if number in by_number:
                    issues.append(
                        ScenarioIssue(
                            sources[scenario.name],
                            1,
                            1,
                            f"number {number} is also answered by scenario {by_number[number]!r}",
                        )
                    )
                by_number[number] = scenario.name
        if len(defaults) > 1:
            issues.append(
                ScenarioIssue(
                    sources[defaults[1]],
                    1,
                    1,
                    f"more than one default scenario: {', '.join(defaults)}",
                )
            )
        if issues:
            raise ScenarioInvalid(issues)
        return cls(
            scenarios=scenarios, by_number=by_number, default=defaults[0] if defaults else None
        )

    def get(self, name: str) -> Scenario:
        try:
            return self.scenarios[name]
        except KeyError:
            raise NotFound(
                f"no scenario named {name!r}; known: {', '.join(sorted(self.scenarios)) or 'none'}"
            ) from None

    def for_number(self, dialled: str) -> Scenario:
        """The scenario for a dialled number (exact text or digits), else the default."""
        digits = "".join(ch for ch in dialled if ch.isdigit())
        for candidate in (dialled, "+" + digits, digits):
            if candidate in self.by_number:
                return self.scenarios[self.by_number[candidate]]
        if self.default is None:
            raise NotFound(f"no scenario answers {dialled} and none is marked default")
        return self.scenarios[self.default]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of scenario files, for editors' YAML language servers."""
    schema = Scenario.model_json_schema(by_alias=True, mode="validation")
    return {
        **schema,
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "voicecrm scenario",
    }


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"


class ScenarioRegistry:
    """The service's current library, swapped whole on reload.

    A call takes the `Scenario` object when it starts and keeps it, so a reload
    never changes a call in progress; only calls that start afterwards see the
    new files. A reload that finds any problem keeps the old library.
    """

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.library = ScenarioLibrary()
        self.loaded_at: float | None = None

    def reload(self) -> ScenarioLibrary:
        """Load the files again; raises `ScenarioInvalid` (old library kept) on problems."""
        import time

        existing = [p for p in self.paths if p.exists()]
        self.library = ScenarioLibrary.load(existing) if existing else ScenarioLibrary()
        self.loaded_at = time.time()
        return self.library
