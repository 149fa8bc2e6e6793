"""Point reads: one-row SELECTs run on the driver, outside any session."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, select

from tests.conftest import TeamWorld
from voicecrm.accounts.models import Team
from voicecrm.storage import Database
from voicecrm.storage.migrate import upgrade
from voicecrm.storage.point_read import PointRead

TEAM_NAME = PointRead(select(Team.name, Team.default_region).where(Team.id == bindparam("id")))


async def test_a_point_read_returns_the_row_as_a_tuple_or_none(
    database: Database, world: TeamWorld
) -> None:
    assert await database.point_read(TEAM_NAME, {"id": world.team_id}) == ("Acme", "US")
    assert await database.point_read(TEAM_NAME, {"id": world.team_id + 1000}) is None


async def test_a_missing_parameter_is_refused(database: Database) -> None:
    with pytest.raises(ValueError, match="no value for the parameter 'id'"):
        await database.point_read(TEAM_NAME, {})


async def test_an_in_memory_database_reads_through_the_engine() -> None:
    database = Database("sqlite+aiosqlite:///:memory:")
    try:
        await upgrade(database)
        assert await database.point_read(TEAM_NAME, {"id": 1}) is None
    finally:
        await database.close()
