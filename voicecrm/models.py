"""Every table of voicecrm, imported in one place so that `Base.metadata` is complete.

Migrations are checked against this metadata by the tests.
"""

from voicecrm.accounts.models import ApiToken, Team, User
from voicecrm.crm.models import (
    CallRecord,
    Contact,
    ContactEmail,
    ContactPhone,
    ContactSource,
    ContactTag,
    ImportJob,
    Note,
    Stage,
    Task,
    TimelineEvent,
)
from voicecrm.storage import Base

metadata = Base.metadata

__all__ = [
    "ApiToken",
    "CallRecord",
    "Contact",
    "ContactEmail",
    "ContactPhone",
    "ContactSource",
    "ContactTag",
    "ImportJob",
    "Note",
    "Stage",
    "Task",
    "Team",
    "TimelineEvent",
    "User",
    "metadata",
]
