"""The `HttpClient` port on one shared aiohttp session, for `http_request` steps and tools.

The session is owned by whoever creates `AiohttpClient` (the composition root,
or a CLI command) and closed once; a session per request would cost a TCP and
TLS handshake on every webhook during a live call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from voicecrm import __version__
from voicecrm.scenarios.ports import HttpResult, ProviderError

MAX_RESPONSE_BYTES = 1_048_576


class AiohttpClient:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], json_body: Any
    ) -> HttpResult:
        if not url.startswith(("http://", "https://")):
            raise ProviderError(f"{url!r} is not an http(s) URL")
        sent = {"User-Agent": f"voicecrm/{__version__}", **headers}
        try:
            async with self._session.request(method, url, headers=sent, json=json_body) as response:
                raw = await response.content.read(MAX_RESPONSE_BYTES + 1)
                if len(raw) > MAX_RESPONSE_BYTES:
                    raise ProviderError(f"{method} {url}: the answer is larger than 1 MiB")
                text = raw.decode(response.charset or "utf-8", errors="replace")
                body: Any = text
                if response.content_type == "application/json" or text[:1] in "{[":
                    try:
                        body = json.loads(text)
                    except json.JSONDecodeError:
                        body = text
                return HttpResult(status=response.status, body=body)
        except aiohttp.ClientError as err:
            raise ProviderError(f"{method} {url} failed: {err}") from err
