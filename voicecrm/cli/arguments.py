"""The arguments of the commands whose implementations import the whole service.

`voicecrm simulate` and `voicecrm call` need the web application, the carriers
and the language model client, which take seconds to import. Their arguments
are declared here and their implementations imported only when they run, so
that `voicecrm --help` and the small commands start at once.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

from voicecrm.config import Settings

TWILIO, ASTERISK = "twilio", "asterisk"

SyncCommand = Callable[[argparse.Namespace, Settings], int]


def run_later(module: str, function: str) -> SyncCommand:
    """A command that imports `module` when it runs, then calls its `function`."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        command: SyncCommand = getattr(importlib.import_module(module), function)
        return command(args, settings)

    return run


def register_simulate(sub: Any) -> None:
    simulate = sub.add_parser("simulate", help="a call in the terminal through a scenario")
    simulate.add_argument(
        "scenario", nargs="?", help="scenario name (default: the one answering --to)"
    )
    simulate.add_argument(
        "--from",
        dest="from_number",
        default="+14155550123",
        help="the caller's number (default +14155550123)",
    )
    simulate.add_argument("--to", default="+10000000000", help="the dialled number")
    simulate.add_argument("--caller-name", help="caller-ID name")
    simulate.add_argument("--script", help="file with the caller's lines (else: the keyboard)")
    simulate.add_argument("--scenarios", help="scenario folder (VOICECRM_SCENARIOS_DIR)")
    simulate.add_argument("--timeline", type=int, default=20, help="events to show at the end")
    simulate.add_argument(
        "--audio",
        help="a WAV file, or a folder of them, of what the caller says: the call then runs "
        "through the audio pipeline (VAD, speech-to-text, text-to-speech, barge-in)",
    )
    simulate.add_argument(
        "--audio-out",
        default="simulated-call.wav",
        help="where --audio writes the receptionist's side (default simulated-call.wav)",
    )
    simulate.add_argument(
        "--speed", type=float, default=1.0, help="--audio: run this many times real time"
    )
    simulate.set_defaults(sync_func=run_later("voicecrm.cli.simulate_command", "cmd_simulate"))


def register_call(sub: Any) -> None:
    call = sub.add_parser(
        "call",
        help="place a call through Twilio or Asterisk; the running service answers it",
    )
    call.add_argument("to", help="the number to call, E.164 (+14155550123)")
    call.add_argument("--scenario", required=True, help="the scenario the call runs")
    call.add_argument(
        "--carrier",
        choices=(TWILIO, ASTERISK),
        help="who places the call (default: twilio when VOICECRM_TWILIO_ACCOUNT_SID is set, "
        "else asterisk when VOICECRM_ARI_URL and VOICECRM_ARI_DIAL_TEMPLATE are)",
    )
    call.add_argument(
        "--from",
        dest="from_number",
        help="caller ID, E.164 (default: the scenario's number, else "
        "VOICECRM_TWILIO_FROM_NUMBER on Twilio, the trunk's own on Asterisk)",
    )
    call.add_argument(
        "--amd",
        action="store_true",
        help="answering machine detection (Twilio only): a machine is hung up on unless the "
        "scenario's outbound.on_machine is continue",
    )
    call.add_argument("--contact", type=int, help="the contact being called (default: by number)")
    call.add_argument("--scenarios", help="scenario folder (VOICECRM_SCENARIOS_DIR)")
    call.set_defaults(sync_func=run_later("voicecrm.cli.call_command", "cmd_call"))
