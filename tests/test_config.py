"""Settings: read from VOICECRM_* variables, refused clearly when wrong, documented truly."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicecrm.config import Settings
from voicecrm.errors import ConfigurationError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.database_url.startswith("sqlite+aiosqlite:///")
    assert settings.port == 8080


def test_variables_override_defaults() -> None:
    settings = Settings.from_env({"VOICECRM_PORT": "9000", "VOICECRM_MIGRATE_ON_START": "false"})
    assert (settings.port, settings.migrate_on_start) == (9000, False)


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="VOICECRM_PORT"):
        Settings.from_env({"VOICECRM_PORT": "eighty"})


def test_the_readme_documents_every_setting_with_its_default() -> None:
    readme = README.read_text()
    for name, field in Settings.model_fields.items():
        row = next(
            (
                line
                for line in readme.splitlines()
                if line.startswith(f"| `VOICECRM_{name.upper()}` |")
            ),
            None,
        )
        assert row is not None, f"README lacks VOICECRM_{name.upper()}"
        assert f"| `{field.default}` |" in row, f"README's default for {name} is stale"
