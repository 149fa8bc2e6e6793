"""`X-Twilio-Signature`: every webhook and the stream's WebSocket upgrade are checked.

The signature covers the exact URL Twilio called, so behind a proxy or
tunnel the service must know its public base URL (`VOICECRM_PUBLIC_URL`), or
rebuild it from `X-Forwarded-Proto`/`X-Forwarded-Host`. The check itself is
the twilio library's `RequestValidator`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from twilio.request_validator import RequestValidator

log = logging.getLogger(__name__)


def public_base(request: web.Request, configured: str | None) -> str:
    """https://host as Twilio reaches this service."""
    if configured:
        return configured.rstrip("/")
    scheme = request.headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
    host = request.headers.get("X-Forwarded-Host", request.host).split(",")[0].strip()
    return f"{scheme}://{host}"


def websocket_base(base: str) -> str:
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://")
    return "ws://" + base.removeprefix("http://")


def signed_by_twilio(
    validator: RequestValidator, url: str, params: Mapping[str, Any], signature: str | None
) -> bool:
    """`params` as received (a multidict: a repeated name is signed with all its values)."""
    if not signature:
        return False
    return bool(validator.validate(url, params, signature))


def refuse(request: web.Request, why: str) -> web.Response:
    """403, logged with the path and the reason only: never the body (it holds caller data)."""
    log.warning("twilio: refused %s %s: %s", request.method, request.path, why)
    return problem(403, "Forbidden", why)


def problem(status: int, title: str, detail: str) -> web.Response:
    return web.json_response(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status=status,
        content_type="application/problem+json",
    )
