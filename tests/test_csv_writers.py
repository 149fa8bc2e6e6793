"""The import's SQLite inserts bind shared values once a statement, and store what the
plain way would.

`sqlite_insert` is checked against the plain way, every value of every row bound,
on a real SQLite database: the rows read back must be the same values of the same
types.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from typing import Any

import pytest

from voicecrm.crm.csv_plan import FIELDS, new_contact_fields, new_contact_values
from voicecrm.crm.csv_rows import ContactRow
from voicecrm.crm.csv_writers import (
    SQLITE_MAX_PARAMETERS,
    SqliteInsert,
    sqlite_insert,
)

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
    """What the INSERT's first row puts in each column: "?n", the nth value bound."""
    found = re.fullmatch(r"INSERT INTO t \((.*?)\) VALUES \(([^()]*)\)(, \([^()]*\))*", sql)
    assert found is not None, sql
    names, values = found.group(1, 2)
    return dict(zip(names.split(", "), values.split(", "), strict=True))


def run(db: sqlite3.Connection, insert: SqliteInsert, most_rows: int = 500) -> str:
    """Run the insert's statements; the first one's SQL."""
    statements = list(insert.statements(most_rows))
    for sql, parameters in statements:
        db.execute(sql, parameters)
    return statements[0][0]


def written_both_ways(
    rows: Sequence[tuple[Any, ...]], constants: dict[str, Any]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], str]:
    multi_db, plain_db = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    try:
        for connection in (multi_db, plain_db):
            connection.execute(SCHEMA)
        sql = run(multi_db, sqlite_insert("t", COLUMNS, rows, constants))
        names = (*COLUMNS, *constants)
        plain_db.executemany(
            f"INSERT INTO t ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            [(*row, *constants.values()) for row in rows],
        )
        return stored(multi_db), stored(plain_db), sql
    finally:
        multi_db.close()
        plain_db.close()


def test_values_shared_by_the_whole_batch_are_bound_once_and_the_rest_row_by_row() -> None:
    rows = [(1, "same", None, "x"), (2, "same", None, "y")]
    stamp = "2026-11-26 08:00:00"
    multi, plain, sql = written_both_ways(rows, {"team": 7, "stamp": stamp})
    assert multi == plain
    assert values_in(sql) == {
        "b": "?1",
        "c": "?2",
        "team": "?3",
        "stamp": "?4",
        "a": "?5",
        "d": "?6",
    }
    [(_sql, parameters)] = sqlite_insert(
        "t", COLUMNS, rows, {"team": 7, "stamp": stamp}
    ).statements()
    assert parameters == ("same", None, 7, stamp, 1, "x", 2, "y")


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
    multi, plain, _sql = written_both_ways(rows, {"team": shared, "stamp": None})
    assert multi == plain


@pytest.mark.parametrize(
    "awkward",
    [2**63, float("nan"), float("inf"), b"\x00bytes", "nul\x00inside"],
    ids=["beyond-int64", "nan", "inf", "bytes", "nul"],
)
def test_values_sqlite_has_no_literal_for_are_stored_as_they_are(awkward: Any) -> None:
    rows = [(1, awkward, "v", "w"), (2, awkward, "v", "w")]
    insert = sqlite_insert("t", COLUMNS, rows, {"team": awkward, "stamp": None})
    [(sql, parameters)] = insert.statements()
    if awkward == awkward:
        bound_as = {"b": "?1", "c": "?2", "d": "?3", "team": "?4", "stamp": "?5", "a": "?6"}
        assert values_in(sql) == bound_as
        assert parameters == (awkward, "v", "w", awkward, None, 1, 2)
    else:  # NaN equals nothing, not even itself: it is bound row by row
        bound_as = {"c": "?1", "d": "?2", "team": "?3", "stamp": "?4", "a": "?5", "b": "?6"}
        assert values_in(sql) == bound_as
        assert parameters == ("v", "w", awkward, None, 1, awkward, 2, awkward)
    if isinstance(awkward, int):
        return  # sqlite3 cannot bind it either: the import fails on it as it did before
    multi, plain, _sql = written_both_ways(rows, {"team": awkward, "stamp": None})
    assert multi == plain


