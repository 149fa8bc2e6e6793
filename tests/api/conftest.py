"""The service over real HTTP on loopback, with the suite's real databases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.conftest import TeamWorld
from voicecrm.app import build_app
from voicecrm.config import Settings

ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


class Api:
    """A test client bound to one bearer token; every call returns (status, json)."""

    def __init__(self, client: TestClient[Any, Any], token: str | None) -> None:
        self.client = client
        self.token = token

    def as_(self, token: str | None) -> Api:
        return Api(self.client, token)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def call(
        self, method: str, path: str, json: Any = None, params: Any = None
    ) -> tuple[int, Any]:
        response = await self.client.request(
            method, "/api/v1" + path, json=json, params=params, headers=self.headers()
        )
        if response.status == 204:
            return 204, None
        content_type = response.headers.get("Content-Type", "")
        if "json" in content_type:
            return response.status, await response.json(content_type=None)
        return response.status, await response.text()

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        return await self.call("GET", path, params=params or None)

    async def post(self, path: str, json: Any = None) -> tuple[int, Any]:
        return await self.call("POST", path, json=json)

    async def patch(self, path: str, json: Any = None) -> tuple[int, Any]:
        return await self.call("PATCH", path, json=json)

    async def put(self, path: str, json: Any = None) -> tuple[int, Any]:
        return await self.call("PUT", path, json=json)

    async def delete(self, path: str) -> tuple[int, Any]:
        return await self.call("DELETE", path)


@pytest.fixture
async def client(
    aiohttp_client: ClientFactory, database_url: str, world: TeamWorld
) -> TestClient[Any, Any]:
    settings = Settings(database_url=database_url, migrate_on_start=False)
    return await aiohttp_client(build_app(settings))


@pytest.fixture
def api(client: TestClient[Any, Any], world: TeamWorld) -> Api:
    """The team admin's API."""
    return Api(client, world.admin_token)


@pytest.fixture
def agent_api(client: TestClient[Any, Any], world: TeamWorld) -> Api:
    return Api(client, world.agent_token)
