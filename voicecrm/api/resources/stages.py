"""The team's stages: at most eight, ordered."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from voicecrm.api.routing import Ctx, Route
from voicecrm.crm import stages as service
from voicecrm.crm.models import Stage
from voicecrm.crm.schemas import MAX_STAGES, StageIn, StageOut


class StageList(BaseModel):
    items: list[StageOut]
    limit: int = MAX_STAGES


class StageOrder(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage_ids: Annotated[list[int], Field(max_length=MAX_STAGES)]


class Removed(BaseModel):
    removed: int


def _out(stage: Stage) -> StageOut:
    return StageOut(id=stage.id, name=stage.name, position=stage.position)


async def list_stages(ctx: Ctx) -> StageList:
    return StageList(
        items=[_out(s) for s in await service.list_stages(ctx.session, ctx.actor.team_id)]
    )


async def add_stage(ctx: Ctx) -> StageOut:
    return _out(await service.add_stage(ctx.session, ctx.actor, ctx.body(StageIn).name))


async def rename_stage(ctx: Ctx) -> StageOut:
    stage = await service.rename_stage(
        ctx.session, ctx.actor, ctx.path_id("stage_id"), ctx.body(StageIn).name
    )
    return _out(stage)


async def reorder_stages(ctx: Ctx) -> StageList:
    stages = await service.reorder_stages(ctx.session, ctx.actor, ctx.body(StageOrder).stage_ids)
    return StageList(items=[_out(s) for s in stages])


async def remove_stage(ctx: Ctx) -> None:
    await service.remove_stage(ctx.session, ctx.actor, ctx.path_id("stage_id"))


async def remove_all_stages(ctx: Ctx) -> Removed:
    return Removed(removed=await service.remove_all_stages(ctx.session, ctx.actor))


ROUTES = [
    Route(
        "GET",
        "/stages",
        list_stages,
        "The team's stages in order",
        "stages",
        response=StageList,
        read_only=True,
    ),
    Route(
        "POST",
        "/stages",
        add_stage,
        f"Add a stage at the end (at most {MAX_STAGES})",
        "stages",
        body=StageIn,
        response=StageOut,
        status=201,
        admin_only=True,
        errors=(409,),
    ),
    Route(
        "PATCH",
        "/stages/{stage_id}",
        rename_stage,
        "Rename a stage",
        "stages",
        body=StageIn,
        response=StageOut,
        admin_only=True,
        errors=(409,),
    ),
    Route(
        "PUT",
        "/stages/order",
        reorder_stages,
        "Reorder: list every stage id once",
        "stages",
        body=StageOrder,
        response=StageList,
        admin_only=True,
    ),
    Route(
        "DELETE",
        "/stages/{stage_id}",
        remove_stage,
        "Remove a stage; its contacts lose it, recorded on their timelines",
        "stages",
        status=204,
        admin_only=True,
    ),
    Route(
        "DELETE",
        "/stages",
        remove_all_stages,
        "Remove every stage",
        "stages",
        response=Removed,
        admin_only=True,
    ),
]