def test_equal_values_of_different_types_are_not_taken_for_one_shared_value() -> None:
    rows = [(1, 1, 0, 1.0), (2, True, False, 1)]  # 1 == True == 1.0, yet stored differently
    multi, plain, sql = written_both_ways(rows, {})
    assert multi == plain
    assert set(values_in(sql).values()) == {"?1", "?2", "?3", "?4"}


def test_a_single_row_or_a_batch_with_nothing_varying_binds_each_value_once() -> None:
    multi, plain, sql = written_both_ways([(1, "a", None, 2.5)], {})
    assert multi == plain
    assert sql == "INSERT INTO t (a, b, c, d) VALUES (?1, ?2, ?3, ?4)"
    multi, plain, sql = written_both_ways([(1, "a", None, 2.5)] * 3, {"team": 3, "stamp": "s"})
    assert multi == plain
    assert len(multi) == 3
    assert set(re.findall(r"\?\d+", sql)) == {"?1", "?2", "?3", "?4", "?5", "?6"}


def test_a_batch_is_split_into_statements_of_at_most_so_many_rows_kept_in_order() -> None:
    rows = [(i, f"name {i}", i % 2 == 0, None) for i in range(15)]
    insert = sqlite_insert("t", COLUMNS, rows, {"team": 3, "stamp": "s"})
    assert [sql.count("), (") + 1 for sql, _ in insert.statements(4)] == [4, 4, 4, 2, 1]
    multi, plain = sqlite3.connect(":memory:"), sqlite3.connect(":memory:")
    for db in (multi, plain):
        db.execute(SCHEMA)
    run(multi, insert, most_rows=4)
    plain.executemany("INSERT INTO t (a, b, c, d, team, stamp) VALUES (?, ?, ?, ?, 3, 's')", rows)
    assert stored(multi) == stored(plain)


def test_batches_of_any_size_share_a_dozen_statement_texts() -> None:
    """Each text is compiled and cached once a connection: texts must not grow with batches."""
    texts = set()
    for count in range(2, 3_001):  # (one row alone shares every value: a text of its own)
        rows = [(i, "x", None, i) for i in range(count)]
        insert = sqlite_insert("t", COLUMNS, rows, {"team": 1})
        texts |= {sql for sql, _ in insert.statements()}
    assert len(texts) == 11  # 1,024 rows, and 512, 256, ... 1 for the rest


def test_a_long_value_every_row_shares_is_bound_once_not_repeated_in_the_text() -> None:
    note = "Met at the trade show; call back about the yearly plan. " * 20
    rows = [(i, note, "short", None) for i in range(1_024)]
    multi, plain, sql = written_both_ways(rows, {})
    assert multi == plain
    assert note not in sql
    [(_sql, parameters)] = sqlite_insert("t", COLUMNS, rows, {}).statements()
    assert parameters.count(note) == 1


def test_a_statement_binds_no_more_values_than_sqlite_allows() -> None:
    wide = tuple(f"c{i}" for i in range(40))
    rows = [tuple(range(r, r + 40)) for r in range(2_000)]
    for sql, parameters in sqlite_insert("w", wide, rows, {"team": 1}).statements(2_000):
        assert len(parameters) <= SQLITE_MAX_PARAMETERS
        assert f"?{len(parameters)}" in sql


def test_batches_written_at_different_times_share_one_statement_text() -> None:
    """The time is bound, not a literal: each text is compiled once and cached by the driver."""
    rows = [(i, "same", None, i) for i in range(4)]
    first = sqlite_insert("t", COLUMNS, rows, {"team": 3, "stamp": "2026-11-26 08:00:00"})
    later = sqlite_insert("t", COLUMNS, rows, {"team": 3, "stamp": "2026-11-26 08:00:01"})
    assert [sql for sql, _ in first.statements()] == [sql for sql, _ in later.statements()]


