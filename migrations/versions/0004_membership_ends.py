"""invite issue times, membership ends (the rejoin rule), pending count per organization

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("organizations", sa.Column("invite_issued_at", Timestamp, nullable=True))
    # Codes issued before this revision count as issued when their organization was made.
    op.execute("UPDATE organizations SET invite_issued_at = created_at")
    if op.get_bind().dialect.name != "sqlite":
        # SQLite cannot add NOT NULL in place, and a batch rebuild of the table would drop its
        # expression index (unique lower(name)); there the application always sets it.
        op.alter_column("organizations", "invite_issued_at", nullable=False)
    op.create_table(
        "membership_ends",
        sa.Column("user_id", Id, nullable=False),
        sa.Column("organization_id", Id, nullable=False),
        sa.Column("ended_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_membership_ends_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_membership_ends_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "organization_id", name=op.f("pk_membership_ends")),
    )

    op.create_index(
        "ix_deployments_organization_status", "deployments", ["organization_id", "status"]
    )


def downgrade() -> None:
    op.drop_index("ix_deployments_organization_status", table_name="deployments")
    op.drop_table("membership_ends")
    op.drop_column("organizations", "invite_issued_at")
