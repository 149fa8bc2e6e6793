"""A transaction PostgreSQL aborts to break a deadlock is run again, not lost."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import make_team
from voicecrm.storage import Database


async def test_the_loser_of_a_deadlock_runs_again_after_the_winner_commits(
    postgres: Database,
) -> None:
    first = (await make_team(postgres, "First")).team_id
    second = (await make_team(postgres, "Second")).team_id
    locked = {first: asyncio.Event(), second: asyncio.Event()}
    attempts: Counter[str] = Counter()

    def crossing(label: str, mine: int, theirs: int) -> Callable[[AsyncSession], Awaitable[None]]:
        async def work(session: AsyncSession) -> None:
            attempts[label] += 1
            rename = text("UPDATE teams SET name = :name WHERE id = :id")
            await session.execute(rename, {"name": label, "id": mine})
            locked[mine].set()
            await locked[theirs].wait()  # each holds one row and wants the other's
            await session.execute(rename, {"name": label, "id": theirs})

        return work

    await asyncio.gather(
        postgres.run(crossing("a", first, second)),
        postgres.run(crossing("b", second, first)),
    )

    assert sorted(attempts.values()) == [1, 2]
    (loser,) = [label for label, count in attempts.items() if count == 2]
    async with postgres.transaction(read_only=True) as session:
        names = await session.scalars(
            text("SELECT name FROM teams WHERE id IN (:a, :b)"), {"a": first, "b": second}
        )
        assert list(names) == [loser, loser]  # the loser's second run committed last, whole


async def test_other_errors_are_not_run_again(postgres: Database) -> None:
    team = (await make_team(postgres, "Only")).team_id
    runs = 0

    async def duplicate(session: AsyncSession) -> None:
        nonlocal runs
        runs += 1
        await session.execute(
            text("INSERT INTO teams (id, name) VALUES (:id, 'again')"), {"id": team}
        )

    with pytest.raises(IntegrityError):
        await postgres.run(duplicate)
    assert runs == 1
