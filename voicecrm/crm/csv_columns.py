"""What the columns of a contacts CSV mean: the header read once into a `ColumnPlan`.

People bring contacts from Google Contacts, from Outlook, from a spreadsheet they
typed themselves, or from a voicecrm export; each names its columns its own way.
`plan_columns` reads the header once, recognises those names (and takes an
explicit mapping where the names are not recognised or mean something else),
and refuses a file it cannot make sense of before anything is written.
`csv_rows` then reads each row's cells by that plan.

Mapping targets (the values of an explicit mapping, `CSV column -> target`):

    name, first_name, middle_name, last_name, company, caller_id_name,
    type, status, rating, blocked, stage (a stage's name),
    responsible (a team user's email), source, tags,
    phone, phone.<label>, phones, email, email.<label>, emails,
    notes (each non-empty cell becomes a General note on the contact, or the
        notes it lists if it is a JSON array of notes as the export writes them),
    custom_fields (a JSON object), custom.<key>, ignore

A header spelled `custom.<key>` is read as that custom field without a mapping.
Cells a spreadsheet would run as formulas are written with a quote before them
(`guard`), which import takes off again (`unguard`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from voicecrm.errors import InvalidCSV

MAX_PHONES = 20
MAX_EMAILS = 20
MAX_TAGS = 100
MAX_TEXT = 200
MAX_LABEL = 50
MAX_TAG = 100
MAX_NOTE = 10_000  # as a note written through the API

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
MULTI_FIELDS = ("phone", "phones", "email", "emails", "tags", "notes")
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
    "notes",
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
    # Google Contacts and Outlook both call it "Notes"
    "notes": "notes",
    "note": "notes",
    "comments": "notes",
    "comment": "notes",
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
    notes: tuple[int, ...]
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
    notes: list[int] = []
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
        elif base == "notes":
            notes.append(index)
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
        notes=tuple(notes),
        custom=tuple(custom),
        recognised=recognised,
        ignored=tuple(ignored),
    )


# Spreadsheets run cells starting with these as formulas; export guards them with a quote.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


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
