"""The CRM's tables: contacts with their phones, emails and tags, notes, stages, the timeline.

Every row carries `team_id` so that every query can be scoped by team with an
index, and so that uniqueness rules (one contact per phone number) are per team.
A contact's own rows (phones, emails, tags, notes, timeline events) refer to it
by (team_id, contact_id): the database itself keeps them in their contact's team.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from voicecrm.crm.schemas import ContactStatus, ContactType, NoteType
from voicecrm.storage.base import Base, BigId, UTCDateTime, one_of, utcnow

# JSONB on PostgreSQL stores parsed JSON (smaller, indexable later); plain JSON text on SQLite.
JSONType = JSON().with_variant(JSONB(), "postgresql")


def _contacts_row() -> ForeignKeyConstraint:
    """A row that belongs to a contact: to that contact, in the row's own team.

    One foreign key on (team_id, contact_id) rather than one on each column: a row
    can then never name a contact of another team, which two separate keys allowed,
    and each row written costs one check of the key instead of two (on PostgreSQL a
    trigger each; a bare COPY of contacts, emails and timeline events in batches of
    2,000 took 58-63 µs a row with this key, 74-80 with the two). A team's deletion
    still reaches these rows, through its contacts.
    """
    return ForeignKeyConstraint(
        ["team_id", "contact_id"], ["contacts.team_id", "contacts.id"], ondelete="CASCADE"
    )


class Stage(Base):
    __tablename__ = "stages"
    __table_args__ = (UniqueConstraint("team_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ContactSource(Base):
    """A team's own contact sources, beside the built-in ones."""

    __tablename__ = "contact_sources"
    __table_args__ = (UniqueConstraint("team_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        CheckConstraint("rating BETWEEN 0 AND 3", name="rating"),
        CheckConstraint(one_of("status", ContactStatus), name="status"),
        CheckConstraint(one_of("type", ContactType), name="type"),
        Index(None, "team_id", "name", "id"),
        Index(None, "team_id", "updated_at", "id"),
        # What the child tables' (team_id, contact_id) foreign keys refer to.
        Index(None, "team_id", "id", unique=True),
        # Partial: most contacts have no responsible user or stage (a large import sets
        # neither), and only `= id` is ever asked of these columns, which implies the
        # condition; each contact without them is one index entry fewer to write.
        Index(
            None,
            "team_id",
            "responsible_user_id",
            sqlite_where=text("responsible_user_id IS NOT NULL"),
            postgresql_where=text("responsible_user_id IS NOT NULL"),
        ),
        Index(
            None,
            "team_id",
            "stage_id",
            sqlite_where=text("stage_id IS NOT NULL"),
            postgresql_where=text("stage_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    company: Mapped[str | None] = mapped_column(String(200), nullable=True)
    type: Mapped[str] = mapped_column(String(16), default="customer")
    caller_id_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    carrier: Mapped[str | None] = mapped_column(String(200), nullable=True)
    source: Mapped[str] = mapped_column(String(100), default="manual")
    responsible_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    rating: Mapped[int] = mapped_column(SmallInteger, default=0)
    status: Mapped[str] = mapped_column(String(8), default="open")
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    stage_id: Mapped[int | None] = mapped_column(
        ForeignKey("stages.id", ondelete="SET NULL"), nullable=True
    )
    custom_fields: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ContactPhone(Base):
    """A contact's phone number, normalised to E.164.

    `duplicate_key` is 0 while the team forbids duplicate numbers and the contact's
    id while it allows them. The unique index on (team, number, key) then allows
    one row per number in the first case, which is what guarantees that two
    concurrent first calls from one new number cannot create two contacts, and
    one per number and contact in the second; and the same index finds a number's
    contact, so each phone written costs one index entry on its number, not two.
    """

    __tablename__ = "contact_phones"
    __table_args__ = (
        UniqueConstraint("team_id", "e164", "duplicate_key"),
        _contacts_row(),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigId)
    contact_id: Mapped[int] = mapped_column(BigId, index=True)
    e164: Mapped[str] = mapped_column(String(20))
    # 0 (unique, and what a writer that does not say gets) or the contact's id.
    duplicate_key: Mapped[int] = mapped_column(BigId, server_default="0")
    original: Mapped[str] = mapped_column(String(100))
    label: Mapped[str] = mapped_column(String(50), default="mobile")
    region: Mapped[str | None] = mapped_column(String(2), nullable=True)
    position: Mapped[int] = mapped_column(SmallInteger, default=0)


class ContactEmail(Base):
    __tablename__ = "contact_emails"
    __table_args__ = (Index(None, "team_id", "email"), _contacts_row())

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigId)
    contact_id: Mapped[int] = mapped_column(BigId, index=True)
    email: Mapped[str] = mapped_column(String(320))
    label: Mapped[str] = mapped_column(String(50), default="work")
    position: Mapped[int] = mapped_column(SmallInteger, default=0)


class ContactTag(Base):
    __tablename__ = "contact_tags"
    __table_args__ = (Index(None, "team_id", "tag"), _contacts_row())

    contact_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tag: Mapped[str] = mapped_column(String(100), primary_key=True)
    team_id: Mapped[int] = mapped_column(BigId)


class Note(Base):
    __tablename__ = "notes"
    __table_args__ = (
        CheckConstraint(one_of("type", NoteType), name="type"),
        _contacts_row(),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigId)
    contact_id: Mapped[int] = mapped_column(BigId, index=True)
    author_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    type: Mapped[str] = mapped_column(String(16), default="general")
    content: Mapped[str] = mapped_column(Text)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TimelineEvent(Base):
    """One append-only entry of a contact's history; `data` is shaped by `kind`."""

    __tablename__ = "timeline_events"
    __table_args__ = (
        Index(None, "contact_id", "id"),
        Index(None, "contact_id", "kind", "id"),
        _contacts_row(),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(BigId)
    contact_id: Mapped[int] = mapped_column(BigId)
    kind: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)


class Task(Base):
    """A to-do for a user about a contact, e.g. a call-back a caller asked for."""

    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'done')", name="status"),
        Index(None, "team_id", "status", "due_at"),
        Index(None, "assignee_user_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    assignee_user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    call_id: Mapped[int | None] = mapped_column(
        ForeignKey("calls.id", ondelete="SET NULL"), nullable=True
    )
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(8), default="open")
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class CallRecord(Base):
    """One phone call, whatever carried it, with the scenario engine's saved state.

    `(channel, external_id)` is the carrier's own id (a Twilio CallSid, an
    Asterisk channel id), unique so that a retried webhook finds the same row.
    `state` holds the engine's serialised state between steps, which lets a
    call continue on another instance.
    """

    __tablename__ = "calls"
    __table_args__ = (
        UniqueConstraint("channel", "external_id"),
        Index(None, "team_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL"), nullable=True, index=True
    )
    channel: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(128))
    direction: Mapped[str] = mapped_column(String(8))
    from_number: Mapped[str] = mapped_column(String(128))
    to_number: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="in-progress")
    scenario: Mapped[str | None] = mapped_column(String(100), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    duration_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    recording_url: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ImportJob(Base):
    """A CSV import the API runs in the background: where it is, and what it did.

    The row is the job's only shared state, so any instance can answer how an
    import goes. The instance running it writes `heartbeat_at` as it works; a
    job whose heartbeat stopped (its instance died) reads as interrupted.
    """

    __tablename__ = "import_jobs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="status"),
        Index(None, "team_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    file_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(8), default="queued")
    rows: Mapped[int] = mapped_column(Integer, default=0)
    total_rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
