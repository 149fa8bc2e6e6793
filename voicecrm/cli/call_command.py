"""`voicecrm call`: place one call through Twilio, the way the dialer will place many.

The call is placed from this process, but answered by the running service:
Twilio fetches the scenario's first words from the service's voice webhook
(`VOICECRM_PUBLIC_URL`) and reports the call's progress there. So the command
checks the settings before touching anything, opens the call's row in the
service's database, and prints the two ids a person needs to follow the
call: Twilio's CallSid and the CRM's call id.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from voicecrm.accounts import service as accounts
from voicecrm.accounts.actor import Actor
from voicecrm.app import twilio_outbound
from voicecrm.calls.outbound import OutboundRequest, PlacedCall
from voicecrm.config import Settings
from voicecrm.errors import VoiceCRMError
from voicecrm.scenarios.library import ScenarioRegistry
from voicecrm.storage import Database
from voicecrm.storage.migrate import upgrade
from voicecrm.telephony.twilio.outbound import check_configured


def cmd_call(args: argparse.Namespace, settings: Settings) -> int:
    """Settings, the number and the scenario files are checked before the loop starts."""
    token = settings.twilio_auth_token
    check_configured(
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
    placed = asyncio.run(_place(settings, registry, request))
    print(f"call placed: CallSid {placed.carrier_call_id} ({placed.status})")
    print(f"CRM call id: {placed.call_id}")
    return 0


async def _place(
    settings: Settings, registry: ScenarioRegistry, request: OutboundRequest
) -> PlacedCall:
    database = Database(settings.database_url)
    try:
        await upgrade(database)
        async with database.transaction(read_only=True) as session:
            team = await accounts.first_team(session)
        if team is None:
            raise VoiceCRMError(
                "no team yet: start the service first (voicecrm serve); it answers the "
                "call's webhooks"
            )
        outbound = twilio_outbound(
            settings, database, Actor.system(accounts.team_settings(team)), registry
        )
        try:
            return await outbound.place(request)
        finally:
            await outbound.aclose()
    finally:
        await database.close()


def register(sub: Any) -> None:
    call = sub.add_parser(
        "call",
        help="place a call through Twilio; the running service answers its webhooks",
    )
    call.add_argument("to", help="the number to call, E.164 (+14155550123)")
    call.add_argument("--scenario", required=True, help="the scenario the call runs")
    call.add_argument(
        "--from",
        dest="from_number",
        help="caller ID, E.164 (default: the scenario's number, else VOICECRM_TWILIO_FROM_NUMBER)",
    )
    call.add_argument(
        "--amd",
        action="store_true",
        help="answering machine detection: a machine is hung up on unless the scenario's "
        "outbound.on_machine is continue",
    )
    call.add_argument("--contact", type=int, help="the contact being called (default: by number)")
    call.add_argument("--scenarios", help="scenario folder (VOICECRM_SCENARIOS_DIR)")
    call.set_defaults(sync_func=cmd_call)
