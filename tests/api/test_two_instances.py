"""Two service instances on one database behave as one: the database guards the data."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.api.conftest import Api, ClientFactory
from tests.conftest import TeamWorld
from voicecrm.app import build_app
from voicecrm.config import Settings


async def _instance(aiohttp_client: ClientFactory, url: str) -> TestClient[Any, Any]:
    return await aiohttp_client(build_app(Settings(database_url=url, migrate_on_start=False)))


async def test_first_calls_split_across_two_instances_make_one_contact(
    aiohttp_client: ClientFactory, database_url: str, world: TeamWorld
) -> None:
    instances = [
        Api(await _instance(aiohttp_client, database_url), world.admin_token) for _ in range(2)
    ]
    results = await asyncio.gather(
        *(
            instances[i % 2].post(
                "/callers/resolve", {"number": "+1 415 555 0142", "caller_name": "Pat Doe"}
            )
            for i in range(40)
        )
    )
    assert {status for status, _ in results} == {200}
    assert len({body["contact"]["id"] for _, body in results}) == 1
    assert sum(body["created"] for _, body in results) == 1
    _, page = await instances[0].get("/contacts", phone="4155550142")
    assert len(page["items"]) == 1


async def test_nine_stages_added_through_two_instances_leave_eight(
    aiohttp_client: ClientFactory, database_url: str, world: TeamWorld
) -> None:
    instances = [
        Api(await _instance(aiohttp_client, database_url), world.admin_token) for _ in range(2)
    ]
    results = await asyncio.gather(
        *(instances[i % 2].post("/stages", {"name": f"Stage {i}"}) for i in range(9))
    )
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] * 8 + [409]
    refused = next(body for status, body in results if status == 409)
    assert refused["title"] == "Stage limit reached"
    _, stages = await instances[1].get("/stages")
    assert [s["position"] for s in stages["items"]] == list(range(8))
