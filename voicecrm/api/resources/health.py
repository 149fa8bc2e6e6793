"""Health for load balancers: is the process up, and can it reach its database?"""

from __future__ import annotations

import logging

from aiohttp import web
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from voicecrm import __version__
from voicecrm.api.problems import problem_response
from voicecrm.api.routing import Ctx, Route

log = logging.getLogger(__name__)


class Health(BaseModel):
    status: str
    version: str
    database: str


async def health(ctx: Ctx) -> Health | web.Response:
    """503 when the database cannot be reached, so a load balancer takes this instance out.

    Connection failures surface as SQLAlchemy errors or, from asyncpg's connect, as plain
    OSError; either would otherwise be an unexplained 500.
    """
    try:
        await ctx.session.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as err:
        log.warning("health check: the database cannot be reached: %s", err)
        return problem_response(503, "Service Unavailable", "the database cannot be reached")
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