def test_batches_sharing_other_values_share_one_statement_text() -> None:
    """A file sorted by company: each batch shares another company, and one text serves all."""
    acme = sqlite_insert("t", COLUMNS, [(i, "Acme", None, i) for i in range(4)], {})
    beta = sqlite_insert("t", COLUMNS, [(i, "Beta & Co's", None, i) for i in range(4)], {})
    assert [sql for sql, _ in acme.statements()] == [sql for sql, _ in beta.statements()]


def test_a_shared_value_is_converted_for_the_driver_once_not_once_a_row() -> None:
    converted: list[Any] = []

    def to_int(value: Any) -> int:
        converted.append(value)
        return int(value)

    same = [(1, True, "x", "w"), (2, True, "y", "w")]
    [(sql, parameters)] = sqlite_insert(
        "t", COLUMNS, same, {}, converters=(None, to_int, None, None)
    ).statements()
    assert values_in(sql)["b"] == "?1"
    assert parameters == (1, "w", 1, "x", 2, "y")
    assert converted == [True]
    converted.clear()
    mixed = [(1, True, "x", "w"), (2, False, "y", "w")]
    [(sql, parameters)] = sqlite_insert(
        "t", COLUMNS, mixed, {}, converters=(None, to_int, None, None)
    ).statements()
    assert values_in(sql)["b"] == "?3"
    assert parameters == ("w", 1, 1, "x", 2, 0, "y")
    assert converted == [True, False]


DEFAULTS: dict[str, Any] = {
    "name": None,
    "company": None,
    "type": "customer",
    "caller_id_name": None,
    "carrier": None,
    "source": "import",
    "responsible_user_id": None,
    "rating": 0,
    "status": "open",
    "blocked": False,
    "stage_id": None,
    "custom_fields": {},
}


@pytest.mark.parametrize(
    ("row", "given"),
    [
        (
            (
                1,
                2,
                "Jane Roe",
                "Jane Roe",
                (),
                (("+14155550123", "415-555-0123", "mobile", "US", None),),
                (),
                (),
                None,
                (),
            ),
            {"name": "Jane Roe"},
        ),
        (
            (
                2,
                3,
                "Acme",
                None,
                (("company", "Acme"),),
                (),
                (("a@acme.test", "work"),),
                ("vip",),
                None,
                (),
            ),
            {"name": "Acme", "company": "Acme"},
        ),
        (
            (
                3,
                4,
                "Ann",
                "Ann",
                (
                    ("company", "Co"),
                    ("type", "collaborator"),
                    ("caller_id_name", "ANN"),
                    ("status", "won"),
                    ("rating", 3),
                    ("blocked", True),
                    ("stage_id", 7),
                    ("responsible_user_id", 2),
                    ("source", "web"),
                ),
                (("+447700900123", "07700 900123", "work", "GB", "Vodafone"),),
                (),
                (),
                '{"plan": "gold", "seats": 3}',
                (("call back", "info", False),),
            ),
            {
                "name": "Ann",
                "company": "Co",
                "type": "collaborator",
                "caller_id_name": "ANN",
                "carrier": "Vodafone",
                "source": "web",
                "responsible_user_id": 2,
                "rating": 3,
                "status": "won",
                "blocked": True,
                "stage_id": 7,
                "custom_fields": {"plan": "gold", "seats": 3},
            },
        ),
    ],
    ids=["phone-only", "company-without-name", "every-field"],
)
def test_a_new_contacts_table_row_holds_what_the_plan_decided_for_it(
    row: ContactRow, given: dict[str, Any]
) -> None:
    """The table row (id, then FIELDS) is built straight from the read row; the plan's dict
    of fields, for a contact other rows merge into, holds the same values."""
    values = new_contact_values(row)
    assert values == {**DEFAULTS, **given}
    expected = (
        41,
        *(values[name] for name in FIELDS if name != "custom_fields"),
        json.dumps(values["custom_fields"]),
    )
    assert FIELDS[-1] == "custom_fields"
    assert (41, *new_contact_fields(row)) == expected
