"""The scenarios the service runs: list them, and reload them from disk."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from voicecrm.api.routing import Ctx, Route
from voicecrm.scenarios.library import ScenarioRegistry

SCENARIOS = web.AppKey("scenarios", ScenarioRegistry)


class ScenarioOut(BaseModel):
    name: str
    description: str
    default: bool
    numbers: list[str]
    steps: int


class ScenarioList(BaseModel):
    items: list[ScenarioOut]


def _list(registry: ScenarioRegistry) -> ScenarioList:
    return ScenarioList(
        items=[
            ScenarioOut(
                name=s.name,
                description=s.description,
                default=s.default,
                numbers=s.numbers,
                steps=len(s.steps),
            )
            for s in sorted(registry.library.scenarios.values(), key=lambda s: s.name)
        ]
    )


async def list_scenarios(ctx: Ctx) -> ScenarioList:
    return _list(ctx.request.config_dict[SCENARIOS])


async def reload_scenarios(ctx: Ctx) -> ScenarioList:
    """Problems answer 422 with every file:line:column, and the running library stays."""
    registry = ctx.request.config_dict[SCENARIOS]
    registry.reload()
    return _list(registry)


ROUTES = [
    Route(
        "GET",
        "/scenarios",
        list_scenarios,
        "The scenarios the service runs",
        "scenarios",
        response=ScenarioList,
        read_only=True,
    ),
    Route(
        "POST",
        "/scenarios/reload",
        reload_scenarios,
        "Reload scenario files; calls in progress keep the version they started with",
        "scenarios",
        response=ScenarioList,
        admin_only=True,
        errors=(422,),
    ),
]
