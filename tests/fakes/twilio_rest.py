"""Twilio's REST API for creating calls, on loopback, for tests of the real twilio client.

`POST /2010-04-01/Accounts/{AccountSid}/Calls.json` behaves as section 6 of
../shared/reference/twilio.md describes: HTTP Basic auth with the account SID
and auth token (401, code 20003, otherwise), the account in the path must be
the one authenticated (404, code 20404), `To`, `From` and one of `Url`,
`Twiml` or `ApplicationSid` are required (400, codes 21201, 21213, 21205),
and a created call is answered 201 with a call resource shaped like Twilio's
(`sid` CA..., `status` queued, `direction` outbound-api). Every accepted
form is recorded as sent, repeated fields (`StatusCallbackEvent`) included.

A test can make the next request fail with any status and Twilio's error body
`{code, message, more_info, status}` (`fail_next`), or hold the answer until
it sets an event (`hold`), to act while the client waits for Twilio.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from aiohttp import BasicAuth, web
from aiohttp.test_utils import TestServer
from multidict import MultiDict, MultiDictProxy

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "twilio-test-auth-token"


@dataclass(frozen=True)
class CreatedCall:
    sid: str
    account_sid: str
    form: MultiDictProxy[str]


@dataclass(frozen=True)
class Failure:
    status: int
    code: int
    message: str


class FakeTwilioRest:
    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.calls: list[CreatedCall] = []
        self.failures: deque[Failure] = deque()
        self.held: asyncio.Event | None = None
        self.received = asyncio.Event()  # set when a create request has been recorded
        self.base_url = ""
        self.app = web.Application()
        self.app.router.add_post("/2010-04-01/Accounts/{account_sid}/Calls.json", self._create)

    def fail_next(self, status: int, code: int, message: str) -> None:
        self.failures.append(Failure(status, code, message))

    def hold(self) -> asyncio.Event:
        """Answer the next create only once the returned event is set."""
        self.held = asyncio.Event()
        return self.held

    def _error(self, failure: Failure) -> web.Response:
        return web.json_response(
            {
                "code": failure.code,
                "message": failure.message,
                "more_info": f"https://www.twilio.com/docs/errors/{failure.code}",
                "status": failure.status,
            },
            status=failure.status,
        )

    async def _create(self, request: web.Request) -> web.Response:
        try:
            auth = BasicAuth.decode(request.headers.get("Authorization", ""))
        except ValueError:
            auth = None
        if auth is None or (auth.login, auth.password) != (self.account_sid, self.auth_token):
            return self._error(Failure(401, 20003, "Authenticate"))
        account = request.match_info["account_sid"]
        if account != self.account_sid:
            return self._error(
                Failure(
                    404,
                    20404,
                    f"The requested resource /2010-04-01/Accounts/{account}/Calls.json "
                    "was not found",
                )
            )
        posted = await request.post()
        form = MultiDictProxy(MultiDict((k, v) for k, v in posted.items() if isinstance(v, str)))
        if self.failures:
            return self._error(self.failures.popleft())
        if not form.get("To"):
            return self._error(Failure(400, 21201, "No 'To' number is specified"))
        if not form.get("From"):
            return self._error(Failure(400, 21213, "No 'From' number is specified"))
        if not any(form.get(name) for name in ("Url", "Twiml", "ApplicationSid")):
            return self._error(
                Failure(400, 21205, "Either a 'Url', 'Twiml' or 'ApplicationSid' is required")
            )
        sid = "CA" + uuid.uuid4().hex
        self.calls.append(CreatedCall(sid=sid, account_sid=account, form=form))
        self.received.set()
        if self.held is not None:
            held, self.held = self.held, None
            await held.wait()
        return web.json_response(self._resource(sid, account, form), status=201)

    @staticmethod
    def _resource(sid: str, account: str, form: MultiDictProxy[str]) -> dict[str, object]:
        now = format_datetime(datetime.now(UTC), usegmt=True)
        uri = f"/2010-04-01/Accounts/{account}/Calls/{sid}"
        return {
            "account_sid": account,
            "annotation": None,
            "answered_by": None,
            "api_version": "2010-04-01",
            "caller_name": None,
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "duration": None,
            "end_time": None,
            "forwarded_from": None,
            "from": form["From"],
            "from_formatted": form["From"],
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": "PN" + "1" * 32,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": sid,
            "start_time": None,
            "status": "queued",
            "subresource_uris": {
                "notifications": f"{uri}/Notifications.json",
                "recordings": f"{uri}/Recordings.json",
                "payments": f"{uri}/Payments.json",
                "events": f"{uri}/Events.json",
                "siprec": f"{uri}/Siprec.json",
                "streams": f"{uri}/Streams.json",
                "transcriptions": f"{uri}/Transcriptions.json",
                "user_defined_message_subscriptions": (
                    f"{uri}/UserDefinedMessageSubscriptions.json"
                ),
                "user_defined_messages": f"{uri}/UserDefinedMessages.json",
            },
            "to": form["To"],
            "to_formatted": form["To"],
            "trunk_sid": None,
            "uri": f"{uri}.json",
        }


AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]


@pytest.fixture
async def twilio_rest(aiohttp_server: AiohttpServer) -> AsyncIterator[FakeTwilioRest]:
    """A `FakeTwilioRest` on 127.0.0.1; `base_url` replaces https://api.twilio.com."""
    fake = FakeTwilioRest()
    server = await aiohttp_server(fake.app)
    fake.base_url = str(server.make_url("")).rstrip("/")
    try:
        yield fake
    finally:
        if fake.held is not None:
            fake.held.set()
