"""Health for load balancers: is the process up, and can it reach its database?"""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import text

from voicecrm import __version__
from voicecrm.api.routing import Ctx, Route


class Health(BaseModel):
    status: str
    version: str
    database: str


async def health(ctx: Ctx) -> Health:
    await ctx.session.execute(text("SELECT 1"))
    return Health(status="ok", version=__version__, database=ctx.session.get_bind().dialect.name)


ROUTES = [
    Route(
        "GET",
        "/health",
        health,
        "Liveness and database reachability",
        "health",
        response=Health,
        auth=False,
        read_only=True,
        errors=(503,),
    ),
]
