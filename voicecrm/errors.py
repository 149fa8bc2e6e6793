"""The one exception tree of voicecrm.

Every error the domain raises on purpose derives from `VoiceCRMError`, so the
edges (the HTTP API, the CLI, a live call) can tell a refusal they must explain
from a bug they must report. No HTTP status codes live here: the API maps these
classes to problem+json in `voicecrm.api.problems`.

    VoiceCRMError
    ├── InvalidInput            the caller's data is wrong (field, reason)
    │   ├── InvalidPhoneNumber
    │   ├── InvalidCSV
    │   └── ScenarioInvalid     a scenario file is wrong: every issue with file:line:column
    ├── NotFound                the thing does not exist, or is not visible to the actor
    ├── Conflict                the request contradicts the stored state
    │   ├── DuplicatePhone
    │   ├── DuplicateName
    │   ├── StageLimitReached
    │   └── MigrationRefused    stored rows break a rule the new schema adds
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


class ScenarioInvalid(InvalidInput):
    """A scenario file has problems; `issues` lists each one with its position.

    `str()` of the error is the whole report, one `file:line:column: message`
    line per issue, the form editors and CI logs understand.
    """

    title = "Invalid scenario"

    def __init__(self, issues: list[ScenarioIssue]) -> None:
        self.issues = issues
        super().__init__(
            "\n".join(str(issue) for issue in issues), issues=[str(issue) for issue in issues]
        )


class ScenarioIssue:
    __slots__ = ("column", "file", "line", "message")

    def __init__(self, file: str, line: int, column: int, message: str) -> None:
        self.file, self.line, self.column, self.message = file, line, column, message

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"

    def __repr__(self) -> str:
        return f"ScenarioIssue({str(self)!r})"


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


class MigrationRefused(Conflict):
    """A migration would leave rows that break its rules; it was rolled back."""
