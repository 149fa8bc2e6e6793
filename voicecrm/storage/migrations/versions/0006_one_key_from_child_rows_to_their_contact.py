"""A contact's rows refer to it by (team_id, contact_id), one foreign key instead of two

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26

Phones, emails, tags, notes and timeline events each had a foreign key from
`team_id` to teams and another from `contact_id` to contacts. Together they
still let a row name a contact of another team; and each row written paid two
checks (two triggers on PostgreSQL, most of what an import's COPY costs). One
key on (team_id, contact_id) to contacts (team_id, id) does both jobs; contacts
get the unique index it needs. A team's deletion still reaches these rows,
through its contacts.

On SQLite the five tables are rebuilt (it cannot alter a table's constraints);
the copy checks every row against the new key, so a row that named another
team's contact stops the migration instead of being carried over.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHILDREN = ("contact_phones", "contact_emails", "contact_tags", "notes", "timeline_events")
CONTACT_KEY = "ix_contacts_team_id_id"


def upgrade() -> None:
    op.create_index(CONTACT_KEY, "contacts", ["team_id", "id"], unique=True)
    for table in CHILDREN:
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_team_id_teams", type_="foreignkey")
            batch_op.drop_constraint(f"fk_{table}_contact_id_contacts", type_="foreignkey")
            batch_op.create_foreign_key(
                f"fk_{table}_team_id_contacts",
                "contacts",
                ["team_id", "contact_id"],
                ["team_id", "id"],
                ondelete="CASCADE",
            )


def downgrade() -> None:
    for table in CHILDREN:
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_team_id_contacts", type_="foreignkey")
            batch_op.create_foreign_key(
                f"fk_{table}_team_id_teams", "teams", ["team_id"], ["id"], ondelete="CASCADE"
            )
            batch_op.create_foreign_key(
                f"fk_{table}_contact_id_contacts",
                "contacts",
                ["contact_id"],
                ["id"],
                ondelete="CASCADE",
            )
    op.drop_index(CONTACT_KEY, table_name="contacts")
