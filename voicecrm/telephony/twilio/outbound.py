"""Outbound calls through Twilio's REST API: `OutboundCalls` for the dialer and the CLI.

The call's row is opened first, so that every webhook Twilio sends for the call
finds it: the voice webhook's URL and the status callback's carry the row's
id, and the row takes Twilio's CallSid as soon as it is known (from the REST
answer, or from whichever webhook comes first). The REST request goes through
twilio's own client on its aiohttp transport, inside the event loop, without
retries: creating a call is not idempotent, and a retried request could ring
the person twice. A refusal closes the row as failed and becomes a typed error
that says what Twilio said; the auth token never appears in either.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any
from urllib.parse import urlencode

import aiohttp
from twilio.base.exceptions import (
    TwilioException,
    TwilioRestException,
    TwilioServiceException,
)
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from voicecrm.accounts.actor import Actor
from voicecrm.calls.outbound import (
    E164,
    CarrierRejected,
    CarrierUnavailable,
    OutboundCallFailed,
    OutboundNotConfigured,
    OutboundRequest,
    PlacedCall,
)
from voicecrm.crm import call_log
from voicecrm.errors import InvalidInput
from voicecrm.scenarios.library import ScenarioRegistry
from voicecrm.scenarios.models import Scenario
from voicecrm.storage import Database
from voicecrm.telephony.carrier_calls import open_outbound_call, outbound_failed

log = logging.getLogger(__name__)

CHANNEL = "twilio"
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
REQUEST_TIMEOUT = 15.0  # seconds for Twilio to answer the create request


def check_configured(
    account_sid: str | None, auth_token: str | None, public_url: str | None
) -> None:
    """Refuses, naming every missing setting at once, when a call could not be placed:
    Twilio needs the account's credentials, and absolute URLs to reach this service."""
    OutboundNotConfigured.unless_set(
        "placing Twilio calls",
        {
            "VOICECRM_TWILIO_ACCOUNT_SID": account_sid,
            "VOICECRM_TWILIO_AUTH_TOKEN": auth_token,
            "VOICECRM_PUBLIC_URL": public_url,
        },
        "the account SID and auth token, and the https URL Twilio reaches this service at",
    )


class _AsyncTransport(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio is untyped
    """twilio's asyncio transport, sending the credentials as an Authorization header.

    twilio hands them to aiohttp's `BasicAuth`, which aiohttp 3.14 deprecates; the header
    is the same on the wire, and twilio's request log leaves Authorization headers out.
    """

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - twilio's signature; place() bounds it
        allow_redirects: bool = False,
    ) -> Response:
        headers = dict(headers or {})
        if auth is not None:
            pair = f"{auth[0]}:{auth[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        return await super().request(
            method, url, params, data, headers, None, timeout, allow_redirects
        )


def rest_client(
    account_sid: str | None,
    auth_token: str | None,
    public_url: str | None,
    *,
    api_base_url: str | None = None,
) -> Client:
    """Twilio's REST client on its asyncio transport; call inside the running loop, which
    its connection pool belongs to."""
    check_configured(account_sid, auth_token, public_url)
    client = Client(account_sid, auth_token, http_client=_AsyncTransport())
    if api_base_url:
        client.api.base_url = api_base_url.rstrip("/")
    return client


