"""Scenarios in the running service: loaded at start, listed, reloaded without a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.api.conftest import Api, ClientFactory
from tests.conftest import TeamWorld
from voicecrm.app import build_app
from voicecrm.config import Settings
from voicecrm.errors import ScenarioInvalid

GOOD = "name: {name}\nsteps:\n  hello:\n    say: Hello\n"


async def _client(factory: ClientFactory, url: str, folder: Path) -> TestClient[Any, Any]:
    settings = Settings(database_url=url, migrate_on_start=False, scenarios_dir=str(folder))
    return await factory(build_app(settings))


async def test_the_shipped_scenarios_are_listed(api: Api) -> None:
    status, body = await api.get("/scenarios")
    assert status == 200
    names = {item["name"]: item for item in body["items"]}
    assert {"front-desk", "after-hours", "dtmf-menu", "appointment-reminder"} <= set(names)
    assert names["front-desk"]["default"] is True


async def test_a_reload_picks_up_changes_and_refuses_broken_files(
    aiohttp_client: ClientFactory, database_url: str, world: TeamWorld, tmp_path: Path
) -> None:
    (tmp_path / "one.yaml").write_text(GOOD.format(name="one"))
    api = Api(await _client(aiohttp_client, database_url, tmp_path), world.admin_token)
    (tmp_path / "two.yaml").write_text(GOOD.format(name="two"))
    status, body = await api.post("/scenarios/reload")
    assert status == 200 and [i["name"] for i in body["items"]] == ["one", "two"]

    (tmp_path / "two.yaml").write_text("name: two\nsteps:\n  hello:\n    sya: Hello\n")
    status, problem = await api.post("/scenarios/reload")
    assert status == 422
    assert problem["issues"][0].endswith(
        "two.yaml:4:5: a step needs exactly one action: say, "
        "play, gather, branch, set, goto, create_crm_note, "
        "set_stage, set_status, add_tag, remove_tag, "
        "update_contact, create_task, http_request, transfer,"
        " voicemail, hangup, echo, agent"
    )
    _, still = await api.get("/scenarios")
    assert [i["name"] for i in still["items"]] == ["one", "two"]


async def test_only_admins_reload(agent_api: Api) -> None:
    status, problem = await agent_api.post("/scenarios/reload")
    assert status == 403 and problem["title"] == "Permission denied"


async def test_the_service_refuses_to_start_with_an_invalid_scenario(
    database_url: str, world: TeamWorld, tmp_path: Path
) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\nsteps:\n  a:\n    say: hi\n    next: nowhere\n")
    settings = Settings(
        database_url=database_url, migrate_on_start=False, scenarios_dir=str(tmp_path)
    )
    runner = web.AppRunner(build_app(settings))
    try:
        with pytest.raises(ScenarioInvalid, match=r"bad.yaml:5:11: goes to step 'nowhere'"):
            await runner.setup()
    finally:
        await runner.cleanup()
