"""`voicecrm call`: place one call through Twilio or Asterisk, the way the dialer will.

The call is placed from this process, but answered by the running service.
Through Twilio, Twilio fetches the scenario's first words from the service's
voice webhook (`VOICECRM_PUBLIC_URL`) and reports the call's progress there;
through Asterisk, the originated channel enters the service's Stasis
application, which runs the scenario once the callee answers. So the command
checks the settings before touching anything, opens the call's row in the
service's database, and prints the two ids a person needs to follow the
call: the carrier's (Twilio's CallSid, Asterisk's channel id) and the CRM's.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from voicecrm.accounts import service as accounts
from voicecrm.accounts.actor import Actor
from voicecrm.app import twilio_outbound
from voicecrm.calls.outbound import OutboundRequest, PlacedCall
from voicecrm.cli.arguments import ASTERISK, TWILIO
from voicecrm.config import Settings
from voicecrm.errors import VoiceCRMError
from voicecrm.scenarios.library import ScenarioRegistry
from voicecrm.storage import Database
from voicecrm.storage.migrate import upgrade
from voicecrm.telephony.ari import AriClient
from voicecrm.telephony.ari.outbound import AriOutbound
from voicecrm.telephony.ari.outbound import check_configured as check_asterisk
from voicecrm.telephony.twilio.outbound import check_configured as check_twilio


def carrier(choice: str | None, settings: Settings) -> str:
    """The carrier asked for; else Twilio when its account is configured, Asterisk when
    a dial template is (and ARI with it), and Twilio otherwise, whose error names what
    to set."""
    if choice:
        return choice
    if settings.twilio_account_sid:
        return TWILIO
    if settings.ari_url and settings.ari_dial_template:
        return ASTERISK
    return TWILIO


def cmd_call(args: argparse.Namespace, settings: Settings) -> int:
    """Settings, the number and the scenario files are checked before the loop starts."""
    via = carrier(args.carrier, settings)
    if via == ASTERISK:
        password = settings.ari_password
        check_asterisk(
            settings.ari_url,
            password.get_secret_value() if password else None,
            settings.ari_dial_template,
        )
    else:
        token = settings.twilio_auth_token
        check_twilio(
            settings.twilio_account_sid,
            token.get_secret_value() if token else None,
            settings.public_url,
        )
    request = OutboundRequest(
        to=args.to,
        scenario=args.scenario,
        from_number=args.from_number,
        machine_detection=args.amd,
        contact_id=args.contact,
    )
    registry = ScenarioRegistry([Path(args.scenarios or settings.scenarios_dir)])
    registry.reload()
    registry.library.get(request.scenario)
    placed = asyncio.run(_place(settings, registry, request, via))
    if via == ASTERISK:
        print(f"call placed: Asterisk channel {placed.carrier_call_id} ({placed.status})")
    else:
        print(f"call placed: CallSid {placed.carrier_call_id} ({placed.status})")
    print(f"CRM call id: {placed.call_id}")
    return 0


async def _place(
    settings: Settings, registry: ScenarioRegistry, request: OutboundRequest, via: str
) -> PlacedCall:
    database = Database(settings.database_url)
    try:
        await upgrade(database)
        async with database.transaction(read_only=True) as session:
            team = await accounts.first_team(session)
        if team is None:
            raise VoiceCRMError(
                "no team yet: start the service first (voicecrm serve); it answers the call"
            )
        actor = Actor.system(accounts.team_settings(team))
        if via == ASTERISK:
            return await _place_through_asterisk(settings, database, actor, registry, request)
        outbound = twilio_outbound(settings, database, actor, registry)
        try:
            return await outbound.place(request)
        finally:
            await outbound.aclose()
    finally:
        await database.close()


async def _place_through_asterisk(
    settings: Settings,
    database: Database,
    actor: Actor,
    registry: ScenarioRegistry,
    request: OutboundRequest,
) -> PlacedCall:
    assert settings.ari_url and settings.ari_password and settings.ari_dial_template
    async with AriClient(
        settings.ari_url,
        settings.ari_user,
        settings.ari_password.get_secret_value(),
        settings.ari_app,
    ) as client:
        outbound = AriOutbound(database, actor, registry, client, settings.ari_dial_template)
        return await outbound.place(request)
