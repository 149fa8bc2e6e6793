"""`voicecrm db upgrade`, `users` and `tokens` on a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from voicecrm.app import prepare_database
from voicecrm.cli.main import main
from voicecrm.config import Settings
from voicecrm.storage import Database
from voicecrm.storage.migrate import head_revision


@pytest.fixture
def fresh_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cli.db"
    monkeypatch.setenv("VOICECRM_DATABASE_URL", f"sqlite+aiosqlite:///{path}")
    monkeypatch.setenv("VOICECRM_LOG_LEVEL", "WARNING")
    return path


def test_db_upgrade_migrates_an_empty_file(
    fresh_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade"]) == 0
    head = head_revision()
    assert head is not None
    assert f"database at revision {head} (head {head})" in capsys.readouterr().out


def test_users_need_a_team_first(fresh_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["users", "create", "ann@example.com"]) == 2
    assert "no team yet" in capsys.readouterr().err


def test_users_and_tokens_are_created_and_listed(
    fresh_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def first_start() -> None:
        """The same path `voicecrm serve` takes on its first start."""

        database = Database(Settings.from_env().database_url)
        await prepare_database(database, Settings.from_env())
        await database.close()

    asyncio.run(first_start())
    assert main(["users", "create", "Ann@Example.com", "--role", "agent", "--token"]) == 0
    out = capsys.readouterr().out
    assert "created agent ann@example.com" in out
    assert "API token (shown once): vcrm_" in out
    assert main(["tokens", "create", "ann@example.com"]) == 0
    assert capsys.readouterr().out.startswith("vcrm_")
    assert main(["users", "list"]) == 0
    listing = capsys.readouterr().out
    assert "admin\tadmin@localhost" in listing and "agent\tann@example.com" in listing
    assert main(["users", "create", "ann@example.com"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["tokens", "create", "nobody@example.com"]) == 2
    assert "no user has email" in capsys.readouterr().err
