"""What the Twilio endpoints need, built and owned by the composition root."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from twilio.request_validator import RequestValidator

from voicecrm.accounts.actor import Actor
from voicecrm.calls.outbound import OutboundCalls
from voicecrm.scenarios.library import ScenarioRegistry
from voicecrm.scenarios.ports import HttpClient, LanguageModel
from voicecrm.storage import Database
from voicecrm.telephony.voice_calls import SpeechProviders
from voicecrm.voice.call import TurnObserver
from voicecrm.voice.ports import RecordingSink


@dataclass
class TwilioServices:
    database: Database
    actor: Actor
    scenarios: ScenarioRegistry
    providers: SpeechProviders
    validator: RequestValidator | None  # None: no auth token configured
    public_url: str | None = None
    llm: LanguageModel | None = None
    http: HttpClient | None = None
    on_turn: TurnObserver | None = None
    recordings: RecordingSink | None = None
    blocked_callers: str = "reject"  # or the name of the scenario blocked callers get
    mode: str = "stream"  # or "twiml", unless a scenario says otherwise
    outbound: OutboundCalls | None = None  # None: no account SID, auth token or public URL


TWILIO = web.AppKey("twilio", TwilioServices)
