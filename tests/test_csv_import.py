"""CSV import: what a row becomes, how it meets existing contacts, and what is refused.

Row numbers in reports count data rows from 1 (not the header, not empty
lines); `line` is the file line the row starts on.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
from phonenumbers import carrier as pn_carrier
from sqlalchemy import func, select
from sqlalchemy import text as sql

from tests.conftest import TeamWorld
from voicecrm.crm import contacts as service
from voicecrm.crm import csv_import, csv_lookups, csv_records, csv_writers, stages, timeline
from voicecrm.crm.csv_columns import guard, unguard
from voicecrm.crm.csv_import import ImportOptions, ImportReport, OnMatch, import_contacts
from voicecrm.crm.models import Contact, Note, TimelineEvent
from voicecrm.crm.notes import list_notes
from voicecrm.crm.phones import NormalizedPhone, normalize_phone, strip_uri
from voicecrm.crm.schemas import ContactCreate, ContactOut, EmailIn, PhoneIn
from voicecrm.errors import InvalidCSV, InvalidInput, InvalidPhoneNumber, PermissionDenied
from voicecrm.storage import Database

FIXTURES = Path(__file__).parent / "fixtures" / "csv"
SQLITE_PLANS_IN_ITS_WRITE = "SQLite plans each batch in its write transaction, none ahead"


async def run_import(
    database: Database, world: TeamWorld, data: str | bytes, **options: Any
) -> ImportReport:
    raw = data.encode() if isinstance(data, str) else data
    return await import_contacts(database, world.admin, io.BytesIO(raw), ImportOptions(**options))


async def all_contacts(database: Database, world: TeamWorld) -> list[ContactOut]:
    async with database.transaction(read_only=True) as session:
        rows = await session.scalars(
            select(Contact).where(Contact.team_id == world.team_id).order_by(Contact.id)
        )
        return await service.to_out(session, list(rows))


async def kinds(database: Database, contact_id: int) -> list[str]:
    async with database.transaction(read_only=True) as session:
        return [e.kind for e in (await timeline.page(session, contact_id)).events]


async def notes_of(database: Database, world: TeamWorld, contact_id: int) -> list[Note]:
    """Oldest first."""
    async with database.transaction(read_only=True) as session:
        return sorted(await list_notes(session, world.admin, contact_id), key=lambda n: n.id)


async def add_contact(database: Database, world: TeamWorld, **fields: Any) -> int:
    async with database.transaction() as session:
        contact = await service.create_contact(session, world.admin, ContactCreate(**fields))
        return contact.id


# ----------------------------------------------------------------- what a row becomes
async def test_a_google_contacts_export_imports_names_phones_emails_labels_and_groups(
    database: Database, world: TeamWorld
) -> None:
    report = await run_import(
        database, world, (FIXTURES / "google.csv").read_bytes(), file_name="google.csv"
    )
    assert (report.total_rows, report.rows, report.created, report.failed) == (4, 4, 3, 1)
    jane, kim, only = await all_contacts(database, world)
    assert (jane.name, jane.company, jane.source) == ("Jane Roe", "Roe & Co", "import")
    assert [(p.e164, p.label) for p in jane.phones] == [
        ("+14155550123", "mobile"),
        ("+14155550124", "work"),
        ("+14155550125", "work"),
    ]
    assert [(e.email, e.label) for e in jane.emails] == [
        ("jane@roe.example", "work"),
        ("jane.roe@mail.example", "home"),
    ]
    assert jane.tags == ["suppliers", "vip"]  # not Google's "* myContacts"
    assert (kim.name, kim.phones[0].e164, kim.phones[0].region) == (
        "Kim Lee",
        "+442079460958",
        "GB",
    )
    assert (only.name, only.emails[0].email, only.tags) == ("Only Email", "only@email.example", [])
    assert report.columns["Phone 1 - Type"] == "phone label"
    assert report.ignored_columns == [
        "Nickname",
        "Birthday",
        "Organization 1 - Type",
        "Organization 1 - Title",
    ]
    assert [n.content for n in await notes_of(database, world, jane.id)] == [
        "Met at the trade fair.\nPrefers mornings."
    ]
    assert await notes_of(database, world, kim.id) == []
    async with database.transaction(read_only=True) as session:
        event = (await timeline.page(session, jane.id, kinds=["imported"])).events[0]
    assert event.data == {"file": "google.csv", "row": 1, "created": True}


async def test_the_current_google_export_and_a_mapping_over_its_labels(
    database: Database, world: TeamWorld
) -> None:
    text = (
        "First Name,Middle Name,Last Name,Organization Name,Labels,"
        "E-mail 1 - Label,E-mail 1 - Value,Phone 1 - Label,Phone 1 - Value,"
        "Phone 2 - Label,Phone 2 - Value\n"
        "Ada,,Lovelace,Engines Ltd,* myContacts ::: Maths,* Home,ada@engines.example,"
        "Mobile,+44 20 7946 0958,Work,+1 212 555 0199\n"
    )
    report = await run_import(database, world, text, mapping={"Phone 2 - Value": "phone.office"})
    [ada] = await all_contacts(database, world)
    assert (ada.name, ada.company, ada.tags) == ("Ada Lovelace", "Engines Ltd", ["maths"])
    assert [(p.e164, p.label) for p in ada.phones] == [
        ("+442079460958", "mobile"),
        ("+12125550199", "office"),
    ]
    assert [(e.email, e.label) for e in ada.emails] == [("ada@engines.example", "home")]
    assert report.ignored_columns == []


async def test_an_outlook_export_with_a_bom_and_crlf_imports_and_blank_rows_are_not_rows(
    database: Database, world: TeamWorld
) -> None:
    report = await run_import(database, world, (FIXTURES / "outlook.csv").read_bytes())
    assert (report.total_rows, report.created, report.failed, report.blank_rows) == (3, 3, 0, 1)
    ann, bob, widgets = await all_contacts(database, world)
    assert (ann.name, ann.company, ann.tags) == ("Ann B. Smith", "Acme Inc", ["customers", "vip"])
    assert [(p.e164, p.label) for p in ann.phones] == [
        ("+12125550199", "work"),
        ("+16465550150", "mobile"),
    ]
    assert (bob.name, bob.phones[0].label, bob.emails[0].email) == (
        "Bob Jones",
        "home",
        "bob@jones.example",
    )
    assert (widgets.name, widgets.company, widgets.tags) == (
        "Widgets Ltd",
        "Widgets Ltd",
        ["suppliers"],
    )
    assert report.columns["First Name"] == "first_name"  # the BOM is not part of the name
    assert [n.content for n in await notes_of(database, world, bob.id)] == [
        "Call after 5pm, not before."
    ]


async def test_an_invalid_phone_is_reported_with_its_row_and_line_and_the_rest_imports(
    database: Database, world: TeamWorld
) -> None:
    report = await run_import(database, world, (FIXTURES / "google.csv").read_bytes())
    [error] = report.errors
    # Jane's note spans lines 2 and 3, so Sam, the third data row, starts on line 5.
    assert (error.row, error.line, error.field, error.column) == (3, 5, "phones", "Phone 1 - Value")
    assert "'12' is not a valid phone number" in error.message
    assert [c.name for c in await all_contacts(database, world)] == [
        "Jane Roe",
        "Kim Lee",
        "Only Email",
    ]


async def test_every_bad_value_is_a_row_error_naming_its_field_and_column(
    database: Database, world: TeamWorld
) -> None:
    async with database.transaction() as session:
        qualified = (await stages.add_stage(session, world.admin, "Qualified")).id
    text = (
        "name,phone,email,status,rating,stage,responsible,custom_fields\n"
        "Good,415 555 0101,good@x.example,won,2,qualified,,\n"
        "Bad status,,,maybe,,,,\n"
        "Bad rating,,,,7,,,\n"
        "Bad stage,,,,,Closed,,\n"
        "Bad user,,,,,,nobody@x.example,\n"
        "Bad email,,not-an-email,,,,,\n"
        'Bad custom,,,,,,,"{""a"": [1]}"\n'
        "Too wide,,,,,,,,surplus\n"
        ",,,,,,,\n"
        ",,,open,,,,\n"
    )
    report = await run_import(database, world, text)
    found = [(e.row, e.field, e.column) for e in report.errors]
    assert found == [
        (2, "status", "status"),
        (3, "rating", "rating"),
        (4, "stage", "stage"),
        (5, "responsible", "responsible"),
        (6, "emails", "email"),
        (7, "custom_fields", "custom_fields"),
        (8, None, None),
        (9, None, None),  # row 9 is line 11: the blank line 10 is not a row
    ]
    assert report.errors[-1].line == 11
    assert "unknown stage 'Closed' (the team's stages: qualified)" in report.errors[2].message
    assert "the row has 9 cells but the header has 8 columns" in report.errors[6].message
    assert "no name, company, phone or email" in report.errors[7].message
    assert (report.created, report.failed, report.blank_rows) == (1, 8, 1)
    [good] = await all_contacts(database, world)
    assert (good.status, good.rating, good.stage_id) == ("won", 2, qualified)


async def test_a_file_with_semicolons_is_read_like_one_with_commas(
    database: Database, world: TeamWorld
) -> None:
    report = await run_import(database, world, "Name;Phone;Tags\nJane Roe;415 555 0123;a,b\n")
    assert report.created == 1
    [jane] = await all_contacts(database, world)
    assert (jane.name, jane.phones[0].e164, jane.tags) == ("Jane Roe", "+14155550123", ["a", "b"])


async def test_an_explicit_mapping_reads_columns_the_header_does_not_name(
    database: Database, world: TeamWorld
) -> None:
    text = "Person,Cell,Office,Birthday,Phone\nJane Roe,415 555 0123,415 555 0124,1985-04-12,12\n"
    report = await run_import(
        database,
        world,
        text,
        mapping={
            "Person": "name",
            "Cell": "phone.cell",
            "Office": "phone.work",
            "Birthday": "custom.birthday",
            "Phone": "ignore",
        },
    )
    assert report.created == 1 and report.failed == 0
    [jane] = await all_contacts(database, world)
    assert [(p.e164, p.label) for p in jane.phones] == [
        ("+14155550123", "cell"),
        ("+14155550124", "work"),
    ]
    assert jane.custom_fields == {"birthday": "1985-04-12"}
    assert report.ignored_columns == ["Phone"]


# ----------------------------------------------------------------- meeting existing contacts
MATCHING_CSV = (
    "name,phones,emails,company,status,tags,custom.tier\n"
    "Jane Roe,415-555-0123,,New Co,won,vip,\n"
    ",+1 212 555 0199,bob@x.example,,,,gold\n"
)


async def test_rows_update_the_contacts_their_phone_or_email_finds_with_what_they_give(
    database: Database, world: TeamWorld
) -> None:
    jane = await add_contact(
        database,
        world,
        name="Jane",
        company="Old Co",
        phones=[PhoneIn(number="+14155550123")],
        tags=["old"],
        custom_fields={"plan": "gold"},
    )
    bob = await add_contact(database, world, name="Bob", emails=[EmailIn(email="bob@x.example")])
    report = await run_import(database, world, MATCHING_CSV)
    assert (report.created, report.updated, report.unchanged) == (0, 2, 0)
    first, second = await all_contacts(database, world)
    assert (first.id, first.name, first.company, first.status) == (
        jane,
        "Jane Roe",
        "New Co",
        "won",
    )
    assert first.tags == ["old", "vip"] and first.custom_fields == {"plan": "gold"}
    assert [p.e164 for p in first.phones] == ["+14155550123"]
    # An empty name cell leaves the name alone; phones and custom fields are added.
    assert (second.id, second.name, second.custom_fields) == (bob, "Bob", {"tier": "gold"})
    assert [p.e164 for p in second.phones] == ["+12125550199"]
    assert await kinds(database, jane) == [
        "tags_changed",
        "status_changed",
        "contact_updated",
        "imported",
        "contact_created",
    ]
    async with database.transaction(read_only=True) as session:
        events = {e.kind: e.data for e in (await timeline.page(session, jane)).events}
    assert events["contact_updated"] == {"fields": ["name", "company"]}
    assert events["imported"] == {"file": None, "row": 1, "created": False}


async def test_a_notes_column_becomes_a_general_note_by_the_importer_on_the_timeline(
    database: Database, world: TeamWorld
) -> None:
    text = 'Name,Phone,Notes\nAda,+1 212 555 0199,"Prefers email.\nAsk for Ada, not Mrs L."\n'
    report = await run_import(database, world, text)
    assert (report.created, report.columns["Notes"]) == (1, "notes")
    [ada] = await all_contacts(database, world)
    [note] = await notes_of(database, world, ada.id)
    assert (note.content, note.type, note.pinned, note.author_user_id) == (
        "Prefers email.\nAsk for Ada, not Mrs L.",
        "general",
        False,
        world.admin.user_id,
    )
    async with database.transaction(read_only=True) as session:
        events = (await timeline.page(session, ada.id)).events
    assert [e.kind for e in events] == ["note_added", "imported"]
    assert events[0].data == {"note_id": note.id, "type": "general", "content": note.content}


async def test_notes_are_added_to_matched_contacts_once_however_often_the_file_repeats_them(
    database: Database, world: TeamWorld
) -> None:
    ada = await add_contact(database, world, name="Ada", phones=[PhoneIn(number="+12125550199")])
    first = "phone,notes,comments\n+12125550199,Wants a demo,Wants a demo\n"
    report = await run_import(database, world, first)
    assert (report.updated, [n.content for n in await notes_of(database, world, ada)]) == (
        1,
        ["Wants a demo"],
    )
    again = await run_import(database, world, first)
    assert (again.updated, again.unchanged) == (0, 1)
    later = "phone,notes\n+12125550199,Demo done\n(212) 555-0199,Wants a demo\n"
    report = await run_import(database, world, later)
    assert (report.updated, report.unchanged) == (1, 1)
    assert [n.content for n in await notes_of(database, world, ada)] == [
        "Wants a demo",
        "Demo done",
    ]
    skipped = await run_import(
        database, world, "phone,notes\n+12125550199,Not added\n", on_match=OnMatch.SKIP
    )
    assert skipped.skipped == 1 and len(await notes_of(database, world, ada)) == 2


async def test_a_notes_cell_listing_notes_as_the_export_writes_them_gives_those_notes(
    database: Database, world: TeamWorld
) -> None:
    listed = json.dumps(
        [
            {"type": "warning", "pinned": True, "content": "Owes 2 invoices", "created_at": "x"},
            {"type": "Info", "content": "Line one\nline two; with, separators"},
            {"content": "Owes 2 invoices"},
            {"content": "NUL\u0000 dropped", "pinned": "yes"},
        ]
    )
    not_lists = [
        "[see below]",
        "[1, 2]",
        "[]",
        '[{"text": "no content key"}]',
        "[" * 4000 + "]" * 4000,  # deeper than the JSON parser goes
    ]
    rows = [["Ada", "+12125550199", listed], *(["Ben", "", text] for text in not_lists)]
    out = io.StringIO()
    csv.writer(out).writerows([["name", "phone", "notes"], *rows])
    report = await run_import(database, world, out.getvalue())
    assert (report.created, report.failed) == (len(rows), 0)
    ada, *bens = await all_contacts(database, world)
    assert [(n.content, n.type, n.pinned) for n in await notes_of(database, world, ada.id)] == [
        ("Owes 2 invoices", "warning", True),
        ("Line one\nline two; with, separators", "info", False),
        ("NUL dropped", "general", False),
    ]
    async with database.transaction(read_only=True) as session:
        events = (await timeline.page(session, ada.id, kinds=["note_added"])).events
    assert [e.data["type"] for e in reversed(events)] == ["warning", "info", "general"]
    assert [[n.content for n in await notes_of(database, world, b.id)] for b in bens] == [
        [text] for text in not_lists
    ]


async def test_a_listed_note_of_an_unknown_type_is_a_row_error_naming_its_column(
    database: Database, world: TeamWorld
) -> None:
    listed = json.dumps([{"type": "urgent", "content": "Call back"}]).replace('"', '""')
    report = await run_import(database, world, f'name,Comments\nAda,"{listed}"\nBen,Fine\n')
    [error] = report.errors
    assert (error.row, error.field, error.column) == (1, "notes", "Comments")
    assert "unknown note type 'urgent'" in error.message
    assert report.created == 1


async def test_a_note_over_ten_thousand_characters_is_a_row_error_naming_its_column(
    database: Database, world: TeamWorld
) -> None:
    text = f"name,Comments\nAda,{'x' * 10_001}\nBob,{'y' * 10_000}\n"
    report = await run_import(database, world, text)
    assert (report.created, report.failed) == (1, 1)
    [error] = report.errors
    assert (error.row, error.field, error.column) == (1, "notes", "Comments")
    assert "10000 characters" in error.message


async def test_on_match_skip_leaves_the_contacts_a_row_finds_alone(
    database: Database, world: TeamWorld
) -> None:
    await add_contact(database, world, name="Jane", phones=[PhoneIn(number="+14155550123")])
    await add_contact(database, world, name="Bob", emails=[EmailIn(email="bob@x.example")])
    report = await run_import(database, world, MATCHING_CSV, on_match=OnMatch.SKIP)
    assert (report.created, report.updated, report.skipped) == (0, 0, 2)
    assert [c.name for c in await all_contacts(database, world)] == ["Jane", "Bob"]
    assert [c.phones for c in await all_contacts(database, world)][1] == []


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
async def test_a_number_repeated_in_the_file_lands_on_the_contact_its_first_row_created(
    database: Database, world: TeamWorld, batch_size: int
) -> None:
    text = (
        "name,phone,email,tags\n"
        "Ann,415-555-0101,,a\n"
        "Ann Again,(415) 555-0101,ann@x.example,b\n"
        "Carl,415-555-0102,,\n"
        "Ann Third,+14155550101,,c\n"
        ",,ann@x.example,d\n"
    )
    report = await run_import(database, world, text, batch_size=batch_size)
    assert (report.created, report.updated, report.failed) == (2, 3, 0)
    ann, carl = await all_contacts(database, world)
    assert (ann.name, ann.tags, [p.e164 for p in ann.phones]) == (
        "Ann Third",
        ["a", "b", "c", "d"],
        ["+14155550101"],
    )
    assert [e.email for e in ann.emails] == ["ann@x.example"] and carl.name == "Carl"
    async with database.transaction(read_only=True) as session:
        events = (await timeline.page(session, ann.id, kinds=["imported"])).events
    assert [e.data["row"] for e in reversed(events)] == [1, 2, 4, 5]


async def test_a_row_whose_numbers_belong_to_two_contacts_is_reported_not_merged(
    database: Database, world: TeamWorld
) -> None:
    one = await add_contact(database, world, name="One", phones=[PhoneIn(number="+14155550101")])
    two = await add_contact(database, world, name="Two", phones=[PhoneIn(number="+14155550102")])
    report = await run_import(database, world, "name,phones\nBoth,415 555 0101; 415 555 0102\n")
    [error] = report.errors
    assert (error.row, error.field) == (1, "phones")
    assert f"belong to different contacts ({one}, {two})" in error.message
    assert report.updated == 0


async def test_importing_the_same_file_again_changes_nothing(
    database: Database, world: TeamWorld
) -> None:
    data = (FIXTURES / "google.csv").read_bytes()
    await run_import(database, world, data)
    async with database.transaction(read_only=True) as session:
        events = await session.scalar(select(func.count()).select_from(TimelineEvent))
    again = await run_import(database, world, data)
    assert (again.created, again.updated, again.unchanged, again.failed) == (0, 0, 3, 1)
    async with database.transaction(read_only=True) as session:
        assert await session.scalar(select(func.count()).select_from(TimelineEvent)) == events


async def test_a_row_with_neither_phone_nor_email_cannot_be_matched_and_creates_again(
    database: Database, world: TeamWorld
) -> None:
    await run_import(database, world, "Company\nWidgets Ltd\n")
    again = await run_import(database, world, "Company\nWidgets Ltd\n")
    assert again.created == 1
    assert [c.name for c in await all_contacts(database, world)] == ["Widgets Ltd"] * 2


async def test_a_number_several_contacts_share_matches_the_oldest_when_the_team_allows_it(
    database: Database, world: TeamWorld
) -> None:
    world.admin = replace(world.admin, team=replace(world.admin.team, allow_duplicate_phones=True))
    first = await add_contact(database, world, name="First", phones=[PhoneIn(number="4155550101")])
    await add_contact(database, world, name="Second", phones=[PhoneIn(number="4155550101")])
    report = await run_import(
        database, world, "name,phone\nRenamed,415 555 0101\nNew,415 555 0101\n"
    )
    assert (report.created, report.updated) == (0, 2)
    assert [c.name for c in await all_contacts(database, world)] == ["New", "Second"]
    assert (await all_contacts(database, world))[0].id == first


async def test_a_contact_a_call_creates_mid_batch_is_found_when_the_batch_is_retried(
    database: Database, world: TeamWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: a call gives a number its contact between the batch's lookup and insert.

    The unique index refuses the batch, which is planned again and finds the contact.
    The call is made to happen right after the lookup by wrapping it: no real timing
    could make that race happen on every run.
    """
    if database.dialect == "sqlite":
        pytest.skip("on SQLite a batch holds the write lock from its first statement")
    real_owners = csv_lookups.owners
    calls: list[int] = []

    async def lookup_then_a_call(*args: Any) -> dict[str, int]:
        found = await real_owners(*args)
        if not calls:
            calls.append(
                await add_contact(
                    database, world, name="Caller", phones=[PhoneIn(number="+14155550101")]
                )
            )
        return found

    monkeypatch.setattr(csv_lookups, "owners", lookup_then_a_call)
    report = await run_import(database, world, "name,phone\nAnn,415 555 0101\n")
    assert (report.created, report.updated) == (0, 1)
    [contact] = await all_contacts(database, world)
    assert (contact.id, contact.name) == (calls[0], "Ann")


