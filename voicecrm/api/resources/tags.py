"""The tag cloud."""

from __future__ import annotations

from pydantic import BaseModel

from voicecrm.api.routing import Ctx, Route
from voicecrm.crm.tags import tag_cloud


class TagCountOut(BaseModel):
    tag: str
    count: int


class TagCloud(BaseModel):
    items: list[TagCountOut]


async def get_tags(ctx: Ctx) -> TagCloud:
    cloud = await tag_cloud(ctx.session, ctx.actor)
    return TagCloud(items=[TagCountOut(tag=t.tag, count=t.count) for t in cloud])


ROUTES = [
    Route(
        "GET",
        "/tags",
        get_tags,
        "Every tag in use with its number of contacts",
        "tags",
        response=TagCloud,
        read_only=True,
    ),
]
