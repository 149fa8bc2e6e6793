"""How one row's cells become contact fields: `read_row`, by a file's `ColumnPlan`.

`read_row` turns one record's cells into a `ContactRow` tuple or a `RowError`.
It is a pure function of the cells and a picklable `RowContext` (the column plan
and the team's stages, users and sources, resolved once), because it is the
CPU-heavy half of an import (phone numbers are parsed here) and runs in worker
processes while the database writes earlier batches.

A cell of a phone or email column may hold several values separated by `;` or
` ::: ` (as Google writes them), each optionally prefixed by `label: `, which is
the form voicecrm's own export writes (`work: +14155550123; mobile: +1...`).
Tags are separated by `;`, `,` or ` ::: `. Empty cells give nothing: an import
never clears a field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import ValidationError

from voicecrm.crm.csv_columns import (
    MAX_EMAILS,
    MAX_LABEL,
    MAX_NOTE,
    MAX_PHONES,
    MAX_TAG,
    MAX_TAGS,
    MAX_TEXT,
    ColumnPlan,
    ValueColumn,
    unguard,
)
from voicecrm.crm.csv_phones import read_phone
from voicecrm.crm.csv_records import Record
from voicecrm.crm.schemas import (
    UNKNOWN_CALLER,
    ContactFields,
    ContactStatus,
    ContactType,
    NoteType,
)
from voicecrm.errors import InvalidPhoneNumber


@dataclass(frozen=True, slots=True)
class RowContext:
    """Everything `read_row` needs besides the cells; picklable, built once per import."""

    plan: ColumnPlan
    default_region: str
    stages: Mapping[str, int]  # case-folded stage name -> id
    users: Mapping[str, int]  # lower-case email -> user id
    sources: frozenset[str]
    default_source: str = "import"


class RowError(NamedTuple):
    """Why one row was left out: its number among data rows, the line it starts on."""

    row: int
    line: int
    field: str | None
    column: str | None
    message: str


# A phone number of a row: E.164, the text as written, label, region, carrier.
PhoneValue = tuple[str, str, str, str | None, str | None]
# A note of a row: its text, its type (a `NoteType` value) and whether it is pinned.
NoteValue = tuple[str, str, bool]
# One row read into contact fields (only what the row gives is set):
#   (row, line, display_name, name, values, phones, emails, tags, custom, notes)
# `values` holds (field, value) for the single-valued fields the row gives, `emails`
# (address, label), `custom` the row's custom fields as a JSON object, or None,
# `notes` (text, type, pinned) for each note the notes cells give (`_read_notes`).
# `name` is set only when the row names the person; `display_name` is what a new
# contact is called otherwise (company, email, or "Unknown Caller"), and is never
# written over the name of a contact that already exists.
#
# Plain tuples, unpacked where they are used, and JSON text: rows cross from worker
# processes by the thousand and wait in read-ahead batches. Plain tuples unpickle
# five times faster than named ones, and the garbage collector stops tracking them,
# where named tuples, dicts and lists would be walked by every full collection (with
# dataclass rows, a fifth of an import's time).
ContactRow = tuple[
    int,
    int,
    str,
    str | None,
    tuple[tuple[str, Any], ...],
    tuple[PhoneValue, ...],
    tuple[tuple[str, str], ...],
    tuple[str, ...],
    str | None,
    tuple[NoteValue, ...],
]


@dataclass(slots=True)
class _Draft:
    """A row being read, field by field, before it becomes a `ContactRow`."""

    display_name: str = UNKNOWN_CALLER
    name: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    phones: list[PhoneValue] = field(default_factory=list)
    emails: list[tuple[str, str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    custom: dict[str, Any] = field(default_factory=dict)
    notes: list[NoteValue] = field(default_factory=list)


class _Refused(Exception):
    """A cell's value is wrong; carries the field and column for the row error."""

    def __init__(self, message: str, field: str | None, column: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.column = column


_SPLIT_VALUES = re.compile(r"\s*(?::::|;)\s*")
_SPLIT_TAGS = re.compile(r"\s*(?::::|;|,)\s*")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


def _labelled(item: str, default: str) -> tuple[str, str]:
    if ": " in item:
        label, _, value = item.partition(": ")
        if label.strip() and value.strip():
            return label.strip()[:MAX_LABEL], value.strip()
    return default, item.strip()


def _items(cell: str) -> list[str]:
    cell = unguard(cell)
    return _SPLIT_VALUES.split(cell) if ";" in cell or ":::" in cell else [cell]


# Single-valued field -> (its value, the column it came from), for the fields a row gives.
Given = dict[str, tuple[str, str]]


def _given(ctx: RowContext, cells: Sequence[str]) -> Given:
    """The first non-empty cell of each single-valued field the file has columns for."""
    given: Given = {}
    header = ctx.plan.header
    count = len(cells)
    for name, indexes in ctx.plan.single.items():
        for index in indexes:
            if index < count and (value := cells[index].strip()):
                given[name] = (unguard(value), header[index])
                break
    return given


def _short(value: str, column: str, field: str) -> str:
    if len(value) > MAX_TEXT:
        raise _Refused(f"{field} is longer than {MAX_TEXT} characters", field, column)
    return value


def _choice(value: str, column: str, field: str, allowed: Sequence[str]) -> str:
    folded = value.casefold()
    if folded not in allowed:
        raise _Refused(f"{field} {value!r} is not one of {', '.join(allowed)}", field, column)
    return folded


_TYPES = tuple(t.value for t in ContactType)
_STATUSES = tuple(s.value for s in ContactStatus)


def _read_values(ctx: RowContext, given: Given, row: _Draft) -> None:
    values = row.values
    for name in ("company", "caller_id_name"):
        if found := given.get(name):
            values[name] = _short(*found, name)
    if found := given.get("type"):
        values["type"] = _choice(*found, "type", _TYPES)
    if found := given.get("status"):
        values["status"] = _choice(*found, "status", _STATUSES)
    if found := given.get("rating"):
        if found[0] not in ("0", "1", "2", "3"):
            raise _Refused(f"rating {found[0]!r} is not 0, 1, 2 or 3", "rating", found[1])
        values["rating"] = int(found[0])
    if found := given.get("blocked"):
        folded = found[0].casefold()
        if folded not in _TRUE | _FALSE:
            raise _Refused(f"blocked {found[0]!r} is not true or false", "blocked", found[1])
        values["blocked"] = folded in _TRUE
    if found := given.get("stage"):
        stage_id = ctx.stages.get(found[0].casefold())
        if stage_id is None:
            known = ", ".join(sorted(ctx.stages)) or "none yet"
            raise _Refused(
                f"unknown stage {found[0]!r} (the team's stages: {known})", "stage", found[1]
            )
        values["stage_id"] = stage_id
    if found := given.get("responsible"):
        user_id = ctx.users.get(found[0].lower())
        if user_id is None:
            raise _Refused(f"no user of the team has email {found[0]!r}", "responsible", found[1])
        values["responsible_user_id"] = user_id
    if found := given.get("source"):
        if found[0] not in ctx.sources:
            raise _Refused(
                f"unknown source {found[0]!r}: use one of {', '.join(sorted(ctx.sources))}",
                "source",
                found[1],
            )
        values["source"] = found[0]


def _read_custom(ctx: RowContext, cells: Sequence[str], given: Given, row: _Draft) -> None:
    custom: dict[str, Any] = {}
    column = None
    if found := given.get("custom_fields"):
        column = found[1]
        try:
            parsed = json.loads(found[0])
        except json.JSONDecodeError as err:
            raise _Refused(f"custom_fields is not JSON: {err}", "custom_fields", column) from None
        if not isinstance(parsed, dict):
            raise _Refused("custom_fields must be a JSON object", "custom_fields", column)
        custom.update(parsed)
    for key, index in ctx.plan.custom:
        if index < len(cells) and cells[index].strip():
            custom[key] = unguard(cells[index].strip())
            column = column or ctx.plan.header[index]
    if custom:
        try:
            ContactFields(custom_fields=custom)
        except ValidationError as err:
            message = err.errors(include_url=False)[0]["msg"]
            raise _Refused(message, "custom_fields", column) from None
        row.custom = custom


def _label_for(cells: Sequence[str], column: ValueColumn, default: str) -> str:
    if column.label_index is not None and column.label_index < len(cells):
        label = cells[column.label_index].strip().lstrip("* ").strip().lower()
        if label:
            return label[:MAX_LABEL]
    return column.label or default


def _labelled_values(
    cells: Sequence[str], columns: Sequence[ValueColumn], default: str
) -> Iterator[tuple[ValueColumn, str, str]]:
    """(column, label, value) for each value in the cells of phone or email `columns`."""
    count = len(cells)
    for column in columns:
        cell = cells[column.index].strip() if column.index < count else ""
        if not cell:
            continue
        column_label = _label_for(cells, column, default)
        for item in _items(cell):
            if item:
                yield column, *_labelled(item, column_label)


def _read_phones(ctx: RowContext, cells: Sequence[str], row: _Draft) -> None:
    seen: set[str] = set()
    for column, label, raw in _labelled_values(cells, ctx.plan.phones, "mobile"):
        try:
            parsed = read_phone(raw, ctx.default_region)
        except InvalidPhoneNumber as err:
            raise _Refused(err.detail, "phones", column.header) from None
        if parsed.e164 not in seen:
            seen.add(parsed.e164)
            row.phones.append((parsed.e164, raw[:100], label, parsed.region, parsed.carrier))
    if len(row.phones) > MAX_PHONES:
        raise _Refused(f"more than {MAX_PHONES} phone numbers", "phones", None)


def _read_emails(ctx: RowContext, cells: Sequence[str], row: _Draft) -> None:
    seen: set[str] = set()
    for column, label, raw in _labelled_values(cells, ctx.plan.emails, "work"):
        email = raw.lower()
        if len(email) > 320 or not _EMAIL.match(email):
            raise _Refused(f"{raw!r} is not an email address", "emails", column.header)
        if email not in seen:
            seen.add(email)
            row.emails.append((email, label))
    if len(row.emails) > MAX_EMAILS:
        raise _Refused(f"more than {MAX_EMAILS} email addresses", "emails", None)


def _read_tags(ctx: RowContext, cells: Sequence[str], row: _Draft) -> None:
    tags: dict[str, None] = {}
    for index in ctx.plan.tags:
        cell = cells[index].strip() if index < len(cells) else ""
        if not cell:
            continue
        for item in _SPLIT_TAGS.split(cell):
            tag = unguard(item.strip()).lower()
            # Google's system groups ("* myContacts", "* starred") are not the person's tags.
            if not tag or tag.startswith("*"):
                continue
            if len(tag) > MAX_TAG:
                raise _Refused(
                    f"tag {item[:40]!r}... is longer than {MAX_TAG} characters",
                    "tags",
                    ctx.plan.header[index],
                )
            tags[tag] = None
    if len(tags) > MAX_TAGS:
        raise _Refused(f"more than {MAX_TAGS} tags", "tags", None)
    row.tags = list(tags)


def _read_notes(ctx: RowContext, cells: Sequence[str], row: _Draft) -> None:
    """Each non-empty notes cell is one General note, as written (line breaks kept),
    unless it holds notes as voicecrm's export writes them (`note_list`). A text the
    row already gives is not given twice."""
    for index in ctx.plan.notes:
        text = unguard(cells[index].strip()) if index < len(cells) else ""
        if not text:
            continue
        column = ctx.plan.header[index]
        listed = note_list(text)
        for content, kind, pinned in listed if listed is not None else [(text, "general", False)]:
            if len(content) > MAX_NOTE:
                raise _Refused(f"the note is longer than {MAX_NOTE} characters", "notes", column)
            if kind not in _NOTE_TYPES:
                raise _Refused(
                    f"unknown note type {kind[:40]!r}: one of {', '.join(_NOTE_TYPES)}",
                    "notes",
                    column,
                )
            if all(content != note[0] for note in row.notes):
                row.notes.append((content, kind, pinned))


_NOTE_TYPES = tuple(kind.value for kind in NoteType)


def note_list(text: str) -> list[NoteValue] | None:
    """The notes of a cell holding a JSON array of notes, or None for any other text.

    voicecrm's export writes a contact's notes as `[{"type": "warning", "pinned":
    true, "content": "..."}, ...]`, so that importing the file gives them back
    with their types. A cell is read so only if it is such an array: each item an
    object with a "content" text (other keys, such as "created_at", are left);
    "pinned" is true only when it is JSON `true`.
    The type is checked by the caller, so that a misspelt one is an error, not a
    note whose text is JSON.
    """
    if not text.startswith("[") or not text.endswith("]"):
        return None
    try:
        items = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
        return None
    if not items or not all(
        isinstance(item, dict) and isinstance(item.get("content"), str) for item in items
    ):
        return None
    notes: list[NoteValue] = []
    for item in items:
        # NUL as the cells lose theirs (`read_row`), here from a "\u0000" escape.
        content = item["content"].replace("\x00", "").strip()
        if content:
            kind = item.get("type", "general")
            notes.append((content, str(kind).strip().lower(), item.get("pinned", False) is True))
    return notes


def _read_name(given: Given, row: _Draft) -> None:
    if found := given.get("name"):
        row.name = _short(*found, "name")
    else:
        parts = [given[p][0] for p in ("first_name", "middle_name", "last_name") if p in given]
        if parts:
            row.name = _short(" ".join(parts), "name", "name")
    email = row.emails[0][0] if row.emails else None
    row.display_name = row.name or row.values.get("company") or email or UNKNOWN_CALLER


def read_row(ctx: RowContext, row: int, line: int, cells: Sequence[str]) -> ContactRow | RowError:
    """One record's cells as contact fields, or the reason the row cannot be imported.

    NUL characters are dropped: they mean nothing in contact data, PostgreSQL cannot
    store them in text, and SQLite's functions cut text short at them.
    """
    if "\x00" in "".join(cells):
        cells = [cell.replace("\x00", "") for cell in cells]
    width = len(ctx.plan.header)
    if len(cells) > width and any(cell.strip() for cell in cells[width:]):
        return RowError(
            row,
            line,
            None,
            None,
            f"the row has {len(cells)} cells but the header has {width} columns "
            "(an unquoted comma or quote?)",
        )
    contact = _Draft()
    try:
        given = _given(ctx, cells)
        _read_values(ctx, given, contact)
        _read_custom(ctx, cells, given, contact)
        _read_phones(ctx, cells, contact)
        _read_emails(ctx, cells, contact)
        _read_tags(ctx, cells, contact)
        _read_notes(ctx, cells, contact)
        _read_name(given, contact)
    except _Refused as refused:
        return RowError(row, line, refused.field, refused.column, refused.message)
    if not (contact.name or contact.phones or contact.emails or contact.values.get("company")):
        return RowError(row, line, None, None, "the row has no name, company, phone or email")
    return (
        row,
        line,
        contact.display_name,
        contact.name,
        tuple(contact.values.items()),
        tuple(contact.phones),
        tuple(contact.emails),
        tuple(contact.tags),
        json.dumps(contact.custom) if contact.custom else None,
        tuple(contact.notes),
    )


def read_rows(ctx: RowContext, records: Sequence[Record]) -> list[ContactRow | RowError]:
    """`read_row` over a batch: the unit of work handed to a worker process."""
    return [read_row(ctx, row, line, cells) for row, line, cells in records]
