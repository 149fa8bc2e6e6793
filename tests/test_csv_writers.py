"""The import's SQLite inserts write shared values as literals and store what binding would.

`sqlite_insert` is checked against the plain way, every value bound, on a real
SQLite database: the rows read back must be the same values of the same types.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from typing import Any

import pytest

from voicecrm.crm.csv_writers import sqlite_insert

COLUMNS = ("a", "b", "c", "d")
SCHEMA = "CREATE TABLE t (id INTEGER PRIMARY KEY, a, b, c, d, team, stamp)"


def stored(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
    """The values and their SQLite storage classes."""
    return list(
        db.execute(
            "SELECT a, b, c, d, team, stamp,"
            " typeof(a), typeof(b), typeof(c), typeof(d), typeof(team), typeof(stamp)"
            " FROM t ORDER BY id"
        )
    )


def values_in(sql: str) -> dict[str, str]:
    """What the INSERT puts in each column: "?" (bound) or a literal (none here has a comma)."""
    names, values = re.fullmatch(r"INSERT INTO t \((.*)\) VALUES \((.*)\)", sql).groups()  # type: ignore[union-attr]
    return dict(zip(names.split(", "), values.split(", "), strict=True))


def written_both_ways(
    rows: Sequence[tuple[Any, ...]], constants: dict[str, Any]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], str]:
    literal_db, bound_db = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    try:
        for connection in (literal_db, bound_db):
            connection.execute(SCHEMA)
        sql, bound = sqlite_insert("t", COLUMNS, rows, constants)
        literal_db.executemany(sql, bound)
        names = (*COLUMNS, *constants)
        bound_db.executemany(
            f"INSERT INTO t ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            [(*row, *constants.values()) for row in rows],
        )
        return stored(literal_db), stored(bound_db), sql
    finally:
        literal_db.close()
        bound_db.close()


def test_values_shared_by_the_whole_batch_become_literals_and_the_rest_are_bound() -> None:
    rows = [(1, "same", None, "x"), (2, "same", None, "y")]
    literal, bound, sql = written_both_ways(rows, {"team": 7, "stamp": "2026-11-26 08:00:00"})
    assert literal == bound
    assert values_in(sql) == {
        "a": "?",
        "b": "'same'",
        "c": "NULL",
        "d": "?",
        "team": "7",
        "stamp": "'2026-11-26 08:00:00'",
    }


@pytest.mark.parametrize(
    "shared",
    [
        "O'Brien; DROP TABLE t; --",
        "",
        "línea\nnueva ☎",
        0,
        -(2**63),
        2**63 - 1,
        1.5,
        -0.25,
        1e300,
        True,
        False,
        None,
        '{"vip": "it\'s"}',
    ],
)
def test_a_shared_value_is_stored_exactly_as_binding_it_would(shared: Any) -> None:
    rows = [(i, shared, shared, shared) for i in range(3)]
    literal, bound, _sql = written_both_ways(rows, {"team": shared, "stamp": None})
    assert literal == bound


@pytest.mark.parametrize(
    "awkward",
    [2**63, float("nan"), float("inf"), b"\x00bytes", "nul\x00inside"],
    ids=["beyond-int64", "nan", "inf", "bytes", "nul"],
)
def test_values_without_a_faithful_literal_are_bound(awkward: Any) -> None:
    rows = [(1, awkward, "v", "w"), (2, awkward, "v", "w")]
    sql, bound = sqlite_insert("t", COLUMNS, rows, {"team": awkward, "stamp": None})
    assert values_in(sql) == {
        "a": "?",
        "b": "?",
        "c": "'v'",
        "d": "'w'",
        "team": "?",
        "stamp": "NULL",
    }
    assert bound == [(1, awkward, awkward), (2, awkward, awkward)]
    if isinstance(awkward, int):
        return  # sqlite3 cannot bind it either: the import fails on it as it did before
    literal, plain, _sql = written_both_ways(rows, {"team": awkward, "stamp": None})
    assert literal == plain


def test_equal_values_of_different_types_are_not_taken_for_one_shared_value() -> None:
    rows = [(1, 1, 0, 1.0), (2, True, False, 1)]  # 1 == True == 1.0, yet stored differently
    literal, bound, sql = written_both_ways(rows, {})
    assert literal == bound
    assert set(values_in(sql).values()) == {"?"}


def test_a_single_row_or_a_batch_with_nothing_varying_is_written_whole() -> None:
    literal, bound, sql = written_both_ways([(1, "a", None, 2.5)], {"team": 3, "stamp": "s"})
    assert literal == bound
    assert "?" not in sql
    literal, bound, _sql = written_both_ways([(1, "a", None, 2.5)] * 3, {"team": 3, "stamp": "s"})
    assert literal == bound
    assert len(literal) == 3


def test_a_shared_value_is_converted_for_the_driver_once_not_once_a_row() -> None:
    converted: list[Any] = []

    def to_int(value: Any) -> int:
        converted.append(value)
        return int(value)

    same = [(1, True, "x", "w"), (2, True, "y", "w")]
    sql, bound = sqlite_insert("t", COLUMNS, same, {}, converters=(None, to_int, None, None))
    assert values_in(sql)["b"] == "1"
    assert bound == [(1, "x"), (2, "y")]
    assert converted == [True]
    converted.clear()
    mixed = [(1, True, "x", "w"), (2, False, "y", "w")]
    sql, bound = sqlite_insert("t", COLUMNS, mixed, {}, converters=(None, to_int, None, None))
    assert values_in(sql)["b"] == "?"
    assert bound == [(1, 1, "x"), (2, 0, "y")]
    assert converted == [True, False]
