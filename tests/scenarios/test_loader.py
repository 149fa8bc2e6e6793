"""Loading scenarios: every kind of mistake is named with file:line:column."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from voicecrm.errors import ScenarioInvalid
from voicecrm.scenarios.library import ScenarioLibrary, json_schema_text
from voicecrm.scenarios.loader import parse_scenario
from voicecrm.scenarios.models import GatherStep, SayStep

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


def problems(text: str) -> list[str]:
    with pytest.raises(ScenarioInvalid) as caught:
        parse_scenario(textwrap.dedent(text).lstrip("\n"), "s.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_a_valid_scenario_loads_with_its_steps_in_order() -> None:
    scenario = parse_scenario(
        textwrap.dedent("""
        name: hello
        steps:
          greet:
            say: "Hello {{ contact.name }}"
          ask:
            gather: {prompt: "Your name?", save_as: caller_name}
          bye:
            hangup:
    """),
        "s.yaml",
    )
    assert list(scenario.steps) == ["greet", "ask", "bye"]
    assert isinstance(scenario.steps["greet"], SayStep)
    assert isinstance(scenario.steps["ask"], GatherStep)
    assert scenario.first_step == "greet"


def test_yaml_syntax_errors_point_at_the_mark() -> None:
    assert problems("""
        name: x
        steps: [1, 2
        other: 3
    """) == [
        "s.yaml:3:6: YAML syntax: expected ',' or ']', but got ':' (while parsing a flow sequence)"
    ]


def test_duplicate_keys_are_refused() -> None:
    assert problems("""
        name: x
        name: y
        steps: {a: {hangup: }}
    """) == ["s.yaml:2:1: duplicate key 'name'"]


def test_an_unknown_step_lists_the_known_ones() -> None:
    [problem] = problems("""
        name: x
        steps:
          a:
            sya: hello
    """)
    assert problem.startswith("s.yaml:4:5: a step needs exactly one action: say, play, gather")


def test_unknown_and_missing_fields_are_named_where_they_are_written() -> None:
    assert problems("""
        name: x
        steps:
          a:
            say:
              txt: hi
            colour: red
    """) == [
        "s.yaml:5:7: missing required field 'text'",
        "s.yaml:5:7: unknown field 'txt'",
        "s.yaml:6:5: unknown field 'colour'",
    ]


def test_a_wrong_type_says_what_was_expected() -> None:
    assert problems("""
        name: x
        steps:
          a:
            gather:
              timeout: soon
    """) == ["s.yaml:5:16: Input should be a valid number, unable to parse string as a number"]


def test_a_goto_to_a_missing_step_is_refused() -> None:
    assert problems("""
        name: x
        steps:
          a:
            say: hi
            next: menu
    """) == ["s.yaml:5:11: goes to step 'menu', which does not exist"]


def test_an_unreachable_step_is_refused() -> None:
    assert problems("""
        name: x
        steps:
          a:
            hangup:
          b:
            say: never heard
    """) == ["s.yaml:6:5: step 'b' can never be reached from 'a'"]


def test_templates_and_conditions_must_parse() -> None:
    assert problems("""
        name: x
        steps:
          a:
            say: "Hello {{ contact.name"
          b:
            branch:
              - if: "contact.known and"
                goto: a
    """) == [
        "s.yaml:4:10: template does not parse: unexpected end of template, "
        "expected 'end of print statement'.",
        "s.yaml:7:13: condition does not parse: unexpected 'end of template'",
    ]


def test_an_agent_may_only_use_tools_that_exist() -> None:
    [problem] = problems("""
        name: x
        steps:
          a:
            agent:
              instructions: Be helpful.
              tools: [create_crm_note, launch_rocket]
    """)
    assert problem.startswith("s.yaml:6:32: unknown tool 'launch_rocket'; known tools: add_tag")


def test_a_bad_regular_expression_is_refused() -> None:
    assert problems("""
        name: x
        steps:
          a:
            gather: {valid: "([0-9]"}
    """) == [
        "s.yaml:4:21: not a regular expression: missing ), unterminated subpattern at position 0"
    ]


def test_every_shipped_scenario_is_valid() -> None:
    library = ScenarioLibrary.load([SCENARIOS])
    assert "dtmf-menu" in library.scenarios
    assert library.for_number("+1 (415) 555-0100").name == "dtmf-menu"


def test_two_scenarios_cannot_answer_one_number(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(
            f"name: {name}\nnumbers: ['+14155550100']\nsteps: {{s: {{hangup: }}}}\n"
        )
    with pytest.raises(ScenarioInvalid, match=r"number \+14155550100 is also answered by"):
        ScenarioLibrary.load([tmp_path])


def test_the_published_json_schema_is_current() -> None:
    """scenarios/schema.json is what editors load: `voicecrm scenarios schema -o` remakes it."""

    assert (SCENARIOS / "schema.json").read_text() == json_schema_text()
