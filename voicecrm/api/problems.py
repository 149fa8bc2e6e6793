"""Errors as RFC 9457 problem details (`application/problem+json`).

This is the one place where domain errors meet HTTP status codes: the domain
raises `voicecrm.errors` classes, and the middleware here turns them, and
aiohttp's own HTTP errors, into problem documents. Anything else is a bug: it is
logged with its traceback and answered with a bare 500 that leaks nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from voicecrm import errors

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

STATUS_BY_ERROR: list[tuple[type[errors.VoiceCRMError], int]] = [
    (errors.InvalidInput, 422),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.PermissionDenied, 403),
    (errors.AuthenticationFailed, 401),
    (errors.ConfigurationError, 503),
]


class Problem(BaseModel):
    """The problem+json body of every error response."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[dict[str, Any]] | None = None


def problem_response(
    status: int, title: str, detail: str | None = None, **extra: Any
) -> web.Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    body.update({k: v for k, v in extra.items() if v is not None})
    response = web.Response(
        status=status, text=json.dumps(body, default=str), content_type=PROBLEM_JSON
    )
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="voicecrm"'
    return response


def from_domain(err: errors.VoiceCRMError) -> web.Response:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(err, cls):
            return problem_response(status, err.title, err.detail, **err.extra)
    return problem_response(400, err.title, err.detail, **err.extra)


def from_validation(err: ValidationError, where: str) -> web.Response:
    details = [
        {"loc": [where, *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in err.errors(include_url=False, include_context=False, include_input=False)
    ]
    first = details[0]
    field = ".".join(str(p) for p in first["loc"][1:]) or where
    return problem_response(422, "Invalid input", f"{field}: {first['msg']}", errors=details)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.VoiceCRMError as err:
        return from_domain(err)
    except web.HTTPException as err:
        if err.status < 400:
            raise
        reason = err.reason
        detail = err.text if err.text and not err.text.startswith(f"{err.status}:") else None
        if err.status == 413:
            detail = "the request body is larger than this endpoint accepts"
        response = problem_response(err.status, reason, detail)
        for header in ("Allow",):
            if header in err.headers:
                response.headers[header] = err.headers[header]
        return response
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem_response(
            500, "Internal Server Error", "the service failed; the error has been logged"
        )
