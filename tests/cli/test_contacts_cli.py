"""`voicecrm contacts import|export`: progress, summaries, row errors and exit statuses.

Exit statuses: 0 every row imported or skipped, 1 some rows had errors (the rest
was imported), 2 nothing imported (the file or an option is wrong).
"""

from __future__ import annotations

import asyncio
import csv
import gc
import io
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TeamWorld
from voicecrm.cli import contacts_commands
from voicecrm.cli.main import main
from voicecrm.crm.csv_import import ImportReport, import_contacts
from voicecrm.crm.models import Contact
from voicecrm.storage import Database

FIXTURES = Path(__file__).parent.parent / "fixtures" / "csv"


@pytest.fixture
def cli_env(database_url: str, world: TeamWorld, monkeypatch: pytest.MonkeyPatch) -> TeamWorld:
    """The CLI pointed at the test database, whose team `world` made."""
    monkeypatch.setenv("VOICECRM_DATABASE_URL", database_url)
    monkeypatch.setenv("VOICECRM_LOG_LEVEL", "WARNING")
    return world


def names(database_url: str) -> list[str]:
    async def read() -> list[str]:
        from sqlalchemy import select

        database = Database(database_url)
        try:
            async with database.transaction(read_only=True) as session:
                return list(await session.scalars(select(Contact.name).order_by(Contact.id)))
        finally:
            await database.close()

    return asyncio.run(read())


def test_an_import_shows_progress_and_a_summary_and_exits_0(
    cli_env: TeamWorld, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["contacts", "import", str(FIXTURES / "outlook.csv")]) == 0
    out, err = capsys.readouterr()
    assert "3 of 3 rows (100%)" in err and "rows/s" in err
    assert "imported 3 rows in" in out
    assert "3 created, 0 updated, 0 unchanged, 0 skipped, 0 failed" in out
    assert "columns not imported: Title, Job Title, Business City\n" in out
    assert names(database_url) == ["Ann B. Smith", "Bob Jones", "Widgets Ltd"]


def test_an_import_runs_with_the_loaded_heap_frozen_and_unfreezes_it_after(
    cli_env: TeamWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collector's full passes skip what was loaded before the import (as the
    service's do once it has started); the command leaves the process as it found it."""
    real_import = import_contacts
    frozen_during: list[int] = []

    async def watched(*args: Any, **kwargs: Any) -> ImportReport:
        frozen_during.append(gc.get_freeze_count())
        return await real_import(*args, **kwargs)

    monkeypatch.setattr(contacts_commands, "import_contacts", watched)
    assert main(["contacts", "import", str(FIXTURES / "outlook.csv")]) == 0
    assert frozen_during[0] > 1_000  # the modules loaded, at least
    assert gc.get_freeze_count() == 0


def test_row_errors_are_printed_with_row_and_line_and_exit_1(
    cli_env: TeamWorld, database_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    errors = tmp_path / "errors.csv"
    code = main(["contacts", "import", str(FIXTURES / "google.csv"), "--errors-csv", str(errors)])
    assert code == 1
    out, err = capsys.readouterr()
    assert "row 3 (line 5), column 'Phone 1 - Value': '12' is not a valid phone number" in err
    assert "3 created" in out and "1 failed" in out
    written = list(csv.reader(io.StringIO(errors.read_text(encoding="utf-8"), newline="")))
    assert written[1][:4] == ["3", "5", "Phone 1 - Value", "phones"]
    assert names(database_url) == ["Jane Roe", "Kim Lee", "Only Email"]


def test_a_dry_run_writes_nothing_and_exits_like_the_import_would(
    cli_env: TeamWorld, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["contacts", "import", "--dry-run", str(FIXTURES / "google.csv")]) == 1
    assert "dry run, nothing written: would have imported 4 rows" in capsys.readouterr().out
    assert names(database_url) == []


def test_mapped_columns_skip_and_standard_input(
    cli_env: TeamWorld,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = b"Person,Cell\nJane Roe,415 555 0123\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["contacts", "import", "-", "--map", "Person=name", "--map", "Cell=phone"]) == 0
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert main(["contacts", "import", "-", "--map", "Person=name", "--on-match", "skip"]) == 0
    assert "1 skipped" in capsys.readouterr().out
    assert names(database_url) == ["Jane Roe"]


@pytest.mark.parametrize(
    ("content", "args", "expected"),
    [
        (None, [], "No such file or directory"),
        (b"Colour,Size\nred,XL\n", [], "no column names, reaches or identifies a contact"),
        (b"name\n\xff\n", [], "not valid utf-8-sig text near line 2"),
        (b"name\nAnn\n", ["--map", "nonsense"], "--map takes CSVCOLUMN=field"),
        (b"name\nAnn\n", ["--team", "999999"], "team 999999 does not exist"),
        (b"name\nAnn\n", ["--errors-csv", "/nonexistent/errors.csv"], "/nonexistent/errors.csv"),
    ],
    ids=["missing file", "not contacts", "not utf-8", "bad --map", "no such team", "bad errors"],
)
def test_a_file_or_option_that_is_wrong_exits_2_having_written_nothing(
    cli_env: TeamWorld,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    content: bytes | None,
    args: list[str],
    expected: str,
) -> None:
    path = tmp_path / "contacts.csv"
    if content is not None:
        path.write_bytes(content)
    assert main(["contacts", "import", str(path), *args]) == 2
    assert expected in capsys.readouterr().err
    assert names(database_url) == []


def test_export_writes_a_file_or_standard_output_with_filters(
    cli_env: TeamWorld, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["contacts", "import", str(FIXTURES / "google.csv")]) == 1
    capsys.readouterr()
    assert main(["contacts", "export", "--tag", "vip"]) == 0
    out, err = capsys.readouterr()
    assert [row["name"] for row in csv.DictReader(io.StringIO(out))] == ["Jane Roe"]
    assert "exported 1 contacts to standard output" in err
    target = tmp_path / "all.csv"
    assert main(["contacts", "export", str(target)]) == 0
    assert "exported 3 contacts" in capsys.readouterr().err
    exported = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"), newline="")))
    assert [row["name"] for row in exported] == ["Jane Roe", "Kim Lee", "Only Email"]
    assert main(["contacts", "import", str(target)]) == 0
    assert "0 created, 0 updated, 3 unchanged" in capsys.readouterr().out


def test_export_for_excel_starts_with_a_byte_order_mark_and_imports_back(
    cli_env: TeamWorld, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "in.csv").write_text("name,phone\nZoë Müller,4155550123\nJosé,4155550124\n")
    assert main(["contacts", "import", str(tmp_path / "in.csv")]) == 0
    plain, excel = tmp_path / "plain.csv", tmp_path / "excel.csv"
    assert main(["contacts", "export", str(plain)]) == 0
    assert main(["contacts", "export", "--bom", str(excel)]) == 0
    assert not plain.read_bytes().startswith(b"\xef\xbb\xbf")
    assert excel.read_bytes() == b"\xef\xbb\xbf" + plain.read_bytes()
    assert "Zoë Müller".encode() in excel.read_bytes()
    capsys.readouterr()
    assert main(["contacts", "export", "--bom"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("\ufeffid,") and out.count("\ufeff") == 1
    assert main(["contacts", "import", str(excel)]) == 0
    assert "0 created, 0 updated, 2 unchanged" in capsys.readouterr().out
