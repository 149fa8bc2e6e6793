"""contacts: responsible-user and stage indexes only for contacts that have one

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

Most contacts have neither (a large import sets neither), and every query asks
these columns for one id, which implies the condition; a contact without them is
two index entries fewer to write.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = (
    ("ix_contacts_team_id_responsible_user_id", "responsible_user_id"),
    ("ix_contacts_team_id_stage_id", "stage_id"),
)


def upgrade() -> None:
    for name, column in _INDEXES:
        op.drop_index(name, table_name="contacts")
        condition = sa.text(f"{column} IS NOT NULL")
        op.create_index(
            name,
            "contacts",
            ["team_id", column],
            sqlite_where=condition,
            postgresql_where=condition,
        )


def downgrade() -> None:
    for name, column in _INDEXES:
        op.drop_index(name, table_name="contacts")
        op.create_index(name, "contacts", ["team_id", column])
