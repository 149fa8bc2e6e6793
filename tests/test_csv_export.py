"""CSV export: the columns, which contacts, batches, a byte-order mark for Excel when asked,
and a file that imports back as it was."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from typing import Any

from tests.conftest import TeamWorld, make_team
from voicecrm.accounts.actor import Actor
from voicecrm.crm import contacts as service
from voicecrm.crm import notes, stages
from voicecrm.crm.bulk import Selection
from voicecrm.crm.csv_columns import EXPORT_COLUMNS
from voicecrm.crm.csv_export import BYTE_ORDER_MARK, export_csv
from voicecrm.crm.csv_import import ImportOptions, import_contacts
from voicecrm.crm.schemas import ContactCreate, EmailIn, NoteIn, NoteType, PhoneIn
from voicecrm.crm.search import ContactFilter
from voicecrm.storage import Database

EVERYTHING = Selection(filter=ContactFilter())


async def export(
    database: Database, actor: Actor, selection: Selection = EVERYTHING
) -> list[dict[str, str]]:
    async with database.transaction(read_only=True) as session:
        text = "".join([chunk async for chunk in export_csv(session, actor, selection)])
    reader = csv.reader(io.StringIO(text, newline=""))
    assert next(reader) == list(EXPORT_COLUMNS)
    return [dict(zip(EXPORT_COLUMNS, row, strict=True)) for row in reader]


async def add(database: Database, actor: Actor, **fields: Any) -> int:
    async with database.transaction() as session:
        return (await service.create_contact(session, actor, ContactCreate(**fields))).id


async def full_contact(database: Database, world: TeamWorld) -> int:
    async with database.transaction() as session:
        stage = await stages.add_stage(session, world.admin, "Qualified")
    return await add(
        database,
        world.admin,
        name="Jane Roe",
        company="Roe & Co",
        phones=[PhoneIn(number="(415) 555-0123", label="work"), PhoneIn(number="+442079460958")],
        emails=[EmailIn(email="jane@roe.example"), EmailIn(email="j@home.example", label="home")],
        tags=["vip", "lead"],
        stage_id=stage.id,
        status="won",
        rating=3,
        blocked=True,
        caller_id_name="ROE JANE",
        responsible_user_id=world.agent.user_id,
        custom_fields={"plan": "gold", "seats": 5, "note": 'says "hi"; ok'},
    )


async def with_notes(database: Database, world: TeamWorld, contact_id: int) -> None:
    async with database.transaction() as session:
        await notes.add_note(session, world.admin, contact_id, NoteIn(content="Pays late"))
        await notes.add_note(
            session,
            world.admin,
            contact_id,
            NoteIn(content='Ask for "J";\nnot Mrs R.', type=NoteType.DANGER, pinned=True),
        )


async def test_an_export_has_one_row_per_contact_in_the_documented_columns(
    database: Database, world: TeamWorld
) -> None:
    jane = await full_contact(database, world)
    await with_notes(database, world, jane)
    [row] = await export(database, world.admin)
    agent_email = row["responsible"]
    assert agent_email.startswith("agent-") and agent_email.endswith("@example.com")
    exported_notes = json.loads(row["notes"])
    assert [set(note) for note in exported_notes] == [
        {"type", "pinned", "content", "created_at"}
    ] * 2
    assert [(n["type"], n["pinned"], n["content"]) for n in exported_notes] == [
        ("general", False, "Pays late"),
        ("danger", True, 'Ask for "J";\nnot Mrs R.'),
    ]
    changing = ("created_at", "updated_at", "notes")
    assert {k: v for k, v in row.items() if k not in changing} == {
        "id": str(jane),
        "name": "Jane Roe",
        "company": "Roe & Co",
        "type": "customer",
        "phones": "work: +14155550123; mobile: +442079460958",
        "emails": "work: jane@roe.example; home: j@home.example",
        "tags": "lead; vip",
        "stage": "Qualified",
        "status": "won",
        "rating": "3",
        "source": "manual",
        "responsible": agent_email,
        "caller_id_name": "ROE JANE",
        "carrier": "",
        "blocked": "true",
        "custom_fields": '{"note": "says \\"hi\\"; ok", "plan": "gold", "seats": 5}',
    }
    assert row["created_at"].endswith("+00:00")


async def test_an_export_imported_into_another_team_gives_the_same_contacts(
    database: Database, world: TeamWorld
) -> None:
    await with_notes(database, world, await full_contact(database, world))
    await add(database, world.admin, name="=cmd|' /C calc'!A0", company="-Minus")
    await add(database, world.admin, name="Only Name")
    exported = await export(database, world.admin)
    other = await make_team(database, "Other")
    async with database.transaction() as session:
        await stages.add_stage(session, other.admin, "Qualified")
    # Users are per team: the other team has no such responsible user.
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, EXPORT_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows([{**row, "responsible": ""} for row in exported])
    report = await import_contacts(
        database, other.admin, io.BytesIO(text.getvalue().encode()), ImportOptions()
    )
    assert (report.created, report.failed) == (3, 0)
    assert report.ignored_columns == ["id", "carrier", "created_at", "updated_at"]
    again = await export(database, other.admin)
    changing = ("id", "created_at", "updated_at", "responsible")

    def same_in_both(row: dict[str, str]) -> dict[str, Any]:
        """A row without what the import changes: ids, times, users; notes are dated anew."""
        kept: dict[str, Any] = {k: v for k, v in row.items() if k not in changing}
        listed = json.loads(row["notes"]) if row["notes"] else []
        kept["notes"] = [{k: v for k, v in n.items() if k != "created_at"} for n in listed]
        return kept

    assert [same_in_both(row) for row in again] == [same_in_both(row) for row in exported]
    assert len(same_in_both(again[0])["notes"]) == 2
    assert again[1]["name"] == "'=cmd|' /C calc'!A0"  # guarded in the file, not in the CRM


async def test_an_export_imported_into_its_own_team_changes_nothing(
    database: Database, world: TeamWorld
) -> None:
    await with_notes(database, world, await full_contact(database, world))
    await add(database, world.admin, name="Ben", emails=[EmailIn(email="ben@x.example")])
    async with database.transaction(read_only=True) as session:
        text = "".join([c async for c in export_csv(session, world.admin, EVERYTHING)])
    report = await import_contacts(database, world.admin, io.BytesIO(text.encode()))
    assert (report.created, report.updated, report.unchanged) == (0, 0, 2)


async def test_a_selection_of_ids_or_a_filter_exports_just_those(
    database: Database, world: TeamWorld
) -> None:
    ann = await add(database, world.admin, name="Ann", tags=["vip"])
    await add(database, world.admin, name="Ben")
    cid = await add(database, world.admin, name="Cid", tags=["vip"])
    by_ids = await export(database, world.admin, Selection(ids=[cid, ann, 999_999]))
    assert [r["name"] for r in by_ids] == ["Ann", "Cid"]
    by_tag = await export(database, world.admin, Selection(filter=ContactFilter(tag="vip")))
    assert [r["name"] for r in by_tag] == ["Ann", "Cid"]


async def test_agents_who_see_only_their_own_contacts_export_only_those(
    database: Database, world: TeamWorld
) -> None:
    restricted = replace(
        world.agent, team=replace(world.agent.team, agents_see_own_contacts_only=True)
    )
    await add(database, world.admin, name="Someone else's")
    await add(database, restricted, name="Mine")
    assert [r["name"] for r in await export(database, restricted)] == ["Mine"]


async def test_an_export_comes_a_batch_at_a_time(database: Database, world: TeamWorld) -> None:
    rows = "".join(f"Person {i},415555{i:04d}\n" for i in range(1100))
    await import_contacts(database, world.admin, io.BytesIO(f"name,phone\n{rows}".encode()))
    batches: list[int] = []
    async with database.transaction(read_only=True) as session:
        chunks = [
            chunk
            async for chunk in export_csv(session, world.admin, EVERYTHING, on_batch=batches.append)
        ]
    assert batches == [500, 500, 100]
    assert len(chunks) == 4  # the header, then one chunk per batch


UTF8_BOM = b"\xef\xbb\xbf"


async def export_chunks(database: Database, actor: Actor, *, bom: bool | None = None) -> list[str]:
    """The chunks as `export_csv` yields them; `bom=None` leaves the option at its default."""
    async with database.transaction(read_only=True) as session:
        if bom is None:
            return [chunk async for chunk in export_csv(session, actor, EVERYTHING)]
        return [chunk async for chunk in export_csv(session, actor, EVERYTHING, bom=bom)]


async def add_accented_names(database: Database, actor: Actor) -> None:
    await add(
        database,
        actor,
        name="Zoë Müller",
        company="Café Ñandú",
        phones=[PhoneIn(number="(415) 555-0123")],
    )
    await add(
        database, actor, name="José", emails=[EmailIn(email="jose@x.example")], tags=["señor"]
    )


async def test_an_export_by_default_is_utf_8_without_a_byte_order_mark(
    database: Database, world: TeamWorld
) -> None:
    await add_accented_names(database, world.admin)
    chunks = await export_chunks(database, world.admin)
    data = "".join(chunks).encode()
    assert data.startswith(b"id,name,company,")
    assert UTF8_BOM not in data and all(BYTE_ORDER_MARK not in chunk for chunk in chunks)
    assert "Zoë Müller".encode() in data
    assert chunks == await export_chunks(database, world.admin, bom=False)


async def test_an_export_for_excel_starts_with_a_byte_order_mark_and_only_once(
    database: Database, world: TeamWorld
) -> None:
    rows = "".join(f"Zoë {i},415555{i:04d}\n" for i in range(600))  # two batches
    await import_contacts(database, world.admin, io.BytesIO(f"name,phone\n{rows}".encode()))
    plain = await export_chunks(database, world.admin)
    excel = await export_chunks(database, world.admin, bom=True)
    assert len(excel) == len(plain) == 3  # the header, then one chunk per batch
    assert excel[0] == BYTE_ORDER_MARK + plain[0]
    assert excel[1:] == plain[1:]  # later chunks never carry the mark
    data = "".join(excel).encode()
    assert data == UTF8_BOM + "".join(plain).encode()
    assert data.count(UTF8_BOM) == 1


async def test_an_export_for_excel_imports_back_as_it_was(
    database: Database, world: TeamWorld
) -> None:
    await add_accented_names(database, world.admin)
    data = "".join(await export_chunks(database, world.admin, bom=True)).encode()
    assert data.startswith(UTF8_BOM + b"id,")
    report = await import_contacts(database, world.admin, io.BytesIO(data))
    assert (report.created, report.updated, report.unchanged, report.failed) == (0, 0, 2, 0)
    # The first column is read as `id`, not as a column named "\ufeffid".
    assert report.ignored_columns == ["id", "carrier", "created_at", "updated_at"]
    other = await make_team(database, "Other")
    report = await import_contacts(database, other.admin, io.BytesIO(data))
    assert (report.created, report.failed) == (2, 0)
    names = [
        (row["name"], row["company"], row["tags"]) for row in await export(database, other.admin)
    ]
    assert names == [("Zoë Müller", "Café Ñandú", ""), ("José", "", "señor")]