async def test_a_batch_is_planned_while_the_one_before_it_is_written(
    database: Database, world: TeamWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first batch's write waits until the second batch has been looked up.

    Were the batches planned only after the one before committed, the write would
    wait for a lookup that never comes, and the import would fail on the timeout.
    """
    if database.dialect == "sqlite":
        pytest.skip(SQLITE_PLANS_IN_ITS_WRITE)
    real_owners, real_write = csv_lookups.owners, csv_writers.write_plan
    second_looked_up = asyncio.Event()
    writes: list[int] = []

    async def owners(conn: Any, team_id: int, phones: Any, emails: Any) -> dict[str, int]:
        if "+14155550102" in phones:
            second_looked_up.set()
        return await real_owners(conn, team_id, phones, emails)

    async def write_plan(*args: Any) -> None:
        writes.append(len(writes))
        if len(writes) == 1:
            async with asyncio.timeout(5):
                await second_looked_up.wait()
        await real_write(*args)

    monkeypatch.setattr(csv_lookups, "owners", owners)
    monkeypatch.setattr(csv_import, "write_plan", write_plan)
    report = await run_import(
        database, world, "name,phone\nAnn,415 555 0101\nBob,415 555 0102\n", batch_size=1
    )
    assert (report.created, writes) == (2, [0, 1])
    assert [c.name for c in await all_contacts(database, world)] == ["Ann", "Bob"]


async def test_a_contact_a_call_creates_while_the_batch_before_is_written_is_found(
    database: Database, world: TeamWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch planned ahead meets a contact created after its lookup, before its write.

    The phones' unique index refuses the batch, which is planned again in its own
    write transaction and finds the contact. The call is made to happen right after
    the second batch's lookup by wrapping it.
    """
    if database.dialect == "sqlite":
        pytest.skip(SQLITE_PLANS_IN_ITS_WRITE)
    real_owners = csv_lookups.owners
    calls: list[int] = []

    async def lookup_then_a_call(
        conn: Any, team_id: int, phones: Any, emails: Any
    ) -> dict[str, int]:
        found = await real_owners(conn, team_id, phones, emails)
        if "+14155550101" in phones and not calls:
            calls.append(
                await add_contact(
                    database, world, name="Caller", phones=[PhoneIn(number="+14155550101")]
                )
            )
        return found

    monkeypatch.setattr(csv_lookups, "owners", lookup_then_a_call)
    report = await run_import(
        database, world, "name,phone\nBob,415 555 0100\nAnn,415 555 0101\n", batch_size=1
    )
    assert (report.created, report.updated, report.failed) == (1, 1, 0)
    bob, ann = await all_contacts(database, world)
    assert (bob.name, ann.id, ann.name) == ("Bob", calls[0], "Ann")
    assert [p.e164 for p in ann.phones] == ["+14155550101"]


async def test_a_batch_that_fails_to_write_stops_the_import_keeping_the_batches_before_it(
    database: Database, world: TeamWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = csv_writers.write_plan

    class DiskFull(Exception):
        pass

    async def write_plan(conn: Any, plan: Any, *args: Any) -> None:
        if any(row[2] == "Bob" for row in plan.new_rows.values()):
            raise DiskFull
        await real_write(conn, plan, *args)

    monkeypatch.setattr(csv_import, "write_plan", write_plan)
    text = "name,phone\nAnn,415 555 0101\nBob,415 555 0102\nCarl,415 555 0103\n"
    with pytest.raises(DiskFull) as failure:
        await run_import(database, world, text, batch_size=1)
    assert failure.value.__notes__ == [
        "the import stopped at data row 2: rows before it were imported (1 created, 0 updated), "
        "rows from it on were not"
    ]
    assert [c.name for c in await all_contacts(database, world)] == ["Ann"]


async def test_a_cancelled_import_rolls_back_the_batch_being_written_and_leaves_no_task(
    database: Database, world: TeamWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while the second batch is written and the third is looked up."""
    if database.dialect == "sqlite":
        pytest.skip(SQLITE_PLANS_IN_ITS_WRITE)
    real_write, real_owners = csv_writers.write_plan, csv_lookups.owners
    second_written, third_looked_up = asyncio.Event(), asyncio.Event()

    async def write_plan(conn: Any, plan: Any, *args: Any) -> None:
        await real_write(conn, plan, *args)
        if any(row[2] == "Bob" for row in plan.new_rows.values()):
            second_written.set()
            await asyncio.Event().wait()  # written, never committed

    async def owners(conn: Any, team_id: int, phones: Any, emails: Any) -> dict[str, int]:
        if "+14155550103" in phones:
            third_looked_up.set()
            await asyncio.Event().wait()
        return await real_owners(conn, team_id, phones, emails)

    monkeypatch.setattr(csv_import, "write_plan", write_plan)
    monkeypatch.setattr(csv_lookups, "owners", owners)
    text = "name,phone\nAnn,415 555 0101\nBob,415 555 0102\nCarl,415 555 0103\n"
    before = asyncio.all_tasks()
    importing = asyncio.create_task(run_import(database, world, text, batch_size=1))
    async with asyncio.timeout(10):
        await second_written.wait()
        await third_looked_up.wait()
    importing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await importing
    assert asyncio.all_tasks() == before
    assert [c.name for c in await all_contacts(database, world)] == ["Ann"]


# ----------------------------------------------------------------- dry runs
DRY_CSV = (
    "name,phone,email,tags,notes\n"
    "Existing,415-555-0100,,new,\n"
    "Ann,415-555-0101,,a,\n"
    "Carl,415-555-0102,,,Met at the fair\n"
    "Ann Again,415-555-0101,ann@x.example,b,\n"
    "Broken,12,,,\n"
    "Dana,,ann@x.example,c,\n"
    ",415-555-0100,,,Called back\n"  # only a note for an existing contact: an update
)


async def test_a_dry_run_writes_nothing_and_counts_what_the_real_run_then_does(
    database: Database, world: TeamWorld
) -> None:
    await add_contact(database, world, name="Existing", phones=[PhoneIn(number="+14155550100")])
    counts = ("created", "updated", "unchanged", "skipped", "failed")
    dry = await run_import(database, world, DRY_CSV, dry_run=True, batch_size=2)
    again = await run_import(database, world, DRY_CSV, dry_run=True, batch_size=2)
    assert dry.dry_run and dry.model_dump(include=set(counts)) == again.model_dump(
        include=set(counts)
    )
    assert [c.name for c in await all_contacts(database, world)] == ["Existing"]
    assert await kinds(database, (await all_contacts(database, world))[0].id) == ["contact_created"]
    real = await run_import(database, world, DRY_CSV, batch_size=2)
    assert dry.model_dump(include=set(counts)) == real.model_dump(include=set(counts))
    assert (real.created, real.updated, real.failed) == (2, 4, 1)
    assert dry.errors == real.errors


# ----------------------------------------------------------------- refusals
async def test_a_file_without_a_name_phone_or_email_column_is_refused_before_any_write(
    database: Database, world: TeamWorld
) -> None:
    with pytest.raises(InvalidCSV) as refused:
        await run_import(database, world, "Colour,Size\nred,XL\n")
    assert "the file's columns are: 'Colour', 'Size'" in refused.value.detail
    assert await all_contacts(database, world) == []


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "the file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "not valid utf-8"),
        (
            b"name,phone\n" + b"Ann,415 555 0101\n" * 5000 + b"B\xe9a,415 555 0102\n",
            "near line 5002",
        ),
        (b'name,phone\n"Ann,415 555 0101\n' + b"x" * 200_000 + b"\n", "not valid CSV"),
    ],
    ids=["empty", "binary", "latin-1 far down", "field too large"],
)
async def test_a_file_that_cannot_be_read_is_refused_before_any_write(
    database: Database, world: TeamWorld, data: bytes, expected: str
) -> None:
    with pytest.raises(InvalidCSV) as refused:
        await run_import(database, world, data, batch_size=100)
    assert expected in refused.value.detail
    assert await all_contacts(database, world) == []


async def test_a_file_in_another_encoding_imports_when_told_which(
    database: Database, world: TeamWorld
) -> None:
    data = "name,phone\nBéa Dupré,415 555 0102\n".encode("cp1252")
    report = await run_import(database, world, data, encoding="cp1252")
    assert report.created == 1
    assert (await all_contacts(database, world))[0].name == "Béa Dupré"


# Excel's "Unicode text" starts with a byte-order mark; other writers leave it out, and
# then plain ASCII even decodes as UTF-8, with a NUL after every character.
@pytest.mark.parametrize(
    ("encoding", "name"),
    [("utf-16", "Béa Dupré"), ("utf-16-le", "Béa Dupré"), ("utf-16-le", "Bea")],
)
async def test_a_utf16_file_read_as_utf8_is_refused_saying_so_and_imports_when_told(
    database: Database, world: TeamWorld, encoding: str, name: str
) -> None:
    data = f"name,phone\n{name},415 555 0102\n".encode(encoding)
    with pytest.raises(InvalidCSV, match="UTF-16") as refused:
        await run_import(database, world, data, encoding="utf-8")
    assert refused.value.field == "encoding"
    assert await all_contacts(database, world) == []
    report = await run_import(database, world, data, encoding=encoding)
    assert (report.created, (await all_contacts(database, world))[0].name) == (1, name)


@pytest.mark.parametrize("batch_size", [1, 1000])
async def test_text_comes_back_exactly_as_written_and_nul_characters_are_dropped(
    database: Database, world: TeamWorld, batch_size: int
) -> None:
    name = 'Zoë "Z" Müller-Łukasz 😀 \\ O\'Brien'
    text = (
        "name,company,phone,tags,notes,custom.nickname\n"
        f'"{name.replace(chr(34), chr(34) * 2)}",Nul\x00l Corp,+1 415 555 0102,'
        '"ünïcode;x",'
        '"line one\nline two, with ""quotes""",😀\n'
    )
    report = await run_import(database, world, text, batch_size=batch_size)
    assert (report.created, report.failed) == (1, 0)
    [contact] = await all_contacts(database, world)
    assert (contact.name, contact.company, contact.tags) == (name, "Null Corp", ["x", "ünïcode"])
    assert contact.custom_fields == {"nickname": "😀"}
    [note] = await notes_of(database, world, contact.id)
    assert note.content == 'line one\nline two, with "quotes"'


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        ({"Mobile": "phone"}, "the mapping names column 'Mobile', which the file does not have"),
        ({"Name": "nickname"}, "unknown field 'nickname'"),
    ],
)
async def test_a_mapping_naming_a_missing_column_or_an_unknown_field_is_refused(
    database: Database, world: TeamWorld, mapping: dict[str, str], expected: str
) -> None:
    with pytest.raises(InvalidCSV) as refused:
        await run_import(database, world, "Name,Phone\nAnn,415 555 0101\n", mapping=mapping)
    assert expected in refused.value.detail


