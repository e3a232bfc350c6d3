"""saved work and checkpoints of deployments; preemption counters of clusters

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp = sa.DateTime(timezone=True)
CLUSTER_COUNTERS = ("lost_cpu_seconds", "lost_ram_seconds", "lost_gpu_seconds")


def upgrade() -> None:
    op.add_column(
        "deployments",
        sa.Column("saved_seconds", sa.Float(), nullable=False, server_default="0"),
    )
    op.add_column("deployments", sa.Column("checkpointed_at", Timestamp, nullable=True))
    op.add_column(
        "clusters", sa.Column("preemptions", sa.BigInteger(), nullable=False, server_default="0")
    )
    for name in CLUSTER_COUNTERS:
        op.add_column("clusters", sa.Column(name, sa.Float(), nullable=False, server_default="0"))
    # Preemptions counted so far move onto their clusters once.
    op.execute(
        "UPDATE clusters SET preemptions = COALESCE((SELECT SUM(preemption_count) "
        "FROM deployments WHERE deployments.cluster_id = clusters.id), 0)"
    )


def downgrade() -> None:
    for name in ("preemptions", *CLUSTER_COUNTERS):
        op.drop_column("clusters", name)
    op.drop_column("deployments", "checkpointed_at")
    op.drop_column("deployments", "saved_seconds")
