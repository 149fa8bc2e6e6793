"""The one exception tree of voicecrm.

Every error the domain raises on purpose derives from `VoiceCRMError`, so the
edges (the HTTP API, the CLI, a live call) can tell a refusal they must explain
from a bug they must report. No HTTP status codes live here: the API maps these
classes to problem+json in `voicecrm.api.problems`.

    VoiceCRMError
    ├── InvalidInput            the caller's data is wrong (field, reason)
    │   ├── InvalidPhoneNumber
    │   └── InvalidCSV
    ├── NotFound                the thing does not exist, or is not visible to the actor
    ├── Conflict                the request contradicts the stored state
    │   ├── DuplicatePhone
    │   ├── DuplicateName
    │   └── StageLimitReached
    ├── PermissionDenied        the actor may not do this
    ├── AuthenticationFailed    no valid credentials
    └── ConfigurationError      the service is misconfigured
"""

from __future__ import annotations

from typing import Any


class VoiceCRMError(Exception):
    """Root of every deliberate voicecrm error."""

    title = "Error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(VoiceCRMError):
    title = "Invalid input"

    def __init__(self, detail: str, *, field: str | None = None, **extra: Any) -> None:
        if field is not None:
            extra["field"] = field
        super().__init__(detail, **extra)
        self.field = field


class InvalidPhoneNumber(InvalidInput):
    title = "Invalid phone number"


class InvalidCSV(InvalidInput):
    title = "Invalid CSV"


class NotFound(VoiceCRMError):
    title = "Not found"


class Conflict(VoiceCRMError):
    title = "Conflict"


class DuplicatePhone(Conflict):
    title = "Phone number already belongs to a contact"


class DuplicateName(Conflict):
    title = "Name already taken"


class StageLimitReached(Conflict):
    title = "Stage limit reached"


class PermissionDenied(VoiceCRMError):
    title = "Permission denied"


class AuthenticationFailed(VoiceCRMError):
    title = "Authentication required"


class ConfigurationError(VoiceCRMError):
    title = "Configuration error"
