"""Outbound calls through Asterisk's originate: `OutboundCalls` for the dialer and the CLI.

As with Twilio, the call's row is opened first and the carrier is asked
afterwards, without retries (a retried originate could ring someone twice).
The channel id is chosen here (`ORIGINATED_PREFIX`), so the row carries it
from the start, and the channel enters the service's Stasis application with
`OUTBOUND_ARG, call_id=N`: whichever process runs that application (the
service, even when `voicecrm call` placed the call) recognises it, runs the
scenario once the callee answers, and closes the row as busy or no-answer
when the channel ends unanswered. A refusal closes the row as failed and
becomes a typed error carrying Asterisk's own message; the ARI password never
appears in either.
"""

from __future__ import annotations

import logging
import secrets

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
from voicecrm.errors import InvalidInput
from voicecrm.scenarios.library import ScenarioRegistry
from voicecrm.scenarios.models import Scenario
from voicecrm.storage import Database
from voicecrm.telephony.ari.client import AriClient
from voicecrm.telephony.ari.dialling import (
    ORIGINATED_PREFIX,
    OUTBOUND_ARG,
    check_dial_template,
    dial_endpoint,
)
from voicecrm.telephony.ari.errors import AriError, AriUnauthorized, AriUnavailable
from voicecrm.telephony.carrier_calls import open_outbound_call, outbound_failed

log = logging.getLogger(__name__)

CHANNEL = "asterisk"
RING_TIMEOUT = 30  # seconds Asterisk lets the callee's phone ring


def check_configured(url: str | None, password: str | None, dial_template: str | None) -> str:
    """The dial template, once every setting placing a call needs is there; otherwise
    `OutboundNotConfigured` naming every missing one at once."""
    OutboundNotConfigured.unless_set(
        "placing Asterisk calls",
        {
            "VOICECRM_ARI_URL": url,
            "VOICECRM_ARI_PASSWORD": password,
            "VOICECRM_ARI_DIAL_TEMPLATE": dial_template,
        },
        "where ARI is, its password, and how to dial a number, e.g. PJSIP/{number}@trunk",
    )
    assert dial_template is not None
    return check_dial_template(dial_template)


class AriOutbound:
    """`OutboundCalls` over ARI; `client` is lent and stays its owner's to close."""

    def __init__(
        self,
        database: Database,
        actor: Actor,
        scenarios: ScenarioRegistry,
        client: AriClient,
        dial_template: str,
        *,
        ring_timeout: int = RING_TIMEOUT,
    ) -> None:
        self._database = database
        self._actor = actor
        self._scenarios = scenarios
        self._client = client
        self._template = check_dial_template(dial_template)
        self._ring_timeout = ring_timeout

    async def place(self, request: OutboundRequest) -> PlacedCall:
        if request.machine_detection:
            raise InvalidInput(
                "answering machine detection is only available on Twilio calls",
                field="machine_detection",
            )
        scenario = self._scenarios.library.get(request.scenario)
        from_number = self._caller_id(request, scenario)
        channel_id = ORIGINATED_PREFIX + secrets.token_hex(8)
        call_id = await self._open_row(request, scenario, from_number, channel_id)
        endpoint = dial_endpoint(self._template, request.to)
        try:
            channel = await self._client.originate(
                endpoint,
                app_args=(OUTBOUND_ARG, f"call_id={call_id}"),
                caller_id=from_number or None,
                ring_timeout=self._ring_timeout,
                channel_id=channel_id,
            )
        except AriUnavailable as err:
            raise await self._failed(
                call_id,
                CarrierUnavailable(
                    f"Asterisk could not place the call to {request.to}: {err.message}; "
                    "try again later",
                    carrier_status=err.status,
                ),
            ) from err
        except AriError as err:
            hint = (
                "; check VOICECRM_ARI_USER and VOICECRM_ARI_PASSWORD"
                if isinstance(err, AriUnauthorized)
                else ""
            )
            raise await self._failed(
                call_id,
                CarrierRejected(
                    f"Asterisk refused the call to {request.to} ({endpoint}): {err.message}{hint}",
                    carrier_code=None,
                    carrier_status=err.status,
                ),
            ) from err
        log.info("asterisk: placed call %s (%s) for call %s", channel.id, endpoint, call_id)
        return PlacedCall(call_id=call_id, carrier_call_id=channel.id, status="queued")

    def _caller_id(self, request: OutboundRequest, scenario: Scenario) -> str:
        """The number the callee sees: asked for, else the scenario's own; else none, and
        the trunk presents its own."""
        if request.from_number:
            return request.from_number
        own = [number for number in scenario.numbers if E164.match(number)]
        return own[0] if own else ""

    async def _open_row(
        self, request: OutboundRequest, scenario: Scenario, from_number: str, channel_id: str
    ) -> int:
        return await open_outbound_call(
            self._database,
            self._actor,
            request,
            scenario,
            channel=CHANNEL,
            external_id=channel_id,
            from_number=from_number,
        )

    async def _failed(self, call_id: int, error: OutboundCallFailed) -> OutboundCallFailed:
        return await outbound_failed(self._database, self._actor, call_id, error, "asterisk")
