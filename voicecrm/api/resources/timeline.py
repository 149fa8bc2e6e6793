"""A contact's timeline, newest first."""

from __future__ import annotations

from pydantic import BaseModel, Field

from voicecrm.api.routing import Ctx, Route
from voicecrm.crm import timeline as service
from voicecrm.crm.contacts import get_contact
from voicecrm.crm.schemas import TimelineEventOut


class TimelineQuery(BaseModel):
    kind: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Only these kinds (repeat the parameter for several).",
    )
    limit: int = Field(50, ge=1, le=500)
    cursor: str | None = Field(None, max_length=40)


class TimelinePage(BaseModel):
    items: list[TimelineEventOut]
    next_cursor: str | None


async def get_timeline(ctx: Ctx) -> TimelinePage:
    query = ctx.query(TimelineQuery)
    contact = await get_contact(ctx.session, ctx.actor, ctx.path_id("contact_id"))
    page = await service.page(
        ctx.session, contact.id, limit=query.limit, cursor=query.cursor, kinds=query.kind
    )
    return TimelinePage(
        items=[TimelineEventOut.model_validate(e, from_attributes=True) for e in page.events],
        next_cursor=page.next_cursor,
    )


ROUTES = [
    Route(
        "GET",
        "/contacts/{contact_id}/timeline",
        get_timeline,
        "A contact's timeline, newest first, filterable by kind",
        "timeline",
        query=TimelineQuery,
        response=TimelinePage,
        read_only=True,
        quick=True,
    ),
]
