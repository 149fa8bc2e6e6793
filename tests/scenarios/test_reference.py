"""scenarios/README.md stays true: every YAML example in it is a valid scenario."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from voicecrm.scenarios.loader import parse_scenario
from voicecrm.scenarios.models import STEP_TYPES

REFERENCE = Path(__file__).resolve().parents[2] / "scenarios" / "README.md"
EXAMPLES = re.findall(r"```yaml\n(.*?)```", REFERENCE.read_text(), flags=re.S)


def _name(example: str) -> str:
    found = re.search(r"name: (\S+)", example)
    return found.group(1) if found else "unnamed"


@pytest.mark.parametrize("example", EXAMPLES, ids=[_name(e) for e in EXAMPLES])
def test_every_example_in_the_reference_is_valid(example: str) -> None:
    parse_scenario(example, str(REFERENCE))


def test_the_reference_shows_every_step_kind() -> None:
    shown = {
        kind
        for kind in STEP_TYPES
        if any(re.search(rf"^\s+{kind}:", example, flags=re.M) for example in EXAMPLES)
    }
    assert shown == set(STEP_TYPES)
