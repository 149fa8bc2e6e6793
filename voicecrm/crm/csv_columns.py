"""What the columns of a contacts CSV mean, and how one row's cells become contact fields.

People bring contacts from Google Contacts, from Outlook, from a spreadsheet they
typed themselves, or from a voicecrm export; each names its columns its own way.
`plan_columns` reads the header once, recognises those names (and takes an
explicit mapping where the names are not recognised or mean something else),
and refuses a file it cannot make sense of before anything is written.

`read_row` then turns one record's cells into a `ContactRow` or a `RowError`.
It is a pure function of the cells and a picklable `RowContext` (the column plan
and the team's stages, users and sources, resolved once), because it is the
CPU-heavy half of an import (phone numbers are parsed here) and may run in
worker processes while the database writes the previous batch.

Mapping targets (the values of an explicit mapping, `CSV column -> target`):

    name, first_name, middle_name, last_name, company, caller_id_name,
    type, status, rating, blocked, stage (a stage's name),
    responsible (a team user's email), source, tags,
    phone, phone.<label>, phones, email, email.<label>, emails,
    custom_fields (a JSON object), custom.<key>, ignore

A header spelled `custom.<key>` is read as that custom field without a mapping.
A cell of a phone or email column may hold several values separated by `;` or
` ::: ` (as Google writes them), each optionally prefixed by `label: `, which is
the form voicecrm's own export writes (`work: +14155550123; mobile: +1...`).
Tags are separated by `;`, `,` or ` ::: `. Empty cells give nothing: an import
never clears a field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import ValidationError

from voicecrm.crm.phones import normalize_phone
from voicecrm.crm.schemas import (
    UNKNOWN_CALLER,
    ContactFields,
    ContactStatus,
    ContactType,
)
from voicecrm.errors import InvalidCSV, InvalidPhoneNumber

MAX_PHONES = 20
MAX_EMAILS = 20
MAX_TAGS = 100
MAX_TEXT = 200
MAX_LABEL = 50
MAX_TAG = 100

# Fields a row gives at most one value for; when several columns map to one of
# them (Google's "Organization 1 - Name" and "Organization 2 - Name"), the first
# non-empty cell in column order wins.
SINGLE_FIELDS = (
    "name",
    "first_name",
    "middle_name",
    "last_name",
    "company",
    "caller_id_name",
    "type",
    "status",
    "rating",
    "blocked",
    "stage",
    "responsible",
    "source",
    "custom_fields",
)
MULTI_FIELDS = ("phone", "phones", "email", "emails", "tags")
IGNORE = "ignore"

# voicecrm's own export header, in order. Import reads every column but these four
# back: ids and timestamps belong to the database that wrote the file, and the
# carrier is derived from the phone number.
EXPORT_COLUMNS = (
    "id",
    "name",
    "company",
    "type",
    "phones",
    "emails",
    "tags",
    "stage",
    "status",
    "rating",
    "source",
    "responsible",
    "caller_id_name",
    "carrier",
    "blocked",
    "custom_fields",
    "created_at",
    "updated_at",
)
_EXPORT_ONLY = ("id", "carrier", "created at", "updated at")


def header_key(name: str) -> str:
    """A header as compared: no BOM, case-folded, underscores and runs of spaces as one space."""
    return " ".join(name.replace("\ufeff", "").replace("_", " ").casefold().split())


# Header (as `header_key` gives it) -> target. Labels follow the target after a dot.
_KNOWN: dict[str, str] = {
    # voicecrm's export, and what people name such columns in their own sheets
    "name": "name",
    "full name": "name",
    "display name": "name",
    "contact name": "name",
    "company": "company",
    "company name": "company",
    "organization": "company",
    "organisation": "company",
    "organization name": "company",
    "business name": "company",
    "type": "type",
    "contact type": "type",
    "phones": "phones",
    "phone": "phone",
    "phone number": "phone",
    "telephone": "phone",
    "tel": "phone",
    "mobile": "phone.mobile",
    "mobile number": "phone.mobile",
    "cell": "phone.mobile",
    "cell phone": "phone.mobile",
    "work phone": "phone.work",
    "emails": "emails",
    "email": "email",
    "e-mail": "email",
    "email address": "email",
    "mail": "email",
    "tags": "tags",
    "tag": "tags",
    "stage": "stage",
    "status": "status",
    "rating": "rating",
    "source": "source",
    "responsible": "responsible",
    "owner": "responsible",
    "caller id name": "caller_id_name",
    "blocked": "blocked",
    "custom fields": "custom_fields",
    # Google Contacts (both the older and the current export); numbered columns below
    "given name": "first_name",
    "additional name": "middle_name",
    "family name": "last_name",
    "labels": "tags",
    "group membership": "tags",
    # Outlook
    "first name": "first_name",
    "middle name": "middle_name",
    "last name": "last_name",
    "surname": "last_name",
    "e-mail address": "email",
    "e-mail 2 address": "email",
    "e-mail 3 address": "email",
    "categories": "tags",
    "primary phone": "phone.main",
    "mobile phone": "phone.mobile",
    "business phone": "phone.work",
    "business phone 2": "phone.work",
    "company main phone": "phone.company",
    "home phone": "phone.home",
    "home phone 2": "phone.home",
    "other phone": "phone.other",
    "car phone": "phone.car",
    "assistant's phone": "phone.assistant",
    "callback": "phone.callback",
    "radio phone": "phone.radio",
    "pager": "phone.pager",
    "isdn": "phone.isdn",
    "tty/tdd phone": "phone.tty",
    "business fax": "phone.fax",
    "home fax": "phone.fax",
    "other fax": "phone.fax",
}
for _name in _EXPORT_ONLY:
    _KNOWN[_name] = IGNORE

# Google: "Phone 1 - Value" with its label in "Phone 1 - Type" (older) or "- Label" (current).
_GOOGLE_NUMBERED = re.compile(r"^(phone|e-mail|organization) (\d+) - (value|type|label|name)$")
_LABEL_TARGETS = ("phone label", "email label")


@dataclass(frozen=True, slots=True)
class ValueColumn:
    """A phone or email source: a column, and where its label comes from."""

    index: int
    header: str
    label: str | None = None
    # Google keeps each value's label in a sibling column ("Phone 1 - Type").
    label_index: int | None = None


@dataclass(frozen=True, slots=True)
class ColumnPlan:
    """Which columns feed which contact fields; built once per file by `plan_columns`."""

    header: tuple[str, ...]
    single: Mapping[str, tuple[int, ...]]
    phones: tuple[ValueColumn, ...]
    emails: tuple[ValueColumn, ...]
    tags: tuple[int, ...]
    custom: tuple[tuple[str, int], ...]
    # header -> target for every column read, and the headers left out, for the report
    recognised: Mapping[str, str]
    ignored: tuple[str, ...]


def _check_target(target: str, header: str) -> str:
    base, dot, rest = target.partition(".")
    if base in ("phone", "email") and dot:
        if not rest.strip() or len(rest.strip()) > MAX_LABEL:
            raise InvalidCSV(
                f"mapping for column {header!r}: the label in {target!r} must be "
                f"1 to {MAX_LABEL} characters",
                field="mapping",
            )
        return f"{base}.{rest.strip()}"
    if base == "custom" and dot:
        if not rest or len(rest) > 100:
            raise InvalidCSV(
                f"mapping for column {header!r}: custom field names are 1 to 100 characters",
                field="mapping",
            )
        return target
    if target in SINGLE_FIELDS or target in MULTI_FIELDS or target == IGNORE:
        return target
    known = ", ".join([*SINGLE_FIELDS, *MULTI_FIELDS, "phone.<label>", "email.<label>"])
    raise InvalidCSV(
        f"mapping for column {header!r}: unknown field {target!r}; use one of {known}, "
        "custom.<key> or ignore",
        field="mapping",
    )


def _recognise(header: Sequence[str]) -> tuple[dict[int, str], dict[int, int]]:
    """Targets for the headers this module knows, by column index; and Google's labels.

    Google keeps each phone's and email's label in a sibling column ("Phone 1 - Type"
    or "- Label" beside "Phone 1 - Value"); the second map gives, for a value column,
    the column of its label.
    """
    targets: dict[int, str] = {}
    values: dict[tuple[str, str], int] = {}
    labels: dict[tuple[str, str], int] = {}
    for index, raw in enumerate(header):
        key = header_key(raw)
        if numbered := _GOOGLE_NUMBERED.match(key):
            kind, number, part = numbered.groups()
            if kind == "organization":
                if part == "name":
                    targets[index] = "company"
            elif part == "value":
                targets[index] = "phone" if kind == "phone" else "email"
                values[(kind, number)] = index
            else:
                targets[index] = f"{'phone' if kind == 'phone' else 'email'} label"
                labels[(kind, number)] = index
        elif key in _KNOWN:
            targets[index] = _KNOWN[key]
        elif key.startswith("custom.") and len(raw) > len("custom."):
            targets[index] = "custom." + raw[len("custom.") :]
    label_of = {values[k]: labels[k] for k in values.keys() & labels.keys()}
    return targets, label_of


def _find_column(header: Sequence[str], name: str) -> int:
    for index, raw in enumerate(header):
        if raw.replace("\ufeff", "").strip() == name.strip():
            return index
    for index, raw in enumerate(header):
        if header_key(raw) == header_key(name):
            return index
    raise InvalidCSV(
        f"the mapping names column {name!r}, which the file does not have; "
        f"its columns are: {', '.join(repr(h) for h in header)}",
        field="mapping",
    )


def plan_columns(header: Sequence[str], mapping: Mapping[str, str] | None = None) -> ColumnPlan:
    """Recognise the header, apply an explicit `mapping` on top, or refuse the file.

    A file with no column that could name a contact (a name, its parts, a company),
    reach it (a phone) or identify it (an email) is refused here, before any row is
    read, with the columns it does have, so that the person can write a mapping.
    """
    clean = tuple(h.replace("\ufeff", "").strip() for h in header)
    if not any(clean):
        raise InvalidCSV("the first row is empty: a contacts CSV starts with a header row")
    targets, label_of = _recognise(clean)
    for column, wanted in (mapping or {}).items():
        index = _find_column(clean, column)
        targets[index] = _check_target(wanted.strip(), column)
        label_of.pop(index, None)  # a mapped column means what the mapping says
    label_of = {
        value: label for value, label in label_of.items() if targets[label] in _LABEL_TARGETS
    }

    single: dict[str, list[int]] = {}
    phones: list[ValueColumn] = []
    emails: list[ValueColumn] = []
    tags: list[int] = []
    custom: list[tuple[str, int]] = []
    recognised: dict[str, str] = {}
    ignored: list[str] = []
    for index, name in enumerate(clean):
        found = targets.get(index)
        if found is None or found == IGNORE:
            ignored.append(name)
            continue
        recognised[name] = found
        if found in _LABEL_TARGETS:  # Google's "Phone 1 - Type": read with its value
            continue
        base, _, label = found.partition(".")
        if base in ("phone", "phones", "email", "emails"):
            value_column = ValueColumn(
                index=index, header=name, label=label or None, label_index=label_of.get(index)
            )
            (phones if base.startswith("phone") else emails).append(value_column)
        elif base == "tags":
            tags.append(index)
        elif base == "custom":
            custom.append((found[len("custom.") :], index))
        else:
            single.setdefault(base, []).append(index)

    names = {"name", "first_name", "middle_name", "last_name", "company"} & set(single)
    if not (names or phones or emails):
        raise InvalidCSV(
            "no column names, reaches or identifies a contact: expected a name, phone or "
            "email column (Google Contacts, Outlook and voicecrm exports are recognised); "
            f"the file's columns are: {', '.join(repr(h) for h in clean)}. "
            "Map a column explicitly, for example 'Full name=name'.",
            field="header",
        )
    return ColumnPlan(
        header=clean,
        single={k: tuple(v) for k, v in single.items()},
        phones=tuple(phones),
        emails=tuple(emails),
        tags=tuple(tags),
        custom=tuple(custom),
        recognised=recognised,
        ignored=tuple(ignored),
    )


# ----------------------------------------------------------------- reading one row
@dataclass(frozen=True, slots=True)
class RowContext:
    """Everything `read_row` needs besides the cells; picklable, built once per import."""

    plan: ColumnPlan
    default_region: str
    stages: Mapping[str, int]  # case-folded stage name -> id
    users: Mapping[str, int]  # lower-case email -> user id
    sources: frozenset[str]
    default_source: str = "import"


@dataclass(frozen=True, slots=True)
class RowError:
    """Why one row was left out: its number among data rows, the line it starts on."""

    row: int
    line: int
    field: str | None
    column: str | None
    message: str


class PhoneValue(NamedTuple):
    e164: str
    original: str
    label: str
    region: str | None
    carrier: str | None


@dataclass(slots=True)
class ContactRow:
    """One row read into contact fields; only what the row gives is set.

    `name` is set only when the row names the person; `display_name` is what a new
    contact is called otherwise (company, email, or "Unknown Caller"), and is never
    written over the name of a contact that already exists.
    """

    row: int
    line: int
    display_name: str
    name: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    phones: list[PhoneValue] = field(default_factory=list)
    emails: list[tuple[str, str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    custom: dict[str, Any] = field(default_factory=dict)

    def __reduce__(self) -> tuple[Any, ...]:
        # Rows cross from worker processes by the thousand: a plain tuple of the
        # fields unpickles in a third of the time of a dataclass's default state.
        return (
            ContactRow,
            (
                self.row,
                self.line,
                self.display_name,
                self.name,
                self.values,
                self.phones,
                self.emails,
                self.tags,
                self.custom,
            ),
        )


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
# Spreadsheets run cells starting with these as formulas; export guards them with a quote.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


def unguard(text: str) -> str:
    """Undo the quote `guard` put before a cell a spreadsheet would read as a formula."""
    if text.startswith("'") and text.lstrip("'").startswith(FORMULA_START):
        return text[1:]
    return text


def guard(text: str) -> str:
    """A leading quote keeps spreadsheets from running a cell as a formula (CSV injection).

    Names and caller-ID names come from strangers' phones; `unguard` reverses it on import.
    """
    if text.lstrip("'").startswith(FORMULA_START):
        return "'" + text
    return text


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


def _read_values(ctx: RowContext, given: Given, row: ContactRow) -> None:
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


def _read_custom(ctx: RowContext, cells: Sequence[str], given: Given, row: ContactRow) -> None:
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


def _read_phones(ctx: RowContext, cells: Sequence[str], row: ContactRow) -> None:
    seen: set[str] = set()
    count = len(cells)
    for column in ctx.plan.phones:
        cell = cells[column.index].strip() if column.index < count else ""
        if not cell:
            continue
        default = _label_for(cells, column, "mobile")
        for item in _items(cell):
            if not item:
                continue
            label, raw = _labelled(item, default)
            try:
                parsed = normalize_phone(raw, ctx.default_region)
            except InvalidPhoneNumber as err:
                raise _Refused(err.detail, "phones", column.header) from None
            if parsed.e164 not in seen:
                seen.add(parsed.e164)
                row.phones.append(
                    PhoneValue(parsed.e164, raw[:100], label, parsed.region, parsed.carrier)
                )
    if len(row.phones) > MAX_PHONES:
        raise _Refused(f"more than {MAX_PHONES} phone numbers", "phones", None)


def _read_emails(ctx: RowContext, cells: Sequence[str], row: ContactRow) -> None:
    seen: set[str] = set()
    count = len(cells)
    for column in ctx.plan.emails:
        cell = cells[column.index].strip() if column.index < count else ""
        if not cell:
            continue
        default = _label_for(cells, column, "work")
        for item in _items(cell):
            if not item:
                continue
            label, raw = _labelled(item, default)
            email = raw.lower()
            if len(email) > 320 or not _EMAIL.match(email):
                raise _Refused(f"{raw!r} is not an email address", "emails", column.header)
            if email not in seen:
                seen.add(email)
                row.emails.append((email, label))
    if len(row.emails) > MAX_EMAILS:
        raise _Refused(f"more than {MAX_EMAILS} email addresses", "emails", None)


def _read_tags(ctx: RowContext, cells: Sequence[str], row: ContactRow) -> None:
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


def _read_name(given: Given, row: ContactRow) -> None:
    if found := given.get("name"):
        row.name = _short(*found, "name")
    else:
        parts = [given[p][0] for p in ("first_name", "middle_name", "last_name") if p in given]
        if parts:
            row.name = _short(" ".join(parts), "name", "name")
    email = row.emails[0][0] if row.emails else None
    row.display_name = row.name or row.values.get("company") or email or UNKNOWN_CALLER


def read_row(ctx: RowContext, row: int, line: int, cells: Sequence[str]) -> ContactRow | RowError:
    """One record's cells as contact fields, or the reason the row cannot be imported."""
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
    contact = ContactRow(row=row, line=line, display_name=UNKNOWN_CALLER)
    try:
        given = _given(ctx, cells)
        _read_values(ctx, given, contact)
        _read_custom(ctx, cells, given, contact)
        _read_phones(ctx, cells, contact)
        _read_emails(ctx, cells, contact)
        _read_tags(ctx, cells, contact)
        _read_name(given, contact)
    except _Refused as refused:
        return RowError(row, line, refused.field, refused.column, refused.message)
    if not (contact.name or contact.phones or contact.emails or contact.values.get("company")):
        return RowError(row, line, None, None, "the row has no name, company, phone or email")
    return contact


Record = tuple[int, int, list[str]]  # data row number, line it starts on, cells


def read_rows(ctx: RowContext, records: Sequence[Record]) -> list[ContactRow | RowError]:
    """`read_row` over a batch: the unit of work handed to a worker thread or process."""
    return [read_row(ctx, row, line, cells) for row, line, cells in records]


# A worker process reads rows for one import only; it gets the context once, at start.
_process_context: RowContext | None = None


def init_worker_process(ctx: RowContext) -> None:
    global _process_context
    _process_context = ctx


def read_rows_in_worker_process(records: Sequence[Record]) -> list[ContactRow | RowError]:
    assert _process_context is not None, "init_worker_process was not run"
    return read_rows(_process_context, records)
