"""`voicecrm`: the command line entry point.

Each subcommand reads the settings once, opens what it needs, and closes it;
it also imports only what it needs, so that small commands start quickly.
Errors the user can fix are printed as one line on stderr with exit status 2;
nothing is half-written, because every command runs in one transaction or in
batches that each commit whole.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from voicecrm import __version__
from voicecrm.accounts import service as accounts
from voicecrm.accounts.actor import Role
from voicecrm.config import Settings
from voicecrm.errors import VoiceCRMError
from voicecrm.storage import Database
from voicecrm.storage.migrate import current_revision, head_revision, upgrade

if TYPE_CHECKING:
    from voicecrm.app import FirstStart

Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


def _print_first_start(first: FirstStart) -> None:
    print(
        "\nvoicecrm: first start. Created the team and the admin user "
        f"{first.admin_email}.\nAPI token (shown once, store it now):\n\n    {first.token}\n\n"
        "Try: curl -H 'Authorization: Bearer <token>' http://HOST:PORT/api/v1/contacts\n",
        flush=True,
    )


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: the whole service (web API, carriers, language model client) takes
    # seconds to import, which `voicecrm users list` and friends should not pay.
    from aiohttp import web

    from voicecrm.app import build_app

    if args.host:
        settings = settings.model_copy(update={"host": args.host})
    if args.port is not None:
        settings = settings.model_copy(update={"port": args.port})
    app = build_app(settings, on_first_start=_print_first_start, freeze_gc=True)
    print(
        f"voicecrm {__version__}, database {Database.describe(settings.database_url)}", flush=True
    )

    def listening(message: object) -> None:
        # aiohttp calls this once its sockets are bound, so "ready" is never premature.
        print(
            f"voicecrm: ready at http://{settings.host}:{settings.port}/api/v1 (Ctrl+C stops)",
            flush=True,
        )

    web.run_app(app, host=settings.host, port=settings.port, print=listening)

    return 0


async def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    database = Database(settings.database_url)
    try:
        await upgrade(database)
        print(f"database at revision {await current_revision(database)} (head {head_revision()})")
    finally:
        await database.close()
    return 0


async def _team_id(database: Database) -> int:
    async with database.transaction(read_only=True) as session:
        team = await accounts.first_team(session)
    if team is None:
        raise VoiceCRMError(
            "no team yet: start the service once, or run 'voicecrm db upgrade' "
            "then 'voicecrm serve'"
        )
    return team.id


async def cmd_users_create(args: argparse.Namespace, settings: Settings) -> int:
    database = Database(settings.database_url)
    try:
        await upgrade(database)
        team_id = args.team or await _team_id(database)
        async with database.transaction() as session:
            await accounts.get_team(session, team_id)
            user = await accounts.create_user(
                session, team_id, email=args.email, name=args.name or "", role=Role(args.role)
            )
            issued = await accounts.create_token(session, user, "cli") if args.token else None
        print(f"created {user.role} {user.email} (id {user.id}) in team {team_id}")
        if issued:
            print(f"API token (shown once): {issued.secret}")
    finally:
        await database.close()
    return 0


async def cmd_users_list(args: argparse.Namespace, settings: Settings) -> int:
    database = Database(settings.database_url)
    try:
        team_id = args.team or await _team_id(database)
        async with database.transaction(read_only=True) as session:
            for user in await accounts.list_users(session, team_id):
                print(f"{user.id}\t{user.role}\t{user.email}\t{user.name}")
    finally:
        await database.close()
    return 0


async def cmd_tokens_create(args: argparse.Namespace, settings: Settings) -> int:
    database = Database(settings.database_url)
    try:
        async with database.transaction() as session:
            user = await accounts.find_user_by_email(session, args.email)
            issued = await accounts.create_token(session, user, args.name)
        print(issued.secret)
    finally:
        await database.close()
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="voicecrm",
        description="AI phone receptionist with a "
        "CRM. Settings come from VOICECRM_* environment variables.",
    )
    root.add_argument("--version", action="version", version=f"voicecrm {__version__}")
    sub = root.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service (migrates the database first)")
    serve.add_argument("--host", help="listen address (VOICECRM_HOST)")
    serve.add_argument("--port", type=int, help="listen port (VOICECRM_PORT)")
    serve.set_defaults(sync_func=cmd_serve)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    db.add_parser("upgrade", help="apply migrations up to the newest").set_defaults(
        func=cmd_db_upgrade
    )

    users = sub.add_parser("users", help="team users").add_subparsers(dest="users", required=True)
    create = users.add_parser("create", help="add a user")
    create.add_argument("email")
    create.add_argument("--name")
    create.add_argument("--role", choices=["admin", "agent"], default="agent")
    create.add_argument("--team", type=int, help="team id (default: the first team)")
    create.add_argument("--token", action="store_true", help="also issue an API token")
    create.set_defaults(func=cmd_users_create)
    listing = users.add_parser("list", help="list users")
    listing.add_argument("--team", type=int)
    listing.set_defaults(func=cmd_users_list)

    tokens = sub.add_parser("tokens", help="API tokens").add_subparsers(
        dest="tokens", required=True
    )
    token = tokens.add_parser("create", help="issue a token for a user (printed once)")
    token.add_argument("email")
    token.add_argument("--name", default="cli")
    token.set_defaults(func=cmd_tokens_create)

    from voicecrm.cli import arguments, contacts_commands, scenarios_commands

    contacts_commands.register(sub)
    scenarios_commands.register(sub)
    arguments.register_simulate(sub)
    arguments.register_call(sub)

    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        if hasattr(args, "plain_func"):
            return int(args.plain_func(args))
        if hasattr(args, "sync_func"):
            return int(args.sync_func(args, settings))
        func: Command = args.func
        return asyncio.run(func(args, settings))
    except VoiceCRMError as err:
        print(f"voicecrm: {err.detail}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
