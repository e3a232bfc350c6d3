"""deployments, their dependencies and events

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", Id, nullable=False),
        sa.Column("cluster_id", Id, nullable=False),
        sa.Column("organization_id", Id, nullable=False),
        sa.Column("created_by_id", Id, nullable=False),
        sa.Column("name", sa.String(length=63), nullable=True),
        sa.Column("docker_image", sa.String(length=512), nullable=False),
        sa.Column("required_cpu", sa.BigInteger(), nullable=False),
        sa.Column("required_ram", sa.BigInteger(), nullable=False),
        sa.Column("required_gpu", sa.BigInteger(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("eligible", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=1024), nullable=True),
        sa.Column("preempted_by_id", Id, nullable=True),
        sa.Column("duration_seconds", sa.BigInteger(), nullable=True),
        sa.Column("preemption_count", sa.Integer(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("waiting_since", Timestamp, nullable=False),
        sa.Column("started_at", Timestamp, nullable=True),
        sa.Column("finished_at", Timestamp, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed', 'cancelled')",
            name=op.f("ck_deployments_status"),
        ),
        sa.CheckConstraint(
            "priority >= 0 AND priority <= 1000", name=op.f("ck_deployments_priority_range")
        ),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_deployments_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["users.id"], name=op.f("fk_deployments_created_by_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_deployments_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployments")),
    )
    op.create_index("ix_deployments_organization_id", "deployments", ["organization_id"])
    op.create_index(
        "ix_deployments_queue",
        "deployments",
        ["cluster_id", "status", "eligible", sa.text("priority DESC"), "created_at", "id"],
    )
    op.create_table(
        "deployment_dependencies",
        sa.Column("deployment_id", Id, nullable=False),
        sa.Column("depends_on_id", Id, nullable=False),
        sa.ForeignKeyConstraint(
            ["depends_on_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_dependencies_depends_on_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_dependencies_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "deployment_id", "depends_on_id", name=op.f("pk_deployment_dependencies")
        ),
    )
    op.create_index(
        "ix_deployment_dependencies_depends_on_id", "deployment_dependencies", ["depends_on_id"]
    )
    op.create_table(
        "deployment_events",
        sa.Column("id", Id, nullable=False),
        sa.Column("deployment_id", Id, nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("message", sa.String(length=1024), nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
            name=op.f("fk_deployment_events_deployment_id_deployments"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_events")),
    )
    op.create_index("ix_deployment_events_deployment_id", "deployment_events", ["deployment_id"])


def downgrade() -> None:
    op.drop_table("deployment_events")
    op.drop_table("deployment_dependencies")
    op.drop_table("deployments")
