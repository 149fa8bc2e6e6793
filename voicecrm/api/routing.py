"""Declared routes: one table says what each endpoint takes and returns.

A route names its body, query and response models; the same declaration drives
request parsing (so a handler only ever sees validated data), the unit of work
and authentication, and the OpenAPI document. The document therefore cannot
drift from what the server actually accepts: it is made from the same objects.

Small on purpose: aiohttp-pydantic and aiohttp-apispec exist but are little
used, lag behind pydantic/OpenAPI 3.1, and would not own the per-request
transaction, which is the part that matters here.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.actor import Actor
from voicecrm.api.problems import from_validation, problem_response
from voicecrm.errors import InvalidInput, NotFound
from voicecrm.storage import MAX_ID, Database

M = TypeVar("M", bound=BaseModel)


@dataclass
class Ctx:
    """What a handler gets: the request, who asks, the unit of work and parsed input."""

    request: web.Request
    session: AsyncSession
    who: Actor | None = None
    body_model: BaseModel | None = None
    query_model: BaseModel | None = None
    # Only for `own_transaction` routes, whose handlers open their own units of work.
    database: Database | None = None

    @property
    def actor(self) -> Actor:
        assert self.who is not None, "this route does not authenticate"
        return self.who

    def body(self, model: type[M]) -> M:
        assert isinstance(self.body_model, model)
        return self.body_model

    def query(self, model: type[M]) -> M:
        assert isinstance(self.query_model, model)
        return self.query_model

    def path_id(self, name: str) -> int:
        """The id in the path; anything that cannot be a row's id names no row: 404.

        ASCII digits only: `str.isdigit` also accepts '²', which `int` then refuses.
        """
        raw = self.request.match_info[name]
        if not (raw.isascii() and raw.isdigit()) or not 0 < int(raw) <= MAX_ID:
            raise NotFound(f"{name.replace('_', ' ')} {raw!r} does not exist")
        return int(raw)


Result = BaseModel | Sequence[BaseModel] | web.StreamResponse | None
RouteHandler = Callable[[Ctx], Awaitable[Result]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: RouteHandler
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: Any = None
    status: int = 200
    auth: bool = True
    read_only: bool = False
    # A promise that the handler runs a few indexed statements of bounded size (a
    # token, a contact, one timeline page): on SQLite the transaction then runs on the
    # loop's thread (`Database.transaction(quick=True)`) instead of making a dozen
    # trips to aiosqlite's worker thread. Never for searches, exports or bulk work.
    quick: bool = False
    admin_only: bool = False
    # Non-JSON bodies and responses, for OpenAPI: {"text/csv": schema}.
    request_content: dict[str, Any] | None = None
    response_content: dict[str, Any] | None = None
    errors: tuple[int, ...] = ()
    description: str | None = None
    extra_query: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    # For long jobs that must not be one transaction (a million-row CSV import): the
    # token is checked in a short read-only transaction, then the handler gets
    # `ctx.database` and a `ctx.session` with no transaction open, and commits itself.
    own_transaction: bool = False


@dataclass
class RouteTable:
    routes: list[Route] = field(default_factory=list)

    def add(self, route: Route) -> None:
        self.routes.append(route)

    def extend(self, routes: Sequence[Route]) -> None:
        self.routes.extend(routes)


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _text_problem(text: str) -> str | None:
    """Why no database could store `text`, or None.

    PostgreSQL refuses NUL characters in text (SQLite keeps them, so the two engines
    would disagree), and a lone surrogate cannot be encoded for either driver.
    """
    if "\x00" in text:
        return "text must not contain NUL characters"
    try:
        text.encode()
    except UnicodeEncodeError:
        return "text must be valid Unicode (it holds a lone surrogate)"
    return None


def _unstorable_text(value: Any) -> tuple[list[str | int], str] | None:
    """The location of the first string (or key) in `value` with a `_text_problem`."""
    stack: list[tuple[list[str | int], Any]] = [([], value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            reason = _text_problem(item)
            if reason is not None:
                return path, reason
        elif isinstance(item, dict):
            for key, child in item.items():
                reason = _text_problem(key)
                if reason is not None:
                    return [*path, key], reason
                stack.append(([*path, key], child))
        elif isinstance(item, list):
            stack.extend(([*path, index], child) for index, child in enumerate(item))
    return None


def _refuse_unstorable_text(value: Any, where: str) -> None:
    found = _unstorable_text(value)
    if found is None:
        return
    path, reason = found
    loc = [where, *path]
    field = ".".join(str(p) for p in path) or where
    raise _ValidationFailed(
        problem_response(
            422,
            "Invalid input",
            f"{field}: {reason}",
            errors=[{"loc": loc, "msg": reason, "type": "unstorable_text"}],
        )
    )


async def parse_json_body(request: web.Request, model: type[BaseModel]) -> BaseModel:
    if not request.can_read_body:
        raise web.HTTPBadRequest(text="this endpoint needs a JSON body")
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="send the body as application/json")
    raw = await request.read()
    try:
        # NaN and Infinity are not JSON, though Python's parser accepts them by default.
        payload = json.loads(raw, parse_constant=_refuse_constant)
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError, NaN
        raise web.HTTPBadRequest(text=f"the body is not valid JSON: {err}") from err
    except RecursionError as err:
        raise web.HTTPBadRequest(text="the body is nested too deeply") from err
    _refuse_unstorable_text(payload, "body")
    try:
        return model.model_validate(payload)
    except ValidationError as err:
        raise _ValidationFailed(from_validation(err, "body")) from err


def parse_query(request: web.Request, model: type[BaseModel]) -> BaseModel:
    values: dict[str, Any] = {}
    for key in request.query:
        if key not in model.model_fields:
            raise InvalidInput(f"unknown query parameter {key!r}", field=key)
        items = request.query.getall(key)
        for item in items:
            _refuse_unstorable_text({key: item}, "query")
        annotation = str(model.model_fields[key].annotation)
        values[key] = items if annotation.startswith("list") else items[-1]
    try:
        return model.model_validate(values)
    except ValidationError as err:
        raise _ValidationFailed(from_validation(err, "query")) from err


class _ValidationFailed(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__("validation failed")
        self.response = response


def to_response(route: Route, result: Result) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    if result is None:
        return web.Response(status=204)
    if isinstance(result, BaseModel):
        text = result.model_dump_json()
    else:
        text = "[" + ",".join(item.model_dump_json() for item in result) + "]"
    return web.Response(status=route.status, text=text, content_type="application/json")


__all__ = ["Ctx", "Route", "RouteTable", "parse_json_body", "parse_query", "to_response"]
