"""The declarative base every table builds on.

A naming convention gives every constraint a stable name, so that Alembic
migrations written today still find the constraint they alter years later, on
SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Dialect, Integer, MetaData, TypeDecorator
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# The largest id either engine can hold (a signed 64-bit integer). Ids from outside (a path,
# a cursor, a filter) are checked against it: a larger number is not a missing row but an
# error in the driver (asyncpg and sqlite3 both refuse to bind it).
MAX_ID = 2**63 - 1


def one_of(column: str, values: Iterable[str]) -> str:
    """A CHECK condition that `column` holds one of `values`: `a = 'x' OR a = 'y' ...`.

    Not `a IN ('x', 'y')`: SQLite (3.40) codes a CHECK's IN list as a temporary
    index that it builds again for every row written (EXPLAIN shows OpenEphemeral
    and an IdxInsert per value). Contacts, written a million at a time by an import,
    took 7 to 10 µs a row with their two IN checks against 2 to 3 with equalities,
    side by side on a copy of the table. Tables written in bulk or on every call use
    this; the others may keep IN.
    """
    return " OR ".join(f"{column} = '{value}'" for value in values)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite stores datetimes as naive text; without this, values read back from
    SQLite and PostgreSQL would compare differently.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
