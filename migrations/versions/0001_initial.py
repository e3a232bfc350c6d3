"""users, organizations, memberships, clusters

Revision ID: 0001
Revises:
Create Date: 2026-11-26 23:24:48.083740
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("invite_code", sa.String(length=64), nullable=False),
        sa.Column("invite_role", sa.String(length=16), nullable=False),
        sa.Column("invite_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "invite_role IN ('admin', 'developer', 'viewer')",
            name=op.f("ck_organizations_invite_role"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
        sa.UniqueConstraint("invite_code", name=op.f("uq_organizations_invite_code")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("username", sa.String(length=32), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    op.create_table(
        "clusters",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("total_cpu", sa.BigInteger(), nullable=False),
        sa.Column("total_ram", sa.BigInteger(), nullable=False),
        sa.Column("total_gpu", sa.BigInteger(), nullable=False),
        sa.Column("reserved_cpu", sa.BigInteger(), nullable=False),
        sa.Column("reserved_ram", sa.BigInteger(), nullable=False),
        sa.Column("reserved_gpu", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "reserved_cpu <= total_cpu AND reserved_ram <= total_ram AND reserved_gpu <= total_gpu",
            name=op.f("ck_clusters_reserved_within_total"),
        ),
        sa.CheckConstraint(
            "reserved_cpu >= 0 AND reserved_ram >= 0 AND reserved_gpu >= 0",
            name=op.f("ck_clusters_reserved_nonneg"),
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_clusters_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clusters")),
    )
    op.create_table(
        "memberships",
        sa.Column("user_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "organization_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "role IN ('admin', 'developer', 'viewer')", name=op.f("ck_memberships_role")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_memberships_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_memberships_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "organization_id", name=op.f("pk_memberships")),
    )
    op.create_index("ix_memberships_organization_id", "memberships", ["organization_id"])
    # Names are unique ignoring case (autogenerate cannot see expression indexes).
    op.create_index("uq_users_username_lower", "users", [sa.text("lower(username)")], unique=True)
    op.create_index(
        "uq_organizations_name_lower", "organizations", [sa.text("lower(name)")], unique=True
    )
    op.create_index(
        "uq_clusters_organization_id_name_lower",
        "clusters",
        ["organization_id", sa.text("lower(name)")],
        unique=True,
    )


def downgrade() -> None:
    op.drop_table("memberships")
    op.drop_table("clusters")
    op.drop_table("users")
    op.drop_table("organizations")
