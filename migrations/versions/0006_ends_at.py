"""the end of running timed deployments, and indexes for a create's due check and metrics

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence
from datetime import UTC, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("deployments", sa.Column("ends_at", Timestamp, nullable=True))
    deployments = sa.table(
        "deployments",
        sa.column("id", sa.BigInteger()),
        sa.column("status", sa.String()),
        sa.column("started_at", Timestamp),
        sa.column("duration_seconds", sa.BigInteger()),
        sa.column("saved_seconds", sa.Float()),
        sa.column("ends_at", Timestamp),
    )
    bind = op.get_bind()
    running = bind.execute(
        sa.select(
            deployments.c.id,
            deployments.c.started_at,
            deployments.c.duration_seconds,
            deployments.c.saved_seconds,
        ).where(deployments.c.status == "running", deployments.c.duration_seconds.is_not(None))
    ).all()
    for row in running:
        started = row.started_at if row.started_at.tzinfo else row.started_at.replace(tzinfo=UTC)
        ends = started + timedelta(seconds=row.duration_seconds - (row.saved_seconds or 0))
        bind.execute(deployments.update().where(deployments.c.id == row.id).values(ends_at=ends))
    op.create_index("ix_deployments_ends", "deployments", ["cluster_id", "status", "ends_at"])
    op.create_index("ix_deployments_status_cluster", "deployments", ["status", "cluster_id"])


def downgrade() -> None:
    op.drop_index("ix_deployments_status_cluster", table_name="deployments")
    op.drop_index("ix_deployments_ends", table_name="deployments")
    op.drop_column("deployments", "ends_at")