async def test_only_admins_may_import(database: Database, world: TeamWorld) -> None:
    with pytest.raises(PermissionDenied):
        await import_contacts(database, world.agent, io.BytesIO(b"name\nAnn\n"))


async def test_a_header_without_rows_imports_nothing(database: Database, world: TeamWorld) -> None:
    report = await run_import(database, world, "Name,Phone\n")
    assert (report.total_rows, report.rows, report.created) == (0, 0, 0)


# ----------------------------------------------------------------- progress and worker processes
@pytest.mark.parametrize("batch_size", [0, -1, 20_001])
async def test_a_batch_size_out_of_range_is_refused_before_the_file_is_read(
    database: Database, world: TeamWorld, batch_size: int
) -> None:
    file = io.BytesIO(b"name,phone\nAda,+12125550199\n")
    with pytest.raises(InvalidInput, match="batch_size must be between 1 and 20000"):
        await csv_import.check_file(file, ImportOptions(batch_size=batch_size))
    with pytest.raises(InvalidInput, match="batch_size must be between 1 and 20000"):
        await run_import(database, world, "name,phone\nAda,+12125550199\n", batch_size=batch_size)
    assert await all_contacts(database, world) == []


async def test_progress_and_row_errors_are_reported_as_the_import_goes(
    database: Database, world: TeamWorld
) -> None:
    seen: list[tuple[int, int]] = []
    errors: list[int] = []
    await import_contacts(
        database,
        world.admin,
        io.BytesIO((FIXTURES / "google.csv").read_bytes()),
        ImportOptions(batch_size=2),
        on_progress=lambda report: seen.append((report.rows, report.total_rows)),
        on_error=lambda error: errors.append(error.row),
    )
    assert seen == [(2, 4), (4, 4)]
    assert errors == [3]