class TwilioOutbound:
    """`OutboundCalls` over Twilio; owns the REST client's connections (`aclose`)."""

    def __init__(
        self,
        database: Database,
        actor: Actor,
        scenarios: ScenarioRegistry,
        client: Client,
        public_url: str,
        *,
        default_from: str | None = None,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self._database = database
        self._actor = actor
        self._scenarios = scenarios
        self._client = client
        self._base = public_url.rstrip("/")
        self._default_from = default_from
        self._timeout = timeout

    async def aclose(self) -> None:
        await self._client.http_client.close()

    async def place(self, request: OutboundRequest) -> PlacedCall:
        scenario = self._scenarios.library.get(request.scenario)
        from_number = self._caller_id(request, scenario)
        call_id = await self._open_row(request, scenario, from_number)
        query = urlencode({"call_id": call_id, "scenario": scenario.name})
        arguments: dict[str, Any] = {
            "to": request.to,
            "from_": from_number,
            "url": f"{self._base}/twilio/voice?{query}",
            "method": "POST",
            "status_callback": f"{self._base}/twilio/status?call_id={call_id}",
            "status_callback_method": "POST",
            "status_callback_event": STATUS_EVENTS,
        }
        if request.machine_detection:
            # Synchronous detection that waits for the greeting's end: `AnsweredBy` comes
            # with the voice webhook, in time to hang up or leave a message after the beep.
            arguments["machine_detection"] = "DetectMessageEnd"
        try:
            async with asyncio.timeout(self._timeout):
                created = await self._client.api.v2010.account.calls.create_async(**arguments)
        except TwilioRestException as err:
            message = str(err.msg or "").removeprefix("Unable to create record: ")
            raise await self._failed(
                call_id, _rejection(request, err.status, err.code, message)
            ) from err
        except TwilioServiceException as err:
            message = f"{err.title}: {err.detail}" if err.detail else str(err.title)
            raise await self._failed(
                call_id, _rejection(request, err.status, err.code, message)
            ) from err
        except TimeoutError as err:
            raise await self._failed(
                call_id,
                CarrierUnavailable(
                    f"Twilio did not answer within {self._timeout:g} s; the call may or may "
                    "not have been placed"
                ),
            ) from err
        except (aiohttp.ClientError, OSError, TwilioException) as err:
            raise await self._failed(
                call_id, CarrierUnavailable(f"Twilio's API could not be reached: {err}")
            ) from err
        sid, status = str(created.sid), str(created.status or "queued")
        async with self._database.transaction(quick=True) as session:
            await call_log.set_external_id(session, self._actor, call_id, sid)
        log.info("twilio: placed call %s (%s) for call %s", sid, status, call_id)
        return PlacedCall(call_id=call_id, carrier_call_id=sid, status=status)

    def _caller_id(self, request: OutboundRequest, scenario: Scenario) -> str:
        """The number the callee sees: asked for, else the scenario's own, else the default."""
        if request.from_number:
            return request.from_number
        own = [number for number in scenario.numbers if E164.match(number)]
        if own:
            return own[0]
        if self._default_from:
            return self._default_from
        raise InvalidInput(
            f"no number to call from: pass one, give scenario {scenario.name!r} a number, "
            "or set VOICECRM_TWILIO_FROM_NUMBER",
            field="from_number",
        )

    async def _open_row(
        self, request: OutboundRequest, scenario: Scenario, from_number: str
    ) -> int:
        return await open_outbound_call(
            self._database,
            self._actor,
            request,
            scenario,
            channel=CHANNEL,
            external_id=call_log.pending_external_id(),
            from_number=from_number,
        )

    async def _failed(self, call_id: int, error: OutboundCallFailed) -> OutboundCallFailed:
        return await outbound_failed(self._database, self._actor, call_id, error, "twilio")


def _rejection(
    request: OutboundRequest, status: int, code: int | None, message: str
) -> OutboundCallFailed:
    """Twilio's own words (its message, code and help page), never the request's secrets.

    Twilio's trouble (5xx) or a rate limit may pass; anything else is about this request
    or this account and will not.
    """
    more = f" (https://www.twilio.com/docs/errors/{code})" if code else ""
    detail = f"Twilio refused the call to {request.to}: {message}{more}"
    if status == 401:
        detail += "; check VOICECRM_TWILIO_ACCOUNT_SID and VOICECRM_TWILIO_AUTH_TOKEN"
    if status >= 500 or status == 429:
        return CarrierUnavailable(f"{detail}; try again later", carrier_status=status)
    return CarrierRejected(detail, carrier_code=code, carrier_status=status)
