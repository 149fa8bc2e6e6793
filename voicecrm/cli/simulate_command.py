"""`voicecrm simulate`: a call in the terminal against the real database.

The caller types (or a `--script` file speaks for them): text is speech,
`#12` are key presses, an empty line is silence, `!hangup` hangs up, and
`!transfer no_answer` decides how the next transfer ends. The receptionist's
words are printed, and at the end the contact's timeline is shown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

from voicecrm.accounts import service as accounts
from voicecrm.accounts.actor import Actor
from voicecrm.agent.factory import language_model_from_settings
from voicecrm.app import bootstrap
from voicecrm.calls.interface import Call, CallInfo, Direction
from voicecrm.cli.simulate_audio import (
    AudioSimulation,
    latency_table,
    read_utterances,
    write_wav,
)
from voicecrm.config import Settings
from voicecrm.crm import timeline
from voicecrm.errors import VoiceCRMError
from voicecrm.integrations.http_client import AiohttpClient
from voicecrm.scenarios.library import ScenarioLibrary
from voicecrm.scenarios.models import Scenario
from voicecrm.scenarios.runner import run_call
from voicecrm.storage import Database
from voicecrm.storage.migrate import upgrade
from voicecrm.telephony.simulator.call import (
    CallerInput,
    KeyboardCaller,
    ScriptedCaller,
    SimulatedCall,
)


def _describe(kind: str, data: dict[str, Any]) -> str:
    if kind in ("note_added", "note_edited"):
        return f"[{data['type']}] {data['content']}"
    if kind == "call":
        return (
            f"{data['direction']} {data['from_number']} -> {data['to_number']}, "
            f"{data['status']}, {data.get('duration_seconds') or 0} s"
        )
    if kind == "transcript":
        return f"{len(data['lines'])} lines"
    if kind == "stage_changed":
        return f"{data.get('from_stage') or '-'} -> {data.get('to_stage') or '-'}"
    if kind == "tags_changed":
        return " ".join(
            [f"+{t}" for t in data.get("added", [])] + [f"-{t}" for t in data.get("removed", [])]
        )
    if kind == "task_created":
        return str(data["title"])
    if kind == "voicemail":
        return f"{data['duration_seconds']} s: {data.get('transcript') or ''}"
    return ", ".join(f"{k}={v}" for k, v in data.items() if not isinstance(v, list | dict))


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    """Read the files first, then run the call: no blocking file reads inside the loop."""
    folder = Path(args.scenarios or settings.scenarios_dir)
    library = ScenarioLibrary.load([folder])
    scenario = library.get(args.scenario) if args.scenario else library.for_number(args.to)
    if args.audio:
        simulation = AudioSimulation(settings, read_utterances(Path(args.audio)), speed=args.speed)
        return asyncio.run(_simulate(args, settings, scenario, simulation.open, simulation))
    caller: CallerInput
    if args.script:
        try:
            caller = ScriptedCaller(Path(args.script).read_text(encoding="utf-8").splitlines())
        except OSError as err:
            raise VoiceCRMError(f"cannot read the script {args.script}: {err.strerror}") from err
    else:
        caller = KeyboardCaller()

    @contextlib.asynccontextmanager
    async def text_call(info: CallInfo, _scenario: Scenario) -> AsyncIterator[Call]:
        yield SimulatedCall(info, caller, output=sys.stdout)

    return asyncio.run(_simulate(args, settings, scenario, text_call))


async def _simulate(
    args: argparse.Namespace,
    settings: Settings,
    scenario: Scenario,
    open_call: Callable[[CallInfo, Scenario], contextlib.AbstractAsyncContextManager[Call]],
    audio: AudioSimulation | None = None,
) -> int:
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    llm = language_model_from_settings(settings.llm_base_url, key)
    database = Database(settings.database_url)
    try:
        await upgrade(database)
        first = await bootstrap(database, settings)
        if first is not None:
            print(
                f"[first use of this database: created the team and admin {first.admin_email};"
                f" API token, shown once: {first.token}]"
            )
        async with database.transaction(read_only=True) as session:
            team = await accounts.first_team(session)
            assert team is not None
            actor = Actor.system(accounts.team_settings(team))
        info = CallInfo(
            call_id=f"sim-{uuid.uuid4().hex[:12]}",
            direction=Direction.INBOUND,
            from_number=args.from_number,
            to_number=args.to,
            caller_name=args.caller_name,
            channel="simulator",
        )
        print(
            f"[simulated call {info.from_number} -> {info.to_number}, scenario "
            f"{scenario.name}{'' if llm else '; no language model configured'}]"
        )
        async with aiohttp.ClientSession() as http_session, open_call(info, scenario) as call:
            if audio is not None:
                print(
                    f"[{audio.describe_providers()}; the caller says {len(audio.utterances)}"
                    f" thing(s) at {audio.speed:g}x real time]"
                )
            result = await run_call(
                database,
                actor,
                scenario,
                call,
                channel="simulator",
                llm=llm,
                http=AiohttpClient(http_session),
            )
        if audio is not None:
            for line in result.state.transcript:
                print(f"{line['speaker'].replace('agent', 'receptionist')}: {line['text']}")
            print("\n[latency per turn, after the end of the caller's speech]")
            for row in latency_table(audio.call.latencies if audio.call else ()):
                print("  " + row)
            out = Path(args.audio_out)
            await asyncio.to_thread(write_wav, out, audio.receptionist_audio())
            print(f"[the receptionist's side: {out}]")
        async with database.transaction(read_only=True) as session:
            page = await timeline.page(session, result.contact_id, limit=args.timeline)
        print(
            f"\n[outcome: {result.state.outcome}; contact {result.contact_id}'s timeline, "
            "newest first]"
        )
        for event in page.events:
            print(
                f"  {event.occurred_at:%Y-%m-%d %H:%M:%S}  {event.kind:<16} "
                f"{_describe(event.kind, event.data)}"
            )
    finally:
        if llm is not None:
            with contextlib.suppress(Exception):
                await llm.aclose()
        await database.close()
    return 0
