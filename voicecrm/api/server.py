"""The `/api/v1` application: declared routes wrapped in auth and a unit of work.

For each request the wrapper parses and validates the input first (no database
work for a malformed request), then opens one transaction, authenticates the
bearer token in it, runs the handler and commits; any error rolls the whole
request back. A transaction that PostgreSQL aborted to break a deadlock is run
again from the start (`Database.run`). Read-only routes run in read-only
transactions. Routes declared `own_transaction` (long jobs) authenticate first,
then commit their own batches.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts import service as accounts
from voicecrm.api.openapi import openapi_document
from voicecrm.api.problems import problem_middleware
from voicecrm.api.routing import (
    Ctx,
    Route,
    RouteTable,
    _ValidationFailed,
    parse_json_body,
    parse_query,
    to_response,
)
from voicecrm.errors import AuthenticationFailed
from voicecrm.storage import Database

log = logging.getLogger(__name__)

DATABASE = web.AppKey("database", Database)
API_PREFIX = "/api/v1"


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("send 'Authorization: Bearer <token>'")
    return token.strip()


def wrap(
    route: Route, *, max_body_bytes: int | None = None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        if route.body is not None and max_body_bytes is not None:
            # aiohttp builds every request with the root application's client_max_size,
            # ignoring a sub-application's: the JSON limit is applied to the request here.
            request = request.clone(client_max_size=max_body_bytes)
        database = request.config_dict[DATABASE]
        try:
            secret = bearer_token(request) if route.auth else None
            body = await parse_json_body(request, route.body) if route.body else None
            query = parse_query(request, route.query) if route.query else None
        except _ValidationFailed as failed:
            return failed.response
        stale_token: int | None = None

        async def open_ctx(session: AsyncSession) -> Ctx:
            nonlocal stale_token
            ctx = Ctx(request=request, session=session, body_model=body, query_model=query)
            if secret is not None:
                auth = await accounts.authenticate(session, secret)
                ctx.who = auth.actor
                stale_token = auth.token_id if auth.needs_touch else None
                if route.admin_only:
                    auth.actor.require_admin()
            return ctx

        if route.own_transaction:
            ctx = await database.run(open_ctx, read_only=True)
            async with database.session() as session:
                ctx.session, ctx.database = session, database
                response = to_response(route, await route.handler(ctx))
        else:

            async def unit_of_work(session: AsyncSession) -> web.StreamResponse:
                return to_response(route, await route.handler(await open_ctx(session)))

            # Run again from the start if PostgreSQL aborted it to break a deadlock.
            response = await database.run(
                unit_of_work, read_only=route.read_only, quick=route.quick
            )
        if stale_token is not None:
            async with database.transaction() as session:
                await accounts.touch_token(session, stale_token)
        return response

    handler.__name__ = route.handler.__name__
    handler.__doc__ = route.summary
    return handler


def build_api(table: RouteTable, *, max_body_bytes: int) -> web.Application:
    """The API sub-application; it finds the `Database` in its parent's state."""
    api = web.Application(middlewares=[problem_middleware], client_max_size=max_body_bytes)
    for route in table.routes:
        api.router.add_route(route.method, route.path, wrap(route, max_body_bytes=max_body_bytes))
    document = openapi_document(table, server_prefix=API_PREFIX)

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(document)

    api.router.add_get("/openapi.json", openapi)
    return api
