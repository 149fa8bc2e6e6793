"""The `HttpClient` port on one shared aiohttp session, for `http_request` steps and tools.

The session is owned by whoever creates `AiohttpClient` (the composition root,
or a CLI command) and closed once; a session per request would cost a TCP and
TLS handshake on every webhook during a live call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from voicecrm import __version__
from voicecrm.scenarios.ports import HttpResult, ProviderError
from voicecrm.voice.ports import MediaUnavailable
from voicecrm.voice.recordings_played import MAX_RECORDING_BYTES

MAX_RESPONSE_BYTES = 1_048_576
FETCH_TIMEOUT = 10.0  # seconds to fetch a recording to play, while the caller waits


class AiohttpClient:
    """`http_request` steps' client, and the fetcher of the recordings a call plays down a
    line that cannot fetch them itself (`MediaFetcher`)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def fetch(self, url: str) -> bytes:
        if not url.startswith(("http://", "https://")):
            raise MediaUnavailable(f"{url!r} is not an http(s) URL")
        try:
            async with asyncio.timeout(FETCH_TIMEOUT), self._session.get(url) as response:
                if response.status >= 400:
                    raise MediaUnavailable(f"GET {url} answered {response.status}")
                data = await response.content.read(MAX_RECORDING_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as err:
            raise MediaUnavailable(f"GET {url} failed: {err or 'timed out'}") from err
        if len(data) > MAX_RECORDING_BYTES:
            raise MediaUnavailable(f"{url} is larger than a recording to play may be")
        return data

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