async def test_worker_processes_read_rows_exactly_as_the_event_loop_does(
    database: Database, world: TeamWorld
) -> None:
    data = (FIXTURES / "google.csv").read_bytes() + b"Zoe Zed,,,,,,,,,,,,,415 555 0177,,,,,\n"
    report = await run_import(database, world, data, workers=2, batch_size=2)
    assert (report.created, report.failed, report.errors[0].row) == (4, 1, 3)
    assert [c.name for c in await all_contacts(database, world)] == [
        "Jane Roe",
        "Kim Lee",
        "Only Email",
        "Zoe Zed",
    ]


async def test_a_large_import_refreshes_the_query_planners_statistics(
    database: Database, world: TeamWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without them SQLite pages a big team by sorting all of it for every page."""
    monkeypatch.setattr(csv_import, "STATISTICS_AFTER", 2)
    await run_import(database, world, "name,phone\nAnn,415 555 0101\nBen,415 555 0102\n")
    async with database.transaction(read_only=True) as session:
        if database.dialect == "sqlite":
            analyzed = await session.scalar(
                sql("SELECT count(*) FROM sqlite_stat1 WHERE tbl = 'contacts'")
            )
        else:
            # ANALYZE sets the row estimate in the catalog, in its own transaction.
            analyzed = await session.scalar(
                sql("SELECT reltuples = 2 FROM pg_class WHERE relname = 'contacts'")
            )
    assert analyzed


async def test_an_import_refreshes_the_lookup_tables_statistics_as_it_grows_them(
    database: Database, world: TeamWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL plans a batch's key lookups on these statistics; planned for a near-empty
    table, a lookup filters the whole table instead of probing the index once a key."""
    if database.dialect == "sqlite":
        pytest.skip("SQLite probes the index for a list of keys whatever its statistics")
    monkeypatch.setattr(csv_import, "LOOKUP_STATISTICS_FROM", 2)
    rows = "".join(f"P{i},415 555 01{i:02d}\n" for i in range(5))
    await run_import(database, world, "name,phone\n" + rows, batch_size=1)
    async with database.transaction(read_only=True) as session:
        phones = await session.scalar(sql("SELECT count(*) FROM contact_phones"))
        estimated = await session.scalar(
            sql("SELECT reltuples FROM pg_class WHERE relname = 'contact_phones'")
        )
    # Refreshed when 2, then 4 contacts had been imported; not yet for the 5th.
    assert estimated == phones - 1


# ----------------------------------------------------------------- cells, guarded
def test_a_quote_guards_formula_cells_and_comes_off_again() -> None:
    for text in ["=HYPERLINK(1)", "+1 415", "-x", "@SUM", "'=already quoted", "plain", "'quote"]:
        assert unguard(guard(text)) == text
    assert guard("=1+1") == "'=1+1" and guard("plain") == "plain"


# ----------------------------------------------------------------- phone numbers
def _reference_normalize(raw: str, default_region: str) -> NormalizedPhone:
    """normalize_phone as first written: the straightforward calls, for comparison."""
    text = strip_uri(raw)
    candidates: list[tuple[str, str | None]] = [(text, default_region.upper())]
    if not text.startswith("+") and text.isdigit() and 11 <= len(text) <= 16:
        candidates.append(("+" + text, None))
    for candidate, region in candidates:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return NormalizedPhone(
                e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
                region=phonenumbers.region_code_for_number(number),
                carrier=pn_carrier.name_for_number(number, "en") or None,
            )
    raise InvalidPhoneNumber("invalid", field="phone")


def test_phone_parsing_agrees_with_the_straightforward_calls_for_every_region() -> None:
    """The import parses millions of numbers with a faster path; it must not answer differently."""
    fast = normalize_phone.__wrapped__
    checked = 0
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in range(12):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            national = str(example.national_number)
            for text in (
                phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164),
                phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL),
                national[:-1] + str((int(national[-1]) + 3) % 10),
                national[:-2],
            ):
                for default in (region, "US"):
                    try:
                        expected: NormalizedPhone | None = _reference_normalize(text, default)
                    except InvalidPhoneNumber:
                        expected = None
                    try:
                        got: NormalizedPhone | None = fast(text, default)
                    except InvalidPhoneNumber:
                        got = None
                    assert got == expected, (text, default)
                    checked += 1
    assert checked > 5000


async def test_a_first_pass_the_caller_already_ran_is_used_not_run_again(
    database: Database, world: TeamWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background route checks an upload before it creates the job; the job then
    starts writing at once instead of reading a large file through a second time."""
    scans: list[int] = []
    real_scan = csv_records.scan

    def counted_scan(*args: Any) -> tuple[list[str], int, csv_records.Layout]:
        scans.append(1)
        return real_scan(*args)

    monkeypatch.setattr("voicecrm.crm.csv_import.scan", counted_scan)
    file = io.BytesIO(b"name,phone\nAda,+12125550199\nBob,+12125550198\n")
    checked = await csv_import.check_file(file, ImportOptions())
    report = await import_contacts(database, world.admin, file, ImportOptions(), checked=checked)
    assert (len(scans), report.total_rows, report.created) == (1, 2, 2)
    await import_contacts(database, world.admin, file, ImportOptions())
    assert len(scans) == 2  # without it, the job runs its own first pass
