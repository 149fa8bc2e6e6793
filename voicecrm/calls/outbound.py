"""Placing a call: what the dialer asks of a carrier, whichever carrier it is.

The dialer (and `voicecrm call`) only know `OutboundCalls.place`; Twilio's REST
API, and later Asterisk's originate, sit behind it. A placed call is already a
row in the call log, so its progress, its scenario and its end are recorded
exactly like an incoming call's. The refusals are typed so that the dialer can
tell a number that will never work (do not retry) from a carrier that is
briefly unreachable (retry later).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from voicecrm.errors import ConfigurationError, InvalidPhoneNumber, VoiceCRMError

E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class Answerer(StrEnum):
    """Who picked up, as answering machine detection judged it."""

    HUMAN = "human"
    MACHINE = "machine"
    FAX = "fax"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class OutboundRequest:
    """One call to place.

    `from_number` may be left out: the carrier adapter then uses the scenario's own
    number or its configured default, so a campaign need not repeat it. `contact_id`
    names the contact being called when the dialer already knows it; otherwise the
    number is resolved like an incoming caller's. `campaign` and `metadata` travel
    with the call into the scenario (`outbound.campaign`, `outbound.metadata`).
    """

    to: str
    scenario: str
    from_number: str | None = None
    machine_detection: bool = False
    contact_id: int | None = None
    campaign: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Refused here, before a row or a carrier request exists for a number no carrier
        # could dial.
        for name, number in (("to", self.to), ("from_number", self.from_number)):
            if number is not None and not E164.match(number):
                raise InvalidPhoneNumber(
                    f"{number!r} is not an E.164 number (+ country code and digits, "
                    "e.g. +14155550123)",
                    field=name,
                )

    def scenario_variables(self) -> dict[str, Any]:
        """What the scenario sees as `outbound`: plain JSON, kept with the call's state."""
        return {"campaign": self.campaign or "", "metadata": dict(self.metadata)}


@dataclass(frozen=True, slots=True)
class PlacedCall:
    """The carrier accepted the call: its id there, and the call's row here."""

    call_id: int
    carrier_call_id: str
    status: str


class OutboundCallFailed(VoiceCRMError):
    """The call was not placed; its row, if one was opened, is closed as failed."""

    title = "Call not placed"


class CarrierRejected(OutboundCallFailed):
    """The carrier refused this request (bad number, unverified caller ID, no funds):
    retrying the same request will not help."""

    title = "Carrier refused the call"

    def __init__(
        self, detail: str, *, carrier_code: int | None, carrier_status: int, **extra: Any
    ) -> None:
        super().__init__(detail, carrier_code=carrier_code, carrier_status=carrier_status, **extra)
        self.carrier_code = carrier_code
        self.carrier_status = carrier_status


class CarrierUnavailable(OutboundCallFailed):
    """The carrier could not be reached or failed on its side: the same request may work
    later. A timeout is ambiguous (the carrier may have placed the call), so the row is
    closed as failed and a late webhook for it is hung up on."""

    title = "Carrier unavailable"


class CalleeBlocked(OutboundCallFailed):
    """The contact is blocked: nobody calls them, whatever the campaign says."""

    title = "Contact is blocked"


class OutboundNotConfigured(ConfigurationError):
    """Placing calls needs settings this service does not have; the detail names them."""

    title = "Outbound calls not configured"

    @classmethod
    def unless_set(cls, what: str, settings: Mapping[str, str | None], hint: str) -> None:
        """Raises, naming every missing setting at once, unless all of `settings` are set."""
        missing = [name for name, value in settings.items() if not value]
        if missing:
            raise cls(f"{what} needs {', '.join(missing)} ({hint})")


class OutboundCalls(Protocol):
    async def place(self, request: OutboundRequest) -> PlacedCall:
        """Open the call's row, then ask the carrier to call; raises the errors above."""
        ...
