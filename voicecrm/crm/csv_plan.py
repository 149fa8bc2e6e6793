"""Deciding what one batch of read rows does to the CRM, without touching the database.

Given the batch's rows, which contacts already hold their phone numbers and
emails (`keys`) and, when rows may update them, those contacts' current values
(`targets`), `BatchPlan` decides row by row: create a contact, merge into the one
matched (by phone first, then email), skip it, or report an error. It keeps the
rows to insert and the timeline events, for `csv_writers.write_plan`.

Rows repeating a contact that an earlier row of the same batch created are
matched to it just like a contact that was there before (the job carries the
keys forward between batches through the database), so one number never ends on
two contacts and the unique index on phones is never hit by the file itself.
Importing never deletes: empty cells leave fields as they are, and phones,
emails, tags and notes are added to those a contact has (a note only if the
contact has no note with the same text, so that importing a file again adds
none twice).

Most rows of a large file create a contact that no later row of the batch
touches. Such a contact stays the row it came from (`new_rows`), a tuple, until
the writer turns it into table rows; only a contact that another row merges into,
or one that existed, becomes a `Target` with its sets and lists. A batch thus
holds few long-lived containers, which keeps the garbage collector's full passes
rare and short.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voicecrm.crm import timeline
from voicecrm.crm.csv_report import ImportRowError, OnMatch
from voicecrm.crm.csv_rows import ContactRow, NoteValue, RowError
from voicecrm.crm.schemas import CONTACT_FIELDS

FIELDS = CONTACT_FIELDS
IMPORT_SOURCE = "import"
# A new contact's fields where the row gives none (what create_contact would choose).
_NEW_CONTACT: dict[str, Any] = {
    "company": None,
    "type": "customer",
    "caller_id_name": None,
    "source": IMPORT_SOURCE,
    "responsible_user_id": None,
    "rating": 0,
    "status": "open",
    "blocked": False,
    "stage_id": None,
}
PHONE_COLUMNS = ("e164", "duplicate_key", "original", "label", "region", "position")
EMAIL_COLUMNS = ("email", "label", "position")


@dataclass(slots=True)
class Target:
    """A contact the batch creates or changes. `ref` is its id, or negative until inserted."""

    ref: int
    new: bool
    values: dict[str, Any]
    phones: set[str] = field(default_factory=set)
    emails: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    next_phone: int = 0
    next_email: int = 0
    # False for a contact an earlier batch of a dry run would have created: nothing
    # is known of it but its keys, so a row merging into it counts as an update.
    known: bool = True
    dirty: bool = False
    # PHONE_COLUMNS but the key, which needs the contact's id: (e164, original, label, ...)
    phone_rows: list[tuple[str, str, str, str | None, int]] = field(default_factory=list)
    email_rows: list[tuple[Any, ...]] = field(default_factory=list)  # EMAIL_COLUMNS
    tag_rows: list[str] = field(default_factory=list)
    notes: set[str] = field(default_factory=set)  # the text of the contact's notes
    note_rows: list[NoteValue] = field(default_factory=list)  # notes to add


@dataclass
class Outcome:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    errors: list[ImportRowError] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """What stays the same for every batch of one import."""

    on_match: OnMatch
    unique_phones: bool  # the team forbids two contacts with one number
    file_name: str | None
    stage_names: Mapping[int, str]
    # A new contact's ref (negative until it gets an id); the job owns the counter.
    new_ref: Callable[[], int]


# A new contact's FIELDS where its row gives none; custom fields as JSON text.
_NEW_FIELDS = tuple("{}" if name == "custom_fields" else _NEW_CONTACT.get(name) for name in FIELDS)
_AT = {name: index for index, name in enumerate(FIELDS)}


def new_contact_fields(row: ContactRow) -> tuple[Any, ...]:
    """The fields of the contact a row creates, in FIELDS order, custom fields as JSON.

    A tuple built straight from the row, which the writer takes as the table row:
    nearly every row of a large file creates a contact that nothing else touches,
    and a dict of every field for each, picked from afterwards, was work on the
    event loop for nothing (bench/README.md, session 8).
    """
    _row, _line, display_name, name, values, phones, _emails, _tags, custom, _notes = row
    fields = list(_NEW_FIELDS)
    fields[_AT["name"]] = name or display_name
    if phones:
        fields[_AT["carrier"]] = phones[0][4]
    if custom:
        fields[_AT["custom_fields"]] = custom
    for key, value in values:
        fields[_AT[key]] = value
    return tuple(fields)


def new_contact_values(row: ContactRow) -> dict[str, Any]:
    """The fields of the contact a row creates, for a contact other rows merge into."""
    values = dict(zip(FIELDS, new_contact_fields(row), strict=True))
    values["custom_fields"] = json.loads(values["custom_fields"])
    return values


def imported_event_text(file_name: str | None) -> Callable[[int, bool], str]:
    """The JSON of an "imported" event's data, as a template filled in per row.

    A million rows each built and serialised as a dict (or a model) cost seconds;
    the job checks once, through `timeline.event_row`, that the kind takes this shape.
    """
    file = json.dumps(file_name)

    def text(row: int, created: bool) -> str:
        return f'{{"file": {file}, "row": {row}, "created": {"true" if created else "false"}}}'

    return text


class BatchPlan:
    """Decides, row by row, what a batch does; `csv_writers.write_plan` then writes it."""

    def __init__(
        self,
        settings: PlanSettings,
        keys: dict[str, int],
        targets: dict[int, Target],
    ) -> None:
        self.settings = settings
        self.keys = keys  # "p:+1415..." / "e:jane@..." -> ref of the contact holding it
        self.fresh: dict[str, int] = {}  # keys this batch adds
        self.targets = targets
        # Contacts created by a row that no other row of the batch touched: ref -> row.
        self.new_rows: dict[int, ContactRow] = {}
        # (contact ref, kind, data as JSON text)
        self.events: list[tuple[int, str, str]] = []
        self.outcome = Outcome()
        self._imported = imported_event_text(settings.file_name)

    def plan(self, rows: Sequence[ContactRow | RowError]) -> None:
        for row in rows:
            if isinstance(row, RowError):
                self.outcome.errors.append(ImportRowError.of(row))
            else:
                self._plan_row(row)

    def _match(self, row: ContactRow) -> int | ImportRowError | None:
        number, line, _display, _name, _values, phones, emails, _tags, _custom, _notes = row
        keys = self.keys
        owners = {keys[k] for phone in phones if (k := "p:" + phone[0]) in keys}
        if len(owners) > 1:
            ids = ", ".join(str(ref) for ref in sorted(owners) if ref > 0)
            return ImportRowError(
                row=number,
                line=line,
                field="phones",
                column=None,
                message="the row's phone numbers belong to different contacts"
                + (f" ({ids})" if ids else " (rows above in this file)")
                + "; merge them first, or split the row",
            )
        if owners:
            return owners.pop()
        for email, _label in emails:
            if (ref := keys.get("e:" + email)) is not None:
                return ref
        return None

    def _plan_row(self, row: ContactRow) -> None:
        match = self._match(row)
        if isinstance(match, ImportRowError):
            self.outcome.errors.append(match)
            return
        if match is None:
            ref = self.settings.new_ref()
            self.new_rows[ref] = row
            self.outcome.created += 1
            self.events.append((ref, "imported", self._imported(row[0], True)))
        elif self.settings.on_match is OnMatch.SKIP:
            self.outcome.skipped += 1
            return
        else:
            ref = match
            if self._merge(self._target(ref), row):
                self.outcome.updated += 1
            else:
                self.outcome.unchanged += 1
        keys, fresh = self.keys, self.fresh
        for phone in row[5]:
            if (key := "p:" + phone[0]) not in keys:
                keys[key] = fresh[key] = ref
        for email, _label in row[6]:
            if (key := "e:" + email) not in keys:
                keys[key] = fresh[key] = ref

    def _event(self, ref: int, kind: str, data: timeline.EventData) -> None:
        self.events.append((ref, kind, json.dumps(data.model_dump(mode="json"))))

    def _target(self, ref: int) -> Target:
        """The contact `ref` as a `Target`, made from its row if this batch created it."""
        if (target := self.targets.get(ref)) is not None:
            return target
        row = self.new_rows.pop(ref, None)
        if row is None:
            # A contact an earlier batch of a dry run would have created.
            target = Target(ref=ref, new=False, values={}, known=False)
        else:
            target = Target(ref=ref, new=True, values=new_contact_values(row))
            self._add_values(target, row)
        self.targets[ref] = target
        return target

    def _add_values(self, target: Target, row: ContactRow) -> tuple[list[str], list[str], int]:
        """Add the row's phones, emails, tags and notes the contact lacks.

        Returns the names of the lists that grew, the tags added and how many notes.
        """
        _row, _line, _display, _name, _values, phones, emails, tags, _custom, notes = row
        added_notes = 0
        for note in notes:
            if note[0] not in target.notes:
                target.notes.add(note[0])
                target.note_rows.append(note)
                added_notes += 1
        grew: list[str] = []
        for e164, original, label, region, _carrier in phones:
            if e164 in target.phones:
                continue
            target.phones.add(e164)
            target.phone_rows.append((e164, original, label, region, target.next_phone))
            target.next_phone += 1
            if "phones" not in grew:
                grew.append("phones")
        for email, label in emails:
            if email in target.emails:
                continue
            target.emails.add(email)
            target.email_rows.append((email, label, target.next_email))
            target.next_email += 1
            if "emails" not in grew:
                grew.append("emails")
        if tags:
            added = [tag for tag in tags if tag not in target.tags]
            target.tags.update(added)
            target.tag_rows += added
            return grew, added, added_notes
        return grew, [], added_notes

    def _merge(self, target: Target, row: ContactRow) -> bool:
        """Apply a matched row to a contact; True if anything changed.

        Empty cells change nothing; lists only grow. A contact created by an earlier
        row of this batch simply absorbs the row; one that existed before gets the
        timeline entries a hand edit would have given it.
        """
        number, _line, _display, name, given, phones, _emails, _tags, custom, _notes = row
        values = target.values
        before = dict(values)
        if target.known:
            if name is not None:
                values["name"] = name
            values.update(given)
            if custom:
                values["custom_fields"] = {**(values["custom_fields"] or {}), **json.loads(custom)}
            if phones and values["carrier"] is None and not target.phones:
                values["carrier"] = phones[0][4]
        changed = [name for name in FIELDS if values.get(name) != before.get(name)]
        grew, tags, notes = self._add_values(target, row)
        if not (changed or grew or tags or notes) and target.known:
            return False
        # A note bumps the contact's updated_at, as adding one by hand does.
        target.dirty = target.dirty or bool(changed) or notes > 0
        self.events.append((target.ref, "imported", self._imported(number, False)))
        if not target.new and target.known:
            self._change_events(target, before, changed + grew, tags)
        return True

    def _change_events(
        self, target: Target, before: dict[str, Any], changed: list[str], tags: list[str]
    ) -> None:
        ref = target.ref
        fields = [name for name in changed if name not in ("stage_id", "status")]
        if fields:
            self._event(ref, "contact_updated", timeline.ContactUpdated(fields=fields))
        if "stage_id" in changed:
            names = self.settings.stage_names
            old, new = before["stage_id"], target.values["stage_id"]
            data = timeline.StageChanged(
                from_stage_id=old,
                from_stage=names.get(old) if old is not None else None,
                to_stage_id=new,
                to_stage=names.get(new) if new is not None else None,
                reason="import",
            )
            self._event(ref, "stage_changed", data)
        if "status" in changed:
            status = timeline.StatusChanged(
                from_status=before["status"], to_status=target.values["status"]
            )
            self._event(ref, "status_changed", status)
        if tags:
            self._event(ref, "tags_changed", timeline.TagsChanged(added=sorted(tags)))
