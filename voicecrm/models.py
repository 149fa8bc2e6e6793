"""Every table of voicecrm, imported in one place so that `Base.metadata` is complete.

Migrations are checked against this metadata by the tests.
"""

from voicecrm.accounts.models import ApiToken, Team, User
from voicecrm.crm.models import (
    Contact,
    ContactEmail,
    ContactPhone,
    ContactSource,
    ContactTag,
    Note,
    Stage,
    TimelineEvent,
)
from voicecrm.storage import Base

metadata = Base.metadata

__all__ = [
    "ApiToken",
    "Contact",
    "ContactEmail",
    "ContactPhone",
    "ContactSource",
    "ContactTag",
    "Note",
    "Stage",
    "Team",
    "TimelineEvent",
    "User",
    "metadata",
]
