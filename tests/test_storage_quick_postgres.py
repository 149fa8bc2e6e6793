"""Quick reads on PostgreSQL: no BEGIN and COMMIT round trips around a call's lookups."""

from __future__ import annotations

from sqlalchemy import text

from voicecrm.storage import Database

# The id of the transaction a statement runs in: the same for two statements of one
# transaction, a new one for each statement in autocommit.
TRANSACTION_ID = text("SELECT txid_current()")


async def test_a_quick_read_runs_each_statement_on_its_own(postgres: Database) -> None:
    async with postgres.transaction(read_only=True, quick=True) as session:
        first = await session.scalar(TRANSACTION_ID)
        second = await session.scalar(TRANSACTION_ID)
    assert first != second


async def test_other_units_of_work_keep_one_transaction(postgres: Database) -> None:
    for options in ({"read_only": True}, {"quick": True}, {}):
        async with postgres.transaction(**options) as session:
            first = await session.scalar(TRANSACTION_ID)
            second = await session.scalar(TRANSACTION_ID)
        assert first == second, options
