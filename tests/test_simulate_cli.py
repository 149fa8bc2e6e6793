"""`voicecrm simulate` on every shipped scenario, as a person would run it.

Each test runs the real command in a subprocess against the suite's database
(SQLite and PostgreSQL), with a script as the caller, then checks what the call
left in the CRM. The AI receptionist talks to the local fake OpenAI server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from sqlalchemy import select

from tests.conftest import engine_independent
from tests.fakes.openai_server import FakeOpenAI, Reply, openai_server
from voicecrm.crm import timeline
from voicecrm.crm.models import Contact, Note, Task
from voicecrm.storage import Database

__all__ = ["openai_server"]

CALLS = Path(__file__).parent / "fixtures" / "calls"
ROOT = Path(__file__).resolve().parents[1]


async def simulate(
    database: Database,
    *args: str,
    env: dict[str, str] | None = None,
) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voicecrm",
        "simulate",
        *args,
        cwd=ROOT,
        env={
            **os.environ,
            "VOICECRM_DATABASE_URL": database.url,
            "VOICECRM_LOG_LEVEL": "WARNING",
            **(env or {}),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def kinds_of(database: Database, contact_id: int) -> list[str]:
    async with database.transaction(read_only=True) as session:
        page = await timeline.page(session, contact_id, limit=100)
    return [event.kind for event in page.events]


async def only_contact(database: Database) -> Contact:
    async with database.transaction(read_only=True) as session:
        return (await session.scalars(select(Contact))).one()


async def test_the_dtmf_menu_sends_an_unanswered_support_call_to_voicemail(
    database: Database,
) -> None:
    status, output = await simulate(
        database,
        "dtmf-menu",
        "--from",
        "+14155550142",
        "--script",
        str(CALLS / "dtmf-menu-support.txt"),
    )
    assert status == 0, output
    assert "[caller presses 2]" in output
    assert "[transfer to +14155550122: no_answer]" in output
    contact = await only_contact(database)
    async with database.transaction(read_only=True) as session:
        note = (await session.scalars(select(Note))).one()
    assert (note.type, note.content) == ("info", "Caller asked for support from the phone menu.")
    assert await kinds_of(database, contact.id) == [
        "transcript",
        "call",
        "voicemail",
        "note_added",
        "contact_created",
    ]
    assert "voicemail" in output and "contact_created" in output  # the timeline is shown


async def test_after_hours_takes_a_voicemail_and_books_a_call_back(database: Database) -> None:
    status, output = await simulate(
        database, "after-hours", "--script", str(CALLS / "after-hours-voicemail.txt")
    )
    assert status == 0, output
    contact = await only_contact(database)
    kinds = await kinds_of(database, contact.id)
    if "We are open" in output:  # run outside the scenario's opening hours
        async with database.transaction(read_only=True) as session:
            task = (await session.scalars(select(Task))).one()
        assert task.title == "Call back Unknown Caller (+14155550123): voicemail"
        assert {"voicemail", "task_created", "tags_changed"} <= set(kinds)
    else:  # within opening hours the call is transferred to the office
        assert "[transfer to +14155550123: answered]" in output


async def test_the_appointment_reminder_books_a_reschedule_task(database: Database) -> None:
    status, output = await simulate(
        database,
        "appointment-reminder",
        "--script",
        str(CALLS / "appointment-reminder-reschedule.txt"),
    )
    assert status == 0, output
    async with database.transaction(read_only=True) as session:
        task = (await session.scalars(select(Task))).one()
    assert task.title.startswith("Reschedule the appointment of Unknown Caller")
    assert "Someone from our team will call you" in output


async def test_the_ai_front_desk_takes_a_note_through_the_model(
    database: Database, openai_server: FakeOpenAI
) -> None:
    openai_server.script += [
        Reply(
            text="Oh no, let me write that down.",
            tool_calls=[
                (
                    "create_crm_note",
                    json.dumps({"content": "Water leaking under the sink", "type": "danger"}),
                ),
                ("update_contact", json.dumps({"name": "Dana Scully"})),
            ],
        ),
        Reply(
            text="A plumber will call you within the hour. Goodbye!",
            tool_calls=[("end_call", "{}")],
        ),
    ]
    status, output = await simulate(
        database,
        "front-desk",
        "--script",
        str(CALLS / "front-desk-leak.txt"),
        env={"VOICECRM_LLM_BASE_URL": openai_server.base_url, "VOICECRM_LLM_API_KEY": "sk-x"},
    )
    assert status == 0, output
    assert "receptionist: A plumber will call you within the hour." in output
    contact = await only_contact(database)
    async with database.transaction(read_only=True) as session:
        note = (await session.scalars(select(Note))).one()
    assert contact.name == "Dana Scully"
    assert (note.type, note.content) == ("danger", "Water leaking under the sink")
    assert "sk-x" not in output


async def test_without_a_model_the_front_desk_offers_voicemail(database: Database) -> None:
    status, output = await simulate(
        database,
        "front-desk",
        "--script",
        str(CALLS / "after-hours-voicemail.txt"),
        env={"VOICECRM_LLM_BASE_URL": "", "VOICECRM_LLM_API_KEY": ""},
    )
    assert status == 0, output
    assert "no language model configured" in output
    assert "our assistant is not available right now" in output


@engine_independent
async def test_an_unknown_scenario_is_a_clear_error(database: Database) -> None:
    status, output = await simulate(database, "nope", "--script", "/dev/null")
    assert status == 2
    assert "no scenario named 'nope'; known: after-hours, appointment-reminder" in output
