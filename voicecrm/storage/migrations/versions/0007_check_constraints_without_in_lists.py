"""Contacts' and notes' CHECK constraints as equalities joined by OR, not IN lists

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26

SQLite (3.40) codes a CHECK's `IN (...)` list as a temporary index that it
builds again for every row written: contacts, with two such checks, cost 7 to
10 µs a row to insert against 2 to 3 with `status = 'open' OR ...`, side by
side on a copy of the table. The rules themselves do not change.

On SQLite both tables are rebuilt (it cannot alter a table's constraints);
`voicecrm.storage.migrate` runs this with foreign keys off, so that dropping the
old `contacts` does not cascade to the rows that refer to it, and checks every
reference before committing.
"""

from collections.abc import Callable, Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, constraint, column, allowed values) as they are at this revision.
CHECKS = (
    ("contacts", "ck_contacts_status", "status", ("open", "won", "lost")),
    ("contacts", "ck_contacts_type", "type", ("customer", "collaborator", "other")),
    ("notes", "ck_notes_type", "type", ("general", "info", "warning", "danger")),
)


# What `voicecrm.storage.base.one_of` writes today, copied rather than imported: a
# migration must keep meaning what it meant when written, whatever the helper becomes.
def _equalities(column: str, values: Sequence[str]) -> str:
    return " OR ".join(f"{column} = '{value}'" for value in values)


def _in_list(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


def _rewrite(condition: Callable[[str, Sequence[str]], str]) -> None:
    for table in ("contacts", "notes"):
        with op.batch_alter_table(table) as batch_op:
            for owner, name, column, values in CHECKS:
                if owner == table:
                    batch_op.drop_constraint(name, type_="check")
                    batch_op.create_check_constraint(op.f(name), condition(column, values))


def upgrade() -> None:
    _rewrite(_equalities)


def downgrade() -> None:
    _rewrite(_in_list)
