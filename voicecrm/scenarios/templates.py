"""Jinja templates and expressions for scenario text, run in a sandbox.

Scenario authors write `{{ contact.name }}` and `'vip' in contact.tags`; the
sandbox keeps such text from reaching Python internals, and undefined names
render as empty rather than failing a live call. Templates are compiled once,
when the scenario is loaded, so a syntax error is a load error with a position,
never a surprise mid-call.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import ChainableUndefined, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

# Expressions compiled here return Python values (a bool stays a bool).
_TEXT = SandboxedEnvironment(undefined=ChainableUndefined, autoescape=False)


class TemplateError(ValueError):
    """A template or expression does not parse; `line` is within the template text."""

    def __init__(self, message: str, line: int = 1) -> None:
        super().__init__(message)
        self.line = line


@lru_cache(maxsize=2048)
def _compile_text(source: str) -> Any:
    try:
        return _TEXT.from_string(source)
    except TemplateSyntaxError as err:
        raise TemplateError(f"template does not parse: {err.message}", err.lineno) from err


@lru_cache(maxsize=2048)
def _compile_expression(source: str) -> Any:
    try:
        return _TEXT.compile_expression(source, undefined_to_none=True)
    except TemplateSyntaxError as err:
        raise TemplateError(f"condition does not parse: {err.message}", err.lineno) from err


def check_template(source: str) -> None:
    _compile_text(source)


def check_expression(source: str) -> None:
    _compile_expression(source)


def render(source: str, variables: dict[str, Any]) -> str:
    if "{" not in source:
        return source
    return str(_compile_text(source).render(variables))


def evaluate(source: str, variables: dict[str, Any]) -> Any:
    return _compile_expression(source)(**variables)


def render_value(value: Any, variables: dict[str, Any]) -> Any:
    """Render every string inside a JSON-like value (for `set` and HTTP bodies)."""
    if isinstance(value, str):
        return render(value, variables)
    if isinstance(value, list):
        return [render_value(item, variables) for item in value]
    if isinstance(value, dict):
        return {key: render_value(item, variables) for key, item in value.items()}
    return value


__all__ = [
    "TemplateError",
    "check_expression",
    "check_template",
    "evaluate",
    "render",
    "render_value",
]
