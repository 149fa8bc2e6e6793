"""Storage: the database engine, sessions, the declarative base and migrations.

It knows only `voicecrm.errors`; the domain packages define their tables on
`Base` and take an `AsyncSession` from whoever owns the unit of work.
"""

from voicecrm.storage.base import MAX_ID, Base, UTCDateTime, utcnow
from voicecrm.storage.engine import Database, is_sqlite

__all__ = ["MAX_ID", "Base", "Database", "UTCDateTime", "is_sqlite", "utcnow"]
