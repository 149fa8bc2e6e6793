"""The CRM's data as it crosses an edge: what may come in and what goes out.

These pydantic models are the single statement of the contract: the API
validates requests with them and builds its OpenAPI document from them, and
the CSV importer and the scenario steps feed the same models.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, field_validator

BUILTIN_SOURCES = ("phone", "manual", "import", "web", "api")
UNKNOWN_CALLER = "Unknown Caller"
MAX_STAGES = 8
# A contact's own fields (its phones, emails and tags live in tables of their own).
CONTACT_FIELDS = (
    "name",
    "company",
    "type",
    "caller_id_name",
    "carrier",
    "source",
    "responsible_user_id",
    "rating",
    "status",
    "blocked",
    "stage_id",
    "custom_fields",
)

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
TagName = Annotated[
    str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=100)
]
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$"
    ),
]
Rating = Annotated[int, Field(ge=0, le=3)]


class ContactType(StrEnum):
    CUSTOMER = "customer"
    COLLABORATOR = "collaborator"
    OTHER = "other"


class ContactStatus(StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


class NoteType(StrEnum):
    GENERAL = "general"
    INFO = "info"
    WARNING = "warning"
    DANGER = "danger"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_max_length=10_000)


class PhoneIn(Strict):
    number: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    label: Label = "mobile"


class EmailIn(Strict):
    email: Email
    label: Label = "work"


CustomFields = Annotated[dict[str, Any], Field(max_length=100)]


class ContactFields(Strict):
    """Fields shared by create and update; None means 'leave as it is' on update."""

    company: ShortText | None = None
    type: ContactType | None = None
    caller_id_name: ShortText | None = None
    source: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
        | None
    ) = None
    responsible_user_id: int | None = None
    rating: Rating | None = None
    status: ContactStatus | None = None
    blocked: StrictBool | None = None
    stage_id: int | None = None
    custom_fields: CustomFields | None = None

    @field_validator("custom_fields")
    @classmethod
    def _flat_custom_fields(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        for key, item in value.items():
            if not key or len(key) > 100:
                raise ValueError("custom field names are 1 to 100 characters")
            if not (item is None or isinstance(item, str | int | float | bool)):
                raise ValueError(f"custom field {key!r} must be a string, number, bool or null")
            if isinstance(item, str) and len(item) > 2000:
                raise ValueError(f"custom field {key!r} is longer than 2000 characters")
        return value


class ContactCreate(ContactFields):
    name: Name | None = None
    phones: Annotated[list[PhoneIn], Field(max_length=20)] = []
    emails: Annotated[list[EmailIn], Field(max_length=20)] = []
    tags: Annotated[list[TagName], Field(max_length=100)] = []


class ContactUpdate(ContactFields):
    name: Name | None = None
    phones: Annotated[list[PhoneIn], Field(max_length=20)] | None = None
    emails: Annotated[list[EmailIn], Field(max_length=20)] | None = None
    # Explicitly clearing a nullable link needs a way to say null; these flags do it.
    clear_stage: StrictBool = False
    clear_responsible_user: StrictBool = False


class PhoneOut(BaseModel):
    e164: str
    original: str
    label: str
    region: str | None


class EmailOut(BaseModel):
    email: str
    label: str


class ContactOut(BaseModel):
    id: int
    name: str
    company: str | None
    type: ContactType
    phones: list[PhoneOut]
    emails: list[EmailOut]
    tags: list[str]
    caller_id_name: str | None
    carrier: str | None
    source: str
    responsible_user_id: int | None
    rating: int
    status: ContactStatus
    blocked: bool
    stage_id: int | None
    custom_fields: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class NoteIn(Strict):
    content: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000)
    ]
    type: NoteType = NoteType.GENERAL
    pinned: StrictBool = False


class NoteUpdate(Strict):
    content: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000)]
        | None
    ) = None
    type: NoteType | None = None
    pinned: StrictBool | None = None


class NoteOut(BaseModel):
    id: int
    contact_id: int
    type: NoteType
    content: str
    pinned: bool
    author_user_id: int | None
    created_at: datetime
    updated_at: datetime


class StageIn(Strict):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class StageOut(BaseModel):
    id: int
    name: str
    position: int


class TimelineEventOut(BaseModel):
    id: int
    contact_id: int
    kind: str
    occurred_at: datetime
    actor_user_id: int | None
    data: dict[str, Any]
