"""`AriEvents`: the events WebSocket as an async iterator that survives drops.

Connecting the socket is what registers the application with Asterisk, and an
application with no socket cannot receive calls, so the iterator never gives
up on a dropped socket: it reconnects with capped, jittered exponential
back-off and, once connected again, yields a `Reconnected` marker. Events sent
while the socket was down are lost, so the application should then reconcile
(ask ARI which of its calls' channels still exist). Only refused credentials
end the iteration (`AriUnauthorized`): retrying them cannot help.

The iterator owns its WebSocket (and its session, unless one is lent), pulls
from it only when asked for the next event, and starts no background task, so
cancelling the consumer or calling `aclose` leaves nothing running.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self
from urllib.parse import urlencode

import aiohttp

from voicecrm.telephony.ari.client import ari_root
from voicecrm.telephony.ari.errors import ApplicationReplaced, AriUnauthorized, MalformedEvent
from voicecrm.telephony.ari.events import Event, Unknown, parse_event

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0  # seconds for the WebSocket handshake
HEARTBEAT = 20.0  # seconds between pings, to notice a silently dead connection


@dataclass(frozen=True)
class Reconnected:
    """The socket is connected again after `attempts` tries; events may have been missed."""

    attempts: int


@dataclass(frozen=True)
class Backoff:
    """Delay before reconnect attempt n (0-based): initial * factor**n, capped at
    `maximum`, then scaled down by up to `jitter` (0..1) so that many instances
    restarted together do not all reconnect at once."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.5
    random: Callable[[], float] = field(default=random.random, compare=False)

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * self.factor ** min(attempt, 64))
        return base * (1.0 - self.jitter * self.random())


Sleep = Callable[[float], Awaitable[None]]


class AriEvents:
    """`async for event in AriEvents(...)`: Events, and a `Reconnected` after each reconnect."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        app: str | Sequence[str],
        *,
        subscribe_all: bool = False,
        session: aiohttp.ClientSession | None = None,
        backoff: Backoff | None = None,
        heartbeat: float | None = HEARTBEAT,
        connect_timeout: float = CONNECT_TIMEOUT,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        apps = app if isinstance(app, str) else ",".join(app)
        self.app = apps
        query = {"app": apps}
        if subscribe_all:
            query["subscribeAll"] = "true"
        root = ari_root(base_url)
        scheme, rest = root.split("://", 1)
        ws_scheme = {"http": "ws", "https": "wss"}.get(scheme, scheme)
        self.url = f"{ws_scheme}://{rest}/events?{urlencode(query)}"
        self._headers = {"Authorization": aiohttp.encode_basic_auth(username, password)}
        self._session = session
        self._owns_session = session is None
        self._backoff = backoff or Backoff()
        self._heartbeat = heartbeat
        self._connect_timeout = connect_timeout
        self._sleep = sleep
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connected_before = False
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event | Reconnected:
        while not self._closed:
            if self._ws is None:
                attempts = await self._connect()
                if self._closed:  # closed by another task while connecting
                    await self._drop()
                    break
                if self._connected_before:
                    return Reconnected(attempts=attempts)
                self._connected_before = True
            assert self._ws is not None
            message = await self._ws.receive()
            if message.type is aiohttp.WSMsgType.TEXT:
                try:
                    event = parse_event(message.data)
                except MalformedEvent as error:
                    log.warning("ignoring an ARI event: %s", error.detail)
                    continue
                if isinstance(event, Unknown) and event.type == "ApplicationReplaced":
                    self._closed = True
                    await self._drop()
                    raise ApplicationReplaced(0, f"another connection took over {self.app!r}")
                return event
            elif message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                if not self._closed:
                    log.warning("ARI events socket dropped (%s); reconnecting", message.type.name)
                await self._drop()
        raise StopAsyncIteration

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the socket (and an owned session); iteration then stops."""
        self._closed = True
        await self._drop()
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            await ws.close()

    async def _connect(self) -> int:
        """Connects, retrying with back-off; returns how many attempts it took."""
        attempt = 0
        while not self._closed:
            attempt += 1
            if self._session is None:
                self._session = aiohttp.ClientSession()
            try:
                async with asyncio.timeout(self._connect_timeout):
                    self._ws = await self._session.ws_connect(
                        self.url, headers=self._headers, heartbeat=self._heartbeat
                    )
                return attempt
            except aiohttp.WSServerHandshakeError as error:
                if error.status in (401, 403):
                    raise AriUnauthorized(error.status, "ARI refused the credentials") from None
                problem = f"HTTP {error.status} {error.message}"
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                problem = str(error) or type(error).__name__
            except RuntimeError:  # "Session is closed": aclose ran while connecting
                if self._closed:
                    break
                raise
            delay = self._backoff.delay(attempt - 1)
            log.warning(
                "ARI events socket: connect attempt %d failed (%s); retrying in %.1fs",
                attempt,
                problem,
                delay,
            )
            await self._sleep(delay)
        return attempt
