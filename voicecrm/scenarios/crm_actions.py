"""The engine's door into the CRM: each action is one unit of work, committed at once.

A CRM change made during a call (a note, a stage, a tag) must be on the
contact's timeline the moment it happens, visible to a person looking at the
contact while the call is still going; so each action runs in its own
transaction rather than one spanning the call.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from voicecrm.accounts.actor import Actor
from voicecrm.calls.interface import CallInfo, Recording
from voicecrm.crm import contacts, notes, tasks, timeline
from voicecrm.crm.call_log import VoicemailEvent
from voicecrm.crm.callers import find_unchanged_caller, resolve_caller
from voicecrm.crm.models import Stage
from voicecrm.crm.schemas import (
    UNKNOWN_CALLER,
    ContactCreate,
    ContactStatus,
    ContactUpdate,
    EmailIn,
    NoteIn,
    NoteType,
)
from voicecrm.errors import InvalidInput, InvalidPhoneNumber
from voicecrm.storage import Database, utcnow

RECENT_EVENTS = 10


class ScenarioCRM:
    def __init__(self, database: Database, actor: Actor) -> None:
        self.database = database
        self.actor = actor

    async def ensure_contact(self, info: CallInfo) -> int:
        """The caller's contact, created as "Unknown Caller" when the number is new or withheld."""
        contact_id, _blocked = await self.ensure_caller(info)
        return contact_id

    async def ensure_caller(self, info: CallInfo) -> tuple[int, bool]:
        """The caller's contact id and whether it is blocked, in one lookup.

        A known caller with nothing to refresh is answered by one SELECT, outside any
        transaction (`find_unchanged_caller`).
        """
        try:
            known = await find_unchanged_caller(
                self.database, self.actor, info.from_number, info.caller_name
            )
            if known is not None:
                return known.contact_id, known.blocked
        except InvalidPhoneNumber:
            pass
        async with self.database.transaction(quick=True) as session:
            try:
                resolved = await resolve_caller(
                    session, self.actor, info.from_number, info.caller_name
                )
                return resolved.contact.id, resolved.contact.blocked
            except InvalidPhoneNumber:
                contact = await contacts.create_contact(
                    session,
                    self.actor,
                    ContactCreate(name=UNKNOWN_CALLER, caller_id_name=info.caller_name),
                    default_source="phone",
                )
                return contact.id, False

    async def contact_view(self, contact_id: int) -> dict[str, Any]:
        """What templates and the agent see of the contact, recent history included."""
        async with self.database.transaction(read_only=True, quick=True) as session:
            contact = await contacts.get_contact(session, self.actor, contact_id)
            out = await contacts.one_out(session, contact)
            stage = await session.get(Stage, contact.stage_id) if contact.stage_id else None
            page = await timeline.page(session, contact_id, limit=RECENT_EVENTS)
        return {
            "id": out.id,
            "name": out.name,
            "known": out.name != UNKNOWN_CALLER,
            "company": out.company or "",
            "tags": out.tags,
            "status": out.status.value,
            "stage": stage.name if stage else "",
            "blocked": out.blocked,
            "phones": [p.e164 for p in out.phones],
            "emails": [e.email for e in out.emails],
            "custom_fields": out.custom_fields,
            "caller_id_name": out.caller_id_name or "",
            "recent": [
                {"kind": e.kind, "at": e.occurred_at.isoformat(), "data": e.data}
                for e in page.events
            ],
        }

    async def add_note(
        self, contact_id: int, content: str, note_type: str, pinned: bool = False
    ) -> int:
        async with self.database.transaction(quick=True) as session:
            note = await notes.add_note(
                session,
                self.actor,
                contact_id,
                NoteIn(content=content, type=NoteType(note_type.lower()), pinned=pinned),
            )
            return note.id

    async def set_stage(self, contact_id: int, stage_name: str | None) -> None:
        async with self.database.transaction(quick=True) as session:
            contact = await contacts.get_contact(session, self.actor, contact_id, for_update=True)
            stage_id = None
            if stage_name:
                stage_id = await session.scalar(
                    select(Stage.id).where(
                        Stage.team_id == self.actor.team_id,
                        func.lower(Stage.name) == stage_name.strip().lower(),
                    )
                )
                if stage_id is None:
                    names = await session.scalars(
                        select(Stage.name)
                        .where(Stage.team_id == self.actor.team_id)
                        .order_by(Stage.position)
                    )
                    raise InvalidInput(
                        f"no stage named {stage_name!r}; the team's stages: "
                        f"{', '.join(names) or 'none'}",
                        field="stage",
                    )
            await contacts.change_stage(session, self.actor, contact, stage_id, reason="scenario")

    async def set_status(self, contact_id: int, status: str) -> None:
        async with self.database.transaction(quick=True) as session:
            contact = await contacts.get_contact(session, self.actor, contact_id, for_update=True)
            await contacts.change_status(session, self.actor, contact, ContactStatus(status))

    async def change_tags(self, contact_id: int, add: list[str], remove: list[str]) -> None:
        async with self.database.transaction(quick=True) as session:
            contact = await contacts.get_contact(session, self.actor, contact_id, for_update=True)
            clean = [" ".join(t.split()).lower()[:100] for t in add if t.strip()]
            if clean:
                await contacts.add_tags(session, self.actor, contact, clean)
            gone = [" ".join(t.split()).lower() for t in remove if t.strip()]
            if gone:
                await contacts.remove_tags(session, self.actor, contact, gone)

    async def update_contact(
        self,
        contact_id: int,
        *,
        name: str | None = None,
        company: str | None = None,
        email: str | None = None,
        custom_fields: dict[str, str] | None = None,
    ) -> None:
        async with self.database.transaction(quick=True) as session:
            current = await contacts.get_contact(session, self.actor, contact_id)
            fields: dict[str, Any] = {}
            if name and name.strip():
                fields["name"] = name.strip()[:200]
            if company is not None and company.strip():
                fields["company"] = company.strip()[:200]
            if custom_fields:
                fields["custom_fields"] = {**(current.custom_fields or {}), **custom_fields}
            if email and email.strip():
                out = await contacts.one_out(session, current)
                existing = [EmailIn(email=e.email, label=e.label) for e in out.emails]
                if email.strip().lower() not in {e.email for e in existing}:
                    fields["emails"] = [*existing, EmailIn(email=email.strip())]
            if fields:
                await contacts.update_contact(
                    session, self.actor, contact_id, ContactUpdate.model_validate(fields)
                )

    async def create_task(
        self,
        contact_id: int,
        *,
        title: str,
        description: str | None,
        due_in_minutes: int,
        assign_to: str | None,
        call_id: int | None,
    ) -> int:
        async with self.database.transaction(quick=True) as session:
            task = await tasks.create_task(
                session,
                self.actor,
                contact_id,
                title=title,
                description=description,
                due_at=utcnow() + timedelta(minutes=due_in_minutes),
                assignee_email=assign_to,
                call_id=call_id,
            )
            return task.id

    async def save_voicemail(
        self, contact_id: int, call_id: int | None, recording: Recording
    ) -> None:
        async with self.database.transaction(quick=True) as session:
            await contacts.get_contact(session, self.actor, contact_id)
            await timeline.append(
                session,
                self.actor,
                contact_id,
                "voicemail",
                VoicemailEvent(
                    call_id=call_id,
                    recording_url=recording.url,
                    duration_seconds=recording.duration_seconds,
                    transcript=recording.transcript,
                ),
            )
