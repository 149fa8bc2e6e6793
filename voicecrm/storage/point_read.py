"""One-row lookups that skip the ORM: the caller-ID lookup at the start of every call.

A unit of work through an `AsyncSession` costs about 0.6 ms before any SQL runs
(session, transaction bookkeeping, the greenlet bridge, result processing),
while the indexed SELECT behind a known caller costs SQLite about 13 µs and
PostgreSQL one round trip. For the one lookup every call waits on, that
overhead is most of the time, so `PointRead` compiles a Core SELECT once per
dialect and `Database.point_read` runs it on the driver itself:

- on SQLite, on a read-only `sqlite3` connection on the loop's thread, in
  autocommit: one SELECT is its own read transaction and, in WAL mode, never
  waits for a writer;
- on PostgreSQL, on a connection borrowed from the engine's own pool, with
  asyncpg's prepared-statement cache: one round trip.

Only the statement's own columns come back, as a plain tuple, with no type
processing: the caller converts (SQLite gives booleans as 0 and 1). Anything
that writes, or reads more than a handful of rows, belongs in a transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Dialect


class PointRead:
    """A SELECT of at most one row, compiled once for each dialect it meets."""

    __slots__ = ("_compiled", "statement")

    def __init__(self, statement: Select[*tuple[Any, ...]]) -> None:
        self.statement = statement
        self._compiled: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {}

    def compiled(self, dialect: Dialect) -> tuple[str, tuple[str, ...], dict[str, Any]]:
        """The SQL text, its parameters' names in order, and the statement's own values."""
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.statement.compile(dialect=dialect)
            if compiled.positiontup is None:
                raise ValueError(f"{dialect.name} does not use positional parameters")
            # Values the statement carries itself (a LIMIT); a `bindparam` given no value
            # is required, so a forgotten one is an error rather than a silent NULL.
            defaults = {
                name: value
                for name, value in compiled.params.items()
                if not compiled.binds[name].required
            }
            found = (str(compiled), tuple(compiled.positiontup), defaults)
            self._compiled[dialect.name] = found
        return found

    def arguments(self, dialect: Dialect, values: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        """The SQL and the positional values for one execution."""
        sql, names, defaults = self.compiled(dialect)
        try:
            return sql, tuple(values[name] if name in values else defaults[name] for name in names)
        except KeyError as missing:
            raise ValueError(f"no value for the parameter {missing}") from None
