"""contact_phones: one unique index on (team, number, duplicate_key) instead of two

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26

`unique_e164` (the number, or NULL where the team allows duplicates) had a
unique index, and `e164` a second index for lookups: two index entries on the
number for every phone. `duplicate_key` (0, or the contact's id where the team
allows duplicates) makes one unique index do both jobs.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column(
        "contact_phones", sa.Column("duplicate_key", ID, server_default="0", nullable=False)
    )
    op.execute("UPDATE contact_phones SET duplicate_key = contact_id WHERE unique_e164 IS NULL")
    with op.batch_alter_table("contact_phones") as batch_op:
        batch_op.drop_constraint("uq_contact_phones_team_id_unique_e164", type_="unique")
        batch_op.drop_index("ix_contact_phones_team_id_e164")
        batch_op.drop_column("unique_e164")
        batch_op.create_unique_constraint(
            "uq_contact_phones_team_id_e164_duplicate_key", ["team_id", "e164", "duplicate_key"]
        )


def downgrade() -> None:
    op.add_column("contact_phones", sa.Column("unique_e164", sa.String(length=20), nullable=True))
    op.execute("UPDATE contact_phones SET unique_e164 = e164 WHERE duplicate_key = 0")
    with op.batch_alter_table("contact_phones") as batch_op:
        batch_op.drop_constraint("uq_contact_phones_team_id_e164_duplicate_key", type_="unique")
        batch_op.drop_column("duplicate_key")
        batch_op.create_unique_constraint(
            "uq_contact_phones_team_id_unique_e164", ["team_id", "unique_e164"]
        )
        batch_op.create_index("ix_contact_phones_team_id_e164", ["team_id", "e164"], unique=False)
