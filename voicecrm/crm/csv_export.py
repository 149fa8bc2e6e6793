"""Exporting contacts to CSV, streamed: any number of contacts in constant memory.

The selection (explicit ids or a filter, as for bulk actions) is walked in id
order a batch at a time (keyset pagination, never OFFSET), each batch being one
query for the contacts with their stage and responsible user, and one each for
their phones, emails and tags. Callers get text chunks as they are made, so an
HTTP response or a file can be written while the next batch is read. Run it in
a read-only transaction: one consistent snapshot, and on SQLite no write lock,
so calls keep writing while a large export runs.

Columns are `EXPORT_COLUMNS`, chosen so that importing the file back gives the
same contacts (`csv_columns` recognises every one of them):

- several phones or emails go in one cell as `label: value; label: value`, since
  one column per phone cannot be streamed (the widest contact is not known until
  the end) and the form is still readable in a spreadsheet;
- tags are joined with `; ` (so a tag that itself holds `;` or `,` comes back
  split in two: import also reads the `,` of hand-made sheets);
- custom fields are one JSON object per cell, as their keys differ from contact
  to contact and a column per key would again need the whole file first;
- notes are one JSON array per cell, oldest first, each note an object with its
  type, pinned flag, text and creation time: a note's text may hold any line or
  separator, and import reads the array back as notes of those types (dated by
  the import; its author is the importing user);
- stage and responsible user are written as the stage's name and the user's
  email, which mean the same in another team or another voicecrm;
- times are ISO 8601 in UTC;
- a text cell that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`) is
  prefixed with `'`, which import removes again.

The text carries no byte-order mark unless asked (`bom=True`): programs reading
the CSV do not expect one, but Excel reads a UTF-8 file without it in the local
ANSI code page and garbles every accented name. Import skips the mark either way.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from voicecrm.accounts.actor import Actor
from voicecrm.accounts.models import User
from voicecrm.crm.bulk import Selection, selected_ids
from voicecrm.crm.csv_columns import EXPORT_COLUMNS, guard
from voicecrm.crm.models import Contact, ContactEmail, ContactPhone, ContactTag, Note, Stage

# U+FEFF, encoded as UTF-8 it is the three bytes EF BB BF that tell Excel the file is UTF-8.
BYTE_ORDER_MARK = "\ufeff"


def _cell_label(label: str) -> str:
    """A label that cannot be mistaken for the `; ` and `: ` that frame it."""
    return label.replace(";", ",").replace(": ", " ").strip() or "other"


def _joined(pairs: Sequence[tuple[str, str]]) -> str:
    return "; ".join(f"{_cell_label(label)}: {value}" for label, value in pairs)


class _Lists:
    """The phones, emails, tags and notes of a batch of contacts, by contact id."""

    def __init__(self) -> None:
        self.phones: dict[int, list[tuple[str, str]]] = defaultdict(list)
        self.emails: dict[int, list[tuple[str, str]]] = defaultdict(list)
        self.tags: dict[int, list[str]] = defaultdict(list)
        self.notes: dict[int, list[dict[str, Any]]] = defaultdict(list)


async def _lists(session: AsyncSession, ids: Sequence[int]) -> _Lists:
    lists = _Lists()
    for contact_id, label, e164 in await session.execute(
        select(ContactPhone.contact_id, ContactPhone.label, ContactPhone.e164)
        .where(ContactPhone.contact_id.in_(ids))
        .order_by(ContactPhone.contact_id, ContactPhone.position, ContactPhone.id)
    ):
        lists.phones[contact_id].append((label, e164))
    for contact_id, label, email in await session.execute(
        select(ContactEmail.contact_id, ContactEmail.label, ContactEmail.email)
        .where(ContactEmail.contact_id.in_(ids))
        .order_by(ContactEmail.contact_id, ContactEmail.position, ContactEmail.id)
    ):
        lists.emails[contact_id].append((label, email))
    for contact_id, tag in await session.execute(
        select(ContactTag.contact_id, ContactTag.tag)
        .where(ContactTag.contact_id.in_(ids))
        .order_by(ContactTag.contact_id, ContactTag.tag)
    ):
        lists.tags[contact_id].append(tag)
    for contact_id, kind, pinned, content, created_at in await session.execute(
        select(Note.contact_id, Note.type, Note.pinned, Note.content, Note.created_at)
        .where(Note.contact_id.in_(ids))
        .order_by(Note.contact_id, Note.created_at, Note.id)
    ):
        lists.notes[contact_id].append(
            {
                "type": kind,
                "pinned": pinned,
                "content": content,
                "created_at": created_at.isoformat(),
            }
        )
    return lists


_ROW_QUERY = (
    select(
        Contact.id,
        Contact.name,
        Contact.company,
        Contact.type,
        Stage.name.label("stage"),
        Contact.status,
        Contact.rating,
        Contact.source,
        User.email.label("responsible"),
        Contact.caller_id_name,
        Contact.carrier,
        Contact.blocked,
        Contact.custom_fields,
        Contact.created_at,
        Contact.updated_at,
    )
    .outerjoin(Stage, Stage.id == Contact.stage_id)
    .outerjoin(User, User.id == Contact.responsible_user_id)
    .order_by(Contact.id)
)


async def _rows(session: AsyncSession, ids: Sequence[int]) -> list[list[Any]]:
    lists = await _lists(session, ids)
    rows: list[list[Any]] = []
    for c in await session.execute(_ROW_QUERY.where(Contact.id.in_(ids))):
        rows.append(
            [
                c.id,
                guard(c.name),
                guard(c.company or ""),
                c.type,
                guard(_joined(lists.phones[c.id])),
                guard(_joined(lists.emails[c.id])),
                guard("; ".join(lists.tags[c.id])),
                guard(c.stage or ""),
                c.status,
                c.rating,
                guard(c.source),
                guard(c.responsible or ""),
                guard(c.caller_id_name or ""),
                guard(c.carrier or ""),
                "true" if c.blocked else "false",
                json.dumps(c.custom_fields, sort_keys=True, ensure_ascii=False)
                if c.custom_fields
                else "",
                json.dumps(notes, ensure_ascii=False) if (notes := lists.notes[c.id]) else "",
                c.created_at.isoformat(),
                c.updated_at.isoformat(),
            ]
        )
    return rows


async def export_csv(
    session: AsyncSession,
    actor: Actor,
    selection: Selection,
    *,
    on_batch: Callable[[int], None] | None = None,
    bom: bool = False,
) -> AsyncIterator[str]:
    """The CSV text of the selected contacts the actor can see: the header, then a chunk per batch.

    The session is used for reads only; give it a read-only transaction of its own.
    `on_batch` hears how many contacts each chunk holds. With `bom` the header chunk,
    and only it, starts with `BYTE_ORDER_MARK`, for a file Excel will open as UTF-8;
    encode the chunks as UTF-8 then, as the mark promises.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if bom:
        buffer.write(BYTE_ORDER_MARK)
    writer.writerow(EXPORT_COLUMNS)
    yield buffer.getvalue()
    async for ids in selected_ids(session, actor, selection):
        buffer.seek(0)
        buffer.truncate()
        rows = await _rows(session, ids)
        writer.writerows(rows)
        if on_batch is not None:
            on_batch(len(rows))
        yield buffer.getvalue()
