"""What a CSV import is asked to do and what it reports, row errors included.

Kept apart from the job so that the planner, the writers and the callers (the
API resource, the CLI) share these types without importing the job itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, Field

from voicecrm.crm.csv_rows import RowError

MAX_REPORTED_ERRORS = 1000
DEFAULT_BATCH = 2000


class OnMatch(StrEnum):
    UPDATE = "update"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class ImportOptions:
    on_match: OnMatch = OnMatch.UPDATE
    dry_run: bool = False
    mapping: Mapping[str, str] | None = None
    encoding: str = "utf-8-sig"
    # Recorded in each contact's "imported" timeline event.
    file_name: str | None = None
    batch_size: int = DEFAULT_BATCH
    # 0 reads rows (parses phone numbers: most of the CPU time) on the event loop;
    # N > 0 in N worker processes while the database writes, which makes large
    # imports faster on a machine with cores to spare, for a second or so to start.
    workers: int = 0


class ImportRowError(BaseModel):
    row: int = Field(description="Data row number, from 1; the header is not counted.")
    line: int = Field(description="The file line the row starts on.")
    field: str | None = Field(description="The contact field at fault, if one is.")
    column: str | None = Field(description="The CSV column at fault, if one is.")
    message: str

    @classmethod
    def of(cls, error: RowError) -> ImportRowError:
        return cls(
            row=error.row,
            line=error.line,
            field=error.field,
            column=error.column,
            message=error.message,
        )


class ImportReport(BaseModel):
    """What an import did (or, for a dry run, would do), row by row in totals."""

    dry_run: bool
    on_match: OnMatch
    total_rows: int = Field(description="Data rows in the file.")
    rows: int = Field(0, description="Rows processed so far.")
    created: int = 0
    updated: int = 0
    unchanged: int = Field(0, description="Matched a contact that already had every value.")
    skipped: int = Field(0, description="Matched a contact, left alone (on_match=skip).")
    failed: int = Field(0, description="Rows left out because of an error.")
    blank_rows: int = 0
    errors: list[ImportRowError] = Field(
        default_factory=list, description=f"The first {MAX_REPORTED_ERRORS} row errors."
    )
    errors_truncated: bool = False
    columns: dict[str, str] = Field(
        default_factory=dict, description="Each column read and the field it feeds."
    )
    ignored_columns: list[str] = Field(default_factory=list)
    seconds: float = 0.0


ProgressCallback = Callable[[ImportReport], None]
ErrorCallback = Callable[[ImportRowError], None]
