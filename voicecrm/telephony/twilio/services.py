"""What the Twilio endpoints need, built and owned by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from twilio.request_validator import RequestValidator

from voicecrm.calls.outbound import OutboundCalls
from voicecrm.telephony.carrier_calls import CallServices


@dataclass(kw_only=True)
class TwilioServices(CallServices):
    validator: RequestValidator | None  # None: no auth token configured
    public_url: str | None = None
    mode: str = "stream"  # or "twiml", unless a scenario says otherwise
    outbound: OutboundCalls | None = None  # None: no account SID, auth token or public URL


TWILIO = web.AppKey("twilio", TwilioServices)
